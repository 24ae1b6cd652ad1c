"""
The report behind `.MeshService.status`: a node's identity, its peers with
what crossed each link, and its counters, as plain data for people and
monitors (the web face serves it as ``/status`` and ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted_mesh._core.node import MeshNode
from twisted_mesh._link import LinkProtocol


def _peer(peer_id: str, link: LinkProtocol) -> dict[str, Any]:
    return {
        "id": peer_id,
        "address": list(link.peer_addr) if link.peer_addr else None,
        "remote": str(link.remote_address()),
        "direction": "out" if link.outgoing else "in",
        "transport": link.encryption,
        "ids": "bin" if link.ids_as_bin else "str",
        "compression": link.compression_name(),
        "frames_in": link.stats.frames_in,
        "frames_out": link.stats.frames_out,
        "bytes_in": link.stats.bytes_in,
        "bytes_out": link.stats.bytes_out,
    }


def status_report(node: MeshNode, connections: Collection[object], unreachable: int, now: float) -> dict[str, Any]:
    """
    A snapshot of ``node`` at ``now``, with its open ``connections`` (with or
    without a handshake) and how many missing peers it could not reach.
    """
    peers = []
    for peer_id, link in sorted(node.routing_table.items()):
        assert isinstance(link, LinkProtocol)
        peers.append(_peer(peer_id, link))
    stats = node.stats
    return {
        "id": node.id,
        "protocol": {
            "subnet": node.protocol.subnet,
            "encryption": node.protocol.encryption,
            "id": node.protocol.id,
            "signed": node.protocol.signed,
        },
        "out_addr": list(node.out_addr),
        "out_addrs": {encryption: list(address) for encryption, address in node.out_addrs.items()},
        "uptime": now - node.started,
        "peers": peers,
        "connections": len(connections),
        "pending": node.admission.pending,
        "seen": node.seen.held(now),
        "queued": len(node.queue),
        "frames_in": stats.frames_in,
        "frames_out": stats.frames_out,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "relayed": stats.relayed,
        "delivered": stats.delivered,
        "dropped": dict(stats.dropped),
        "connections_made": dict(stats.connections),
        "handshake_failures": dict(stats.handshake_failures),
        "limit_hits": dict(stats.limit_hits),
        "failed_dials": stats.failed_dials,
        "trimmed": stats.trimmed,
        "pruned": stats.pruned,
        "announced": stats.announced,
        "grafted": stats.grafted,
        "heard_of": len(node.peer_book),
        "unreachable": unreachable,
    }
