"""
The link to one peer: framing, handshake, the peer's ID form and
compression, renegotiation.

L{MeshProtocol} reads frames from any stream transport (TCP, TLS, or the
byte stream that WebSocket messages carry) and hands the node what is not
the link's own business.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mesh import _compression, flags
from twisted_mesh._frames import ChecksumError, FrameError, FrameReader, FrameTooLarge, WireMessage
from twisted_mesh._ids import id_text, is_base58, protocol_id
from twisted_mesh._node import Address, MeshNode, parse_address
from twisted_mesh._stats import LinkStats
from twisted_mesh.errors import HandshakeFailed, ProtocolMismatch, SelfConnection

#: Seconds a peer has to send its handshake.
HANDSHAKE_TIMEOUT = 30.0

#: Frames in a row that may fail their checksum before the link is closed.
MAX_BAD_FRAMES = 3


class MeshProtocol(Protocol):
    """
    One connection to a peer: a L{twisted_mesh._node.Link} for the node.

    :ivar peer_id: the peer's node ID, once its handshake arrived.
    :ivar peer_addr: the address the peer asks others to dial.
    :ivar peer_codes: the compression codes the peer listed.
    :ivar outgoing: whether this node dialled the connection.
    :ivar ids_as_bin: whether the peer writes IDs as bin (else as str).
    :ivar encryption: the transport of this link; its handshake carries the
        protocol ID of the node's subnet over this transport.
    :ivar handshake_done: fires with the peer's ID once its handshake is
        accepted, or fails with L{ProtocolMismatch} or L{HandshakeFailed}.
    :ivar closed: fires once the connection is closed.
    :ivar stats: what crossed this link.
    """

    _log = Logger()

    def __init__(self, factory: MeshFactory) -> None:
        self.factory = factory
        self._node = factory.node
        self.outgoing = factory.outgoing
        self.encryption = factory.encryption
        self._protocol_id = protocol_id(factory.node.protocol.subnet, factory.encryption)
        self.peer_id: str | None = None
        self.peer_addr: Address | None = None
        self.peer_codes: tuple[int, ...] = ()
        self.ids_as_bin = True
        self.handshake_done: Deferred[str] = Deferred()
        if not self.outgoing:
            # Nobody waits on an accepted connection's handshake; a failure
            # of it is logged where it happens.
            self.handshake_done.addErrback(lambda _: None)
        self.closed: Deferred[None] = Deferred()
        self._max_frame_size = factory.max_frame_size
        self._reader = FrameReader(factory.max_frame_size)
        self._send_code: int | None = None
        self._last_sent: WireMessage | None = None
        self._bad_frames = 0
        self._closing = False
        self._timeout: IDelayedCall | None = None
        self.stats = LinkStats()

    def __repr__(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return f"<MeshProtocol {self.peer_id or '?'} at {peer}>"

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
        self.factory.connections.add(self)
        self._node.stats.connections["out" if self.outgoing else "in"] += 1
        set_no_delay = getattr(self._transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._timeout = self._node.clock.callLater(HANDSHAKE_TIMEOUT, self._handshake_timed_out)
        self._send_handshake()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self.factory.connections.discard(self)
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
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
            self.close(str(e))
            return
        stats.frames_in += len(bodies)
        totals.frames_in += len(bodies)
        for body in bodies:
            if self._closing:
                return
            try:
                msg = WireMessage.from_body(body, self.peer_codes, self._max_frame_size)
            except ChecksumError:
                totals.dropped["bad_checksum"] += 1
                self._frame_failed_checksum()
                continue
            except FrameError as e:
                totals.dropped["too_large" if isinstance(e, FrameTooLarge) else "malformed"] += 1
                self.close(f"bad frame: {e}")
                return
            self._bad_frames = 0
            self._message_received(msg)

    # -- the Link interface --------------------------------------------------

    def send(self, msg: WireMessage) -> None:
        """Write C{msg} to the peer, its sender field in the peer's form."""
        if self._closing:
            return
        self._last_sent = msg
        self._write(msg.frame(self.ids_as_bin, self._send_code))

    def _write(self, frame: bytes) -> None:
        stats, totals = self.stats, self._node.stats
        stats.frames_out += 1
        totals.frames_out += 1
        stats.bytes_out += len(frame)
        totals.bytes_out += len(frame)
        self._transport.write(frame)

    def close(self, reason: str, *, error: bool = True) -> None:
        """
        Close the connection, logging C{reason}: as a warning when C{error},
        as information otherwise.
        """
        if self._closing:
            return
        self._closing = True
        log = self._log.warn if error else self._log.info
        log("closing the connection to {peer}: {reason}", peer=self.peer_id or self._transport.getPeer(), reason=reason)
        self._transport.loseConnection()

    # -- what the link handles itself ----------------------------------------

    def _message_received(self, msg: WireMessage) -> None:
        payload = msg.payload
        if msg.msg_type == flags.renegotiate:
            self._on_renegotiate(payload)
        elif msg.msg_type == flags.whisper and payload and payload[0] == flags.handshake:
            self._on_handshake(payload)
        elif self.peer_id is None:
            self._fail_handshake(HandshakeFailed("a message came before the handshake"), "malformed")
        else:
            self._node.message_received(self, msg)

    def _send_handshake(self) -> None:
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
        if self.ids_as_bin and isinstance(payload[1], str):
            # The peer writes IDs as str (js2p): restate ours in its form.
            self.ids_as_bin = False
            self._send_handshake()
        self.peer_id, self.peer_addr, self.peer_codes = peer_id, address, codes
        self._send_code = _compression.choose(_compression.SUPPORTED, codes)
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
        self._fail_handshake(HandshakeFailed(f"no handshake within {HANDSHAKE_TIMEOUT:g} s"), "timeout")

    def _on_renegotiate(self, payload: tuple[Any, ...]) -> None:
        if len(payload) == 2 and payload[0] == flags.compression:
            codes = _parse_codes(payload[1])
            if codes is None:
                self.close("malformed compression renegotiation")
                return
            changed = codes != self.peer_codes
            self.peer_codes = codes
            self._send_code = _compression.choose(_compression.SUPPORTED, codes)
            if changed:
                agreed = [code for code in _compression.SUPPORTED if code in codes]
                self._renegotiate(flags.compression, agreed)
        elif len(payload) == 1 and payload[0] == flags.resend:
            if self._last_sent is not None:
                self.send(self._last_sent)
        else:
            self._log.debug("ignored a renegotiate message {payload!r}", payload=payload)

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
        self._log.warn("a frame from {peer} failed its checksum: asking for it uncompressed", peer=self.peer_id)
        self._renegotiate(flags.compression, [])
        self._renegotiate(flags.resend)


