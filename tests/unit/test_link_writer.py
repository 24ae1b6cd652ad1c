"""
`.LinkProtocol`, one link: how it writes (frames gathered per turn,
`.MAX_GATHERED`, withdrawn, sent at once) and back-pressure from a full
transport.
"""

from __future__ import annotations

import sys
from typing import Any, cast

import pytest
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.python.failure import Failure

from tests.support import MESH
from tests.unit.link_rig import Rig, Side, connected, handshake, message, renegotiate, watched_by
from twisted_mesh import flags
from twisted_mesh._core.node import MeshNode
from twisted_mesh._ids import new_node_id
from twisted_mesh._link import LinkFactory
from twisted_mesh._link import writer as writer_module
from twisted_mesh._link.writer import MAX_GATHERED, WITHDRAW_WINDOW, LinkWriter, WriteBatch
from twisted_mesh._stats import LinkStats
from twisted_mesh._websocket.stream import GatheringProtocol
from twisted_mesh.limits import Limits

# -- writing -------------------------------------------------------------------


def count_writes(transport: StringTransport) -> list[bytes]:
    """Keep each write made to ``transport``, as it goes on writing."""
    writes: list[bytes] = []
    write = transport.write

    def counted(data: bytes) -> None:
        writes.append(data)
        write(data)

    transport.write = counted  # type: ignore[method-assign]
    return writes


def test_frames_sent_in_one_turn_are_written_at_its_end_in_one_write() -> None:
    """
    Messages sent outside a read (a user's sends) are written when the
    reactor's turn ends, all of them in one write, in order; and counted then.
    """
    side = connected()
    writes = count_writes(side.transport)
    stats = side.proto.stats
    frames_before, bytes_before = stats.frames_out, stats.bytes_out
    node_id = side.proto._node.id
    sent = [message(node_id, flags.broadcast, flags.broadcast, i) for i in range(5)]
    for msg in sent:
        assert side.proto.send(msg) is None
    assert writes == [] and stats.frames_out == frames_before
    side.clock.advance(0)
    assert writes == [b"".join(msg.frame(True, None) for msg in sent)]
    assert (stats.frames_out, stats.bytes_out) == (frames_before + 5, bytes_before + len(writes[0]))
    assert side.bodies() == [msg.body_in(True) for msg in sent]


