"""
The link to one peer: the `.IProtocol` over any stream transport (TCP,
TLS, or the byte stream that WebSocket messages carry), and the `.Link` the
node sees.  It joins the parts of a link: its `.LinkReader`, its
`.Negotiation` (the handshake and renegotiation), and its `.LinkWriter`.
"""

from __future__ import annotations

from typing import Protocol as Interface

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from twisted_mesh import _compression
from twisted_mesh._admission import Slot, source_of
from twisted_mesh._core.link import Address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._frames import WireMessage
from twisted_mesh._link import handshake
from twisted_mesh._link.negotiation import Negotiation
from twisted_mesh._link.reader import LinkReader
from twisted_mesh._link.tcp import tcp_connection, tune_tcp, writes_through
from twisted_mesh._link.writer import LinkWriter, WriteBatch
from twisted_mesh._logs import LINK, LoggedText, NodeLogger, logged
from twisted_mesh._stats import LinkStats
from twisted_mesh.errors import HandshakeFailed

#: Bytes of keying material a proof on a TLS link binds.
BINDING_SIZE = 32

#: Seconds a closing connection has to finish its closing handshake.
CLOSE_TIMEOUT = 10.0


class LinkSettings(Interface):
    """What a link takes from the factory that builds it (a `.LinkFactory`)."""

    node: MeshNode
    outgoing: bool
    encryption: str
    connections: set[LinkProtocol]
    batch: WriteBatch


class LinkProtocol(Protocol):
    """
    One connection to a peer: a `.twisted_mesh._core.link.Link` for the node.

    :ivar peer_id: the peer's node ID, once its handshake arrived.
    :ivar peer_addr: the address the peer asks others to dial.
    :ivar peer_codes: the compression codes the peer listed.
    :ivar outgoing: whether this node dialled the connection.
    :ivar ids_as_bin: whether the peer writes IDs as bin (else as str).
    :ivar lazy_push: whether the peer said it speaks lazy push (a
        twisted_mesh node does; see `.twisted_mesh._core.tree`).
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

    def __init__(self, factory: LinkSettings) -> None:
        self._log = NodeLogger(LINK, factory.node.id, self)
        self.factory = factory
        self._connections = factory.connections
        self.slot: Slot | None = None
        self._node = node = factory.node
        self.outgoing = factory.outgoing
        self.encryption = factory.encryption
        self.peer_id: str | None = None
        self.peer_addr: Address | None = None
        self.peer_codes: tuple[int, ...] = ()
        self.ids_as_bin = True
        self.lazy_push = False
        self.expected_id: str | None = None
        self.handshake_done: Deferred[str] = Deferred()
        if not self.outgoing:
            # Nobody waits on an accepted connection's handshake; a failure
            # of it is logged where it happens.
            self.handshake_done.addErrback(lambda _: None)
        self.closed: Deferred[None] = Deferred()
        self._max_send_buffer = node.limits.max_send_buffer
        self._last_sent: WireMessage | None = None
        self._closing = False
        # The call that cuts off a peer that does not finish closing.
        self._close_timeout: IDelayedCall | None = None
        self.stats = LinkStats()
        self._writer = LinkWriter(self, node, factory.batch, self.stats)
        self._negotiation = negotiation = Negotiation(self, node, self._writer.write)
        self._reader = LinkReader(self, node, negotiation, self.stats)

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

    def channel_binding(self) -> bytes:
        """
        What a handshake proof on this link binds (see `.ProofTerms`): on a
        TLS link, keying material exported from its TLS session (RFC 5705,
        as RFC 9266 binds a channel), the same at both ends and at no other
        link's; nothing on other links (TCP, and WebSocket, whose TLS a
        browser cannot export from).
        """
        if self.encryption != "SSL":
            return b""
        connection = self._transport.getHandle() if hasattr(self._transport, "getHandle") else None
        export = getattr(connection, "export_keying_material", None)
        return bytes(export(handshake.BINDING_LABEL, BINDING_SIZE)) if export is not None else b""

    def compression_name(self) -> str | None:
        """The name of the compression used towards the peer, if any."""
        code = self._negotiation.send_code
        return _compression.NAMES.get(code) if code is not None else None

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
        tcp = tcp_connection(self._transport)
        if tcp is not None:
            tune_tcp(tcp)
        self._writer.start(self._transport, tcp if writes_through(self._transport) else None)
        self._negotiation.start()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._connections.discard(self)
        if self.slot is not None:
            self._node.admission.release(self.slot)
        self._negotiation.stop()
        if self._close_timeout is not None and self._close_timeout.active():
            self._close_timeout.cancel()
        self._writer.stop()
        self._node.link_lost(self)
        if not self.handshake_done.called:
            self._node.stats.handshake_failures["closed"] += 1
            self.handshake_done.errback(HandshakeFailed(f"closed before the handshake: {reason.getErrorMessage()}"))
        if self.peer_id is not None:
            self._log.info(
                "peer {peer} left: {reason}", peer=logged(self.peer_id), reason=LoggedText(reason.getErrorMessage())
            )
        self.closed.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self._reader.feed(data)

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
        writer.write(msg.frame(self.ids_as_bin, self._negotiation.send_code))
        return None

    def withdraw(self, msg: WireMessage) -> bool:
        """
        The peer has ``msg`` (it sent it): if it was sent to the peer in this
        turn of the reactor and waits to be written, it is not written.

        :return: whether it was withdrawn.
        """
        return self._writer.withdraw(msg.frame(self.ids_as_bin, self._negotiation.send_code))

    def renegotiate(self, *payload: object) -> None:
        """Write a renegotiation word, ``payload``, to the peer (nothing once the link is closing)."""
        if not self._closing:
            self._negotiation.renegotiate(*payload)

    def resend_last(self) -> None:
        """Send the last message sent again, once: asking again gets nothing more until another is sent."""
        last = self._last_sent
        if last is not None:
            self.send(last)
            self._last_sent = None

    def _send_buffer_full(self) -> str:
        waiting, most = self._writer.unwritten_size, self._max_send_buffer
        text = "{peer} has {waiting} bytes waiting: not queuing more"
        self._node.limit_hit("max_send_buffer", text, peer=logged(self.peer_id), waiting=waiting)
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
        peer = logged(self.peer_id) or self._transport.getPeer()
        log("closing the connection to {peer}: {reason}", peer=peer, reason=LoggedText(reason))
        # A closing handshake (TLS, WebSocket) needs to read its answer, and
        # TLS closes only once no producer is registered.
        self.resume_reading()
        self._closing = True
        self._reader.discarding = not read_on
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
            self._negotiation.stop_waiting()
            self._close_timeout = self._node.clock.callLater(CLOSE_TIMEOUT, abort_connection)

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
        self._closing = self._reader.discarding = True
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