def _parse_codes(value: object) -> tuple[int, ...] | None:
    if not isinstance(value, list) or not all(type(code) is int for code in value):
        return None
    return tuple(value)


def _parse_handshake(payload: tuple[Any, ...]) -> tuple[str, str, Address | None, tuple[int, ...]] | None:
    """
    Read C{[handshake, id, protocol_id, [host, port], [codes]]}, or L{None}.

    Port 0 says the peer cannot be dialled (a browser): its address is
    L{None}.
    """
    if len(payload) != 5:
        return None
    peer_id, theirs = id_text(payload[1]), id_text(payload[2])
    address, codes = parse_address(payload[3]), _parse_codes(payload[4])
    undialable = isinstance(payload[3], list) and len(payload[3]) == 2 and payload[3][1] == 0
    if peer_id is None or theirs is None or codes is None or not is_base58(peer_id):
        return None
    if address is None and not undialable:
        return None
    return peer_id, theirs, address, codes


class MeshFactory(Factory):
    """
    Builds a L{MeshProtocol} for each connection made or accepted.

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
        max_frame_size: int,
        encryption: str | None = None,
    ) -> None:
        self.node = node
        self.outgoing = outgoing
        self.encryption = encryption or node.protocol.encryption
        self.connections = connections
        self.max_frame_size = max_frame_size

    def buildProtocol(self, addr: Any) -> MeshProtocol:
        return MeshProtocol(self)
