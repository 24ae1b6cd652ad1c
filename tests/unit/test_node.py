"""
`.MeshNode`, the I/O-free core, with fake links and a fake clock: relay and
the seen-set, delivery, handlers and events, peer exchange, connection
conflicts, replies and sending.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.python.failure import Failure

from tests.support import MESH
from twisted_mesh import flags
from twisted_mesh._core import exchange, routing
from twisted_mesh._core.exchange import PEERS_ANSWER_INTERVAL
from twisted_mesh._core.link import MAX_HOST_LENGTH, Address, parse_address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import b58decode_int, b58encode_int, id_text, new_node_id
from twisted_mesh._seen import MESSAGE_LIFETIME
from twisted_mesh.errors import MeshClosed
from twisted_mesh.limits import DEFAULT_LIMITS, Limits
from twisted_mesh.message import Message, SendResult

OUT_ADDR = ("127.0.0.1", 4444)
START = 1_000_000


class FakeLink:
    """A link that records what the node sends and closes."""

    def __init__(
        self,
        peer_id: str,
        *,
        addr: Address | None = None,
        outgoing: bool = False,
        ids_as_bin: bool = True,
        encryption: str = "Plaintext",
    ) -> None:
        self.peer_id: str | None = peer_id
        self.peer_addr = addr
        self.outgoing = outgoing
        self.ids_as_bin = ids_as_bin
        self.encryption = encryption
        self.sent: list[WireMessage] = []
        self.closes: list[str] = []
        #: Why the link refuses to send, if it does.
        self.refusal: str | None = None
        self.closing = False
        #: The port the dialling end connected from, as both ends see it.
        self.port: int | None = None
        #: Whether the node lets the link read from its peer.
        self.reading = True

    def send(self, msg: WireMessage) -> str | None:
        """Record ``msg``, unless the link refuses it."""
        if self.refusal is None:
            self.sent.append(msg)
        return self.refusal

    def close(self, reason: str, *, error: bool = True, read_on: bool = False) -> None:
        """Record that the node closed this link."""
        self.closes.append(reason)
        self.closing = True

    def dialler_port(self) -> int | None:
        """The port the test gave the connection."""
        return self.port

    def pause_reading(self) -> None:
        """Stop reading."""
        self.reading = False

    def resume_reading(self) -> None:
        """Read again."""
        self.reading = True

    def take(self) -> list[WireMessage]:
        """What was sent since the last call."""
        sent, self.sent = self.sent, []
        return sent

    def __repr__(self) -> str:
        return f"<FakeLink {self.peer_id and self.peer_id[:6]}>"


class FakeDialer:
    """A dialer whose Deferreds the test fires."""

    def __init__(self) -> None:
        self.calls: list[Address] = []
        self.transports: list[str] = []
        self.pending: dict[Address, Deferred[str]] = {}

    def __call__(self, host: str, port: int, encryption: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.calls.append((host, port))
        self.transports.append(encryption)
        self.pending[host, port] = d
        return d


def make_node(
    *, node_id: str | None = None, max_outgoing: int = 4, limits: Limits = DEFAULT_LIMITS
) -> tuple[MeshNode, task.Clock, FakeDialer]:
    """A node on a fake clock, with a fake dialer."""
    clock = task.Clock()
    clock.advance(START)
    node = MeshNode(MESH, clock, out_addr=OUT_ADDR, node_id=node_id, max_outgoing=max_outgoing, limits=limits)
    dialer = FakeDialer()
    node.dialer = dialer
    return node, clock, dialer


_port = [20000]


def add_link(
    node: MeshNode, *, outgoing: bool = False, ids_as_bin: bool = True, peer_id: str | None = None
) -> FakeLink:
    """A new peer entered through link_ready; what it was sent is cleared."""
    _port[0] += 1
    link = FakeLink(peer_id or new_node_id(MESH), addr=("10.0.0.1", _port[0]), outgoing=outgoing, ids_as_bin=ids_as_bin)
    assert node.link_ready(link)
    link.take()
    return link


def arriving(
    msg_type: int, sender: str, payload: tuple[Any, ...], *, time: int = START, as_bin: bool = True
) -> WireMessage:
    """A message as a link hands it over: decoded from the bytes of a frame."""
    made = WireMessage.create(msg_type, sender, time, payload, as_bin)
    return WireMessage.from_body(made.body_in(as_bin), ())


def again(msg: WireMessage, as_bin: bool) -> WireMessage:
    """``msg`` as it would arrive again, its sender in the given form."""
    return WireMessage.from_body(msg.body_in(as_bin), ())


def broadcast(sender: str, *packets: Any, time: int = START, as_bin: bool = True) -> WireMessage:
    """A user broadcast from ``sender``."""
    return arriving(flags.broadcast, sender, (flags.broadcast, *packets), time=time, as_bin=as_bin)


def whisper(sender: str, *packets: Any, as_bin: bool = True) -> WireMessage:
    """A user whisper from ``sender``."""
    return arriving(flags.whisper, sender, (flags.whisper, *packets), as_bin=as_bin)


def capture(node: MeshNode) -> list[LogEvent]:
    """The node's and its events' log events, from now on."""
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    for part in (node.node_log, node.relay, node.routing, node.exchange, node.replies, node.inbox, node.events):
        part._log = Logger(observer=observer)
    return events


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
    clock = task.Clock()
    clock.advance(START)
    node = MeshNode(MESH, clock, out_addr=OUT_ADDR, limits=Limits(max_queue_bytes=1300))
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


# -- peer exchange -----------------------------------------------------------


def peers_message(sender: str, entries: Any, *, as_bin: bool = True) -> WireMessage:
    """A peers whisper listing ``entries``."""
    return arriving(flags.whisper, sender, (flags.peers, entries), as_bin=as_bin)


def entry(address: Address, peer_id: str, *, as_bin: bool = True) -> list[Any]:
    """One routing-table entry of a peers message."""
    return [list(address), peer_id.encode() if as_bin else peer_id]


def test_link_ready_sends_the_routing_table() -> None:
    """A new peer is sent the others' addresses, in its ID form."""
    node, _, _ = make_node()
    a = add_link(node)
    b = add_link(node, ids_as_bin=False)
    assert a.peer_id is not None and b.peer_id is not None
    assert a.peer_addr is not None and b.peer_addr is not None
    c = FakeLink(new_node_id(MESH), addr=("10.9.9.9", 9), ids_as_bin=False)
    node.link_ready(c)
    (peers,) = c.take()
    assert peers.msg_type == flags.whisper and not peers.sender_is_bin
    listed = [entry(a.peer_addr, a.peer_id, as_bin=False), entry(b.peer_addr, b.peer_id, as_bin=False)]
    assert peers.payload[0] == flags.peers and sorted(peers.payload[1]) == sorted(listed)


