"""
A node's bootstrap peers, the ``connect`` of its service: each dialled at
the start, and again (see `.MissingPeers`) while the node is not connected
to it and needs peers; one that turns out to be the node itself, never.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Union

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure

from twisted_mesh._core.link import Address, Link
from twisted_mesh._core.node import MeshNode
from twisted_mesh._logs import SERVICE, NodeLogger
from twisted_mesh._service.endpoints import DialAddress
from twisted_mesh._service.redial import MissingPeers
from twisted_mesh.errors import SelfConnection

#: A bootstrap peer as given (for the log), with its endpoint and transport
#: unless it is a (host, port) pair, which the node dials.
Bootstrap = tuple[DialAddress, Union[tuple[IStreamClientEndpoint, str], None]]  # noqa: UP007

#: Told of a failed dial the node made on its own: the failure, the peer's
#: name for the log, the missing peers it is one of, and the peer there.
DialFailed = Callable[[Failure, object, MissingPeers[Any], Hashable], None]


class BootstrapPeers:
    """
    The bootstrap peers of ``node``, by their index in ``peers``.

    :param node: the node.
    :param clock: the clock of the delays.
    :param peers: the bootstrap peers.
    :param dial_endpoint: dials an endpoint over a transport, as
        `.MeshService.connect` does: a Deferred of the peer's ID.
    :param dial_failed: told of each dial that failed (but of those that
        reached the node itself).
    :ivar missing: the bootstrap peers the node misses.
    """

    def __init__(
        self,
        node: MeshNode,
        clock: IReactorTime,
        peers: Sequence[Bootstrap],
        dial_endpoint: Callable[[IStreamClientEndpoint, str], Deferred[str]],
        dial_failed: DialFailed,
    ) -> None:
        self._log = NodeLogger(SERVICE, node.id, self)
        self._node = node
        self._peers = list(peers)
        self._dial_endpoint = dial_endpoint
        self._dial_failed = dial_failed
        self.missing: MissingPeers[int] = MissingPeers(clock)
        # The endpoints being dialled: not dialled again until that dial ends.
        self._dialling: set[int] = set()
        self._ids: dict[int, str] = {}
        self._known: dict[int, tuple[Address, str]] = {}
        self._self: set[int] = set()
        # The peers dialled since the start: later, they are dialled only
        # while the node needs peers.
        self._tried: set[int] = set()

    def start(self) -> None:
        """Start over: every peer is due at once."""
        self.missing.clear()
        self._tried.clear()

    def known(self) -> set[tuple[Address, str]]:
        """The addresses (with their transports) the peers met gave."""
        return set(self._known.values())

    def unreachable(self, longer_than: float = 0.0) -> list[DialAddress]:
        """The peers, as given, whose last dial failed, missing for ``longer_than`` seconds or more."""
        return [self._peers[index][0] for index in self.missing.unreachable(longer_than)]

    def dial_due(self, needs_peers: Callable[[], bool]) -> None:
        """
        Dial each peer the node is not connected to that is due; after its
        first dial, only while ``needs_peers()`` (a seed that turned the
        node away is not asked again while it has some).
        """
        for index, (address, endpoint) in enumerate(self._peers):
            peer_id = self._ids.get(index)
            if peer_id in self._node.routing_table:
                self.missing.reached(index)
                continue
            # Not one found to be this node, nor one whose dial is under way.
            given_up_or_dialling = index in self._self or index in self._dialling
            wanted = index not in self._tried or needs_peers()
            if not given_up_or_dialling and wanted and self.missing.due(index):
                self._tried.add(index)
                self._dial(index, address, endpoint, peer_id)

    def lost(self, link: Link, lasted: float) -> None:
        """``link``, to a bootstrap peer maybe, closed after ``lasted`` seconds."""
        for index, peer_id in self._ids.items():
            if peer_id == link.peer_id:
                self.missing.lost(index, lasted)

    def _dial(
        self,
        index: int,
        address: DialAddress,
        endpoint: tuple[IStreamClientEndpoint, str] | None,
        peer_id: str | None,
    ) -> None:
        """
        Dial the peer ``address`` (through ``endpoint``, unless it is a pair)
        unless it is this node's own address, or it (or the peer
        ``peer_id``) is being dialled already.
        """
        node = self._node
        if endpoint is None:
            assert isinstance(address, tuple)
            # The node skips its own addresses and those it is dialling already.
            dial = node.dial(address, peer_id, node.protocol.encryption)
            if dial is None:
                return
        else:
            self._dialling.add(index)

            def ended(result: object) -> object:
                self._dialling.discard(index)
                return result

            # (An endpoint may raise at once: the round goes on.)
            dial = maybeDeferred(self._dial_endpoint, *endpoint).addBoth(ended)
        dial.addCallbacks(self._met, self._failed, callbackArgs=(index,), errbackArgs=(index, address))

    def _met(self, peer_id: str, index: int) -> None:
        self.missing.reached(index)
        self._ids[index] = peer_id
        link = self._node.routing_table.get(peer_id)
        if link is not None and link.peer_addr is not None:
            self._known[index] = (link.peer_addr, link.encryption)

    def _failed(self, failure: Failure, index: int, address: DialAddress) -> None:
        if failure.check(SelfConnection):
            self._self.add(index)
            self.missing.reached(index)
            self._log.warn("the bootstrap peer {peer} is this node: not dialling it again", peer=address)
            return
        self._dial_failed(failure, address, self.missing, index)
