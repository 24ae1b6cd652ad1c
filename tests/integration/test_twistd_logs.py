"""
The log of a real ``twistd mesh`` process (see twistd.py): ``--log-format
json`` gives one JSON object a line, with whole IDs and public namespaces.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest_twisted

from tests.integration.twistd import Launcher, Process, terminate
from tests.support import LOOPBACK, MeshNodes, wait_for, within
from twisted_mesh._logs import LINK, SERVICE, TLS, WEBSOCKET


def json_events(process: Process) -> list[dict[str, Any]]:
    """The events of ``process``'s stdout, one JSON object a line (a line not ended yet left out)."""
    lines = process.stdout.split("\n")[:-1]
    return [json.loads(line) for line in lines]


@pytest_twisted.ensureDeferred
async def test_log_format_json(launch: Launcher, mesh: MeshNodes) -> None:
    """
    ``--log-format json``: every line of stdout is a JSON object; the
    node's events have its whole ID in ``node``, the peers' whole IDs, and
    twisted_mesh's public namespaces.
    """
    process = launch.twistd("--listen", LOOPBACK, "--log-format", "json")

    def listening() -> list[dict[str, Any]]:
        return [e for e in json_events(process) if e.get("log_namespace") == SERVICE and "bound" in e]

    await wait_for(lambda: listening() or not process.running, 60, "the node to listen")
    assert process.running, process.output
    (event,) = listening()
    node_id = event["node"]
    assert event["node_id"] == node_id and len(node_id) > 40
    bound = re.match(r"127\.0\.0\.1:(\d+) \(Plaintext\)$", event["bound"])
    assert bound, event
    sock = mesh(max_outgoing=0)
    assert await within(sock.connect("127.0.0.1", int(bound[1]))) == node_id

    def joined() -> list[dict[str, Any]]:
        return [e for e in json_events(process) if "joined" in e.get("log_format", "")]

    await wait_for(joined, 30, "the joined line")
    (event,) = joined()
    assert (event["node"], event["peer"], event["log_namespace"]) == (node_id, sock.id, LINK)
    await terminate(process)
    events = json_events(process)
    assert process.stdout.endswith("\n") and len(events) == len(process.stdout.splitlines())
    ours = [e for e in events if e.get("log_namespace", "").startswith("twisted_mesh")]
    assert {e["log_namespace"] for e in ours} <= {SERVICE, LINK, "twisted_mesh.node", "twisted_mesh.twistd", TLS}
    assert all(e["node"] == node_id for e in ours if e["log_namespace"] not in (TLS, WEBSOCKET))
    assert any(e.get("log_format") == "Server Shut Down." for e in events)