# -- how many peers: the connection manager ------------------------------------


def incoming_link(node: MeshNode, *, addr: Address | None = None) -> FakeLink:
    """A dialable newcomer that dialled the node; what it was sent is kept."""
    _port[0] += 1
    link = FakeLink(new_node_id(MESH), addr=addr or ("10.1.0.1", _port[0]))
    node.link_ready(link)
    return link


def listed_peers(link: FakeLink) -> list[tuple[Address, str]]:
    """The entries of the peers messages the node sent on ``link``."""
    entries = [e for m in link.sent if m.payload[0] == flags.peers for e in m.payload[1]]
    return [((host, port), id_text(peer_id) or "") for (host, port), peer_id in entries]


def test_a_full_node_turns_a_newcomer_away_with_peers_to_dial() -> None:
    """
    Past max_incoming dialable peers that dialled it, a node answers a
    newcomer with peers to dial and closes its link, reading on; it never
    enters the routing table, the limit is counted, and the newcomer is
    remembered as a node with room, to tell others of.
    """
    node, _, _ = make_node()
    node.max_incoming = 3
    kept = [incoming_link(node) for _ in range(3)]
    newcomer = incoming_link(node)
    assert newcomer.peer_id not in node.routing_table and newcomer.closes and newcomer.closing
    assert "sent it others to dial" in newcomer.closes[0]
    assert {peer_id for _, peer_id in listed_peers(newcomer)} == {link.peer_id for link in kept}
    assert node.stats.limit_hits["max_incoming"] == 1
    assert newcomer.peer_addr is not None and (newcomer.peer_addr, "Plaintext") in node.exchange.newcomers
    later = incoming_link(node)
    assert newcomer.peer_id in {peer_id for _, peer_id in listed_peers(later)}


def test_links_the_node_dialled_and_undialable_peers_are_never_turned_away() -> None:
    """Outgoing links and peers that cannot be dialled (browsers) neither count nor are turned away."""
    node, _, _ = make_node()
    node.max_incoming = 1
    incoming_link(node)
    browser = FakeLink(new_node_id(MESH), addr=None)
    dialled = FakeLink(new_node_id(MESH), addr=("10.1.9.9", 1), outgoing=True)
    assert node.link_ready(browser) and node.link_ready(dialled)
    assert not browser.closes and not dialled.closes


def test_peers_are_sent_at_random_from_peers_and_nodes_heard_of() -> None:
    """
    A peers message lists at most PEERS_SENT nodes, drawn from the routing
    table and the nodes heard of, never the receiver or the node itself.
    """
    node, _, _ = make_node()
    for i in range(40):
        node.peer_book.heard_of(("10.2.0.1", 1000 + i), "Plaintext", new_node_id(MESH))
    node.peer_book.heard_of(("10.2.0.2", 1), "SSL", new_node_id(MESH))
    node.peer_book.heard_of(OUT_ADDR, "Plaintext", node.id)
    first, second = incoming_link(node), incoming_link(node)
    listed = listed_peers(second)
    assert len(listed) == exchange.PEERS_SENT
    ids = [peer_id for _, peer_id in listed]
    assert len(set(ids)) == len(ids) and second.peer_id not in ids and node.id not in ids
    assert all(address[0] != "10.2.0.2" for address, _ in listed)
    draws = {frozenset(peer_id for _, peer_id in listed_peers(incoming_link(node))) for _ in range(5)}
    assert len(draws) > 1, "the same peers every time: not drawn at random"
    assert first.peer_id is not None


def test_entries_of_a_peers_message_are_heard_of() -> None:
    """The nodes a peers message lists are remembered, to dial or tell of later; the node itself is not."""
    node, _, _ = make_node(max_outgoing=0)
    link = add_link(node)
    listed = [[["10.3.0.1", 1], new_node_id(MESH)], [list(OUT_ADDR), node.id.encode()]]
    node.message_received(link, arriving(flags.whisper, link.peer_id or "", (flags.peers, listed)))
    assert (("10.3.0.1", 1), "Plaintext") in node.peer_book and (OUT_ADDR, "Plaintext") not in node.peer_book


