"""
The socket options of a link's TCP connection: no Nagle delay, and
keepalive probes that notice a peer cut off silently.
"""

from __future__ import annotations

import socket

#: TCP keepalive on every link: probes after this many idle seconds, this
#: many seconds apart, this many times; and unacknowledged data gives up
#: after this many milliseconds.  A peer cut off silently is noticed in
#: about 30 s, not the kernel's default two hours.
TCP_KEEPALIVE = (15, 5, 3)
TCP_USER_TIMEOUT = 30_000


def tune_tcp(transport: object) -> None:
    """
    Send small frames at once (no Nagle delay) and notice dead peers, on a
    TCP connection or one wrapped in TLS or WebSocket; other transports
    (unix sockets, in-memory ones) are left as they are.
    """
    # Down through TLS and WebSocket wrappers to the socket, if any.
    handle: object = None
    for _ in range(4):
        if transport is None:
            return
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            break
        transport = getattr(transport, "transport", None)
    if not isinstance(handle, socket.socket) or handle.family not in (socket.AF_INET, socket.AF_INET6):
        return
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
