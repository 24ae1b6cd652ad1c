"""
The server and client ends of a WebSocket that carries a byte stream:
Autobahn's protocols and factories, and what the wrapped protocol's factory
hears of a server's connections (`.OpeningFactory`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, runtime_checkable
from typing import Protocol as Interface

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IAddress, ILoggingContext, IProtocol, IProtocolFactory
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.reflect import fullyQualifiedName

from twisted_mesh._logs import WEBSOCKET
from twisted_mesh._websocket.stream import StreamAdapter

#: (Not a class attribute: there, a Logger takes the class's path as its namespace.)
_log = Logger(namespace=WEBSOCKET)


class WebSocketHandshakeError(ConnectError):
    """
    The WebSocket did not open: the server refused the upgrade, or the
    connection closed, failed its TLS handshake or timed out before the
    opening handshake was over.  The message tells which.
    """


@runtime_checkable
class OpeningFactory(Interface):
    """
    What a protocol factory run by a WebSocket server may have as well, to
    know each connection from the moment it is accepted, while its
    WebSocket opens (an opening handshake that never ends holds a connection
    too), and to drop it.

    ``buildProtocol`` is still called once the WebSocket is open; `.opened`
    then says which connection the protocol was built for.
    """

    def opening(self, peer: IAddress, drop: Callable[[str], None]) -> object | None:
        """
        A connection from ``peer`` was accepted; its WebSocket is not open.

        :param drop: drops the connection at once, with the reason to log,
            while its WebSocket is not open.
        :return: a token for `.opened` or `.closed`, or ``None`` to drop the
            connection now.
        """

    def opened(self, token: object, protocol: IProtocol) -> None:
        """
        The WebSocket of the connection of ``token`` opened, and ``protocol``
        was built for it; it is connected next.
        """

    def closed(self, token: object) -> None:
        """The connection of ``token`` closed, and no protocol was built for it."""


class ServerProtocol(StreamAdapter, WebSocketServerProtocol):  # type: ignore[misc]
    # The token of the wrapped factory (an OpeningFactory) for this
    # connection, until it is told the connection opened or closed.
    _opening: object | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        watcher = self.factory._protocol_factory
        if not isinstance(watcher, OpeningFactory):
            return
        try:
            self._opening = watcher.opening(self.transport.getPeer(), self._drop)
        except Exception:
            _log.failure("{factory!r} raised in opening: dropping the connection", factory=watcher)
        if self._opening is None:
            self._abort()

    def _drop(self, reason: str) -> None:
        _log.debug("dropping the WebSocket from {peer}: {reason}", peer=self.transport.getPeer(), reason=reason)
        self._abort()

    def _built(self, wrapped: IProtocol) -> None:
        opening, self._opening = self._opening, None
        if opening is not None:
            self.factory._protocol_factory.opened(opening, wrapped)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        opening, self._opening = self._opening, None
        if opening is not None:
            self.factory._protocol_factory.closed(opening)

    def sendHttpErrorResponse(self, code: int, reason: str, responseHeaders: Any = None) -> None:
        # An empty body that HTTP clients can tell is complete.
        headers = [*(responseHeaders or ()), ("Content-Length", "0"), ("Connection", "close")]
        if code == 426:
            headers.append(("Upgrade", "websocket"))
        super().sendHttpErrorResponse(code, reason, headers)


class ClientProtocol(StreamAdapter, WebSocketClientProtocol):  # type: ignore[misc]
    _tcp_lost: Failure | None = None

    def connectionMade(self) -> None:
        self.factory._websocket = self
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._tcp_lost = reason
        super().connectionLost(reason)

    def _opened(self, wrapped: IProtocol) -> None:
        if not self.factory._ready.called:
            self.factory._ready.callback(wrapped)

    def _not_opened(self, reason: str | None) -> None:
        if self.factory._ready.called:
            return
        if self._start_error is not None:
            self.factory._ready.errback(self._start_error)
            return
        lost = self._tcp_lost
        if lost is not None and not lost.check(ConnectionClosed):
            # A TLS failure, say, which Autobahn's reason does not always tell.
            reason = f"{fullyQualifiedName(lost.type)}: {lost.getErrorMessage()}"
        error = WebSocketHandshakeError(string=f"the WebSocket to {self.factory.url} did not open: {reason}")
        self.factory._ready.errback(error)


class ServerFactory(WebSocketServerFactory):
    protocol = ServerProtocol
    noisy = False

    def __init__(
        self, protocol_factory: IProtocolFactory, url: str | None, reactor: Any, options: dict[str, Any]
    ) -> None:
        super().__init__(url, reactor=reactor)
        self._protocol_factory = protocol_factory
        # Without webStatus a plain HTTP request gets 426 Upgrade Required.
        self.setProtocolOptions(webStatus=False, allowNullOrigin=True, **options)

    def logPrefix(self) -> str:
        # Twisted's "... starting on 4444": named as the wrapped factory is.
        wrapped = self._protocol_factory
        prefix = wrapped.logPrefix() if ILoggingContext.providedBy(wrapped) else type(wrapped).__name__
        return f"{prefix} (WebSocket)"

    def startFactory(self) -> None:
        self._protocol_factory.doStart()

    def stopFactory(self) -> None:
        self._protocol_factory.doStop()


class ClientFactory(WebSocketClientFactory):
    protocol = ClientProtocol
    noisy = False

    def __init__(self, protocol_factory: IProtocolFactory, url: str, reactor: Any, options: dict[str, Any]) -> None:
        super().__init__(url, reactor=reactor)
        self._protocol_factory = protocol_factory
        self._websocket: ClientProtocol | None = None
        self._ready: Deferred[IProtocol] = Deferred(self._cancel)
        self.setProtocolOptions(**options)

    def _cancel(self, connected: Deferred[IProtocol]) -> None:
        if self._websocket is not None:
            self._websocket._abort()

    def startFactory(self) -> None:
        self._protocol_factory.doStart()

    def stopFactory(self) -> None:
        self._protocol_factory.doStop()