def test_trimming_closes_the_most_redundant_and_never_a_peer_with_no_other() -> None:
    """
    A node that keeps more incoming peers than max_incoming (a link that
    won a conflict, say) closes the links of the peers that listed the
    most others, never one that listed fewer than two; and counts it.
    """
    node, _, _ = make_node()
    node.max_incoming = 2
    lonely, busy, busier = (incoming_link(node) for _ in range(3))
    assert busier.closes  # turned away: the node is full
    for link, count in ((lonely, 1), (busy, 5)):
        entries = [[["10.4.0.1", 100 + i], new_node_id(MESH)] for i in range(count)]
        node.message_received(link, arriving(flags.whisper, link.peer_id or "", (flags.peers, entries)))
    node.max_incoming = 1
    node.exchange.trim()
    assert busy.closes and "trimmed" in busy.closes[0]
    assert not lonely.closes and node.stats.trimmed == 1
    node.max_incoming = 0
    node.exchange.trim()
    assert not lonely.closes, "a peer that may have no other was trimmed"


@pytest.fixture
def peers_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Peers messages are taken in the order listed, not shuffled."""
    monkeypatch.setattr(exchange.random, "shuffle", lambda peers: None)


@pytest.mark.usefixtures("peers_in_order")
def test_peers_dials_unknown_peers_only() -> None:
    """Not itself, not its own address, not connected IDs, not an address being dialled."""
    node, _, dialer = make_node(max_outgoing=10)
    a = add_link(node)
    assert a.peer_id is not None and a.peer_addr is not None
    new1, new2, new3 = (new_node_id(MESH) for _ in range(3))
    entries = [
        entry(("10.1.0.1", 1), node.id),  # itself
        entry(OUT_ADDR, new_node_id(MESH)),  # its own address
        entry(a.peer_addr, a.peer_id),  # connected
        entry(("10.1.0.2", 2), a.peer_id, as_bin=False),  # connected, str form
        entry(("10.1.0.3", 3), new1),
        entry(("10.1.0.4", 4), new2, as_bin=False),
        entry(("10.1.0.3", 3), new3),  # an address being dialled
        entry(("10.1.0.5", 5), new1),  # an ID being dialled
    ]
    node.message_received(a, peers_message(a.peer_id, entries))
    assert dialer.calls == [("10.1.0.3", 3), ("10.1.0.4", 4)]
    # A second peers message while these are pending dials nothing again.
    node.message_received(a, peers_message(a.peer_id, entries))
    assert len(dialer.calls) == 2
    assert not node.queue and a.take() == []


@pytest.mark.usefixtures("peers_in_order")
def test_peers_stops_at_max_outgoing() -> None:
    """Dialling stops at max_outgoing, counting outgoing links and pending dials."""
    node, _, dialer = make_node(max_outgoing=4)
    add_link(node, outgoing=True)
    add_link(node, outgoing=False)
    b = add_link(node, outgoing=False)
    assert b.peer_id is not None
    entries = [entry(("10.2.0.1", i), new_node_id(MESH)) for i in range(1, 7)]
    node.message_received(b, peers_message(b.peer_id, entries))
    assert dialer.calls == [("10.2.0.1", 1), ("10.2.0.1", 2), ("10.2.0.1", 3)]
    assert node.outgoing_count() == 4
    node.message_received(b, peers_message(b.peer_id, entries))
    assert len(dialer.calls) == 3

    # A failed dial frees its place: the next peers message dials one more.
    dialer.pending["10.2.0.1", 1].errback(ConnectionError("refused"))
    assert node.outgoing_count() == 3
    node.message_received(b, peers_message(b.peer_id, entries))
    assert dialer.calls[3:] == [("10.2.0.1", 1)]


def test_peers_are_dialled_in_random_order() -> None:
    """
    Nodes that get the same peers list do not all dial its first entries
    (which would make the oldest nodes of a mesh its hubs).
    """
    entries = [entry(("10.3.0.1", i), new_node_id(MESH)) for i in range(1, 9)]
    first_dialled = set()
    for _ in range(20):
        node, _, dialer = make_node(max_outgoing=1)
        b = add_link(node, outgoing=False)
        assert b.peer_id is not None
        node.message_received(b, peers_message(b.peer_id, entries))
        assert len(dialer.calls) == 1
        first_dialled.add(dialer.calls[0])
    # Twenty nodes all picking the same one of eight: one chance in 8**19.
    assert len(first_dialled) > 1


def test_peers_with_no_dialer_does_nothing() -> None:
    """A node without a dialer dials nothing."""
    node, _, _ = make_node()
    node.dialer = None
    a = add_link(node)
    assert a.peer_id is not None
    node.message_received(a, peers_message(a.peer_id, [entry(("10.3.0.1", 1), new_node_id(MESH))]))
    assert node.outgoing_count() == 0


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([["10.4.0.9", 9]], id="entry-short"),
        pytest.param([["10.4.0.9", 9], b"ID", 1], id="entry-long"),
        pytest.param("10.4.0.9:9", id="entry-str"),
        pytest.param([["10.4.0.9", 70000], b"ID"], id="port-out-of-range"),
        pytest.param([["10.4.0.9", 0], b"ID"], id="port-0"),
        pytest.param([["10.4.0.9", "9"], b"ID"], id="port-str"),
        pytest.param([["10.4.0.9"], b"ID"], id="address-short"),
        pytest.param(["10.4.0.9:9", b"ID"], id="address-str"),
        pytest.param([["10.4.0.9", 9], b""], id="id-empty"),
        pytest.param([["10.4.0.9", 9], b"\xff\xfe"], id="id-non-ascii"),
        pytest.param([["10.4.0.9", 9], 7], id="id-int"),
    ],
)
@pytest.mark.parametrize("where", [0, 1, 2])
def test_malformed_peers_entry_rejects_the_message(bad: Any, where: int) -> None:
    """One malformed entry anywhere: nothing is dialled at all."""
    node, _, dialer = make_node(max_outgoing=10)
    a = add_link(node)
    assert a.peer_id is not None
    entries: list[Any] = [entry(("10.4.0.1", 1), new_node_id(MESH)), entry(("10.4.0.2", 2), new_node_id(MESH))]
    entries.insert(where, bad)
    node.message_received(a, peers_message(a.peer_id, entries))
    assert dialer.calls == []


@pytest.mark.parametrize("entries", [b"not a list", {"a": 1}, None])
def test_malformed_peers_list_is_ignored(entries: Any) -> None:
    """A peers message whose table is not a list is ignored."""
    node, _, dialer = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    node.message_received(a, peers_message(a.peer_id, entries))
    assert dialer.calls == [] and not node.queue


def test_request_peers_in_each_links_form() -> None:
    """request_peers() whispers [request, b'*'] to bin links, [request, '*'] to str ones."""
    node, _, _ = make_node()
    bin_link = add_link(node)
    str_link = add_link(node, ids_as_bin=False)
    node.request_peers()
    (to_bin,) = bin_link.take()
    (to_str,) = str_link.take()
    assert to_bin.msg_type == to_str.msg_type == flags.whisper
    assert to_bin.payload == (flags.request, b"*") and to_bin.sender_is_bin
    assert to_str.payload == (flags.request, "*") and not to_str.sender_is_bin
    assert type(to_str.payload[1]) is str


@pytest.mark.parametrize("star", [b"*", "*"])
def test_request_for_peers_is_answered(star: str | bytes) -> None:
    """A [request, '*'] whisper is answered with the routing table."""
    node, _, _ = make_node()
    a = add_link(node)
    b = add_link(node)
    assert a.peer_id is not None and b.peer_id is not None and b.peer_addr is not None
    node.message_received(a, arriving(flags.whisper, a.peer_id, (flags.request, star)))
    (answer,) = a.take()
    assert answer.msg_type == flags.whisper
    assert answer.payload == (flags.peers, [entry(b.peer_addr, b.peer_id)])
    assert b.take() == [] and not node.queue


def test_requests_for_peers_are_answered_once_a_second() -> None:
    """A link's requests for peers get one answer a second, however many come."""
    node, clock, _ = make_node()
    a = add_link(node)
    add_link(node)
    assert a.peer_id is not None
    for _ in range(50):
        node.message_received(a, arriving(flags.whisper, a.peer_id, (flags.request, b"*")))
    assert [m.payload[0] for m in a.take()] == [flags.peers]
    clock.advance(PEERS_ANSWER_INTERVAL)
    node.message_received(a, arriving(flags.whisper, a.peer_id, (flags.request, b"*")))
    assert [m.payload[0] for m in a.take()] == [flags.peers]