def test_a_link_writes_once_it_gathered_max_gathered_bytes() -> None:
    """
    Frames are not gathered past MAX_GATHERED bytes: then they are written at
    once (so that the transport can tell a sender that the peer is slow),
    the rest at the end of the turn.
    """
    side = connected(codes=[])
    writes = count_writes(side.transport)
    node_id = side.proto._node.id
    sent = [message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 1000) for i in range(100)]
    size = len(sent[0].frame(True, None))
    for msg in sent:
        side.proto.send(msg)
    per_write = -(-MAX_GATHERED // size)  # the frames that reach the limit
    assert [len(data) for data in writes] == [per_write * size] * (len(sent) // per_write)
    side.clock.advance(0)
    assert b"".join(writes) == b"".join(msg.frame(True, None) for msg in sent)
    assert len(writes) == -(-len(sent) // per_write)


class FillingTransport(StringTransport):
    """A transport that tells its producer to pause once it holds ``most`` bytes."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) >= self.most and self.producer is not None:
            self.producer.pauseProducing()


def test_closing_a_link_its_last_frames_fill_does_not_pause_the_others() -> None:
    """
    A link closed in the turn its user sent it frames writes them first; when
    they fill its transport, the congestion they make ends with the close:
    the node goes on reading from its other peers.
    """
    rig = Rig()
    other = connected(rig)
    proto = LinkFactory(rig.node, False, rig.connections, batch=rig.batch).buildProtocol(None)
    transport = FillingTransport(most=4096)
    proto.makeConnection(transport)
    side = Side(proto, transport, rig.clock)
    side.feed(handshake(new_node_id(MESH), codes=[]))
    side.clear()
    msg = message(rig.node.id, flags.whisper, flags.whisper, b"x" * 5000)
    assert side.proto.send(msg) is None
    side.proto.close("done with it", error=False)
    assert msg.frame(True, None) in transport.value()
    assert not rig.node.routing.congested
    assert other.transport.producerState == "producing"


class PausingTransport(StringTransport):
    """
    A transport that holds what is written until `.drain`, and tells its
    producer to pause while it holds more than ``most`` bytes, as Twisted's
    TCP transport does.
    """

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most
        self.held = 0
        self.paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.held += len(data)
        if self.held > self.most and not self.paused and self.producer is not None:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The peer read everything: empty the buffer, and ask the producer for more."""
        self.held = 0
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()


def paused_link(rig: Rig, **limits: Any) -> tuple[Side, PausingTransport]:
    """A handshaken link, with ``limits``, whose transport pauses past 64 kB."""
    rig.node.limits = Limits(**limits)
    proto = LinkFactory(rig.node, False, rig.connections, batch=rig.batch).buildProtocol(None)
    transport = PausingTransport(most=64 * 1024)
    proto.makeConnection(transport)
    side = Side(proto, transport, rig.clock)
    side.feed(handshake(new_node_id(MESH), codes=[]))
    side.clear()
    return side, transport


def test_frames_wait_in_the_link_while_the_transport_is_full() -> None:
    """
    Once the transport is full, frames wait in the link, and the node hears
    that the peer is congested; when the transport asks for more, they go
    out in writes of about MAX_GATHERED bytes until it is full again, and
    when all are out the congestion ends.  Nothing is lost or reordered.
    """
    rig = Rig()
    other = connected(rig)
    side, transport = paused_link(rig)
    node_id = rig.node.id
    sent = [message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 1000) for i in range(300)]
    for msg in sent:
        assert side.proto.send(msg) is None
    rig.clock.advance(0)
    assert transport.paused and rig.node.routing.congested == {side.proto}
    assert other.transport.producerState == "paused"
    held = len(transport.value())
    assert held <= 2 * MAX_GATHERED + 1100, held
    rig.clock.advance(0)
    assert len(transport.value()) == held, "the link wrote to a full transport"
    writes = count_writes(transport)
    transport.drain()
    assert transport.paused and writes and all(len(data) <= MAX_GATHERED + 1100 for data in writes)
    while transport.paused:
        transport.drain()
    assert not rig.node.routing.congested and other.transport.producerState == "producing"
    assert side.bodies() == [msg.body_in(True) for msg in sent]


def test_own_messages_past_max_send_buffer_are_skipped_with_a_reason() -> None:
    """
    More than max_send_buffer bytes waiting for a peer: a new message is not
    queued; send() says why, and the limit is counted; once the peer read,
    messages are queued again.
    """
    rig = Rig()
    side, transport = paused_link(rig, max_send_buffer=200_000)
    node_id = rig.node.id
    results = [side.proto.send(message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 10_000)) for i in range(40)]
    refused = [i for i, result in enumerate(results) if result is not None]
    assert refused and refused == list(range(refused[0], 40))
    assert results[refused[0]] is not None and "max_send_buffer (200000)" in results[refused[0]]
    assert rig.node.stats.limit_hits["max_send_buffer"] == len(refused)
    assert side.proto._writer.unwritten_size <= 200_000 + 10_100
    while transport.paused:
        transport.drain()
    assert side.proto.send(message(node_id, flags.broadcast, flags.broadcast, "again")) is None


def test_a_peer_that_makes_progress_is_not_cut_off() -> None:
    """
    A congested peer that keeps reading (its transport asks for more now and
    then) stays, however long it is congested; one that reads nothing for
    congestion_timeout is cut off, and what waited for it is dropped.
    """
    rig = Rig()
    side, transport = paused_link(rig, congestion_timeout=5)
    node_id = rig.node.id
    for i in range(2000):
        side.proto.send(message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 1000))
    rig.clock.advance(0)
    for _ in range(10):
        rig.clock.advance(4)
        transport.drain()
        assert transport.paused and not side.closed
    assert not rig.node.stats.limit_hits
    rig.clock.advance(5)
    assert rig.node.stats.limit_hits["congestion_timeout"] == 1
    assert side.closed and side.proto._writer.unwritten == []


def test_a_link_closed_while_its_transport_is_full_writes_what_waited() -> None:
    """
    What send() queued is written unless the connection is lost: a link
    closed (not aborted) while frames wait hands them all to the transport,
    which writes them before it closes.
    """
    rig = Rig()
    side, transport = paused_link(rig)
    sent = [message(rig.node.id, flags.broadcast, flags.broadcast, i, b"x" * 1000) for i in range(300)]
    for msg in sent:
        side.proto.send(msg)
    rig.clock.advance(0)
    side.proto.close("done", error=False)
    assert side.closed and not rig.node.routing.congested
    assert side.bodies() == [msg.body_in(True) for msg in sent]


