"""
`.Relay` and `.Outbox`, through `.MeshNode` with fake links and a fake
clock: relay and the seen-set, and the messages a node sends.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import MESH
from tests.unit.node_support import START, add_link, again, arriving, broadcast, make_node, whisper
from twisted_mesh import flags
from twisted_mesh._core.seen import MESSAGE_LIFETIME
from twisted_mesh._ids import new_node_id
from twisted_mesh.limits import Limits

# -- relay and the seen-set ---------------------------------------------------


def test_relay_skips_the_arrival_link_and_the_originator() -> None:
    """A new broadcast goes to every link but the one it came on and the originator's."""
    node, _, _ = make_node()
    origin, via, c, d = (add_link(node) for _ in range(4))
    assert origin.peer_id is not None
    msg = broadcast(origin.peer_id, "hello")
    node.message_received(via, msg)
    assert c.take() == [msg] and d.take() == [msg]
    assert origin.take() == [] and via.take() == []
    assert [m.packets for m in node.recv(10)] == [(flags.broadcast, "hello")]  # type: ignore[union-attr]


def test_relayed_counts_the_frames_written() -> None:
    """``stats.relayed`` counts the peers a broadcast was written to, not those whose link refused it."""
    node, _, _ = make_node()
    a, b, c = (add_link(node) for _ in range(3))
    c.refusal = "the connection is closing"
    node.message_received(a, broadcast(new_node_id(MESH), "hello"))
    assert len(b.take()) == 1 and c.take() == []
    assert node.stats.relayed == 1


def test_a_peer_that_sends_a_broadcast_in_the_turn_it_was_relayed_to_it_is_not_written_it() -> None:
    """
    A broadcast relayed to b and c comes from b too before the turn ends: b
    has it, so what waits for b of it is withdrawn, and not counted as
    relayed; c's copy stays.  Once the turn has ended (the frames written),
    a repeat withdraws nothing.
    """
    node, clock, _ = make_node()
    a, b, c, d = (add_link(node) for _ in range(4))
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    node.message_received(b, again(msg, True))
    assert b.sent == [] and b.withdrawn == [msg]
    assert c.sent == [msg] and d.sent == [msg]
    assert node.stats.relayed == 2 and node.stats.dropped["duplicate"] == 1
    clock.advance(0)  # the turn ends
    node.message_received(c, again(msg, False))
    assert c.sent == [msg] and c.withdrawn == []
    assert node.stats.relayed == 2 and node.stats.dropped["duplicate"] == 2
    assert len(node.queue) == 1


def test_relay_from_an_unknown_originator() -> None:
    """A broadcast of a node we have no link to goes to all links but its arrival one."""
    node, _, _ = make_node()
    links = [add_link(node) for _ in range(3)]
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(links[0], msg)
    assert [len(link.take()) for link in links] == [0, 1, 1]


@pytest.mark.parametrize("first_bin", [True, False])
@pytest.mark.parametrize("second_bin", [True, False])
def test_repeat_is_dropped(first_bin: bool, second_bin: bool) -> None:
    """The same broadcast again, from any link, in either sender form: dropped."""
    node, _, _ = make_node()
    a, b, c = (add_link(node) for _ in range(3))
    msg = broadcast(new_node_id(MESH), "once", as_bin=first_bin)
    node.message_received(a, msg)
    assert len(b.take()) == len(c.take()) == 1
    for link in (a, b, c):
        node.message_received(link, again(msg, second_bin))
    assert a.take() == b.take() == c.take() == []
    assert len(node.queue) == 1
    assert len(node.seen) == 1


def test_old_broadcast_is_dropped() -> None:
    """A broadcast older than MESSAGE_LIFETIME is neither relayed nor delivered."""
    node, _, _ = make_node()
    a, b = add_link(node), add_link(node)
    node.message_received(a, broadcast(new_node_id(MESH), "old", time=START - MESSAGE_LIFETIME - 1))
    assert b.take() == [] and not node.queue and len(node.seen) == 0
    node.message_received(a, broadcast(new_node_id(MESH), "just in time", time=START - MESSAGE_LIFETIME))
    assert len(b.take()) == 1 and len(node.queue) == 1


def test_broadcast_from_the_future_is_dropped() -> None:
    """
    A broadcast stamped more than MESSAGE_LIFETIME ahead is neither relayed,
    delivered nor kept in the seen-set (it would stay there that much longer).
    """
    node, _, _ = make_node()
    a, b = add_link(node), add_link(node)
    node.message_received(a, broadcast(new_node_id(MESH), "ahead", time=START + MESSAGE_LIFETIME + 1))
    assert b.take() == [] and not node.queue and len(node.seen) == 0
    assert node.stats.dropped["expired"] == 1
    node.message_received(a, broadcast(new_node_id(MESH), "a little ahead", time=START + MESSAGE_LIFETIME))
    assert len(b.take()) == 1 and len(node.queue) == 1


def test_seen_set_forgets_after_the_lifetime() -> None:
    """Keys are dropped from the seen-set once their messages are too old."""
    node, clock, _ = make_node()
    a, b = add_link(node), add_link(node)
    sender = new_node_id(MESH)
    first = [broadcast(sender, i) for i in range(3)]
    for msg in first:
        node.message_received(a, msg)
    assert len(node.seen) == 3
    clock.advance(MESSAGE_LIFETIME + 2)
    later = broadcast(sender, "later", time=int(clock.seconds()))
    node.message_received(a, later)
    assert len(node.seen) == 1
    # The forgotten ones are too old to come back anyway.
    b.take()
    node.message_received(a, again(first[0], True))
    assert b.take() == []
    assert len(node.seen) == 1