@pytest.mark.parametrize("host", ["h" * (MAX_HOST_LENGTH + 1), b"h" * (MAX_HOST_LENGTH + 1), "", b""])
def test_parse_address_refuses_bad_hosts(host: str | bytes) -> None:
    """A host that is empty or longer than any DNS name is not an address."""
    assert parse_address([host, 4444]) is None


def test_parse_address_takes_the_longest_host() -> None:
    """A host of MAX_HOST_LENGTH characters, as str or bin, is read."""
    host = "h" * MAX_HOST_LENGTH
    assert parse_address([host, 4444]) == parse_address([host.encode(), 4444]) == (host, 4444)


def test_dialer_that_raises_fails_the_dial() -> None:
    """
    A dialer that raises at once (an address its endpoint refuses) fails the
    dial's Deferred; the address is not left marked as being dialled.
    """
    node, _, _ = make_node()

    def refusing(host: str, port: int, encryption: str) -> Deferred[str]:
        raise ValueError(f"bad host {host!r}")

    node.dialer = refusing
    failures: list[Failure] = []
    d = node.dial(("a#b", 4444))
    assert d is not None
    d.addErrback(failures.append)
    assert failures and failures[0].check(ValueError)
    assert node.outgoing_count() == 0
    again = node.dial(("a#b", 4444))
    assert again is not None
    again.addErrback(failures.append)
    assert len(failures) == 2


# -- connection conflicts ----------------------------------------------------

LOW = b58encode_int(10**100)
HIGH = b58encode_int(10**110)


def test_conflict_ids_are_ordered() -> None:
    """The IDs used below compare as intended."""
    assert b58decode_int(LOW) < b58decode_int(HIGH)


