"""
The link to one peer: the `.IProtocol` that reads frames from any stream
transport (TCP, TLS, or the byte stream that WebSocket messages carry),
acts on the handshake and renegotiation (see `.handshake`), writes through
its `.LinkWriter`, and hands the node what is not the link's own business.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as Interface

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mesh import _compression, flags
from twisted_mesh._admission import Slot, source_of
from twisted_mesh._frames import ChecksumError, FrameError, FrameReader, FrameTooLarge, WireMessage
from twisted_mesh._ids import protocol_id
from twisted_mesh._link import handshake
from twisted_mesh._link.handshake import Word
from twisted_mesh._link.tcp import tune_tcp
from twisted_mesh._link.writer import LinkWriter, WriteBatch
from twisted_mesh._node import Address, MeshNode
from twisted_mesh._stats import LinkStats
from twisted_mesh.errors import HandshakeFailed

#: Seconds a closing connection has to finish its closing handshake.
CLOSE_TIMEOUT = 10.0

#: Frames in a row that may fail their checksum before the link is closed.
MAX_BAD_FRAMES = 3

#: Seconds a dialler waits for the first word of the node dialled before it
#: sends its handshake all the same (see LinkProtocol.connectionMade).
FIRST_WORD_WAIT = 1.0

#: Bytes of an incomplete frame held for a peer whose handshake has not come
#: (a handshake takes a few hundred): past it the connection is closed, so
#: that unidentified connections cannot hold a frame limit's worth each.
MAX_UNIDENTIFIED_BUFFER = 64 * 1024


class LinkSettings(Interface):
    """What a link takes from the factory that builds it (a `.LinkFactory`)."""

    node: MeshNode
    outgoing: bool
    encryption: str
    connections: set[LinkProtocol]
    batch: WriteBatch


class LinkProtocol(Protocol):
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

    def __init__(self, factory: LinkSettings) -> None:
        self.factory = factory
        self._connections = factory.connections
        self.slot: Slot | None = None
        self._node = node = factory.node
        self.outgoing = factory.outgoing
        self.encryption = factory.encryption
        self._protocol_id = protocol_id(node.protocol.subnet, factory.encryption)
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
        self._limits = limits = node.limits
        self._max_send_buffer = limits.max_send_buffer
        self._batch = factory.batch
        self._reader = FrameReader(limits.max_frame_size)
        self._send_code: int | None = None
        self._last_sent: WireMessage | None = None
        self._bad_frames = 0
        # Whether the peer holds this connection under two IDs (see
        # handshake.answer_form), and so writes each of its whispers to it
        # twice; and the key of the whisper it sent last, if that was its
        # last frame.
        self._sends_twice = False
        self._last_whisper: bytes | None = None
        self._handshake_sent = False
        self._answered_first_word = False
        self._first_word: IDelayedCall | None = None
        self._inflating = True
        self._closing = False
        # Whether what still arrives is thrown away: once the link closes,
        # unless it was closed to read on (see close).
        self._discarding = False
        self._timeout: IDelayedCall | None = None
        self.stats = LinkStats()
        self._writer = LinkWriter(self, node, factory.batch, self.stats)

    def __repr__(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return f"<LinkProtocol {self.peer_id or '?'} at {peer}>"

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
        self._connections.add(self)
        node.stats.connections["out" if self.outgoing else "in"] += 1
        tune_tcp(self._transport)
        self._writer.start(self._transport)
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
            self._renegotiate(flags.compression, handshake.offered())
            self._first_word = node.clock.callLater(FIRST_WORD_WAIT, self._no_first_word)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._connections.discard(self)
        if self.slot is not None:
            self._node.admission.release(self.slot)
        for timer in (self._timeout, self._first_word):
            if timer is not None and timer.active():
                timer.cancel()
        self._writer.stop()
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
        # The frames this read makes the node write to any link are written
        # once it is handled (unless it is handled within another read).
        batch = self._batch
        outermost = batch.open()
        try:
            self._read(bodies)
        finally:
            if outermost:
                batch.close()

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
        writer = self._writer
        if writer.unwritten_size > self._max_send_buffer:
            return self._send_buffer_full()
        self._last_sent = msg
        writer.write(msg.frame(self.ids_as_bin, self._send_code))
        return None

    def _send_buffer_full(self) -> str:
        waiting, most = self._writer.unwritten_size, self._max_send_buffer
        text = "{peer} has {waiting} bytes waiting: not queuing more"
        self._node.limit_hit("max_send_buffer", text, peer=self.peer_id, waiting=waiting)
        return f"the send buffer is full: {waiting} bytes wait for the peer, more than max_send_buffer ({most})"

    def flush(self) -> None:
        """
        Write the frames gathered so far (see `.LinkWriter.flush`): for a
        transport that must not wait for the end of the turn (a WebSocket
        whose peer is closing, see `.twisted_mesh.websocket`).
        """
        self._writer.flush()

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
        self._writer.finish(abort=abort)
        log = self._log.warn if error else self._log.info
        log("closing the connection to {peer}: {reason}", peer=self.peer_id or self._transport.getPeer(), reason=reason)
        # A closing handshake (TLS, WebSocket) needs to read its answer, and
        # TLS closes only once no producer is registered.
        self.resume_reading()
        self._closing = True
        self._discarding = not read_on
        self._writer.detach()
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

    # -- what the link handles itself ----------------------------------------

    def _send_handshake(self) -> None:
        self._handshake_sent = True
        if self._first_word is not None and self._first_word.active():
            self._first_word.cancel()
        self._first_word = None
        node, as_bin = self._node, self.ids_as_bin
        payload = handshake.handshake_payload(node.id, self._protocol_id, node.out_addr_for(self.encryption), as_bin)
        msg = WireMessage.create(flags.whisper, node.id, node.now(), payload, as_bin)
        self._writer.write(msg.frame(as_bin, None))

    def _on_handshake(self, payload: tuple[Any, ...]) -> None:
        shake = handshake.parse_handshake(payload)
        if shake is None:
            self._fail_handshake(HandshakeFailed("malformed handshake"), "malformed")
            return
        form = handshake.answer_form(
            shake.writes_str, sent=self._handshake_sent, as_bin=self.ids_as_bin, identified=self.peer_id is not None
        )
        if form is not None:
            self.ids_as_bin = form.as_bin
            self._sends_twice = self._sends_twice or form.sends_twice
            self._send_handshake()
        mismatch = handshake.mismatch(shake, self._protocol_id)
        if mismatch is not None:
            self._fail_handshake(mismatch, "protocol_mismatch")
            return
        if self.peer_id is not None:
            # A second handshake: the peer restates itself.
            if shake.peer_id != self.peer_id:
                self.close("the peer changed its ID")
            return
        refused = handshake.refusal(shake, self._node.id, self.expected_id)
        if refused is not None:
            self._fail_handshake(*refused)
            return
        self.peer_id, self.peer_addr, self.peer_codes = shake.peer_id, shake.address, shake.codes
        if self.slot is not None:
            self._node.admission.handshaken(self.slot)
        self._send_code = handshake.send_code(shake.codes)
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self._node.link_ready(self):
            self._log.info("peer {peer} joined from {address}", peer=shake.peer_id, address=shake.address)
        self.handshake_done.callback(shake.peer_id)

    def _fail_handshake(self, error: Exception, reason: str) -> None:
        self._node.stats.handshake_failures[reason] += 1
        self.close(str(error))
        if not self.handshake_done.called:
            self.handshake_done.errback(error)

    def _handshake_timed_out(self) -> None:
        timeout = self._limits.handshake_timeout
        self._fail_handshake(HandshakeFailed(f"no handshake within {timeout:g} s"), "timeout")

    def _on_renegotiate(self, msg: WireMessage) -> None:
        word, codes = handshake.read_renegotiation(msg.payload)
        if word is Word.COMPRESSION:
            if not self._handshake_sent:
                self._before_handshakes(msg)
            changed = codes != self.peer_codes
            self.peer_codes = codes
            self._send_code = handshake.send_code(codes)
            if changed and self.peer_id is not None:
                self._renegotiate(flags.compression, handshake.agreed(codes))
        elif word is Word.RESEND:
            # Once per message sent: asking again gets nothing more.
            last = self._last_sent
            if last is not None:
                self.send(last)
                self._last_sent = None
        elif word is Word.MALFORMED:
            self.close("malformed compression renegotiation")
        else:
            self._log.debug("ignored a renegotiate message {payload!r}", payload=msg.payload)

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
            self._renegotiate(flags.compression, handshake.offered())

    def _no_first_word(self) -> None:
        """The node dialled says nothing: speak first, in the form it most likely reads."""
        self._first_word = None
        if not self._handshake_sent and not self._closing:
            self.ids_as_bin = handshake.unprompted_form(self.encryption)
            self._send_handshake()

    def _renegotiate(self, *payload: Any) -> None:
        # Not through send(): a renegotiation is never what a peer asks to
        # have resent.
        node = self._node
        msg = WireMessage.create(flags.renegotiate, node.id, node.now(), payload, self.ids_as_bin)
        self._writer.write(msg.frame(self.ids_as_bin, self._send_code))

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
