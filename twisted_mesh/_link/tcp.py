"""
A link's TCP connection: found under TLS and WebSocket wrappers, its
socket options (no Nagle delay, keepalive probes that notice a peer cut off
silently), and writes that leave at once.
"""

from __future__ import annotations

import socket

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ITransport
from twisted.protocols.tls import TLSMemoryBIOProtocol

#: TCP keepalive on every link: probes after this many idle seconds, this
#: many seconds apart, this many times; and unacknowledged data gives up
#: after this many milliseconds.  A peer cut off silently is noticed in
#: about 30 s, not the kernel's default two hours.
TCP_KEEPALIVE = (15, 5, 3)
TCP_USER_TIMEOUT = 30_000

#: The most wrappers looked through for the TCP connection under a link's
#: transport (PROXY protocol, TLS, WebSocket, and one to spare).
MAX_WRAPPERS = 4


def tcp_connection(transport: object) -> FileDescriptor | None:
    """
    The TCP connection of a reactor's sockets under ``transport`` (itself,
    or down through wrappers: TLS, WebSocket, the PROXY protocol's), or
    ``None`` for other transports (unix sockets, in-memory ones).
    """
    for _ in range(MAX_WRAPPERS + 1):
        if transport is None:
            return None
        if isinstance(transport, FileDescriptor):
            handle = transport.getHandle()  # type: ignore[attr-defined]
            if isinstance(handle, socket.socket) and handle.family in (socket.AF_INET, socket.AF_INET6):
                return transport
            return None
        transport = getattr(transport, "transport", None)
    return None


def writes_through(transport: object) -> bool:
    """
    Whether what is written to ``transport`` reaches the connection under
    it within the call: not through TLS, whose transport gathers small
    writes until its own next turn (so that `.write_now` would find nothing
    to send yet).
    """
    for _ in range(MAX_WRAPPERS + 1):
        if transport is None or isinstance(transport, FileDescriptor):
            return True
        if isinstance(transport, TLSMemoryBIOProtocol):
            return False
        transport = getattr(transport, "transport", None)
    return False


def tune_tcp(connection: FileDescriptor) -> None:
    """Have ``connection`` send small frames at once (no Nagle delay) and notice dead peers."""
    handle = connection.getHandle()  # type: ignore[attr-defined]
    handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = TCP_KEEPALIVE
    options = [("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)]
    options.append(("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT))
    for name, value in options:
        if hasattr(socket, name):
            try:
                handle.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            except OSError:
                pass


def write_now(transport: ITransport, connection: FileDescriptor, data: bytes, *, held: bool) -> bool:
    """
    Write ``data`` to ``transport`` and have ``connection``, the TCP
    connection under it, send it now rather than at the reactor's next look
    at the socket: a frame relayed leaves in the turn it came in, and the
    reactor has no event to dispatch for it.

    When the transport is the connection itself and it holds nothing unsent,
    ``data`` goes straight to the socket: the reactor is not asked to watch
    the socket only to stop again, two system calls a write.  What the
    socket does not take is buffered as any write is, the next writes
    behind it, for the reactor to send when the socket can take more; so is
    all of it when the send fails, for the reactor to see the error and drop
    the connection.

    Otherwise (a wrapper between, TLS started on the connection, or bytes
    waiting) ``data`` is written to ``transport``, and the connection sends
    what it holds.  A connection closing is left to the reactor, which
    closes it once all is sent.  The caller writes nothing after aborting
    the connection.

    :param held: whether the connection may hold bytes written to it
        before; if so, it holds none only once the reactor no longer watches
        its socket for writing (which is looked at only then: the reactor's
        list of those grows with the connections a slow peer holds up).
    :return: whether the connection may hold bytes now.
    """
    closing = connection.disconnecting
    if (
        transport is connection
        and not closing
        and not getattr(connection, "TLS", False)
        and not (held and connection in connection.reactor.getWriters())
    ):
        sent = connection.writeSomeData(data)
        unsent = data if isinstance(sent, BaseException) else data[sent:]
        if not unsent:
            return False
        connection.write(unsent)
        return True
    transport.write(data)
    if not closing:
        connection.doWrite()
    return True