@pytest.mark.parametrize("outgoing_first", [True, False])
def test_conflict_our_id_higher_keeps_our_dial(outgoing_first: bool) -> None:
    """Our ID higher: the link we dialled (outgoing) is kept, the other closed."""
    node, _, _ = make_node(node_id=HIGH)
    first = FakeLink(LOW, addr=("10.5.0.1", 1), outgoing=outgoing_first)
    second = FakeLink(LOW, addr=("10.5.0.1", 1), outgoing=not outgoing_first)
    assert node.link_ready(first)
    kept = node.link_ready(second)
    outgoing, incoming = (first, second) if outgoing_first else (second, first)
    assert kept == (second is outgoing)
    assert node.routing_table == {LOW: outgoing}
    assert outgoing.closes == [] and len(incoming.closes) == 1


@pytest.mark.parametrize("outgoing_first", [True, False])
def test_conflict_our_id_lower_keeps_their_dial(outgoing_first: bool) -> None:
    """Our ID lower: the link the peer dialled (incoming) is kept, the other closed."""
    node, _, _ = make_node(node_id=LOW)
    first = FakeLink(HIGH, addr=("10.5.0.1", 1), outgoing=outgoing_first)
    second = FakeLink(HIGH, addr=("10.5.0.1", 1), outgoing=not outgoing_first)
    assert node.link_ready(first)
    kept = node.link_ready(second)
    outgoing, incoming = (first, second) if outgoing_first else (second, first)
    assert kept == (second is incoming)
    assert node.routing_table == {HIGH: incoming}
    assert incoming.closes == [] and len(outgoing.closes) == 1
    # Losing the closed link leaves the kept one in place.
    node.link_lost(outgoing)
    assert node.routing_table == {HIGH: incoming}


def test_conflict_both_sides_agree() -> None:
    """Each end applies the rule and keeps the same connection."""
    low, _, _ = make_node(node_id=LOW)
    high, _, _ = make_node(node_id=HIGH)
    # Connection 1 dialled by LOW, connection 2 dialled by HIGH.
    low_1, high_1 = FakeLink(HIGH, outgoing=True), FakeLink(LOW, outgoing=False)
    low_2, high_2 = FakeLink(HIGH, outgoing=False), FakeLink(LOW, outgoing=True)
    low.link_ready(low_1)
    high.link_ready(high_2)
    low.link_ready(low_2)
    high.link_ready(high_1)
    assert low.routing_table[HIGH] is low_2 and high.routing_table[LOW] is high_2
    assert low_1.closes and high_1.closes and not low_2.closes and not high_2.closes


@pytest.mark.parametrize("lower_first", [True, False])
def test_conflict_same_direction_both_ends_agree(lower_first: bool) -> None:
    """
    Two links dialled by one end, which the two ends see in either order:
    both keep the one from the lower port, and close the other.
    """
    dialler, _, _ = make_node(node_id=HIGH)
    accepter, _, _ = make_node(node_id=LOW)
    ports = (40001, 40002) if lower_first else (40002, 40001)
    out = [FakeLink(LOW, outgoing=True) for _ in ports]
    into = [FakeLink(HIGH, outgoing=False) for _ in ports]
    for link, port in (*zip(out, ports, strict=True), *zip(into, ports, strict=True)):
        link.port = port
    dialler.link_ready(out[0])
    dialler.link_ready(out[1])
    accepter.link_ready(into[1])  # the other end sees them the other way round
    accepter.link_ready(into[0])
    assert dialler.routing_table[LOW].dialler_port() == accepter.routing_table[HIGH].dialler_port() == 40001
    assert [bool(link.closes) for link in out] == [bool(link.closes) for link in into] == [not lower_first, lower_first]


def test_conflict_same_direction_keeps_the_first() -> None:
    """Two links in the same direction, without ports: the first stays, the new one is closed."""
    node, _, _ = make_node(node_id=HIGH)
    first, second = FakeLink(LOW, outgoing=True), FakeLink(LOW, outgoing=True)
    node.link_ready(first)
    assert not node.link_ready(second)
    assert node.routing_table == {LOW: first} and second.closes and not first.closes


@pytest.mark.parametrize("outgoing", [True, False])
def test_a_redial_replaces_a_lingering_link(outgoing: bool) -> None:
    """
    A peer that dials again long after its first link (which it lost, but
    which lingers here, half open) gets the new link, whatever its port; at
    the other end, a second dial that late replaces the first as well.
    """
    node, clock, _ = make_node(node_id=HIGH)
    old, new = FakeLink(LOW, outgoing=outgoing), FakeLink(LOW, outgoing=outgoing)
    old.port, new.port = 40001, 40002
    node.link_ready(old)
    clock.advance(routing.REDIAL_AFTER)
    assert node.link_ready(new)
    assert node.routing_table == {LOW: new} and old.closes and not new.closes


def test_a_closing_link_makes_way_for_a_new_one() -> None:
    """
    A peer that connects again while its old link is still closing (a TLS or
    WebSocket closing handshake) gets the new link; the old one, once gone,
    does not take the peer out of the routing table.
    """
    node, _, _ = make_node(node_id=HIGH)
    lost: list[object] = []
    node.peer_lost = lost.append
    old, new = FakeLink(LOW, outgoing=True), FakeLink(LOW, outgoing=True)
    node.link_ready(old)
    old.close("going")
    assert node.link_ready(new)
    assert node.routing_table == {LOW: new} and not new.closes
    node.link_lost(old)
    assert node.routing_table == {LOW: new} and not lost