def test_a_lost_link_writes_nothing_more() -> None:
    """
    Frames gathered past MAX_GATHERED are written at once; the end of the
    turn, when the connection was lost meanwhile, writes nothing more.
    """
    side = connected(codes=[])
    writes = count_writes(side.transport)
    node_id = side.proto._node.id
    for i in range(70):
        side.proto.send(message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 1000))
    assert len(writes) == 1
    side.proto.connectionLost(Failure(ConnectionDone()))
    side.clock.advance(0)
    assert len(writes) == 1 and not side.clock.getDelayedCalls()


def test_frames_of_a_turn_and_of_a_read_in_it_keep_their_order() -> None:
    """
    A frame sent in a turn, then one written in a read of the same turn (the
    answer to a resend): both go out at the end of the turn, in that order.
    """
    side = connected(codes=[])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    writes = count_writes(side.transport)
    msg = message(side.proto._node.id, flags.whisper, flags.whisper, "first")
    side.proto.send(msg)
    side.feed(renegotiate(peer_id, flags.resend))
    assert writes == []
    assert side.bodies() == [msg.body_in(True)] * 2
    assert len(writes) == 1


def test_a_closing_link_writes_what_it_gathered_first() -> None:
    """Frames sent in the turn a link is closed in are written before it closes."""
    side = connected()
    writes = count_writes(side.transport)
    msg = message(side.proto._node.id, flags.broadcast, flags.broadcast, "last words")
    side.proto.send(msg)
    side.proto.close("done", error=False)
    assert writes == [msg.frame(True, None)] and side.closed
    side.clock.advance(0)
    assert writes == [msg.frame(True, None)]


def test_a_link_is_a_gathering_protocol() -> None:
    """The WebSocket adapter tells a link to write what it gathered when the peer closes."""
    side = connected()
    assert isinstance(side.proto, GatheringProtocol)
    side.proto.send(message(side.proto._node.id, flags.whisper, flags.whisper, "last"))
    assert side.transport.value() == b""
    side.proto.flush()
    assert side.transport.value() != b""


# -- withdrawing a frame the peer has ---------------------------------------------


def test_a_frame_withdrawn_before_the_end_of_the_turn_is_not_written() -> None:
    """
    A message withdrawn in the turn it was sent in (the peer sent it too)
    is not written, nor counted; the others are, in order.  Once the turn
    has ended there is nothing to withdraw.
    """
    side = connected()
    writes = count_writes(side.transport)
    node_id = side.proto._node.id
    frames_before = side.proto.stats.frames_out
    sent = [message(node_id, flags.broadcast, flags.broadcast, i) for i in range(3)]
    for msg in sent:
        side.proto.send(msg)
    assert side.proto.withdraw(sent[1]) is True
    assert side.proto.withdraw(sent[1]) is False
    side.clock.advance(0)
    assert writes == [sent[0].frame(True, None) + sent[2].frame(True, None)]
    assert side.proto.stats.frames_out == frames_before + 2
    assert side.proto.withdraw(sent[0]) is False


def test_a_frame_is_looked_for_among_the_last_gathered_only() -> None:
    """Past WITHDRAW_WINDOW later frames, a frame is not looked for: it is written."""
    side = connected()
    node_id = side.proto._node.id
    sent = [message(node_id, flags.broadcast, flags.broadcast, i) for i in range(WITHDRAW_WINDOW + 1)]
    for msg in sent:
        side.proto.send(msg)
    assert side.proto.withdraw(sent[0]) is False
    assert side.proto.withdraw(sent[1]) is True
    assert side.bodies() == [msg.body_in(True) for msg in sent if msg is not sent[1]]


# -- sending at once -------------------------------------------------------------


class SocketConnection(FileDescriptor):
    """A connection of a reactor's sockets whose socket takes all it is given (or nothing)."""

    def __init__(self, reactor: MemoryReactor) -> None:
        super().__init__(reactor)
        self.connected = True
        # How many bytes its socket takes at a time; whether its sends fail.
        self.takes = sys.maxsize
        self.failing = False
        self.sent: list[bytes] = []

    def writeSomeData(self, data: bytes) -> int | BaseException:
        if self.failing:
            return ConnectionLost("the peer reset the connection")
        taken = bytes(data[: self.takes])
        if taken:
            self.sent.append(taken)
        return len(taken)


class OpenLink:
    """What a writer needs of a link: one with a peer, open."""

    closing = False
    peer_id = "peer"

    def close(self, reason: str, **kwargs: Any) -> None:
        self.closing = True


def socket_writer(reactor: MemoryReactor | None = None) -> tuple[LinkWriter, SocketConnection, Clock]:
    """A link's writer on a connection of ``reactor``'s sockets, and the clock of its turns."""
    clock = Clock()
    connection = SocketConnection(reactor or MemoryReactor())
    writer = LinkWriter(OpenLink(), MeshNode(MESH, clock), WriteBatch(clock), LinkStats())  # type: ignore[arg-type]
    writer.start(connection, connection)
    return writer, connection, clock


