"""
What twisted_mesh nodes log, read as an operator does: the public
namespaces, each event naming its node, short IDs in the text and whole
ones in the fields, and where a node listens.
"""

from __future__ import annotations

import pytest_twisted
from twisted.logger import LogEvent, formatEvent

from tests.support import MeshNodes, short, wait_for, within
from twisted_mesh._logs import LINK, NODE, SERVICE, TLS, TWISTD, WEB, WEBSOCKET

PUBLIC = {NODE, LINK, SERVICE, TLS, WEBSOCKET, WEB, TWISTD}
#: The namespaces whose events are not of one node: a transport's, and TLS options (which nodes may share).
NODELESS = {WEBSOCKET, TLS}


def ours(events: list[LogEvent]) -> list[LogEvent]:
    return [event for event in events if str(event.get("log_namespace", "")).startswith("twisted_mesh")]


@pytest_twisted.ensureDeferred
async def test_two_nodes_in_one_process_log_apart(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """Each of two nodes' "joined" lines names the node and the peer, short in the text and whole in the fields."""
    a, b = mesh(max_outgoing=0), mesh(max_outgoing=0)
    await within(b.connect("127.0.0.1", a.out_addr[1]))
    await wait_for(lambda: len([e for e in log_events if "joined" in (e.get("log_format") or "")]) == 2)
    joined = {e["node"]: e for e in log_events if "joined" in (e.get("log_format") or "")}
    assert joined[a.id]["peer"] == b.id and joined[b.id]["peer"] == a.id
    assert formatEvent(joined[a.id]).startswith(f"node {short(a.id)}: peer {short(b.id)} joined (at 127.0.0.1:")
    assert a.id not in formatEvent(joined[a.id]) and b.id not in formatEvent(joined[a.id])
    assert joined[a.id]["log_namespace"] == LINK
    for event in ours(log_events):
        assert event["log_namespace"] in PUBLIC, formatEvent(event)
        assert event["log_namespace"] in NODELESS or event["node"] in (a.id, b.id), formatEvent(event)


@pytest_twisted.ensureDeferred
async def test_listening_on_every_interface_logs_both_addresses(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """A node bound to 0.0.0.0 logs that interface and the address it tells peers to dial."""
    service = mesh.service(listen=["tcp:0:interface=0.0.0.0"])
    await within(service.listening)
    port = service.ports[0].getHost().port
    lines = [formatEvent(event) or "" for event in log_events if event.get("log_namespace") == SERVICE]
    (line,) = [line for line in lines if " listening on " in line]
    host, advertised = service.out_addr
    assert advertised == port
    assert f"listening on 0.0.0.0:{port} (Plaintext), advertised as {host}:{port} (node ID {service.id}, " in line
    assert line.startswith(f"node {short(service.id)} listening on ")
