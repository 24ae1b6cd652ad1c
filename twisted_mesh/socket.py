"""
`.MeshSocket`: the mesh socket of py2p and js2p, on Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_mesh._core.exchange import DEFAULT_MAX_OUTGOING
from twisted_mesh._core.link import Address
from twisted_mesh._ids import Network
from twisted_mesh.keys import NodeKey
from twisted_mesh.limits import DEFAULT_LIMITS, Limits
from twisted_mesh.service import DEFAULT_PROTOCOL, MeshService
from twisted_mesh.tls import TLSOptions


class MeshSocket(MeshService):
    """
    A mesh node that listens at once, as py2p's and js2p's ``MeshSocket``::

        sock = MeshSocket('0.0.0.0', 4444)
        sock.connect('192.168.1.2', 4444)
        sock.send('hello', 'mesh')

    It is a `.MeshService` that starts itself; `.close` stops it, and so
    does the end of a ``with`` or an ``async with`` block::

        async with MeshSocket('0.0.0.0', 4444) as sock:
            ...

    :param addr: the interface to listen on; ``'0.0.0.0'`` listens on all of
        them and picks the LAN address for ``out_addr``.
    :param port: the port to listen on; 0 picks a free one (``out_addr``
        then holds it).
    :param prot: the network to join.
    :param out_addr: the address peers should dial, when it is not
        ``(addr, port)`` (behind NAT, say).
    :param debug_level: accepted for py2p's and js2p's sake, and ignored:
        the node logs through ``twisted.logger``.
    :param tls: how ``'SSL'`` and ``'wss'`` links are secured; by default a
        self-signed certificate and no verification, as the references do.
    :param max_outgoing: how many connections peer exchange may dial.
    :param max_incoming: how many dialable peers that dialled this node it
        keeps (see `.MeshService`).
    :param limits: what the node accepts from peers and holds for them.
    :param key: the node's key, for an ID that stays the same (see
        `.MeshService`).
    :param allow: on a signed network, the node IDs of the only peers let
        in.
    :param reactor: the reactor to use; by default the global one.
    :raise twisted.internet.error.CannotListenError: when the port is taken.
    :raise TypeError: when ``port`` is not an int (``'4444'``, say).
    :raise ValueError: when ``port`` is out of range.
    """

    def __init__(
        self,
        addr: str,
        port: int,
        prot: Network = DEFAULT_PROTOCOL,
        out_addr: Address | None = None,
        debug_level: int = 0,
        *,
        tls: TLSOptions | None = None,
        max_outgoing: int = DEFAULT_MAX_OUTGOING,
        max_incoming: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
        key: NodeKey | None = None,
        allow: Iterable[str] | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__(
            prot,
            listen=[(addr, port)],
            tls=tls,
            out_addr=out_addr,
            max_outgoing=max_outgoing,
            max_incoming=max_incoming,
            limits=limits,
            key=key,
            allow=allow,
            reactor=reactor,
        )
        self.startService()
        failures: list[Failure] = []
        self.listening.addErrback(failures.append)
        if failures:
            failures[0].raiseException()

    def close(self) -> Deferred[None]:
        """
        Stop listening and close every connection; the socket then dials
        nothing (``connect()`` fails).  Closing it again does no harm.

        :return: a Deferred that fires once every connection is closed.
        """
        return self.stopService()