def watching(connection: SocketConnection) -> bool:
    """Whether the reactor watches ``connection``'s socket for writing."""
    return connection in connection.reactor.getWriters()


def test_what_a_turn_gathered_is_sent_at_its_end_not_at_the_reactors_next_look() -> None:
    """
    At the end of the turn, the TCP connection sends what was written to it
    at once: the reactor need not look at its socket for it.
    """
    writer, connection, clock = socket_writer()
    writer.write(b"one")
    writer.write(b"two")
    assert connection.sent == []
    clock.advance(0)
    assert connection.sent == [b"onetwo"]
    assert not watching(connection)


def test_a_socket_that_takes_it_all_is_never_watched_for_writing() -> None:
    """
    What a turn gathered goes straight to the socket when the connection
    holds nothing unsent: the reactor is not asked to watch the socket
    (and to stop again), which costs two system calls a write.
    """
    reactor = MemoryReactor()
    watched = watched_by(reactor)
    writer, connection, clock = socket_writer(reactor)
    for frame in (b"one", b"two", b"three"):
        writer.write(frame)
        clock.advance(0)
    assert connection.sent == [b"one", b"two", b"three"]
    assert watched == []


def test_what_the_socket_leaves_goes_first_when_it_takes_more() -> None:
    """
    A send the socket takes in part: the rest waits in the connection, and
    the reactor watches the socket for it; what the next turn writes goes
    behind it, not straight to the socket, until the reactor sent it all.
    """
    writer, connection, clock = socket_writer()
    connection.takes = 2
    writer.write(b"one")
    clock.advance(0)
    assert connection.sent == [b"on"] and watching(connection)
    connection.takes = 0
    writer.write(b"two")
    clock.advance(0)
    assert connection.sent == [b"on"]
    connection.takes = sys.maxsize
    connection.doWrite()  # the reactor's look
    assert connection.sent == [b"on", b"etwo"] and not watching(connection)
    writer.write(b"three")
    clock.advance(0)
    assert connection.sent == [b"on", b"etwo", b"three"] and not watching(connection)


def test_a_send_that_fails_is_left_to_the_reactor() -> None:
    """The socket's send fails: what was written waits, and the reactor's look at the socket finds the error."""
    writer, connection, clock = socket_writer()
    connection.failing = True
    writer.write(b"one")
    clock.advance(0)
    assert watching(connection)
    assert isinstance(connection.doWrite(), ConnectionLost)


def test_what_the_socket_does_not_take_is_left_to_the_reactor() -> None:
    """A socket that takes nothing now: the data stays buffered, and the reactor watches the socket for it."""
    writer, connection, clock = socket_writer()
    connection.takes = 0
    writer.write(b"one")
    clock.advance(0)
    assert connection.sent == [] and watching(connection)
    connection.takes = sys.maxsize
    connection.doWrite()  # the reactor's look
    assert connection.sent == [b"one"] and not watching(connection)


def test_a_connection_closing_is_left_to_the_reactor() -> None:
    """A connection told to close sends when the reactor looks, which then closes it."""
    writer, connection, clock = socket_writer()
    writer.write(b"one")
    connection.disconnecting = True
    clock.advance(0)
    assert connection.sent == [] and watching(connection)


class FailingTransport(StringTransport):
    """A transport whose writes fail."""

    def write(self, data: bytes) -> None:
        raise RuntimeError("the transport failed")


def test_a_link_failing_at_the_end_of_the_turn_does_not_hold_up_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """One link's write fails at the end of the turn: logged, and the other links write all the same."""
    clock = Clock()
    node, batch = MeshNode(MESH, clock), WriteBatch(clock)
    failing, working = FailingTransport(), StringTransport()
    first = LinkWriter(OpenLink(), node, batch, LinkStats())  # type: ignore[arg-type]
    second = LinkWriter(OpenLink(), node, batch, LinkStats())  # type: ignore[arg-type]
    first.start(failing, None)
    second.start(working, None)
    first.write(b"to the first")
    second.write(b"to the second")
    events: list[LogEvent] = []
    monkeypatch.setattr(writer_module, "_log", Logger(observer=cast(ILogObserver, events.append)))
    clock.advance(0)
    assert working.value() == b"to the second"
    assert [event["log_failure"].check(RuntimeError) for event in events if "log_failure" in event] == [RuntimeError]