def test_seen_set_keeps_keys_within_the_lifetime() -> None:
    """Within the lifetime a repeat is still recognised."""
    node, clock, _ = make_node()
    a, b = add_link(node), add_link(node)
    msg = broadcast(new_node_id(MESH), "x")
    node.message_received(a, msg)
    clock.advance(MESSAGE_LIFETIME - 1)
    node.message_received(a, broadcast(new_node_id(MESH), "y", time=int(clock.seconds())))
    assert len(node.seen) == 2
    b.take()
    node.message_received(b, again(msg, False))
    assert a.take() == [] and len(node.queue) == 2


def test_whispers_are_not_relayed() -> None:
    """A whisper stays with the node it was sent to."""
    node, _, _ = make_node()
    a, b, c = (add_link(node) for _ in range(3))
    node.message_received(a, whisper(new_node_id(MESH), "psst"))
    assert b.take() == c.take() == a.take() == []
    assert len(node.queue) == 1 and len(node.seen) == 0


@pytest.mark.parametrize(
    ("msg_type", "payload"),
    [
        (flags.renegotiate, (flags.compression, [flags.zlib])),
        (flags.renegotiate, (flags.resend,)),
        (flags.whisper, (flags.handshake, b"PEER", MESH.id.encode(), ["10.0.0.1", 1], [])),
    ],
)
def test_link_business_is_not_the_nodes(msg_type: int, payload: tuple[Any, ...]) -> None:
    """Renegotiation and handshakes are neither relayed, queued nor answered."""
    node, _, dialer = make_node()
    a, b = add_link(node), add_link(node)
    assert a.peer_id is not None
    node.message_received(a, arriving(msg_type, a.peer_id, payload))
    assert a.take() == b.take() == []
    assert not node.queue and dialer.calls == []
    assert node.routing_table == {a.peer_id: a, b.peer_id: b}


# -- sending -------------------------------------------------------------------


def test_send_broadcast() -> None:
    """
    send() broadcasts one message from the node; when it comes back by another
    path, in either sender form, it is dropped as a repeat, though the node
    keeps no seen-set key for what it sends.
    """
    node, _, _ = make_node()
    a = add_link(node)
    b = add_link(node, ids_as_bin=False)
    node.send(("hello", 1))
    (to_a,) = a.take()
    (to_b,) = b.take()
    assert to_a is to_b
    assert to_a.msg_type == flags.broadcast and to_a.sender == node.id
    assert to_a.payload == (flags.broadcast, "hello", 1) and to_a.time == START
    assert len(node.seen) == 0
    node.message_received(a, again(to_a, True))
    node.message_received(b, again(to_a, False))
    assert a.take() == b.take() == [] and not node.queue
    assert node.stats.dropped["duplicate"] == 2


def test_send_with_a_type() -> None:
    """send(type=...) puts the type first in the payload."""
    node, _, _ = make_node()
    a = add_link(node)
    node.send(("x",), type=flags.whisper)
    (sent,) = a.take()
    assert sent.msg_type == flags.broadcast and sent.payload == (flags.whisper, "x")


def test_send_whisper_is_not_recorded() -> None:
    """send(flag=whisper) goes to each link, with no seen-set entry."""
    node, _, _ = make_node()
    links = [add_link(node), add_link(node, ids_as_bin=False)]
    node.send(("psst",), flag=flags.whisper, type=flags.whisper)
    sent = [link.take() for link in links]
    assert all(len(s) == 1 for s in sent)
    assert all(s[0].msg_type == flags.whisper and s[0].payload == (flags.whisper, "psst") for s in sent)
    assert len(node.seen) == 0


def test_a_message_larger_than_a_frame_is_refused() -> None:
    """A send or a reply larger than the frame limit raises ValueError, and nothing is written."""
    node, _, _ = make_node(limits=Limits(max_frame_size=1000))
    link = add_link(node)
    assert link.peer_id is not None
    node.send(("x" * 800,))
    assert len(link.take()) == 1
    with pytest.raises(ValueError, match="frame limit of 1000"):
        node.send(("x" * 1000,))
    with pytest.raises(ValueError, match="frame limit of 1000"):
        node.reply(link.peer_id, ("x" * 1000,))
    with pytest.raises(ValueError, match="frame limit of 1000"):
        node.reply(new_node_id(MESH), ("x" * 1000,))
    assert link.take() == [] and not node.replies.requests


def test_a_message_peers_would_refuse_is_refused() -> None:
    """A send or reply whose lists nest too deeply, or are too many, raises ValueError, and nothing is written."""
    node, _, _ = make_node(limits=Limits(max_depth=4, max_items=50))
    link = add_link(node)
    assert link.peer_id is not None
    nested: Any = "deep"
    for _ in range(3):
        nested = [nested]
    node.send((nested, {"k": (1, 2)}))  # depths 1 to 3
    assert len(link.take()) == 1
    with pytest.raises(ValueError, match="nest deeper than 4"):
        node.send(([nested],))
    with pytest.raises(ValueError, match="nest deeper than 4"):
        node.reply(link.peer_id, ({"k": [nested]},))
    with pytest.raises(ValueError, match="more than 50 lists and maps"):
        node.send(([[] for _ in range(30)], [[] for _ in range(30)]))
    assert link.take() == []


def test_send_unpackable_raises() -> None:
    """A packet msgpack cannot write raises TypeError and sends nothing."""
    node, _, _ = make_node()
    a = add_link(node)
    with pytest.raises(TypeError):
        node.send((object(),))
    assert a.take() == [] and len(node.seen) == 0
