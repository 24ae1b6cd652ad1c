"""
Where a node listens and what it dials: endpoints for each transport, and
the addresses peers are told to dial.
"""

from __future__ import annotations

import socket
from typing import Any, TypeVar

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
    clientFromString,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint, IStreamServerEndpoint

from twisted_mesh._frames import MAX_FRAME_SIZE
from twisted_mesh._ids import Protocol
from twisted_mesh.tls import TLSOptions
from twisted_mesh.websocket import OPEN_HANDSHAKE_TIMEOUT, WebSocketClientEndpoint, WebSocketServerEndpoint

# A WebSocket message carries a frame and its header; leave room for both.
WEBSOCKET_SLACK = 64 * 1024

Address = tuple[str, int]

#: The endpoint-string prefixes that carry each transport.
PREFIXES = {
    "Plaintext": ("tcp", "tcp6", "unix"),
    "SSL": ("ssl", "tls"),
    "ws": ("ws",),
    "wss": ("wss",),
}
_TRANSPORT_OF_PREFIX = {prefix: encryption for encryption, prefixes in PREFIXES.items() for prefix in prefixes}


def encryption_of(description: str, default: str) -> str:
    """
    The transport an endpoint string carries: ``'SSL'`` for ``ssl:``,
    ``'ws'`` for ``ws:``...; ``default`` for a prefix that names none.
    """
    return _TRANSPORT_OF_PREFIX.get(description.split(":", 1)[0].lower(), default)


_Endpoint = TypeVar("_Endpoint", IStreamServerEndpoint, IStreamClientEndpoint)


def _fitted(endpoint: _Endpoint, max_frame_size: int) -> _Endpoint:
    """``endpoint``; if it is a WebSocket one, taking messages as large as frames of ``max_frame_size``."""
    if isinstance(endpoint, (WebSocketServerEndpoint, WebSocketClientEndpoint)):
        endpoint.max_message_size = max_frame_size + WEBSOCKET_SLACK
    return endpoint


def server_from_string(
    reactor: Any, description: str, max_frame_size: int = MAX_FRAME_SIZE, open_timeout: float = OPEN_HANDSHAKE_TIMEOUT
) -> IStreamServerEndpoint:
    """
    The endpoint of a server endpoint string; a WebSocket one (``ws:``,
    ``wss:``) accepts messages as large as frames of ``max_frame_size``, and
    gives a connection ``open_timeout`` seconds to open its WebSocket.
    """
    endpoint: IStreamServerEndpoint = _fitted(serverFromString(reactor, description), max_frame_size)
    if isinstance(endpoint, WebSocketServerEndpoint):
        endpoint.open_timeout = open_timeout
    return endpoint


def client_from_string(reactor: Any, description: str, max_frame_size: int = MAX_FRAME_SIZE) -> IStreamClientEndpoint:
    """
    The endpoint of a client endpoint string; a WebSocket one (``ws:``,
    ``wss:``) accepts messages as large as frames of ``max_frame_size``.
    """
    endpoint: IStreamClientEndpoint = clientFromString(reactor, description)
    return _fitted(endpoint, max_frame_size)


def _is_ipv6(host: str) -> bool:
    return ":" in host


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}/" if _is_ipv6(host) else f"{scheme}://{host}:{port}/"


def server_endpoint(
    reactor: Any,
    protocol: Protocol,
    tls: TLSOptions | None,
    host: str,
    port: int,
    max_frame_size: int = MAX_FRAME_SIZE,
    open_timeout: float = OPEN_HANDSHAKE_TIMEOUT,
) -> IStreamServerEndpoint:
    """
    The endpoint a node of ``protocol`` listens on at ``host:port`` (``host``
    empty or ``'0.0.0.0'``: every interface); over WebSocket, a connection
    has ``open_timeout`` seconds to open its WebSocket.
    """
    interface = "" if host in ("", "0.0.0.0") else host
    encryption = protocol.encryption
    tcp: IStreamServerEndpoint
    if encryption in ("SSL", "wss"):
        assert tls is not None
        tcp = SSL4ServerEndpoint(reactor, port, tls.server_options(), interface=interface)
    elif _is_ipv6(interface):
        tcp = TCP6ServerEndpoint(reactor, port, interface=interface)
    else:
        tcp = TCP4ServerEndpoint(reactor, port, interface=interface)
    if encryption in ("ws", "wss"):
        return WebSocketServerEndpoint(
            tcp, reactor=reactor, max_message_size=max_frame_size + WEBSOCKET_SLACK, open_timeout=open_timeout
        )
    return tcp


def client_endpoint(
    reactor: Any, protocol: Protocol, tls: TLSOptions | None, host: str, port: int, max_frame_size: int = MAX_FRAME_SIZE
) -> IStreamClientEndpoint:
    """The endpoint a node of ``protocol`` dials ``host:port`` with."""
    encryption = protocol.encryption
    tcp: IStreamClientEndpoint = (
        TCP6ClientEndpoint(reactor, host, port) if _is_ipv6(host) else TCP4ClientEndpoint(reactor, host, port)
    )
    if encryption in ("SSL", "wss"):
        assert tls is not None
        tcp = wrapClientTLS(tls.client_creator(host), tcp)
    if encryption in ("ws", "wss"):
        return WebSocketClientEndpoint(
            tcp, _url(encryption, host, port), reactor=reactor, max_message_size=max_frame_size + WEBSOCKET_SLACK
        )
    return tcp


def lan_address() -> str:
    """
    This machine's address on its LAN: the source address of its default
    route, or ``127.0.0.1`` when it has none.  No packet is sent.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Connecting a UDP socket only picks a route; 192.0.2.1 (TEST-NET-1)
        # is never routed anywhere.
        probe.connect(("192.0.2.1", 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def outward_address(host: IAddress) -> Address | None:
    """
    The address peers should dial for a listener bound to ``host``, or ``None``
    when it is not an IP listener.  A wildcard interface gives the LAN
    address.
    """
    if not isinstance(host, (IPv4Address, IPv6Address)):
        return None
    if host.host in ("0.0.0.0", "::", ""):
        return lan_address(), host.port
    return host.host, host.port
