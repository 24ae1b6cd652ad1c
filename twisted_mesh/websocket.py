"""
Stream endpoints over WebSocket: any stream `.Protocol` runs over them
unchanged.

`.WebSocketServerEndpoint` and `.WebSocketClientEndpoint` wrap another
stream endpoint (TCP, TLS...) and speak WebSocket (RFC 6455, with Autobahn)
on it.  The protocol they connect sees a plain byte stream:

    - each ``transport.write(data)`` goes out as one **binary** message, or
      as several when it is longer than `.MAX_WRITTEN_MESSAGE` or than the
      endpoint's own message limit;
    - the payloads of the binary messages received are handed to
      ``dataReceived`` in order, as one stream: message boundaries mean
      nothing, a frame of the wrapped protocol may span several messages or
      share one with others;
    - the protocol is built once the WebSocket is open, and
      ``connectionLost`` is called exactly once when it closes.

This is how js2p's ``'ws'`` transport and browsers carry the mesh frames:
``ws://host:port/``, no subprotocol.

**Text messages** are refused: a byte stream has no text, so a peer that
sends one is told so (close code 1003, "unsupported data") and the
connection is closed; the wrapped protocol then sees a `.ConnectionLost`.

A plain HTTP request (no upgrade) gets ``426 Upgrade Required``; Autobahn's
status page is off.

A server's connections exist before their WebSocket opens, and one whose
opening handshake never ends holds a connection all the same, until the
open timeout.  A wrapped factory that is an `.OpeningFactory` hears of each
connection from the moment it is accepted, and may drop it.

The endpoint strings ``ws:``/``wss:`` are parsed by `.WebSocketServerParser`
and `.WebSocketClientParser` (registered as plugins by
``twisted/plugins/twisted_mesh_websocket.py``)::

    ws:4444[:interface=127.0.0.1][:backlog=50]                  (over tcp:)
    wss:4444:privateKey=key.pem:certKey=cert.pem[...]          (over ssl:)
    ws:host=example.com:port=4444[:timeout=30]                 (over tcp:)
    wss:host=example.com:port=4444[:trustRoots=ca/][...]       (over tls:)
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
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import (
    ConnectError,
    ConnectionAborted,
    ConnectionClosed,
    ConnectionDone,
    ConnectionLost,
    NoProtocol,
)
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IListeningPort,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorCore,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.python.reflect import fullyQualifiedName
from zope.interface import implementer

from twisted_mesh._frames import MAX_FRAME_SIZE

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "OpeningFactory",
    "WebSocketClientEndpoint",
    "WebSocketClientParser",
    "WebSocketHandshakeError",
    "WebSocketServerEndpoint",
    "WebSocketServerParser",
    "websocket_server_factory",
]

#: The largest message (and frame) accepted by default: a mesh frame of the
#: largest size, its length header, and some slack.
DEFAULT_MAX_MESSAGE_SIZE = MAX_FRAME_SIZE + 64 * 1024

#: Seconds the peer has to finish the opening handshake, unless the endpoint
#: or factory is given another ``open_timeout``.
OPEN_HANDSHAKE_TIMEOUT = 30.0

#: Seconds the peer has to answer our close before the TCP connection is
#: dropped.
CLOSE_HANDSHAKE_TIMEOUT = 5.0

#: The longest message a write goes out as: a longer write is cut into
#: several, which a reader of the stream joins again.  Readers limit the
#: messages they take (twisted_mesh to its frame limit and 64 KiB more).
MAX_WRITTEN_MESSAGE = 1 << 20

_NORMAL_CLOSE = 1000
_UNSUPPORTED_DATA = 1003


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


def _options(max_message_size: int, open_timeout: float = OPEN_HANDSHAKE_TIMEOUT) -> dict[str, Any]:
    return {
        "maxMessagePayloadSize": max_message_size,
        "maxFramePayloadSize": max_message_size,
        "openHandshakeTimeout": open_timeout,
        "closeHandshakeTimeout": CLOSE_HANDSHAKE_TIMEOUT,
        "autoPingInterval": 0,
    }


@implementer(ITransport, IConsumer, IPushProducer)
class _StreamTransport:
    """
    The transport the wrapped protocol writes to: each write is a binary
    message; the rest is passed to the WebSocket's own transport.
    """

    def __init__(self, websocket: _StreamAdapter) -> None:
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
            self._websocket.sendClose(_NORMAL_CLOSE)

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


class _StreamAdapter(WebSocketProtocol):
    """
    What the server and client WebSocket protocols share: build the wrapped
    protocol once open, feed it the binary payloads, tell it of the close.

    Autobahn owns ``log``, ``factory.server`` and many more names on its
    protocols: ours start with an underscore.
    """

    _log = Logger()
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
            wrapped.makeConnection(_StreamTransport(self))
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
            self._log.failure("WebSocket from {peer}: {what}", failure, peer=self.transport.getPeer(), what=what)
        self._abort()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        wrapped = self._wrapped
        if wrapped is None or self._close_error is not None:
            return
        if not isBinary:
            self._close_error = "a text message came: this connection carries binary messages only"
            self._log.warn(
                "closing the WebSocket from {peer}: {reason}", peer=self.transport.getPeer(), reason=self._close_error
            )
            self.sendCloseFrame(code=_UNSUPPORTED_DATA, reasonUtf8=b"binary messages only")
            return
        try:
            wrapped.dataReceived(payload)
        except Exception:
            self._log.failure("{protocol!r} raised in dataReceived: dropping the connection", protocol=wrapped)
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
                self._log.failure("{protocol!r} raised in connectionLost", protocol=wrapped)
        if not self._started:
            self._not_opened(reason)

    def _lost_reason(self, clean: bool, code: int | None, reason: str | None) -> Failure:
        if self._aborted:
            return Failure(ConnectionAborted())
        if self._close_error is not None:
            return Failure(ConnectionLost(self._close_error))
        if clean and code in (None, _NORMAL_CLOSE):
            return Failure(ConnectionDone(f"WebSocket closed (code {code})"))
        return Failure(ConnectionLost(f"WebSocket closed (code {code}): {reason}"))

    def _abort(self) -> None:
        """Drop the TCP connection now."""
        if self.transport is None:
            return
        self._aborted = True
        self.wasNotCleanReason = "the connection was aborted"
        self.transport.abortConnection()


class _ServerProtocol(_StreamAdapter, WebSocketServerProtocol):  # type: ignore[misc]
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
            self._log.failure("{factory!r} raised in opening: dropping the connection", factory=watcher)
        if self._opening is None:
            self._abort()

    def _drop(self, reason: str) -> None:
        self._log.debug("dropping the WebSocket from {peer}: {reason}", peer=self.transport.getPeer(), reason=reason)
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


class _ClientProtocol(_StreamAdapter, WebSocketClientProtocol):  # type: ignore[misc]
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


class _ServerFactory(WebSocketServerFactory):
    protocol = _ServerProtocol
    noisy = False

    def __init__(
        self, protocol_factory: IProtocolFactory, url: str | None, reactor: Any, max_size: int, open_timeout: float
    ) -> None:
        super().__init__(url, reactor=reactor)
        self._protocol_factory = protocol_factory
        # Without webStatus a plain HTTP request gets 426 Upgrade Required.
        self.setProtocolOptions(webStatus=False, allowNullOrigin=True, **_options(max_size, open_timeout))

    def startFactory(self) -> None:
        self._protocol_factory.doStart()

    def stopFactory(self) -> None:
        self._protocol_factory.doStop()


def websocket_server_factory(
    protocol_factory: IProtocolFactory,
    *,
    reactor: Any = None,
    url: str | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    open_timeout: float = OPEN_HANDSHAKE_TIMEOUT,
) -> WebSocketServerFactory:
    """
    An Autobahn server factory that runs a protocol of ``protocol_factory``
    (told of each connection from the moment it is accepted, if it is an
    `.OpeningFactory`) over each WebSocket, as `.WebSocketServerEndpoint`
    does; wrap it in ``autobahn.twisted.resource.WebSocketResource`` to serve
    it in a site.

    :param open_timeout: seconds a connection has to open its WebSocket.
    """
    return _ServerFactory(protocol_factory, url, reactor, max_message_size, open_timeout)


class _ClientFactory(WebSocketClientFactory):
    protocol = _ClientProtocol
    noisy = False

    def __init__(self, protocol_factory: IProtocolFactory, url: str, reactor: Any, max_size: int) -> None:
        super().__init__(url, reactor=reactor)
        self._protocol_factory = protocol_factory
        self._websocket: _ClientProtocol | None = None
        self._ready: Deferred[IProtocol] = Deferred(self._cancel)
        self.setProtocolOptions(**_options(max_size))

    def _cancel(self, connected: Deferred[IProtocol]) -> None:
        if self._websocket is not None:
            self._websocket._abort()

    def startFactory(self) -> None:
        self._protocol_factory.doStart()

    def stopFactory(self) -> None:
        self._protocol_factory.doStop()


@implementer(IStreamServerEndpoint)
class WebSocketServerEndpoint:
    """
    Listen for WebSocket connections on another stream server endpoint.

    The protocol of each connection is built once its WebSocket is open,
    with the peer's TCP address; it sees the payloads of the binary messages
    as one byte stream and each of its writes is sent as a binary message.

    :param inner: the endpoint to listen on, such as a
        `.TCP4ServerEndpoint` (``ws://``) or an `.SSL4ServerEndpoint`
        (``wss://``).
    :param reactor: the reactor for Autobahn's factory; by default the
        global one.
    :param url: the URL clients reach the listener at; Autobahn only uses it
        to check ``Origin`` headers, and every origin is allowed.
    :param max_message_size: the largest message accepted, in bytes; a
        larger one closes the connection.
    :param open_timeout: seconds a connection has to open its WebSocket.
    :ivar max_message_size: the same, for the connections made from now on.
    :ivar open_timeout: the same, for the connections made from now on.
    """

    def __init__(
        self,
        inner: IStreamServerEndpoint,
        *,
        reactor: Any = None,
        url: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        open_timeout: float = OPEN_HANDSHAKE_TIMEOUT,
    ) -> None:
        self._inner = inner
        self._reactor = reactor
        self._url = url
        self.max_message_size = max_message_size
        self.open_timeout = open_timeout

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with ``protocolFactory`` building the protocol of each
        WebSocket.

        :return: a Deferred that fires with the inner endpoint's listening
            port.
        """
        factory = websocket_server_factory(
            protocolFactory,
            reactor=self._reactor,
            url=self._url,
            max_message_size=self.max_message_size,
            open_timeout=self.open_timeout,
        )
        return self._inner.listen(factory)


@implementer(IStreamClientEndpoint)
class WebSocketClientEndpoint:
    """
    Open a WebSocket over another stream client endpoint.

    :param inner: the endpoint to connect with, such as a
        `.TCP4ClientEndpoint` (``ws://``) or a TLS one (``wss://``).
    :param url: the WebSocket URL, such as ``"ws://127.0.0.1:4444/"``: its
        host, port and path go in the opening handshake.
    :param reactor: the reactor for Autobahn's factory; by default the
        global one.
    :param max_message_size: the largest message accepted, in bytes; a
        larger one closes the connection.
    :ivar max_message_size: the same, for the connections made from now on.
    """

    def __init__(
        self,
        inner: IStreamClientEndpoint,
        url: str,
        *,
        reactor: Any = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._inner = inner
        self._url = url
        self._reactor = reactor
        self.max_message_size = max_message_size

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect, open the WebSocket and build a protocol with
        ``protocolFactory``.

        :return: a Deferred that fires with the protocol built once the
            WebSocket is open.  It fails as the inner endpoint's does when
            the connection cannot be made; with `.WebSocketHandshakeError`
            when the server refuses the upgrade, TLS fails, or the
            connection closes before the WebSocket is open; with the
            factory's error when it builds no protocol (`.NoProtocol`) or
            the protocol raises in ``connectionMade``.  Cancelling it drops
            the connection.
        """
        factory = _ClientFactory(protocolFactory, self._url, self._reactor, self.max_message_size)
        connecting: Deferred[Any] = self._inner.connect(factory)
        return connecting.addCallback(lambda _: factory._ready)


def _quote(value: object) -> str:
    """Escape ``value`` for an endpoint string (``=`` too: positional values)."""
    return str(value).replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _description(prefix: str, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """Write back an endpoint string that Twisted's ``prefix`` parser reads."""
    parts = [prefix, *(_quote(arg) for arg in args)]
    parts += [f"{_quote(key)}={_quote(value)}" for key, value in kwargs.items()]
    return ":".join(parts)


def _url(scheme: str, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """The URL of a client string, from its host and port as Twisted reads them."""
    positional = [str(arg) for arg in args]
    host = str(kwargs["host"]) if "host" in kwargs else (positional.pop(0) if positional else None)
    port = str(kwargs["port"]) if "port" in kwargs else (positional.pop(0) if positional else None)
    if not host or not port:
        raise ValueError(f"a {scheme}: client endpoint needs host= and port=")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{int(port)}/"


@implementer(IPlugin, IStreamServerEndpointStringParser)
class WebSocketServerParser:
    """
    The ``ws:`` and ``wss:`` server endpoint strings: a WebSocket listener over
    Twisted's ``tcp:`` or ``ssl:`` endpoint, which reads the rest of the
    string::

        ws:4444:interface=127.0.0.1
        wss:4444:privateKey=key.pem:certKey=cert.pem

    :param secure: parse ``wss:`` (over ``ssl:``) instead of ``ws:``.
    """

    def __init__(self, secure: bool = False) -> None:
        self.prefix = "wss" if secure else "ws"
        self._inner = "ssl" if secure else "tcp"

    def parseStreamServer(self, reactor: IReactorCore, *args: object, **kwargs: object) -> IStreamServerEndpoint:
        """
        Make the endpoint of a ``ws:``/``wss:`` string.

        :param reactor: the reactor passed to `.serverFromString`.
        :param args: the positional arguments of the string.
        :param kwargs: the keyword arguments of the string.
        """
        inner = serverFromString(reactor, _description(self._inner, args, kwargs))
        return WebSocketServerEndpoint(inner, reactor=reactor)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class WebSocketClientParser:
    """
    The ``ws:`` and ``wss:`` client endpoint strings: a WebSocket over
    Twisted's ``tcp:`` or ``tls:`` endpoint (which verifies the server with
    the platform's trust store or ``trustRoots=``), to
    ``ws://host:port/``::

        ws:host=example.com:port=4444:timeout=10
        wss:host=example.com:port=4444:trustRoots=/etc/mesh/ca

    :param secure: parse ``wss:`` (over ``tls:``) instead of ``ws:``.
    """

    def __init__(self, secure: bool = False) -> None:
        self.prefix = "wss" if secure else "ws"
        self._inner = "tls" if secure else "tcp"

    def parseStreamClient(self, reactor: IReactorCore, *args: object, **kwargs: object) -> IStreamClientEndpoint:
        """
        Make the endpoint of a ``ws:``/``wss:`` string.

        :param reactor: the reactor passed to `.clientFromString`.
        :param args: the positional arguments of the string (host, port).
        :param kwargs: the keyword arguments of the string.
        """
        url = _url(self.prefix, args, kwargs)
        inner = clientFromString(reactor, _description(self._inner, args, kwargs))
        return WebSocketClientEndpoint(inner, url, reactor=reactor)
