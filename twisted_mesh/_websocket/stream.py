"""
A byte stream over WebSocket messages: the transport a wrapped protocol
writes to, and what the server and client WebSocket protocols share (see
`.twisted_mesh.websocket` for what the wrapped protocol sees).
"""

from __future__ import annotations

from typing import Any, runtime_checkable
from typing import Protocol as Interface

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost, NoProtocol
from twisted.internet.interfaces import IAddress, IConsumer, IProducer, IProtocol, IPushProducer, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_mesh._logs import WEBSOCKET

#: (Not a class attribute: there, a Logger takes the class's path as its namespace.)
_log = Logger(namespace=WEBSOCKET)

#: The longest message a write goes out as: a longer write is cut into
#: several, which a reader of the stream joins again.  Readers limit the
#: messages they take (twisted_mesh to its frame limit and 64 KiB more).
MAX_WRITTEN_MESSAGE = 1 << 20

NORMAL_CLOSE = 1000
UNSUPPORTED_DATA = 1003


@runtime_checkable
class GatheringProtocol(Interface):
    """
    A wrapped protocol that gathers what it writes and writes it later (a
    mesh link writes at the end of the reactor's turn): told to write it
    at once when the peer closes the WebSocket, since nothing may be sent
    once the close is answered.
    """

    def flush(self) -> None:
        """Write what was gathered, now."""


@implementer(ITransport, IConsumer, IPushProducer)
class StreamTransport:
    """
    The transport the wrapped protocol writes to: each write is a binary
    message; the rest is passed to the WebSocket's own transport.
    """

    def __init__(self, websocket: StreamAdapter) -> None:
        self._websocket = websocket

    @property
    def transport(self) -> Any:
        """The transport under the WebSocket (TCP, or TLS over TCP)."""
        return self._websocket.transport

    def write(self, data: bytes) -> None:
        websocket = self._websocket
        if not data or websocket.state != websocket.STATE_OPEN:
            return
        # (Autobahn also refuses to send a message over its own limit.)
        longest = min(MAX_WRITTEN_MESSAGE, websocket.maxMessagePayloadSize or MAX_WRITTEN_MESSAGE)
        if len(data) <= longest:
            websocket.sendMessage(bytes(data), isBinary=True)
            return
        view = memoryview(data)
        for start in range(0, len(data), longest):
            websocket.sendMessage(bytes(view[start : start + longest]), isBinary=True)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Start the close handshake; Autobahn drops TCP if it stalls."""
        if self._websocket.state == self._websocket.STATE_OPEN:
            self._websocket.sendClose(NORMAL_CLOSE)

    def abortConnection(self) -> None:
        """Drop the connection at once, with no close handshake."""
        self._websocket._abort()

    def getPeer(self) -> IAddress:
        peer: IAddress = self._websocket.transport.getPeer()
        return peer

    def getHost(self) -> IAddress:
        host: IAddress = self._websocket.transport.getHost()
        return host

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Set ``TCP_NODELAY`` on the connection, when it has one."""
        set_no_delay = getattr(self._websocket.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(enabled)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._websocket.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._websocket.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self._websocket.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._websocket.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.loseConnection()


class StreamAdapter(WebSocketProtocol):
    """
    What the server and client WebSocket protocols share: build the wrapped
    protocol once open, feed it the binary payloads, tell it of the close.

    Autobahn owns ``log``, ``factory.server`` and many more names on its
    protocols: ours start with an underscore.
    """

    _wrapped: IProtocol | None = None
    _lost = False
    _aborted = False
    _close_error: str | None = None
    _started = False
    _start_error: Failure | None = None
    # Set by Autobahn and Twisted.
    factory: Any
    transport: Any
    maxMessagePayloadSize: int  # Autobahn's option (0: no limit)

    def _opened(self, wrapped: IProtocol) -> None:
        """Called once the wrapped protocol is connected."""

    def _not_opened(self, reason: str | None) -> None:
        """
        Called when the connection closed before the wrapped protocol was
        connected, with Autobahn's reason.
        """

    def _built(self, wrapped: IProtocol) -> None:
        """Called once the wrapped protocol is built, before it is connected."""

    def onOpen(self) -> None:
        if self._aborted:
            # Dropped while it opened (its data was being read).
            return
        try:
            wrapped = self.factory._protocol_factory.buildProtocol(self.transport.getPeer())
            if wrapped is None:
                raise NoProtocol()
            self._built(wrapped)
        except Exception:
            self._start_failed(Failure(), "could not build a protocol")
            return
        self._wrapped = wrapped
        try:
            wrapped.makeConnection(StreamTransport(self))
        except Exception:
            self._start_failed(Failure(), f"{wrapped!r} raised in connectionMade")
            return
        self._started = True
        self._opened(wrapped)

    def _start_failed(self, failure: Failure, what: str) -> None:
        """Drop the connection: the wrapped protocol could not be started."""
        self._start_error = failure
        if self.factory.isServer:
            # A client's caller gets the failure from connect().
            _log.failure("WebSocket from {peer}: {what}", failure, peer=self.transport.getPeer(), what=what)
        self._abort()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        wrapped = self._wrapped
        if wrapped is None or self._close_error is not None:
            return
        if not isBinary:
            self._close_error = "a text message came: this connection carries binary messages only"
            _log.warn(
                "closing the WebSocket from {peer}: {reason}", peer=self.transport.getPeer(), reason=self._close_error
            )
            self.sendCloseFrame(code=UNSUPPORTED_DATA, reasonUtf8=b"binary messages only")
            return
        try:
            wrapped.dataReceived(payload)
        except Exception:
            _log.failure("{protocol!r} raised in dataReceived: dropping the connection", protocol=wrapped)
            self._abort()

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        # The peer is closing.  What the wrapped protocol gathered to write
        # (a mesh link writes at the end of the reactor's turn) goes out
        # now, before Autobahn answers with its own close, after which
        # nothing may be sent.
        wrapped = self._wrapped
        if isinstance(wrapped, GatheringProtocol) and self.state == self.STATE_OPEN:
            wrapped.flush()
        return super().onCloseFrame(code, reasonRaw)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self._lost:
            return
        self._lost = True
        wrapped, self._wrapped = self._wrapped, None
        if wrapped is not None:
            try:
                wrapped.connectionLost(self._lost_reason(wasClean, code, reason))
            except Exception:
                _log.failure("{protocol!r} raised in connectionLost", protocol=wrapped)
        if not self._started:
            self._not_opened(reason)

    def _lost_reason(self, clean: bool, code: int | None, reason: str | None) -> Failure:
        if self._aborted:
            return Failure(ConnectionAborted())
        if self._close_error is not None:
            return Failure(ConnectionLost(self._close_error))
        if clean and code in (None, NORMAL_CLOSE):
            return Failure(ConnectionDone(f"WebSocket closed (code {code})"))
        return Failure(ConnectionLost(f"WebSocket closed (code {code}): {reason}"))

    def _abort(self) -> None:
        """Drop the TCP connection now."""
        if self.transport is None:
            return
        self._aborted = True
        self.wasNotCleanReason = "the connection was aborted"
        self.transport.abortConnection()
