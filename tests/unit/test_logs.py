"""
The log's forms: node IDs short in the text and whole in the fields, each
event naming its node, and the public namespaces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogEvent, eventAsJSON, eventFromJSON, formatEvent
from twisted.python import usage

from twisted_mesh import Network, tap
from twisted_mesh._core.node import MeshNode
from twisted_mesh._ids import new_node_id
from twisted_mesh._logs import NODE, SHORT_ID, TLS, LoggedID, LoggedText, NodeLogger, logged
from twisted_mesh._twistd import json_log_observer
from twisted_mesh.tls import TLSOptions

MESH = Network("mesh", "Plaintext")


def test_an_id_is_short_in_text_and_whole_in_json() -> None:
    """A `.LoggedID` formats as its first characters; JSON and comparisons see all of it."""
    node_id = new_node_id(MESH)
    logged_id = LoggedID(node_id)
    assert f"{logged_id}" == str(logged_id) == node_id[:SHORT_ID]
    assert f"{logged_id:>12}" == "  " + node_id[:SHORT_ID]
    assert logged_id == node_id and json.loads(json.dumps({"peer": logged_id})) == {"peer": node_id}
    assert logged(None) is None and logged(node_id) == node_id


def test_node_logger_names_its_node(log_events: list[LogEvent]) -> None:
    """Each event carries the node's whole ID, its text the short one, in the namespace given."""
    node_id, peer_id = new_node_id(MESH), new_node_id(MESH)
    NodeLogger(NODE, node_id).info("peer {peer} joined", peer=LoggedID(peer_id))
    NodeLogger(NODE, node_id).info("node {node} placed itself")
    joined, placed = log_events
    assert formatEvent(joined) == f"node {node_id[:SHORT_ID]}: peer {peer_id[:SHORT_ID]} joined"
    assert formatEvent(placed) == f"node {node_id[:SHORT_ID]} placed itself"
    assert joined["log_namespace"] == "twisted_mesh.node"
    assert (joined["node"], joined["peer"]) == (node_id, peer_id)
    loaded = eventFromJSON(eventAsJSON(joined))
    assert (loaded["node"], loaded["peer"]) == (node_id, peer_id)
    assert formatEvent(loaded) == formatEvent(joined)


def test_two_nodes_in_one_process_are_told_apart(log_events: list[LogEvent]) -> None:
    """The core's events (a limit that bit, here) say which node they are of, in the node namespace."""
    clock = Clock()
    one, two = MeshNode(MESH, clock), MeshNode(MESH, clock)
    one.limit_hit("max_seen", "forgot broadcasts early")
    two.limit_hit("max_seen", "forgot broadcasts early")
    assert [event["node"] for event in log_events] == [one.id, two.id]
    assert [event["log_namespace"] for event in log_events] == [NODE, NODE]
    assert formatEvent(log_events[0]).startswith(f"node {one.id[:SHORT_ID]}: limit max_seen")


def test_log_format_is_text_or_json() -> None:
    """``twistd mesh --log-format`` takes text or json."""
    for good in ("text", "json"):
        options = tap.Options()
        options.parseOptions(["--log-format", good])
        assert options["log-format"] == good
    with pytest.raises(usage.UsageError, match="--log-format must be one of text, json"):
        tap.Options().parseOptions(["--log-format", "xml"])


def test_json_log_observer_writes_one_object_a_line(tmp_path: Path) -> None:
    """The JSON observer writes each event on a line of its own, to the log file twistd's options name."""
    node_id = new_node_id(MESH)
    observer = json_log_observer({"logfile": str(tmp_path / "node.log"), "nodaemon": False})
    logger = NodeLogger(NODE, node_id, observer=observer)
    logger.info("one {peer}", peer=LoggedID(node_id))
    logger.warn("two")
    lines = (tmp_path / "node.log").read_text().splitlines()
    assert [json.loads(line)["log_format"] for line in lines] == ["node {node}: one {peer}", "node {node}: two"]
    assert json.loads(lines[0])["peer"] == node_id


def test_tls_events_are_in_the_tls_namespace(log_events: list[LogEvent]) -> None:
    """The events of TLS, which are not one node's, are in twisted_mesh.tls (not a class's path)."""
    TLSOptions().server_options()
    (event,) = log_events
    assert event["log_namespace"] == TLS and "self-signed mode" in formatEvent(event)


def test_ids_in_a_message_are_short_in_text_and_whole_in_the_field(log_events: list[LogEvent]) -> None:
    """A `.LoggedText` (an error's message) shows the IDs it holds short; the field keeps them."""
    node_id, peer_id = new_node_id(MESH), new_node_id(MESH)
    reason = f"the peer's key is not that of its ID {peer_id}"
    NodeLogger(NODE, node_id).warn("closing the connection: {reason}", reason=LoggedText(reason))
    (event,) = log_events
    assert (
        formatEvent(event)
        == f"node {node_id[:SHORT_ID]}: closing the connection: {reason[: -len(peer_id)]}{peer_id[:SHORT_ID]}"
    )
    assert event["reason"] == reason and json.loads(eventAsJSON(event))["reason"] == reason
    assert str(LoggedText("no ID in this one, 127.0.0.1:4444")) == "no ID in this one, 127.0.0.1:4444"
