"""
`twisted_mesh._link.tcp`: the TCP connection under a link's transport,
found through wrappers, and whether what is written reaches it at once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet import ssl, tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from tests.unit.link_rig import watched_by
from twisted_mesh._link.tcp import tcp_connection, tune_tcp, write_now, writes_through


@pytest.fixture
def connected() -> Iterator[tuple[tcp.Connection, socket.socket]]:
    """
    A TCP connection of a reactor, on a real connected socket of loopback,
    and the peer's socket.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        connection = tcp.Connection(accepted, Protocol(), MemoryReactor())
        connection.connected = True
        yield connection, client
    finally:
        for each in (listener, client, accepted):
            each.close()


@pytest.fixture
def connection(connected: tuple[tcp.Connection, socket.socket]) -> tcp.Connection:
    """A TCP connection of a reactor, on a real connected socket of loopback."""
    return connected[0]


def wrapped(factory: Factory, connection: tcp.Connection) -> Protocol:
    """The protocol ``factory`` wraps around ``connection`` (what the reactor's makeConnection sets up)."""
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    protocol.transport = connection
    return protocol


def test_a_tcp_connection_is_its_own(connection: tcp.Connection) -> None:
    assert tcp_connection(connection) is connection
    assert tcp_connection(None) is None


def test_the_connection_under_a_proxy_protocol_wrapper_is_found_and_tuned(connection: tcp.Connection) -> None:
    """A ``haproxy:`` listener wraps its connections: the link still finds, and tunes, the TCP under it."""
    wrapper = wrapped(HAProxyWrappingFactory(Factory.forProtocol(Protocol)), connection)
    found = tcp_connection(wrapper)
    assert found is connection
    tune_tcp(found)
    handle = connection.getHandle()
    assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    assert writes_through(wrapper) and writes_through(connection)


def test_tls_is_found_under_but_does_not_write_through(connection: tcp.Connection) -> None:
    """
    Under TLS the connection is found (to tune it), but what is written to
    TLS reaches it only at TLS's own next turn: nothing to send at once.
    """
    factory = TLSMemoryBIOFactory(ssl.CertificateOptions(), True, Factory.forProtocol(Protocol))
    tls = wrapped(factory, connection)
    assert tcp_connection(tls) is connection
    assert not writes_through(tls)


def test_a_unix_socket_has_no_tcp_connection() -> None:
    left, right = socket.socketpair()
    try:
        connection = tcp.Connection(left, Protocol(), MemoryReactor())
        assert tcp_connection(connection) is None
    finally:
        left.close()
        right.close()


# -- writes that leave at once ---------------------------------------------------


def received(peer: socket.socket, size: int, connection: tcp.Connection) -> bytes:
    """Read ``size`` bytes on ``peer``, the reactor's looks at ``connection`` sending what it holds."""
    peer.settimeout(10)
    data = bytearray()
    while len(data) < size:
        if connection in connection.reactor.getWriters():
            connection.doWrite()
        data += peer.recv(1 << 16)
    return bytes(data)


def test_a_write_goes_straight_to_the_socket(connected: tuple[tcp.Connection, socket.socket]) -> None:
    """The connection holds nothing unsent: the socket takes the bytes, and the reactor is never asked to watch it."""
    connection, peer = connected
    watched = watched_by(connection.reactor)
    assert write_now(connection, connection, b"a frame", held=False) is False
    peer.settimeout(10)
    assert peer.recv(100) == b"a frame"
    assert watched == []


def test_what_a_full_socket_leaves_is_sent_first(connected: tuple[tcp.Connection, socket.socket]) -> None:
    """
    More than the socket can take: the rest waits in the connection for the
    reactor, and a write after it waits behind it (not straight to the
    socket); the peer reads every byte, in order.  Once the reactor sent it
    all, writes go straight to the socket again.
    """
    connection, peer = connected
    connection.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    first = bytes(range(256)) * 4096  # 1 MiB, far past both buffers
    assert write_now(connection, connection, first, held=False) is True
    assert connection in connection.reactor.getWriters()
    assert write_now(connection, connection, b"after it", held=True) is True
    assert received(peer, len(first) + 8, connection) == first + b"after it"
    assert connection not in connection.reactor.getWriters()
    watched = watched_by(connection.reactor)
    assert write_now(connection, connection, b"then this", held=True) is False
    assert peer.recv(100) == b"then this"
    assert watched == []


def test_a_write_through_a_wrapper_is_sent_by_the_connection(connected: tuple[tcp.Connection, socket.socket]) -> None:
    """A wrapper between (the PROXY protocol's): written to it, and the connection sends it at once."""
    connection, peer = connected
    wrapper = wrapped(HAProxyWrappingFactory(Factory.forProtocol(Protocol)), connection)
    assert write_now(wrapper, connection, b"through it", held=False) is True  # type: ignore[arg-type]
    assert connection not in connection.reactor.getWriters()
    peer.settimeout(10)
    assert peer.recv(100) == b"through it"


class DiallingConnection(tcp.Connection):
    """A connection that starts TLS as the client, as a dialled one does."""

    _tlsClientDefault = True


def test_nothing_goes_past_tls_started_on_the_connection(connected: tuple[tcp.Connection, socket.socket]) -> None:
    """TLS started on the connection itself: what is written goes through it, never to the socket as it is."""
    accepted, peer = connected
    connection = DiallingConnection(accepted.getHandle(), Protocol(), accepted.reactor)
    connection.connected = True
    connection.startTLS(ssl.CertificateOptions(), True)
    write_now(connection, connection, b"a secret frame", held=False)
    peer.settimeout(10)
    hello = peer.recv(1 << 16)
    assert hello[:1] == b"\x16"  # a TLS handshake record: the ClientHello
    assert b"a secret frame" not in hello
