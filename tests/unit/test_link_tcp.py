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

from twisted_mesh._link.tcp import tcp_connection, tune_tcp, writes_through


@pytest.fixture
def connection() -> Iterator[tcp.Connection]:
    """A TCP connection of a reactor, on a real connected socket of loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        yield tcp.Connection(accepted, Protocol(), MemoryReactor())
    finally:
        for each in (listener, client, accepted):
            each.close()


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
