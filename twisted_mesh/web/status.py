"""
The node's status as JSON (``/status``) and its counters in Prometheus' text
format (``/metrics``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

from twisted.web.resource import Resource
from twisted.web.server import Request

from twisted_mesh.service import MeshService


class _OfService(Resource):
    """A page of what ``service`` tells of itself."""

    isLeaf = True

    def __init__(self, service: MeshService) -> None:
        super().__init__()
        self._service = service


class StatusResource(_OfService):
    """``GET /status``: `.MeshService.status` as JSON."""

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self._service.status(), indent=1).encode("utf-8") + b"\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """A sample's value in full: an integer's digits, a float's shortest exact form."""
    if isinstance(value, int):
        return str(int(value))  # (a bool as 0 or 1)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _family(name: str, kind: str, text: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{key}="{_escape(item)}"' for key, item in labels.items())
        number = _number(value)
        lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
    return lines


def metrics_text(service: MeshService) -> str:
    """The node's counters and gauges in Prometheus' text exposition format."""
    status = service.status()
    stats = service.stats

    def labelled(label: str, counts: Mapping[str, int]) -> list[tuple[Mapping[str, str], float]]:
        return [({label: key}, value) for key, value in sorted(counts.items())]

    families: list[tuple[str, str, str, list[tuple[Mapping[str, str], float]]]] = [
        ("mesh_frames_received_total", "counter", "Frames read from peers.", [({}, stats.frames_in)]),
        ("mesh_frames_sent_total", "counter", "Frames written to peers.", [({}, stats.frames_out)]),
        ("mesh_bytes_received_total", "counter", "Bytes read from peers.", [({}, stats.bytes_in)]),
        ("mesh_bytes_sent_total", "counter", "Bytes written to peers.", [({}, stats.bytes_out)]),
        ("mesh_relayed_total", "counter", "Frames written to relay a broadcast.", [({}, stats.relayed)]),
        ("mesh_delivered_total", "counter", "Messages for the user (handlers, queue).", [({}, stats.delivered)]),
        ("mesh_dropped_total", "counter", "Frames or messages dropped, by reason.", labelled("reason", stats.dropped)),
        (
            "mesh_connections_total",
            "counter",
            "Connections made, by direction.",
            labelled("direction", stats.connections),
        ),
        (
            "mesh_handshake_failures_total",
            "counter",
            "Handshakes that failed, by reason.",
            labelled("reason", stats.handshake_failures),
        ),
        (
            "mesh_limit_hits_total",
            "counter",
            "Times a limit bit, by limit.",
            labelled("limit", stats.limit_hits),
        ),
        (
            "mesh_failed_dials_total",
            "counter",
            "Dials the node made on its own that failed.",
            [({}, stats.failed_dials)],
        ),
        (
            "mesh_trimmed_total",
            "counter",
            "Links closed because more peers had dialled the node than it keeps.",
            [({}, stats.trimmed)],
        ),
        (
            "mesh_pruned_total",
            "counter",
            "Links pruned: they brought broadcasts the node had already (lazy push).",
            [({}, stats.pruned)],
        ),
        (
            "mesh_announced_total",
            "counter",
            "Broadcasts announced, not sent, to the peers of pruned links.",
            [({}, stats.announced)],
        ),
        (
            "mesh_grafted_total",
            "counter",
            "Broadcasts announced to the node and asked for, for they did not come.",
            [({}, stats.grafted)],
        ),
        ("mesh_peers", "gauge", "Peers in the routing table.", [({}, len(status["peers"]))]),
        ("mesh_connections", "gauge", "Open connections, with or without a handshake.", [({}, status["connections"])]),
        (
            "mesh_pending_connections",
            "gauge",
            "Accepted connections whose handshake has not come.",
            [({}, status["pending"])],
        ),
        ("mesh_seen_messages", "gauge", "Broadcasts remembered to drop repeats.", [({}, status["seen"])]),
        ("mesh_queued_messages", "gauge", "Messages waiting for recv().", [({}, status["queued"])]),
        (
            "mesh_unreachable_peers",
            "gauge",
            "Missing peers whose last dial failed, dialled again with backoff.",
            [({}, status["unreachable"])],
        ),
        ("mesh_uptime_seconds", "gauge", "Seconds since the node was made.", [({}, status["uptime"])]),
    ]
    lines = []
    for name, kind, text, samples in families:
        lines.extend(_family(name, kind, text, samples))
    return "\n".join(lines) + "\n"


class MetricsResource(_OfService):
    """``GET /metrics``: `.metrics_text` for Prometheus."""

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return metrics_text(self._service).encode("utf-8")
