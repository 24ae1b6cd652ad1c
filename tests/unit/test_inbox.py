"""
`.Inbox`, through `.MeshNode` with fake links and a fake clock: delivery,
the queue, handlers and events.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from tests.unit.node_support import START, add_link, arriving, broadcast, capture, make_node, whisper
from twisted_mesh import flags
from twisted_mesh.limits import Limits
from twisted_mesh.message import Message

# -- delivery -----------------------------------------------------------------


def test_recv() -> None:
    """Broadcasts and whispers are queued; recv() and recv(n) take them in order."""
    node, _, _ = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    assert node.recv() is None and node.recv(3) == []
    sent = [broadcast(a.peer_id, "b1"), whisper(a.peer_id, "w1"), broadcast(a.peer_id, "b2")]
    for msg in sent:
        node.message_received(a, msg)
    first = node.recv()
    assert isinstance(first, Message)
    assert first.packets == (flags.broadcast, "b1")
    assert first.sender == a.peer_id and first.id == sent[0].key
    assert first.time == START and first.msg_type == flags.broadcast
    rest = node.recv(5)
    assert isinstance(rest, list)
    assert [m.packets for m in rest] == [(flags.whisper, "w1"), (flags.broadcast, "b2")]
    assert node.recv() is None


def test_recv_n_takes_at_most_n() -> None:
    """recv(n) leaves what is beyond n."""
    node, _, _ = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    for i in range(4):
        node.message_received(a, whisper(a.peer_id, i))
    assert [m.packets[1] for m in node.recv(3)] == [0, 1, 2]  # type: ignore[union-attr]
    assert len(node.queue) == 1


def test_the_queue_holds_at_most_max_queue_bytes() -> None:
    """Past max_queue_bytes (each message counted as it came), the oldest messages go; taking them frees room."""
    node, _, _ = make_node(limits=Limits(max_queue_bytes=1300))
    a = add_link(node)
    assert a.peer_id is not None
    sizes = []
    for i in range(5):
        msg = whisper(a.peer_id, i, "x" * 200)
        sizes.append(len(msg.body_in(True)))
        node.message_received(a, msg)
    assert sum(sizes[:4]) <= 1300 < sum(sizes)
    assert [m.packets[1] for m in node.queue] == [1, 2, 3, 4]
    assert node.stats.limit_hits["max_queue_bytes"] == 1
    assert node.recv().packets[1] == 1  # type: ignore[union-attr]
    node.message_received(a, whisper(a.peer_id, 5, "x" * 200))
    assert [m.packets[1] for m in node.recv(10)] == [2, 3, 4, 5]  # type: ignore[union-attr]
    assert node.stats.limit_hits["max_queue_bytes"] == 1
    node.message_received(a, whisper(a.peer_id, 6, "x" * 2000))  # larger than the limit: queued alone
    assert [m.packets[1] for m in node.queue] == [6]


@pytest.mark.parametrize("subflag", [flags.notify, flags.store, flags.ping, 0x30, 0x7F])
def test_other_subflags_are_not_queued(subflag: int) -> None:
    """Only the broadcast and whisper sub-flags reach the queue; handlers see the rest."""
    node, _, _ = make_node()
    a, b = add_link(node), add_link(node)
    assert a.peer_id is not None
    seen: list[Message] = []
    node.register_handler(lambda msg, link: seen.append(msg))
    fired: list[Any] = []
    node.events.on("message", fired.append)
    node.message_received(a, arriving(flags.broadcast, a.peer_id, (subflag, "x")))
    node.message_received(a, arriving(flags.whisper, a.peer_id, (subflag, "y")))
    assert not node.queue and fired == []
    assert [m.packets for m in seen] == [(subflag, "x"), (subflag, "y")]
    # The broadcast is still relayed.
    assert len(b.take()) == 1


def test_next_message_before_and_after_arrival() -> None:
    """next_message() fires on arrival, or at once when a message is queued."""
    node, _, _ = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    waiting = node.next_message()
    got: list[Message] = []
    waiting.addCallback(got.append)
    assert got == []
    node.message_received(a, whisper(a.peer_id, "first"))
    assert [m.packets for m in got] == [(flags.whisper, "first")]
    assert not node.queue

    node.message_received(a, whisper(a.peer_id, "second"))
    assert len(node.queue) == 1
    node.next_message().addCallback(got.append)
    assert [m.packets[1] for m in got] == ["first", "second"]
    assert not node.queue


def test_next_message_waiters_in_order() -> None:
    """Several waiters are served oldest first."""
    node, _, _ = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    got: list[tuple[int, Any]] = []

    def taken(msg: Message, waiter: int) -> None:
        got.append((waiter, msg.packets[1]))

    for i in range(2):
        node.next_message().addCallback(taken, i)
    node.message_received(a, whisper(a.peer_id, "x"))
    node.message_received(a, whisper(a.peer_id, "y"))
    assert got == [(0, "x"), (1, "y")]


def test_cancelled_next_message() -> None:
    """A cancelled next_message() fails with CancelledError and takes nothing."""
    node, _, _ = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    d = node.next_message()
    errors: list[Failure] = []
    d.addErrback(errors.append)
    d.cancel()
    assert len(errors) == 1 and errors[0].check(CancelledError)
    node.message_received(a, whisper(a.peer_id, "kept"))
    assert [m.packets for m in node.queue] == [(flags.whisper, "kept")]


def test_handlers_come_first_and_may_take_a_message() -> None:
    """Handlers see each message in order; a true return keeps it from the queue."""
    node, _, _ = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    calls: list[tuple[str, Any, Any]] = []

    def first(msg: Message, link: Any) -> bool:
        calls.append(("first", msg.packets[1], link))
        return bool(msg.packets[1] == "take")

    def second(msg: Message, link: Any) -> None:
        calls.append(("second", msg.packets[1], link))

    node.register_handler(first)
    node.register_handler(second)
    fired: list[Any] = []
    node.events.on("message", fired.append)
    node.message_received(a, whisper(a.peer_id, "take"))
    assert calls == [("first", "take", a)]
    assert not node.queue and fired == []
    node.message_received(a, whisper(a.peer_id, "leave"))
    assert calls[1:] == [("first", "leave", a), ("second", "leave", a)]
    assert len(node.queue) == 1 and fired == [node]


def test_raising_handler_is_logged_and_the_message_queued() -> None:
    """A handler that raises is logged; the next handlers and the queue still get it."""
    node, _, _ = make_node()
    events = capture(node)
    a = add_link(node)
    assert a.peer_id is not None
    later: list[Message] = []

    def broken(msg: Message, link: Any) -> bool:
        raise RuntimeError("boom")

    node.register_handler(broken)
    node.register_handler(lambda msg, link: later.append(msg))
    node.message_received(a, broadcast(a.peer_id, "still here"))
    assert len(later) == 1
    assert [m.packets for m in node.queue] == [(flags.broadcast, "still here")]
    failures = [event for event in events if "log_failure" in event]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(RuntimeError)


def test_connect_event_only_from_empty() -> None:
    """'connect' fires when the routing table goes from empty to one peer."""
    node, _, _ = make_node()
    source = object()
    node.event_source = source
    fired: list[object] = []
    node.events.on("connect", fired.append)
    a = add_link(node)
    assert fired == [source]
    b = add_link(node)
    assert fired == [source]
    node.link_lost(a)
    node.link_lost(b)
    assert node.routing_table == {}
    add_link(node)
    assert fired == [source, source]


def test_message_event_on_once_and_raising_callbacks() -> None:
    """on() every time, once() one time; a raising callback does not stop the others."""
    node, _, _ = make_node()
    events = capture(node)
    a = add_link(node)
    assert a.peer_id is not None
    calls: list[str] = []

    def broken(source: object) -> None:
        calls.append("broken")
        raise ValueError("bad callback")

    node.events.on("message", broken)
    node.events.on("message", lambda source: calls.append("on"))
    node.events.once("message", lambda source: calls.append("once"))
    node.message_received(a, whisper(a.peer_id, 1))
    node.message_received(a, whisper(a.peer_id, 2))
    assert calls == ["broken", "on", "once", "broken", "on"]
    assert len([event for event in events if "log_failure" in event]) == 2
    assert len(node.queue) == 2


def test_message_event_fires_when_a_waiter_takes_it() -> None:
    """The 'message' event fires for a message a next_message() waiter took."""
    node, _, _ = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    fired: list[object] = []
    node.events.on("message", fired.append)
    node.next_message()
    node.message_received(a, whisper(a.peer_id, 1))
    assert fired == [node]


@pytest.mark.parametrize("register", ["on", "once"])
def test_unknown_event_is_refused(register: str) -> None:
    """on() and once() refuse an event the node never emits, naming those it does."""
    node, _, _ = make_node()
    with pytest.raises(ValueError, match="unknown event 'mesage': the events are 'connect', 'disconnect', 'message'"):
        getattr(node.events, register)("mesage", lambda source: None)