# -- slow peers ---------------------------------------------------------------


def test_a_slow_peer_pauses_the_others() -> None:
    """While a peer is slow to read, the node reads from no other peer, and from all once it caught up."""
    node, _, _ = make_node()
    slow, b, c = (add_link(node) for _ in range(3))
    node.link_congested(slow)
    assert (slow.reading, b.reading, c.reading) == (True, False, False)
    node.link_drained(slow)
    assert (slow.reading, b.reading, c.reading) == (True, True, True)


def test_two_slow_peers_do_not_wait_on_each_other() -> None:
    """A peer that was paused for a slow one reads while it is slow itself, and waits again once it is not."""
    node, _, _ = make_node()
    first, second, other = (add_link(node) for _ in range(3))
    node.link_congested(first)
    node.link_congested(second)
    assert (first.reading, second.reading, other.reading) == (True, True, False)
    node.link_drained(second)
    assert (first.reading, second.reading, other.reading) == (True, False, False)
    node.link_drained(first)
    assert (first.reading, second.reading, other.reading) == (True, True, True)


def test_a_peer_that_joins_while_another_is_slow_waits() -> None:
    """A new peer is not read from while a peer is slow: it would feed the slow one."""
    node, _, _ = make_node()
    slow = add_link(node)
    node.link_congested(slow)
    joined = add_link(node)
    assert not joined.reading
    node.link_drained(slow)
    assert joined.reading


def test_losing_the_slow_peer_resumes_the_others() -> None:
    """A slow peer that leaves holds no one up."""
    node, _, _ = make_node()
    slow, other = add_link(node), add_link(node)
    node.link_congested(slow)
    node.link_lost(slow)
    assert other.reading


def test_drained_fires_once_no_peer_is_congested() -> None:
    """
    drained() fires at once while no peer is congested; else once the last
    congested peer caught up or left.  A cancelled one is forgotten.
    """
    node, _, _ = make_node()
    first, second = add_link(node), add_link(node)
    fired: list[object] = []
    node.drained().addCallback(fired.append)
    assert fired == [None]
    node.link_congested(first)
    node.link_congested(second)
    waiting = node.drained()
    waiting.addCallback(fired.append)
    cancelled = node.drained()
    cancelled.addErrback(lambda failure: fired.append(failure.type))
    cancelled.cancel()
    assert fired == [None, CancelledError]
    node.link_drained(first)
    assert fired == [None, CancelledError]
    node.link_lost(second)
    assert fired == [None, CancelledError, None]


# -- replies -------------------------------------------------------------------


def test_reply_to_a_connected_sender() -> None:
    """A reply to a peer is a [whisper, *packets] whisper on its link (which writes it in the peer's form)."""
    node, _, _ = make_node()
    a = add_link(node, ids_as_bin=False)
    b = add_link(node)
    assert a.peer_id is not None
    node.message_received(a, broadcast(a.peer_id, "ping", as_bin=False))
    b.take()
    msg = node.recv()
    assert isinstance(msg, Message)
    msg.reply("pong", 1)
    (sent,) = a.take()
    assert sent.msg_type == flags.whisper
    assert sent.sender == node.id
    assert sent.payload == (flags.whisper, "pong", 1)
    assert b.take() == []


def unreachable_reply(node: MeshNode, links: list[FakeLink], target: str) -> str:
    """Reply to a broadcast of ``target``, a node not connected: return the request ID."""
    node.message_received(links[0], broadcast(target, "ping"))
    for link in links:
        link.take()
    msg = node.recv()
    assert isinstance(msg, Message)
    msg.reply("pong")
    requests = [link.take() for link in links]
    assert all(len(sent) == 1 for sent in requests)
    request = requests[0][0]
    assert all(sent[0] is request for sent in requests)
    assert request.msg_type == flags.broadcast and request.sender == node.id
    assert request.payload[0] == flags.request and request.payload[2] == target.encode()
    request_id = request.payload[1]
    assert isinstance(request_id, str) and request_id
    # It is in the seen-set: coming back, it is dropped.
    node.message_received(links[1], again(request, True))
    assert all(link.take() == [] for link in links)
    return request_id


def response(sender: str, request_id: Any, address: Address, target: str, *, time: int = START) -> WireMessage:
    """A response broadcast naming ``target``'s address."""
    return arriving(flags.broadcast, sender, (flags.response, request_id, [list(address), target.encode()]), time=time)


def test_reply_through_a_request_and_response() -> None:
    """Unknown sender: request broadcast, response, dial, then the reply on the new link."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)

    address = ("10.6.0.1", 6000)
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert dialer.calls == [address]
    assert len(links[0].take()) == 1  # the response is relayed on

    new = FakeLink(target, addr=address, outgoing=True)
    node.link_ready(new)
    peers, sent = new.take()
    assert peers.payload[0] == flags.peers
    assert sent.msg_type == flags.whisper and sent.payload == (flags.whisper, "pong")
    dialer.pending[address].callback(target)
    assert new.take() == []
    assert all(link.take() == [] for link in links)

    # The request is answered once only: a second response is just relayed.
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert [m.payload[0] for m in new.take()] == [flags.response]
    assert dialer.calls == [address]


def test_two_replies_to_one_unconnected_sender_both_arrive() -> None:
    """A second reply whose response comes while the first one's dial is under way goes on the same link."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    first = unreachable_reply(node, links, target)
    node.reply(target, ("pong",))
    (request,) = links[0].take()
    second = request.payload[1]
    assert request.payload[0] == flags.request and second != first
    address = ("10.6.0.9", 6000)
    for request_id in (first, second):
        node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert dialer.calls == [address]
    new = FakeLink(target, addr=address, outgoing=True)
    node.link_ready(new)
    dialer.pending[address].callback(target)
    replies = [m.payload for m in new.take() if m.payload[0] == flags.whisper]
    assert replies == [(flags.whisper, "pong"), (flags.whisper, "pong")]


