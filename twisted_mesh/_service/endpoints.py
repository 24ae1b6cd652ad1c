"""
Where a node listens and what it dials: endpoints for each transport, and
the addresses peers are told to dial.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any, TypeVar, Union

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
from twisted.internet.interfaces import IAddress, IProtocol, IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol

from twisted_mesh._admission import Slot, source_of
from twisted_mesh._core.link import Address, Link
from twisted_mesh._frames import MAX_FRAME_SIZE
from twisted_mesh._ids import Network
from twisted_mesh._link import LinkFactory, LinkProtocol
from twisted_mesh.limits import Limits
from twisted_mesh.tls import TLSOptions
from twisted_mesh.websocket import OPEN_HANDSHAKE_TIMEOUT, WebSocketClientEndpoint, WebSocketServerEndpoint

# A WebSocket message carries a frame and its header; leave room for both.
WEBSOCKET_SLACK = 64 * 1024


# zope interfaces do not support "|" at run time, hence Union.
#: Where to listen: an endpoint string, an endpoint, a port, or (host, port).
ListenAddress = Union[str, IStreamServerEndpoint, int, Address]  # noqa: UP007
#: What to dial: an endpoint string, an endpoint, or (host, port).
DialAddress = Union[str, IStreamClientEndpoint, Address]  # noqa: UP007

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
    protocol: Network,
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
    reactor: Any, protocol: Network, tls: TLSOptions | None, host: str, port: int, max_frame_size: int = MAX_FRAME_SIZE
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


def address_text(address: IAddress | Address) -> str:
    """``address`` as a log line shows it: HOST:PORT (``[HOST]:PORT`` for IPv6), or a path."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        address = address.host, address.port
    if isinstance(address, tuple):
        host, port = address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(getattr(address, "name", address))


_Parsed = TypeVar("_Parsed")


def _parsed(parse: Callable[..., _Parsed], reactor: Any, description: str, *limits: float) -> _Parsed:
    """
    What ``parse`` makes of the endpoint string ``description`` with
    ``limits``; a `.ValueError` that names it if it cannot.
    """
    try:
        return parse(reactor, description, *limits)
    except Exception as e:
        raise ValueError(f"bad endpoint string {description!r}: {e}") from e


def checked_address(address: object, *, listening: bool) -> Address:
    """
    ``address``, a ``(host, port)`` pair, checked: a host string and a port
    number (0, any free port, only to listen on).

    :raise TypeError: when the host is not a string or the port not an int
        (a port given as a string, say).
    :raise ValueError: when the port is out of range.
    """
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError(f"an address is a (host, port) pair, not {address!r}")
    host, port = address
    if not isinstance(host, str):
        raise TypeError(f"host must be a string, not {host!r}")
    if type(port) is not int:
        raise TypeError(f"port must be an int, not {port!r}")
    if not (0 if listening else 1) <= port < 65536:
        allowed = "0 (any free port) to 65535" if listening else "1 to 65535"
        raise ValueError(f"port must be {allowed}, not {port}")
    return host, port


_HOST_PORT = re.compile(r"(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:\[\]=]+)):(?P<port>[0-9]+)")

#: The client endpoint-string types of Twisted itself, ``tcp6`` (a server
#: type only, but no host's name), and twisted_mesh's: a string that starts
#: with one of these is an endpoint string, not ``HOST:PORT``.
ENDPOINT_TYPES = frozenset({"tcp", "tcp6", "ssl", "tls", "unix", "ws", "wss"})


def host_port(text: str) -> Address | None:
    """
    The address of ``text`` when it is ``HOST:PORT`` or ``[IPv6]:PORT`` (as
    ``twistd mesh --connect`` takes it), else ``None`` (an endpoint string,
    such as ``tcp:host=h:port=4444``).
    """
    match = _HOST_PORT.fullmatch(text)
    if match is None or (match["host"] or "").lower() in ENDPOINT_TYPES:
        return None
    return match["ipv6"] or match["host"], int(match["port"])


def dial_address(address: DialAddress) -> DialAddress:
    """
    A peer to dial, checked: ``HOST:PORT`` read as a pair (see
    `.host_port`), a pair's port checked (see `.checked_address`).
    """
    if isinstance(address, str):
        return host_port(address) or address
    if isinstance(address, tuple):
        return checked_address(address, listening=False)
    return address


