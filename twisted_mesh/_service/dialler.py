"""
A node's connections as its service makes them: the factories of each
transport's links, the dials under way, and the links open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.python.failure import Failure

from twisted_mesh._core.node import MeshNode
from twisted_mesh._link import LinkFactory, LinkProtocol, WriteBatch
from twisted_mesh._service.endpoints import Accepting, DialAddress, addresses_of
from twisted_mesh.message import Connection


class Dialler:
    """
    Dials peers for ``node``, and makes the factories of its links.

    :param node: the node the links are of.
    :param running: whether the node's service runs: a connection accepted
        while it does not is closed at once (see `.Accepting`).
    :ivar links: the open connections, with or without a handshake.
    """

    def __init__(self, node: MeshNode, running: Callable[[], bool]) -> None:
        self._node = node
        self._running = running
        self.links: set[LinkProtocol] = set()
        # (The links written to while one of them reads: one for the node.)
        self._batch = WriteBatch(node.clock)
        self._factories: dict[tuple[str, bool], LinkFactory] = {}
        self._accepting: dict[str, Accepting] = {}
        self._connecting: set[Deferred[IProtocol]] = set()

    def _factory(self, encryption: str, outgoing: bool) -> LinkFactory:
        factory = self._factories.get((encryption, outgoing))
        if factory is None:
            factory = LinkFactory(self._node, outgoing, self.links, encryption, batch=self._batch)
            self._factories[encryption, outgoing] = factory
        return factory

    def accepting(self, encryption: str) -> Accepting:
        """The factory of the node's accepted connections of the transport ``encryption``."""
        factory = self._accepting.get(encryption)
        if factory is None:
            factory = self._accepting[encryption] = Accepting(self._running, self._factory(encryption, False))
        return factory

    def connect(
        self, address: DialAddress, endpoint: IStreamClientEndpoint, encryption: str, expected: str | None
    ) -> Deferred[str]:
        """
        Dial ``address`` through ``endpoint`` over ``encryption``, as
        `.MeshService.connect` does: unless the peer ``expected`` is
        connected, or, for a ``(host, port)`` pair, a peer that can be
        reached there (and is ``expected``, if given).
        """
        if expected is not None and expected in self._node.routing_table:
            return succeed(expected)
        if isinstance(address, tuple):
            # A peer connected at that address already: a second link to it
            # would be one too many.
            for peer_id, link in self._node.routing_table.items():
                if link.encryption == encryption and expected in (None, peer_id) and address in addresses_of(link):
                    return succeed(peer_id)
        return self.dial(endpoint, encryption, expected)

    def dial(self, endpoint: IStreamClientEndpoint, encryption: str, expected: str | None = None) -> Deferred[str]:
        """
        Dial ``endpoint`` over ``encryption``: a Deferred of the peer's ID, as
        `.MeshService.connect` returns it.
        """
        link: LinkProtocol | None = None

        def cancel(result: Deferred[str]) -> None:
            if link is None:
                connecting.cancel()
            else:
                link.close("the dial was cancelled", error=False)

        result: Deferred[str] = Deferred(cancel)

        def connected(protocol: IProtocol) -> None:
            nonlocal link
            self._connecting.discard(connecting)
            assert isinstance(protocol, LinkProtocol)
            link = protocol
            link.expected_id = expected
            link.handshake_done.addCallbacks(handshake_done, failed)

        def handshake_done(peer_id: str) -> None:
            if not result.called:
                result.callback(peer_id)

        def failed(failure: Failure) -> None:
            self._connecting.discard(connecting)
            if not result.called:
                result.errback(failure)

        connecting = endpoint.connect(self._factory(encryption, True))
        self._connecting.add(connecting)
        connecting.addCallbacks(connected, failed)
        return result

    def disconnect(self, link: Connection) -> Deferred[None]:
        """
        Close ``link``, as `.MeshService.disconnect` does.

        :raise ValueError: when ``link`` is not a connection of this node.
        """
        if not isinstance(link, LinkProtocol) or link.factory.node is not self._node:
            raise ValueError(f"{link!r} is not a connection of this node")
        link.close("disconnected by this node's user", error=False)
        return link.closed

    def cancel_dials(self) -> None:
        """Give up the dials under way."""
        for connecting in list(self._connecting):
            connecting.cancel()

    def close_links(self) -> list[Deferred[Any]]:
        """Close every link: a Deferred for each, that fires once it is closed."""
        waiting: list[Deferred[Any]] = []
        for link in list(self.links):
            waiting.append(link.closed)
            link.close("the node is stopping", error=False)
        return waiting
