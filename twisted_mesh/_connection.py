"""
The link to one peer: framing, handshake, the peer's ID form and
compression, renegotiation.

`.MeshProtocol` reads frames from any stream transport (TCP, TLS, or the
byte stream that WebSocket messages carry) and hands the node what is not
the link's own business.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_mesh import _compression, flags
from twisted_mesh._admission import Slot, source_of
from twisted_mesh._frames import ChecksumError, FrameError, FrameReader, FrameTooLarge, WireMessage
from twisted_mesh._ids import id_text, is_node_id, protocol_id
from twisted_mesh._node import Address, MeshNode, parse_address
from twisted_mesh._stats import LinkStats
from twisted_mesh.errors import HandshakeFailed, ProtocolMismatch, SelfConnection

#: Seconds a closing connection has to finish its closing handshake.
CLOSE_TIMEOUT = 10.0

#: TCP keepalive on every link: probes after this many idle seconds, this
#: many seconds apart, this many times; and unacknowledged data gives up
#: after this many milliseconds.  A peer cut off silently is noticed in
#: about 30 s, not the kernel's default two hours.
TCP_KEEPALIVE = (15, 5, 3)
TCP_USER_TIMEOUT = 30_000


def _tune_tcp(transport: object) -> None:
    """
    Send small frames at once (no Nagle delay) and notice dead peers, on a
    TCP connection or one wrapped in TLS or WebSocket; other transports
    (unix sockets, in-memory ones) are left as they are.
    """
    # Down through TLS and WebSocket wrappers to the socket, if any.
    handle: object = None
    for _ in range(4):
        if transport is None:
            return
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            break
        transport = getattr(transport, "transport", None)
    if not isinstance(handle, socket.socket) or handle.family not in (socket.AF_INET, socket.AF_INET6):
        return
    handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = TCP_KEEPALIVE
    options = [("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)]
    options.append(("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT))
    for name, value in options:
        if hasattr(socket, name):
            try:
                handle.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            except OSError:
                pass


#: Frames in a row that may fail their checksum before the link is closed.
MAX_BAD_FRAMES = 3

#: Seconds a dialler waits for the first word of the node dialled before it
#: sends its handshake all the same (see MeshProtocol.connectionMade).
FIRST_WORD_WAIT = 1.0

#: Bytes of an incomplete frame held for a peer whose handshake has not come
#: (a handshake takes a few hundred): past it the connection is closed, so
#: that unidentified connections cannot hold a frame limit's worth each.
MAX_UNIDENTIFIED_BUFFER = 64 * 1024

#: The most bytes of frames a link gathers before it writes them (see
#: MeshProtocol._write): as much as a TCP transport buffers before it tells
#: its producer to pause, so that a sender looking at that hears of a slow
#: peer in time.
MAX_GATHERED = 64 * 1024

#: While a link handles what one read brought, the links that frames were
#: written to: each writes what it gathered in one go when the read is
#: handled.  One for the process: a reactor handles one read at a time, in
#: its own thread.
_written_in_read: list[MeshProtocol] | None = None


@implementer(IPushProducer)
class MeshProtocol(Protocol):
    """
    One connection to a peer: a `.twisted_mesh._node.Link` for the node.

    :ivar peer_id: the peer's node ID, once its handshake arrived.
    :ivar peer_addr: the address the peer asks others to dial.
    :ivar peer_codes: the compression codes the peer listed.
    :ivar outgoing: whether this node dialled the connection.
    :ivar ids_as_bin: whether the peer writes IDs as bin (else as str).
    :ivar encryption: the transport of this link; its handshake carries the
        protocol ID of the node's subnet over this transport.
    :ivar expected_id: the ID of the peer dialled for, if it is known: a
        handshake with another ID fails.
    :ivar handshake_done: fires with the peer's ID once its handshake is
        accepted, or fails with `.ProtocolMismatch` or `.HandshakeFailed`.
    :ivar closed: fires once the connection is closed.
    :ivar stats: what crossed this link.
    :ivar slot: the connection's place among the node's, once it is made
        (see `.twisted_mesh._admission`); a WebSocket link is given, before
        it is connected, the one its connection took when it was accepted.
    """

    _log = Logger()

    def __init__(self, factory: MeshFactory) -> None:
        self.factory = factory
        self.slot: Slot | None = None
        self._node = factory.node
        self.outgoing = factory.outgoing
        self.encryption = factory.encryption
        self._protocol_id = protocol_id(factory.node.protocol.subnet, factory.encryption)
        self.peer_id: str | None = None
        self.peer_addr: Address | None = None
        self.peer_codes: tuple[int, ...] = ()
        self.ids_as_bin = True
        self.expected_id: str | None = None
        self.handshake_done: Deferred[str] = Deferred()
        if not self.outgoing:
            # Nobody waits on an accepted connection's handshake; a failure
            # of it is logged where it happens.
            self.handshake_done.addErrback(lambda _: None)
        self.closed: Deferred[None] = Deferred()
        self._limits = limits = factory.node.limits
        self._max_send_buffer = limits.max_send_buffer
        self._reader = FrameReader(limits.max_frame_size)
        self._send_code: int | None = None
        self._last_sent: WireMessage | None = None
        self._bad_frames = 0
        # Whether the peer holds this connection under two IDs (see
        # _on_handshake), and so writes each of its whispers to it twice;
        # and the key of the whisper it sent last, if that was its last frame.
        self._sends_twice = False
        self._handshake_sent = False
        self._answered_first_word = False
        self._first_word: IDelayedCall | None = None
        self._inflating = True
        self._last_whisper: bytes | None = None
        self._closing = False
        # Whether what still arrives is thrown away: once the link closes,
        # unless it was closed to read on (see close).
        self._discarding = False
        self._timeout: IDelayedCall | None = None
        # While the peer is congested (see pauseProducing), the call that
        # cuts it off unless it makes progress first.
        self._congestion: IDelayedCall | None = None
        # The frames not written to the transport yet (gathered in this turn,
        # or held while the transport is full), their size, and the call
        # that writes them when they were not written in a read.
        self._unwritten: list[bytes] = []
        self._unwritten_size = 0
        self._write_call: IDelayedCall | None = None
        # Whether the transport asked for no more writes (its buffer is full).
        self._transport_full = False
        self.stats = LinkStats()

    def __repr__(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return f"<MeshProtocol {self.peer_id or '?'} at {peer}>"

    @property
    def closing(self) -> bool:
        """Whether the connection is closing (or closed)."""
        return self._closing

    def dialler_port(self) -> int | None:
        """The port the dialling end connected from, if the connection has ports."""
        address = self._transport.getHost() if self.outgoing else self._transport.getPeer()
        port = getattr(address, "port", None)
        return port if isinstance(port, int) else None

    def remote_address(self) -> object:
        """The address of the other end of the connection."""
        return self._transport.getPeer()

    def compression_name(self) -> str | None:
        """The name of the compression used towards the peer, if any."""
        return _compression.NAMES.get(self._send_code) if self._send_code is not None else None

    # -- connection events -------------------------------------------------

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._transport: ITransport = self.transport
        node, admission = self._node, self._node.admission
        if self.slot is not None:
            self.slot.close = self.evict
        elif self.outgoing:
            self.slot = admission.dial(self.evict)
        else:
            self.slot = admission.admit(source_of(self._transport.getPeer()), self.evict)
        if self.slot is None:
            # Every slot is a peer's: refused (and logged as a limit).
            self._drop()
            return
        self.factory.connections.add(self)
        node.stats.connections["out" if self.outgoing else "in"] += 1
        _tune_tcp(self._transport)
        # The transport tells this producer when its write buffer is full.
        self._transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._timeout = node.clock.callLater(self._limits.handshake_timeout, self._handshake_timed_out)
        if self.outgoing:
            # Our handshake goes out once, in the form of the IDs of the
            # node dialled (js2p, told our ID in both forms, keys the
            # connection twice and writes to it twice): after the first word
            # of that node.  py2p and js2p send their handshake as soon as
            # they accept a connection (js2p over WebSocket only once it has
            # ours); a twisted_mesh node waits for the dialler's, and answers
            # this renegotiation (which states what our handshake will) with
            # one of its own.
            self._renegotiate(flags.compression, list(_compression.SUPPORTED))
            self._first_word = node.clock.callLater(FIRST_WORD_WAIT, self._no_first_word)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self.factory.connections.discard(self)
        if self.slot is not None:
            self._node.admission.release(self.slot)
        for timer in (self._timeout, self._congestion, self._first_word, self._write_call):
            if timer is not None and timer.active():
                timer.cancel()
        self._unwritten, self._unwritten_size = [], 0  # never to be written
        self._node.link_lost(self)
        if not self.handshake_done.called:
            self._node.stats.handshake_failures["closed"] += 1
            self.handshake_done.errback(HandshakeFailed(f"closed before the handshake: {reason.getErrorMessage()}"))
        if self.peer_id is not None:
            self._log.info("peer {peer} left: {reason}", peer=self.peer_id, reason=reason.getErrorMessage())
        self.closed.callback(None)

    def dataReceived(self, data: bytes) -> None:
        stats, totals = self.stats, self._node.stats
        stats.bytes_in += len(data)
        totals.bytes_in += len(data)
        try:
            bodies = self._reader.feed(data)
        except FrameTooLarge as e:
            totals.dropped["too_large"] += 1
            self._node.limit_hit("max_frame_size", "{peer}: {error}", peer=self.peer_id, error=str(e))
            self.close(str(e))
            return
        stats.frames_in += len(bodies)
        totals.frames_in += len(bodies)
        global _written_in_read
        if _written_in_read is not None:  # a read handled within another one
            self._read(bodies)
            return
        written: list[MeshProtocol] = []
        _written_in_read = written
        try:
            self._read(bodies)
        finally:
            _written_in_read = None
            for link in written:
                link.flush()

    def _read(self, bodies: list[bytes]) -> None:
        node, totals, limits = self._node, self._node.stats, self._limits
        max_size, max_depth, max_items = limits.max_frame_size, limits.max_depth, limits.max_items
        for body in bodies:
            if self._discarding:
                return
            # (Once a frame failed its checksum, the peer was asked to send
            # raw frames: nothing of its is inflated any more, for a body
            # may inflate to max_frame_size, at some cost, and still fail.)
            codes = self.peer_codes if self._inflating else ()
            try:
                msg = WireMessage.from_body(body, codes, max_size, max_depth, max_items)
            except ChecksumError:
                totals.dropped["bad_checksum"] += 1
                self._frame_failed_checksum()
                continue
            except FrameError as e:
                totals.dropped["too_large" if isinstance(e, FrameTooLarge) else "malformed"] += 1
                if self.peer_id is None:
                    self._fail_handshake(HandshakeFailed(f"bad frame: {e}"), "malformed")
                else:
                    self.close(f"bad frame: {e}")
                return
            self._bad_frames = 0
            # What the link handles itself, then what the node does.
            msg_type, payload = msg.msg_type, msg.payload
            if msg_type == flags.renegotiate:
                self._on_renegotiate(msg)
            elif msg_type == flags.whisper and payload and payload[0] == flags.handshake:
                self._on_handshake(payload)
            elif self.peer_id is None:
                self._fail_handshake(HandshakeFailed("a message came before the handshake"), "malformed")
            elif self._sends_twice and self._second_copy(msg):
                totals.dropped["duplicate"] += 1
            else:
                node.message_received(self, msg)
        if self.peer_id is None and self._reader.buffered > MAX_UNIDENTIFIED_BUFFER and not self._closing:
            # A frame far larger than a handshake, from a peer that sent none.
            totals.dropped["too_large"] += 1
            error = f"more than {MAX_UNIDENTIFIED_BUFFER} bytes of a frame before the handshake"
            self._fail_handshake(HandshakeFailed(error), "malformed")

    def _second_copy(self, msg: WireMessage) -> bool:
        """Whether ``msg`` is the copy of the whisper the peer wrote just before it."""
        key = msg.key if msg.msg_type == flags.whisper else None
        if key is not None and key == self._last_whisper:
            self._last_whisper = None
            return True
        self._last_whisper = key
        return False

    # -- the Link interface --------------------------------------------------

    def send(self, msg: WireMessage) -> str | None:
        """
        Write ``msg`` to the peer, its sender field in the peer's form: it
        goes out unless the connection is lost.

        :return: ``None`` when it was queued; else why not: the connection is
            closing, or more than `.Limits.max_send_buffer` bytes wait for
            the peer already.
        """
        if self._closing:
            return "the connection is closing"
        if self._unwritten_size > self._max_send_buffer:
            return self._send_buffer_full()
        self._last_sent = msg
        self._write(msg.frame(self.ids_as_bin, self._send_code))
        return None

    def _send_buffer_full(self) -> str:
        waiting, most = self._unwritten_size, self._max_send_buffer
        text = "{peer} has {waiting} bytes waiting: not queuing more"
        self._node.limit_hit("max_send_buffer", text, peer=self.peer_id, waiting=waiting)
        return f"the send buffer is full: {waiting} bytes wait for the peer, more than max_send_buffer ({most})"

    def _write(self, frame: bytes) -> None:
        """
        Write ``frame`` to the peer, with the others written in the same
        read, or else in the same turn of the reactor: in one go when the
        read is handled, or at the end of the turn (a node's user sending
        many messages at once makes one write of them); or once
        `.MAX_GATHERED` bytes are gathered.  While the transport is full,
        frames wait here until it asks for more (`.resumeProducing`).
        """
        unwritten = self._unwritten
        unwritten.append(frame)
        self._unwritten_size += len(frame)
        if self._transport_full:
            return
        if self._unwritten_size >= MAX_GATHERED:
            self.flush()
        elif len(unwritten) == 1:
            if _written_in_read is not None:
                _written_in_read.append(self)
            elif self._write_call is None:
                self._write_call = self._node.clock.callLater(0, self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._write_call = None
        self.flush()

    def flush(self) -> None:
        """
        Write the frames gathered so far, as far as the transport takes
        them: in one go, or (after the transport was full) in writes of
        about `.MAX_GATHERED` bytes until it is full again.  For a transport
        that must not wait for the end of the turn too (a WebSocket whose
        peer is closing, see `.twisted_mesh.websocket`).
        """
        if self._transport_full or not self._unwritten:
            return
        if self._unwritten_size <= MAX_GATHERED:
            frames, self._unwritten, self._unwritten_size = self._unwritten, [], 0
            self._write_frames(frames)
            return
        frames, self._unwritten = self._unwritten, []
        start = 0
        while start < len(frames) and not self._transport_full:
            end, size = start, 0
            while end < len(frames) and size < MAX_GATHERED:
                size += len(frames[end])
                end += 1
            self._unwritten_size -= size
            self._write_frames(frames[start:end])
            start = end
        # (What was gathered while writing, if anything, comes after the rest.)
        self._unwritten[:0] = frames[start:]

    def _write_frames(self, frames: list[bytes]) -> None:
        """Write ``frames`` to the transport in one write, and count them."""
        data = b"".join(frames)
        stats, totals = self.stats, self._node.stats
        stats.frames_out += len(frames)
        totals.frames_out += len(frames)
        stats.bytes_out += len(data)
        totals.bytes_out += len(data)
        self._transport.write(data)

    def close(self, reason: str, *, error: bool = True, abort: bool = False, read_on: bool = False) -> None:
        """
        Close the connection, logging ``reason``: as a warning when ``error``,
        as information otherwise.

        :param abort: drop it at once, with what waits to be written (for a
            peer that does not read, which could not answer a closing
            handshake).
        :param read_on: still hand the node what the peer sent before it saw
            the close (a second connection to the same peer, whose frames
            are as good as those of the link kept).
        """
        if self._closing:
            return
        # What was queued goes first, unless the connection is dropped: the
        # transport writes it before it closes (or the close times out).  It
        # may fill the transport's buffer, and so make the link congested,
        # which the close then ends.
        frames, self._unwritten, self._unwritten_size = self._unwritten, [], 0
        if frames and not abort:
            self._write_frames(frames)
        if self._congestion is not None:
            # Whatever waits for this peer will never be read: the other
            # peers need not wait for it any more.
            if self._congestion.active():
                self._congestion.cancel()
            self._congestion = None
            self._node.link_drained(self)
        log = self._log.warn if error else self._log.info
        log("closing the connection to {peer}: {reason}", peer=self.peer_id or self._transport.getPeer(), reason=reason)
        # A closing handshake (TLS, WebSocket) needs to read its answer, and
        # TLS closes only once no producer is registered.
        self.resume_reading()
        self._closing = True
        self._discarding = not read_on
        self._transport.unregisterProducer()  # type: ignore[attr-defined]
        abort_connection = getattr(self._transport, "abortConnection", None)
        if abort and abort_connection is not None:
            abort_connection()
            return
        # To read on over TCP, which stops reading once it is told to close,
        # close only our side: the peer, reading its end, closes its own.
        # (TLS and WebSocket read on until the peer answers their close.)
        # (Looked up on the class: TLS wraps TCP, and would hand on TCP's.)
        close_our_side = getattr(type(self._transport), "loseWriteConnection", None) if read_on else None
        if close_our_side is not None:
            close_our_side(self._transport)
        else:
            self._transport.loseConnection()
        # A peer that does not finish closing is cut off.
        if abort_connection is not None:
            if self._timeout is not None and self._timeout.active():
                self._timeout.cancel()
            self._timeout = self._node.clock.callLater(CLOSE_TIMEOUT, abort_connection)

    def evict(self, reason: str) -> None:
        """
        Drop the connection at once: its handshake has not come, and a newer
        connection needs its place (the node's `Admission <.twisted_mesh._admission.Admission>` logs that as a limit).
        """
        if not self._closing:
            peer = self._transport.getPeer()
            self._log.debug("dropping the connection from {peer}: {reason}", peer=peer, reason=reason)
            self._drop()

    def _drop(self) -> None:
        """Drop the connection at once, with what it sent and what waits to be written."""
        self._closing = self._discarding = True
        getattr(self._transport, "abortConnection", self._transport.loseConnection)()

    def pause_reading(self) -> None:
        """Stop reading from the peer until `.resume_reading`."""
        pause = getattr(self._transport, "pauseProducing", None)
        if pause is not None and not self._closing:
            pause()

    def resume_reading(self) -> None:
        """Read from the peer again."""
        resume = getattr(self._transport, "resumeProducing", None)
        if resume is not None and not self._closing:
            resume()

    # -- IPushProducer: the transport's write buffer -------------------------

    def pauseProducing(self) -> None:
        """
        The transport has a full write buffer: the peer is slow to read.
        Frames wait in the link until the transport asks for more, and the
        node hears that the peer is congested.  When this comes while the
        link writes what waited, the peer did read: it made progress.
        (Before the handshake, TLS pauses its producer until it is secure:
        that is not a slow peer.)
        """
        if self._closing or self.peer_id is None:
            return
        self._transport_full = True
        timeout = self._limits.congestion_timeout
        if self._congestion is None:
            self._congestion = self._node.clock.callLater(timeout, self._congestion_timed_out)
            self._node.link_congested(self)
        elif self._congestion.active():
            self._congestion.reset(timeout)

    def resumeProducing(self) -> None:
        """
        The transport wrote all it held: write what waited, and if that
        does not fill it again, the peer caught up.
        """
        if not self._transport_full:
            return
        self._transport_full = False
        self.flush()
        if self._transport_full or self._congestion is None:
            return
        if self._congestion.active():
            self._congestion.cancel()
        self._congestion = None
        self._node.link_drained(self)

    def stopProducing(self) -> None:
        """The transport is going away; `.connectionLost` follows."""

    def _congestion_timed_out(self) -> None:
        timeout = self._limits.congestion_timeout
        text = "{peer} read nothing for {timeout:g} s"
        self._node.limit_hit("congestion_timeout", text, peer=self.peer_id, timeout=timeout)
        self.close(f"the peer read nothing for {timeout:g} s: dropping what waits for it", abort=True)

    # -- what the link handles itself ----------------------------------------

    def _send_handshake(self) -> None:
        self._handshake_sent = True
        if self._first_word is not None and self._first_word.active():
            self._first_word.cancel()
        self._first_word = None
        node = self._node
        payload = (
            flags.handshake,
            self._wire_id(node.id),
            self._wire_id(self._protocol_id),
            list(node.out_addr_for(self.encryption)),
            list(_compression.SUPPORTED),
        )
        msg = WireMessage.create(flags.whisper, node.id, node.now(), payload, self.ids_as_bin)
        self._write(msg.frame(self.ids_as_bin, None))

    def _wire_id(self, node_id: str) -> str | bytes:
        return node_id.encode("ascii") if self.ids_as_bin else node_id

    def _on_handshake(self, payload: tuple[Any, ...]) -> None:
        fields = _parse_handshake(payload)
        if fields is None:
            self._fail_handshake(HandshakeFailed("malformed handshake"), "malformed")
            return
        peer_id, theirs, address, codes = fields
        peer_writes_str = isinstance(payload[1], str)
        if not self._handshake_sent:
            # The peer spoke first, and hears our handshake once, in its form.
            self.ids_as_bin = not peer_writes_str
            self._send_handshake()
        elif self.ids_as_bin and peer_writes_str and self.peer_id is None:
            # A node that writes IDs as str (js2p) spoke after we did (it was
            # slow to, see _no_first_word): restate ours in its form.  js2p
            # then keeps this connection under both forms of our ID, and a
            # whisper it sends to all its peers comes twice, back to back.
            self.ids_as_bin = False
            self._sends_twice = True
            self._send_handshake()
        ours = self._protocol_id
        if theirs != ours:
            self._fail_handshake(ProtocolMismatch(ours, theirs), "protocol_mismatch")
            return
        if self.peer_id is not None:
            # A second handshake: the peer restates itself.
            if peer_id != self.peer_id:
                self.close("the peer changed its ID")
            return
        if peer_id == self._node.id:
            self._fail_handshake(SelfConnection("connected to itself"), "self")
            return
        if self.expected_id is not None and peer_id != self.expected_id:
            # Before the routing table: this peer is not the one dialled for.
            self._fail_handshake(HandshakeFailed(f"the peer is {peer_id}, not {self.expected_id}"), "unexpected")
            return
        self.peer_id, self.peer_addr, self.peer_codes = peer_id, address, codes
        if self.slot is not None:
            self._node.admission.handshaken(self.slot)
        self._send_code = _compression.choose(_compression.SENT, codes)
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self._node.link_ready(self):
            self._log.info("peer {peer} joined from {address}", peer=peer_id, address=address)
        self.handshake_done.callback(peer_id)

    def _fail_handshake(self, error: Exception, reason: str) -> None:
        self._node.stats.handshake_failures[reason] += 1
        self.close(str(error))
        if not self.handshake_done.called:
            self.handshake_done.errback(error)

    def _handshake_timed_out(self) -> None:
        timeout = self._limits.handshake_timeout
        self._fail_handshake(HandshakeFailed(f"no handshake within {timeout:g} s"), "timeout")

    def _on_renegotiate(self, msg: WireMessage) -> None:
        payload = msg.payload
        if len(payload) == 2 and payload[0] == flags.compression:
            codes = _parse_codes(payload[1])
            if codes is None:
                self.close("malformed compression renegotiation")
                return
            if not self._handshake_sent:
                self._before_handshakes(msg)
            changed = codes != self.peer_codes
            self.peer_codes = codes
            self._send_code = _compression.choose(_compression.SENT, codes)
            if changed and self.peer_id is not None:
                agreed = [code for code in _compression.SUPPORTED if code in codes]
                self._renegotiate(flags.compression, agreed)
        elif len(payload) == 1 and payload[0] == flags.resend:
            # Once per message sent: asking again gets nothing more.
            last = self._last_sent
            if last is not None:
                self.send(last)
                self._last_sent = None
        else:
            self._log.debug("ignored a renegotiate message {payload!r}", payload=payload)

    def _before_handshakes(self, msg: WireMessage) -> None:
        """A renegotiation before any handshake: a twisted_mesh node's first word (see connectionMade)."""
        if self.outgoing:
            # The node dialled is a twisted_mesh node: it waits for our
            # handshake, and this is the form of its IDs.
            self.ids_as_bin = msg.sender_is_bin
            self._send_handshake()
        elif not self._answered_first_word:
            # A twisted_mesh node dialled us, and waits for a word of ours:
            # no silent stranger.
            self._answered_first_word = True
            if self.slot is not None:
                self._node.admission.spoke(self.slot)
            self._renegotiate(flags.compression, list(_compression.SUPPORTED))

    def _no_first_word(self) -> None:
        """The node dialled says nothing: speak first, in the form it most likely reads."""
        self._first_word = None
        if not self._handshake_sent and not self._closing:
            # Over WebSocket, js2p (py2p has no WebSocket); else py2p, which
            # reads nothing but bin.
            self.ids_as_bin = self.encryption not in ("ws", "wss")
            self._send_handshake()

    def _renegotiate(self, *payload: Any) -> None:
        # Not through send(): a renegotiation is never what a peer asks to
        # have resent.
        node = self._node
        msg = WireMessage.create(flags.renegotiate, node.id, node.now(), payload, self.ids_as_bin)
        self._write(msg.frame(self.ids_as_bin, self._send_code))

    def _frame_failed_checksum(self) -> None:
        self._bad_frames += 1
        if self._bad_frames > MAX_BAD_FRAMES:
            self.close(f"{self._bad_frames} frames in a row failed their checksum")
            return
        if self._inflating:
            # The first time: said once, and asked once.
            self._inflating = False
            self._log.warn("a frame from {peer} failed its checksum: asking for it uncompressed", peer=self.peer_id)
            self._renegotiate(flags.compression, [])
        else:
            self._log.debug("a frame from {peer} failed its checksum: asking for it again", peer=self.peer_id)
        self._renegotiate(flags.resend)


#: The most compression codes a peer may list.
MAX_CODES = 32


def _parse_codes(value: object) -> tuple[int, ...] | None:
    """Read a list of compression codes, each once, or ``None``."""
    if not isinstance(value, list) or len(value) > MAX_CODES:
        return None
    if not all(type(code) is int and 0 <= code <= 0xFF for code in value):
        return None
    return tuple(dict.fromkeys(value))


def _parse_handshake(payload: tuple[Any, ...]) -> tuple[str, str, Address | None, tuple[int, ...]] | None:
    """
    Read ``[handshake, id, protocol_id, [host, port], [codes]]``, or ``None``.

    Port 0 says the peer cannot be dialled (a browser): its address is
    ``None``.
    """
    if len(payload) != 5:
        return None
    peer_id, theirs = id_text(payload[1]), id_text(payload[2])
    address, codes = parse_address(payload[3]), _parse_codes(payload[4])
    undialable = isinstance(payload[3], list) and len(payload[3]) == 2 and payload[3][1] == 0
    if peer_id is None or theirs is None or codes is None or not is_node_id(peer_id):
        return None
    if address is None and not undialable:
        return None
    return peer_id, theirs, address, codes


class MeshFactory(Factory):
    """
    Builds a `.MeshProtocol` for each connection made or accepted.

    :ivar connections: every live connection of this node (shared by the
        node's listening and dialling factories).
    :ivar encryption: the transport of the connections it builds (by
        default the node's main one).
    """

    noisy = False

    def __init__(
        self,
        node: MeshNode,
        outgoing: bool,
        connections: set[MeshProtocol],
        encryption: str | None = None,
    ) -> None:
        self.node = node
        self.outgoing = outgoing
        self.encryption = encryption or node.protocol.encryption
        self.connections = connections

    def buildProtocol(self, addr: Any) -> MeshProtocol:
        return MeshProtocol(self)
