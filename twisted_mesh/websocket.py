"""
Stream endpoints over WebSocket: any stream protocol (a Twisted ``Protocol``) runs over them
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

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorCore,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_mesh._frames import MAX_FRAME_SIZE
from twisted_mesh._websocket.ends import ClientFactory, OpeningFactory, ServerFactory, WebSocketHandshakeError
from twisted_mesh._websocket.stream import MAX_WRITTEN_MESSAGE as MAX_WRITTEN_MESSAGE

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


def _options(max_message_size: int, open_timeout: float = OPEN_HANDSHAKE_TIMEOUT) -> dict[str, Any]:
    """Autobahn's protocol options for our WebSockets."""
    return {
        "maxMessagePayloadSize": max_message_size,
        "maxFramePayloadSize": max_message_size,
        "openHandshakeTimeout": open_timeout,
        "closeHandshakeTimeout": CLOSE_HANDSHAKE_TIMEOUT,
        "autoPingInterval": 0,
    }


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
    return ServerFactory(protocol_factory, url, reactor, _options(max_message_size, open_timeout))


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
        factory = ClientFactory(protocolFactory, self._url, self._reactor, _options(self.max_message_size))
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


class _Parser:
    """
    What the ``ws:`` and ``wss:`` parsers share: their prefix, and the
    Twisted endpoint string under it, ``tcp:`` or (for ``wss:``) the
    parser's ``_secure``.
    """

    _secure = "ssl"

    def __init__(self, secure: bool = False) -> None:
        self.prefix = "wss" if secure else "ws"
        self._inner = self._secure if secure else "tcp"

    def _inner_string(self, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
        """The string of the endpoint under the WebSocket."""
        return _description(self._inner, args, kwargs)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class WebSocketServerParser(_Parser):
    """
    The ``ws:`` and ``wss:`` server endpoint strings: a WebSocket listener over
    Twisted's ``tcp:`` or ``ssl:`` endpoint, which reads the rest of the
    string::

        ws:4444:interface=127.0.0.1
        wss:4444:privateKey=key.pem:certKey=cert.pem

    :param secure: parse ``wss:`` (over ``ssl:``) instead of ``ws:``.
    """

    def parseStreamServer(self, reactor: IReactorCore, *args: object, **kwargs: object) -> IStreamServerEndpoint:
        """
        Make the endpoint of a ``ws:``/``wss:`` string.

        :param reactor: the reactor passed to `.serverFromString`.
        :param args: the positional arguments of the string.
        :param kwargs: the keyword arguments of the string.
        """
        inner = serverFromString(reactor, self._inner_string(args, kwargs))
        return WebSocketServerEndpoint(inner, reactor=reactor)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class WebSocketClientParser(_Parser):
    """
    The ``ws:`` and ``wss:`` client endpoint strings: a WebSocket over
    Twisted's ``tcp:`` or ``tls:`` endpoint (which verifies the server with
    the platform's trust store or ``trustRoots=``), to
    ``ws://host:port/``::

        ws:host=example.com:port=4444:timeout=10
        wss:host=example.com:port=4444:trustRoots=/etc/mesh/ca

    :param secure: parse ``wss:`` (over ``tls:``) instead of ``ws:``.
    """

    _secure = "tls"

    def parseStreamClient(self, reactor: IReactorCore, *args: object, **kwargs: object) -> IStreamClientEndpoint:
        """
        Make the endpoint of a ``ws:``/``wss:`` string.

        :param reactor: the reactor passed to `.clientFromString`.
        :param args: the positional arguments of the string (host, port).
        :param kwargs: the keyword arguments of the string.
        """
        url = _url(self.prefix, args, kwargs)
        inner = clientFromString(reactor, self._inner_string(args, kwargs))
        return WebSocketClientEndpoint(inner, url, reactor=reactor)