def test_a_reply_expires_with_its_request() -> None:
    """A response that comes after the message lifetime dials no one and sends nothing."""
    node, clock, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    clock.advance(MESSAGE_LIFETIME + 1)
    address = ("10.6.0.7", 6000)
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target, time=int(clock.seconds())))
    assert dialer.calls == []
    assert not node.replies.requests and not node.replies.waiting


def test_a_reply_waiting_for_a_link_expires() -> None:
    """A reply whose dial never ends is not sent on a link that comes after the lifetime."""
    node, clock, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    address = ("10.6.0.8", 6000)
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert dialer.calls == [address]
    clock.advance(MESSAGE_LIFETIME + 1)
    new = FakeLink(target, addr=address, outgoing=True)
    node.link_ready(new)
    dialer.pending[address].callback(target)
    assert [m.payload[0] for m in new.take()] == [flags.peers]


def test_reply_dial_reaching_another_node_drops_the_reply() -> None:
    """The dialled address turning out to be another node: no reply is sent."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    address = ("10.6.0.2", 6000)
    node.message_received(links[0], response(new_node_id(MESH), request_id, address, target))
    impostor = add_link(node, outgoing=True)
    assert impostor.peer_id is not None
    dialer.pending[address].callback(impostor.peer_id)
    assert impostor.take() == []


def test_reply_dial_failing_sends_nothing() -> None:
    """A failed dial for a reply is logged and nothing is sent."""
    node, _, dialer = make_node()
    events = capture(node)
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    address = ("10.6.0.3", 6000)
    node.message_received(links[0], response(new_node_id(MESH), request_id, address, target))
    links[1].take()
    dialer.pending[address].errback(ConnectionError("refused"))
    assert all(link.take() == [] for link in links)
    assert any("could not reach" in event.get("log_format", "") for event in events)


def test_reply_when_the_target_connected_meanwhile() -> None:
    """The target connected before the response: the reply goes straight to it."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    new = add_link(node, peer_id=target)
    node.message_received(links[0], response(new_node_id(MESH), request_id, ("10.6.0.4", 1), target))
    assert dialer.calls == []
    sent = [m for m in new.take() if m.msg_type == flags.whisper]
    assert [m.payload for m in sent] == [(flags.whisper, "pong")]


def reply_to(node: MeshNode, links: list[FakeLink], target: str) -> tuple[SendResult, str]:
    """Reply to a broadcast of ``target``, a node not connected: the reply's result and its request ID."""
    node.message_received(links[0], broadcast(target, "ping"))
    msg = node.recv()
    assert isinstance(msg, Message)
    for link in links:
        link.take()
    result = msg.reply("pong")
    (request,) = links[0].take()
    return result, request.payload[1]


def settled(result: SendResult) -> list[SendResult]:
    """What the result's settled() fired with so far."""
    fired: list[SendResult] = []
    result.settled().addCallback(fired.append)
    return fired


def test_a_reply_to_a_peer_says_where_it_went() -> None:
    """A reply to a peer is queued, or skipped with the link's reason; either way it is settled at once."""
    node, _, _ = make_node()
    peer = add_link(node)
    assert peer.peer_id is not None
    node.message_received(peer, broadcast(peer.peer_id, "ping"))
    msg = node.recv()
    assert isinstance(msg, Message)
    result = msg.reply("pong")
    assert result.queued == [peer.peer_id] and result and settled(result) == [result]
    peer.refusal = "the send buffer is full"
    refused = msg.reply("pong again")
    assert refused.skipped == {peer.peer_id: "the send buffer is full"} and not refused


def test_a_reply_with_no_peer_to_ask_is_skipped() -> None:
    """With no peer at all, a reply to a node not connected is skipped at once, and says why."""
    node, _, _ = make_node()
    target = new_node_id(MESH)
    result = node.reply(target, ("pong",))
    assert not result.pending and "nor to any node to ask" in result.skipped[target]


