"""
``ssl.wrap_socket`` for py2p on Python 3.12 and later, which removed it.

py2p 0.7's SSL mode wraps its sockets with ``ssl.wrap_socket``: a listener
with a self-signed certificate it makes, a dialler that checks nothing.
This gives it the same, made with an `ssl.SSLContext`; `install` must run
before py2p is imported (py2p imports the name).
"""

from __future__ import annotations

import socket
import ssl
from typing import Any


def wrap_socket(
    sock: socket.socket,
    keyfile: str | None = None,
    certfile: str | None = None,
    server_side: bool = False,
    suppress_ragged_eofs: bool = True,
    **ignored: Any,
) -> ssl.SSLSocket:
    """Wrap ``sock`` as the removed ``ssl.wrap_socket`` did, with no verification."""
    if server_side:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        assert certfile is not None
        context.load_cert_chain(certfile, keyfile)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(sock, server_side=server_side, suppress_ragged_eofs=suppress_ragged_eofs)


def install() -> None:
    """Give the ``ssl`` module ``wrap_socket`` again, where it has none."""
    if not hasattr(ssl, "wrap_socket"):
        ssl.wrap_socket = wrap_socket  # type: ignore[attr-defined]