def listening_endpoint(
    reactor: Any, address: ListenAddress, protocol: Network, tls: Callable[[], TLSOptions], limits: Limits
) -> tuple[IStreamServerEndpoint, str]:
    """
    The endpoint a node of ``protocol`` listens on at ``address``, and the
    transport it carries (an endpoint string's own, else the node's).

    :param tls: gives the node's TLS options, when the transport needs them.
    :raise ValueError: when ``address`` is an endpoint string that cannot be
        parsed.
    """
    main = protocol.encryption
    # A WebSocket listener takes messages as large as frames, and gives a
    # connection the handshake's time to open its WebSocket.
    fitting = (limits.max_frame_size, limits.handshake_timeout)
    if isinstance(address, str):
        endpoint = _parsed(server_from_string, reactor, address, *fitting)
        return endpoint, encryption_of(address, main)
    if isinstance(address, int):
        address = ("", address)
    if isinstance(address, tuple):
        options = tls() if main in ("SSL", "wss") else None
        return server_endpoint(reactor, protocol, options, *checked_address(address, listening=True), *fitting), main
    return address, main


def dialling_endpoint(
    reactor: Any,
    address: DialAddress,
    protocol: Network,
    encryption: str,
    tls: Callable[[], TLSOptions],
    max_frame_size: int,
) -> tuple[IStreamClientEndpoint, str]:
    """
    The endpoint a node of ``protocol``'s subnet dials ``address`` with, over
    ``encryption`` unless it is an endpoint string (which names its own),
    and the transport it carries.

    :param tls: gives the node's TLS options, when the transport needs them.
    :raise ValueError: when ``address`` is an endpoint string that cannot be
        parsed, or a port out of range.
    :raise TypeError: when ``address`` is a pair whose port is not an int.
    """
    if isinstance(address, str):
        dialler = _parsed(client_from_string, reactor, address, max_frame_size)
        return dialler, encryption_of(address, encryption)
    if isinstance(address, tuple):
        options = tls() if encryption in ("SSL", "wss") else None
        transport = protocol._replace(encryption=encryption)
        host, port = checked_address(address, listening=False)
        return client_endpoint(reactor, transport, options, host, port, max_frame_size), encryption
    return address, encryption


def addresses_of(link: Link) -> list[Address]:
    """Where a peer can be reached: the address it gives, and the one dialled."""
    addresses = [] if link.peer_addr is None else [link.peer_addr]
    if link.outgoing and isinstance(link, LinkProtocol):
        remote = link.remote_address()
        host, port = getattr(remote, "host", None), getattr(remote, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            addresses.append((host, port))
    return addresses


class Accepting(Factory):
    """
    The factory of a node's accepted connections of one transport: the
    node's own factory while its service runs.  A connection it is asked
    for while the service does not run (a WebSocket that was still opening
    when it stopped, say) is `.Refused`, and never reaches the node.

    Over WebSocket, a connection takes its place among the node's pending
    connections as soon as it is accepted, and its link is given that place
    once the WebSocket opens (an `OpeningFactory <.twisted_mesh.websocket.OpeningFactory>`): an opening handshake that
    never ends holds a pending place, as a mesh handshake that never comes
    does.

    :param running: whether the node's service runs.
    :param links: the node's factory of accepted links.
    """

    noisy = False

    def __init__(self, running: Callable[[], bool], links: LinkFactory) -> None:
        self._running = running
        self._links = links

    def logPrefix(self) -> str:
        # "... starting on 4444": named as the links' factory is.
        return self._links.logPrefix()

    def buildProtocol(self, addr: Any) -> TwistedProtocol | None:
        if not self._running():
            return Refused()
        return self._links.buildProtocol(addr)

    def opening(self, peer: IAddress, drop: Callable[[str], None]) -> Slot | None:
        if not self._running():
            return None
        return self._links.node.admission.admit(source_of(peer), drop)

    def opened(self, token: object, protocol: IProtocol) -> None:
        assert isinstance(token, Slot)
        if isinstance(protocol, LinkProtocol):
            protocol.slot = token
        else:
            # Refused: the service stopped while the WebSocket opened.
            self.closed(token)

    def closed(self, token: object) -> None:
        assert isinstance(token, Slot)
        self._links.node.admission.release(token)


class Refused(TwistedProtocol):
    """A connection that came when nothing may take it: it is closed at once."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()