def test_a_reply_that_goes_once_its_target_is_reached_settles_queued() -> None:
    """A pending reply, sent on the link dialled for it: its result moves the target to queued."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    result, request_id = reply_to(node, links, target)
    assert result.pending == (target,) and not result
    fired = settled(result)
    address = ("10.6.1.1", 6000)
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert fired == []
    node.link_ready(FakeLink(target, addr=address, outgoing=True))
    assert fired == [result] and result.queued == [target] and not result.pending


def test_a_reply_no_node_answers_for_is_given_up_after_the_lifetime() -> None:
    """No response within the message lifetime: the result settles with the target skipped, and the log says so."""
    node, clock, _ = make_node()
    events = capture(node)
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    result, _ = reply_to(node, links, target)
    fired = settled(result)
    clock.advance(MESSAGE_LIFETIME - 1)
    assert fired == []
    clock.advance(1)
    assert fired == [result] and "no node gave the address" in result.skipped[target]
    assert not node.replies.requests and not clock.getDelayedCalls()
    assert any("was given up" in event.get("log_format", "") for event in events)


def test_a_reply_whose_dial_fails_is_given_up_with_the_reason() -> None:
    """The dial for a reply fails: its result settles with the target skipped, naming the address."""
    node, clock, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    result, request_id = reply_to(node, links, target)
    fired = settled(result)
    node.message_received(links[0], response(new_node_id(MESH), request_id, ("10.6.1.2", 6000), target))
    dialer.pending["10.6.1.2", 6000].errback(ConnectionError("refused"))
    assert fired == [result] and "could not connect to 10.6.1.2:6000" in result.skipped[target]
    assert not clock.getDelayedCalls()


def test_the_oldest_pending_reply_past_the_limit_is_given_up() -> None:
    """Past max_pending_replies, the oldest waiting reply is given up, and its result says so."""
    node, _, _ = make_node(limits=Limits(max_pending_replies=1))
    links = [add_link(node), add_link(node)]
    first, _ = reply_to(node, links, new_node_id(MESH))
    second, _ = reply_to(node, links, new_node_id(MESH))
    assert not first.pending and "max_pending_replies (1)" in next(iter(first.skipped.values()))
    assert second.pending


def test_closing_the_node_gives_up_waiting_replies_and_receivers() -> None:
    """Closing: waiting replies settle as skipped, next_message() fails, send() and reply() raise."""
    node, clock, _ = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    result, _ = reply_to(node, links, target)
    waiting = node.next_message()
    failures: list[Failure] = []
    waiting.addErrback(failures.append)
    node.close("the node is closed")
    assert "the node closed" in result.skipped[target] and not clock.getDelayedCalls()
    assert len(failures) == 1 and failures[0].check(MeshClosed)
    with pytest.raises(MeshClosed):
        node.send(("x",))
    with pytest.raises(MeshClosed):
        node.reply(target, ("x",))
    node.open()
    assert node.send(("back",))


def test_response_for_an_unknown_request_does_nothing() -> None:
    """A response to no request of ours: relayed, but no dial and no reply."""
    node, _, dialer = make_node()
    a, b = add_link(node), add_link(node)
    target = new_node_id(MESH)
    node.message_received(a, response(new_node_id(MESH), "NoSuchRequest", ("10.6.0.5", 1), target))
    assert dialer.calls == []
    assert [m.payload[0] for m in b.take()] == [flags.response]
    assert a.take() == [] and not node.queue


def test_response_naming_another_target_is_ignored() -> None:
    """A response whose target is not the one asked for: no dial."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    node.message_received(links[0], response(new_node_id(MESH), request_id, ("10.6.0.6", 1), new_node_id(MESH)))
    assert dialer.calls == []


def test_request_is_answered_by_a_node_with_the_target() -> None:
    """A node connected to the target answers a request with the target's address."""
    node, _, _ = make_node()
    requester_side = add_link(node)
    target_link = add_link(node)
    assert target_link.peer_id is not None and target_link.peer_addr is not None
    requester = new_node_id(MESH)
    request = arriving(flags.broadcast, requester, (flags.request, "Req1", target_link.peer_id.encode()))
    node.message_received(requester_side, request)
    to_requester = requester_side.take()
    to_target = target_link.take()
    assert to_target[0] is request  # relayed on
    (answer,) = to_requester
    assert to_target[1:] == [answer]
    assert answer.msg_type == flags.broadcast and answer.sender == node.id
    assert answer.payload == (flags.response, "Req1", [list(target_link.peer_addr), target_link.peer_id.encode()])
    assert not node.queue
    # The answer is recorded: it is dropped when it comes back.
    node.message_received(target_link, again(answer, False))
    assert requester_side.take() == []


def test_request_names_only_an_address_of_the_askers_transport() -> None:
    """A bridge does not answer with a TCP address a WebSocket peer cannot dial."""
    node, _, _ = make_node()
    asker = add_link(node)
    asker.encryption = "ws"
    target = add_link(node)
    assert target.peer_id is not None
    request = arriving(flags.broadcast, new_node_id(MESH), (flags.request, "R", target.peer_id.encode()))
    node.message_received(asker, request)
    assert asker.take() == []
    assert [m.payload[0] for m in target.take()] == [flags.request]


def test_request_for_an_unknown_target_is_not_answered() -> None:
    """A node without the target relays the request and answers nothing."""
    node, _, _ = make_node()
    a, b = add_link(node), add_link(node)
    node.message_received(a, arriving(flags.broadcast, new_node_id(MESH), (flags.request, "R", b"Unknown")))
    assert [m.payload[0] for m in b.take()] == [flags.request]
    assert a.take() == []


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
    clock = task.Clock()
    clock.advance(START)
    node = MeshNode(MESH, clock, out_addr=OUT_ADDR, limits=Limits(max_frame_size=1000))
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
    clock = task.Clock()
    clock.advance(START)
    node = MeshNode(MESH, clock, out_addr=OUT_ADDR, limits=Limits(max_depth=4, max_items=50))
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
