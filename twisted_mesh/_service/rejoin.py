"""
Keeping a node in the mesh: dialling its bootstrap peers, the nodes it heard
of and the past peers it lost, each again when it is due (see
`.MissingPeers`), so that a node, or a group of nodes cut off from the rest,
re-joins once it can.

Twisted's `ClientService` keeps one connection to one endpoint up, with a
retry policy of its own; it does not fit here: a bootstrap peer is dialled
again only while the node needs peers, a peer that turns the node away
(a short-lived link) or that is the node itself is treated apart, the peers
share one timer with the past peers, and the delays are those of
`.redial_delay`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.python.failure import Failure

from twisted_mesh._core.link import Address, Link
from twisted_mesh._core.node import MeshNode
from twisted_mesh._logs import SERVICE, LoggedID, LoggedText, NodeLogger
from twisted_mesh._service.bootstrap import Bootstrap, BootstrapPeers
from twisted_mesh._service.redial import MAX_DELAY, MissingPeers

#: The longest wait, in seconds, between two checks that the node is in the
#: mesh: that it dials the missing peers that are due, and has room for.
MAINTENANCE_INTERVAL = 15.0

#: The least seconds between two log lines that list the peers the node
#: still cannot reach.
SUMMARY_INTERVAL = 300.0


class Rejoiner:
    """
    Dials the peers a node misses, from `.start` to `.stop`.

    :param node: the node kept in the mesh.
    :param reactor: the clock of the delays.
    :param bootstrap: the bootstrap peers.
    :param dial_endpoint: dials an endpoint over a transport, as
        `.MeshService.connect` does: a Deferred of the peer's ID.
    """

    def __init__(
        self,
        node: MeshNode,
        reactor: Any,
        bootstrap: Sequence[Bootstrap],
        dial_endpoint: Callable[[IStreamClientEndpoint, str], Deferred[str]],
    ) -> None:
        self._log = NodeLogger(SERVICE, node.id, self)
        self._node = node
        self._reactor = reactor
        self._running = False
        self._redial: IDelayedCall | None = None
        self._bootstrap = BootstrapPeers(node, reactor, bootstrap, dial_endpoint, self._dial_failed)
        # The past peers the node misses, with when to dial each again, till
        # they are forgotten.
        self._missing_past: MissingPeers[tuple[Address, str]] = MissingPeers(
            reactor, node.limits.forget_lost_peer_after
        )
        # When the peers the node still cannot reach were last listed.
        self._summarised = -math.inf

    def start(self) -> None:
        """Start over: every missing peer is due at once.  (`.maintain` dials them.)"""
        self._running = True
        self._bootstrap.start()
        self._missing_past.clear()

    def stop(self) -> None:
        """Dial nothing more, until the next `.start`."""
        self._running = False
        if self._redial is not None:
            self._redial.cancel()
            self._redial = None

    def unreachable(self) -> int:
        """How many missing peers the last dial to failed."""
        return len(self._bootstrap.unreachable()) + len(self._missing_past.unreachable())

    def maintain(self) -> None:
        """
        Keep the node in the mesh: dial each bootstrap peer it is not
        connected to (after the first time, only while the node needs
        peers) and, to fill its outgoing links, nodes it heard of and (also
        when it has no peer at all) the past peers it lost, each when it is
        due (see
        `.MissingPeers`: about a second after it left, then after delays that
        double with each failed dial, up to five minutes); forget the past
        peers missing for `.Limits.forget_lost_peer_after` seconds.  Check
        again when the next missing peer is due, or after
        `.MAINTENANCE_INTERVAL` seconds.  So a node, or a group of nodes cut
        off from the rest, re-joins once it can.
        """
        self._redial = None
        if not self._running:
            return
        self._bootstrap.dial_due(self._needs_peers)
        # Nodes heard of first: a past peer whose link did not last (a seed
        # that turned this node away) is dialled only when they do not fill
        # the node's links.
        self._dial_heard_of()
        self._dial_past_peers()
        self._summarise()
        self._schedule_maintenance()

    def _needs_peers(self) -> bool:
        """Whether the node has fewer links than peer exchange may dial, or none at all."""
        node = self._node
        return not node.routing_table or node.outgoing_count() < node.max_outgoing

    def _dial_heard_of(self) -> None:
        """
        While the node has room for links it dials, dial nodes it heard of
        (from peer exchange, or that a seed turned away), drawn at random;
        one that cannot be dialled is forgotten.
        """
        node = self._node
        room = node.max_outgoing - node.outgoing_count()
        if room <= 0:
            return
        # (The node skips the peers it is dialling already.)
        leave_out = frozenset((*node.routing_table, node.id))
        for address, peer_id in node.peer_book.sample(node.protocol.encryption, room, leave_out):
            dial = node.dial(address, peer_id, node.protocol.encryption)
            if dial is not None:
                dial.addErrback(self._heard_of_dial_failed, address, peer_id)

    def _heard_of_dial_failed(self, failure: Failure, address: Address, peer_id: str) -> None:
        self._node.peer_book.forget(address, self._node.protocol.encryption)
        self._node.stats.failed_dials += 1
        error = LoggedText(failure.getErrorMessage())
        self._log.debug(
            "could not connect to {peer} at {address}: {error}", peer=LoggedID(peer_id), address=address, error=error
        )

    def _dial_past_peers(self) -> None:
        """
        Forget the past peers missing for too long, then dial those that are
        due, the latest first, as many as the node has room for (all of them
        when it has no peer).  A bootstrap peer's address is left to its own
        dials.
        """
        node, missing = self._node, self._missing_past
        bootstrap = self._bootstrap.known()
        connected = {(link.peer_addr, link.encryption) for link in node.routing_table.values()}
        lost = [known for known in node.known_addresses if known not in connected and known not in bootstrap]
        missing.retain(set(lost))
        for known in missing.forget_expired():
            lost.remove(known)
            del node.known_addresses[known]
            node.stats.limit_hits["forget_lost_peer_after"] += 1
            self._log.info(
                "forgot the past peer {peer}: missing for {seconds:.0f} s",
                peer=known[0],
                seconds=node.limits.forget_lost_peer_after,
            )
        due = [known for known in lost if missing.due(known)]
        room = node.max_outgoing - node.outgoing_count() if node.routing_table else len(due)
        for known in due[-room:] if room > 0 else []:
            # The node skips its own addresses and those it is dialling already.
            dial = node.dial(known[0], None, known[1])
            if dial is not None:
                dial.addCallbacks(
                    lambda _, known=known: missing.reached(known),
                    self._dial_failed,
                    errbackArgs=(known[0], missing, known),
                )

    def exchange_dial_failed(self, failure: Failure, address: Address, encryption: str) -> None:
        """
        A dial to a peer that peer exchange told of failed: one to a past
        peer the node misses counts as one of that peer's failed dials
        (see `._dial_failed`); another is logged at debug level.
        """
        self._dial_failed(failure, address, self._missing_past, (address, encryption))

    def _dial_failed(self, failure: Failure, name: object, missing: MissingPeers[Any], peer: Hashable) -> None:
        """
        A dial the node made on its own failed, to ``peer`` of ``missing``
        (``name`` in the log): count it, and warn of the first failure since
        the peer was last connected; later ones are logged at debug level,
        and listed now and then by `._summarise`.  Dial again when it is due.
        """
        if not self._running:
            return  # (the dial was given up at the stop)
        self._node.stats.failed_dials += 1
        retry = missing.failed(peer)
        error = LoggedText(failure.getErrorMessage())
        if retry is None:
            self._log.debug("could not connect to {peer}: {error}", peer=name, error=error)
            return
        if retry.failures == 1:
            self._log.warn(
                "could not connect to {peer}: {error}; trying again in {delay:.1f} s, then less and less often "
                "(at least once every {most:.0f} s), logging further failures at debug level",
                peer=name,
                error=error,
                delay=retry.delay,
                most=MAX_DELAY,
            )
        else:
            self._log.debug(
                "could not connect to {peer} ({failures} failures in a row): {error}; trying again in {delay:.1f} s",
                peer=name,
                failures=retry.failures,
                error=error,
                delay=retry.delay,
            )
        self._schedule_maintenance()

    def _summarise(self) -> None:
        """
        List the peers the node has been unable to reach for
        `.SUMMARY_INTERVAL` seconds or more, at most once every
        `.SUMMARY_INTERVAL` seconds.
        """
        now = self._reactor.seconds()
        if now - self._summarised < SUMMARY_INTERVAL:
            return
        peers: list[object] = [*self._bootstrap.unreachable(SUMMARY_INTERVAL)]
        peers.extend(address for address, _ in self._missing_past.unreachable(SUMMARY_INTERVAL))
        if peers:
            self._summarised = now
            self._log.info(
                "still cannot reach these peers, missing for {minutes:.0f} minutes or more: {peers}; "
                "dialling each at least once every {most:.0f} s",
                count=len(peers),
                minutes=SUMMARY_INTERVAL / 60,
                peers=", ".join(map(str, peers)),
                most=MAX_DELAY,
            )

    def _schedule_maintenance(self) -> None:
        """
        Run `.maintain` when the next missing peer is due, or after
        `.MAINTENANCE_INTERVAL` seconds, unless it is to run sooner already.
        """
        if not self._running:
            return
        now = self._reactor.seconds()
        when = min(now + MAINTENANCE_INTERVAL, self._bootstrap.missing.next_due(), self._missing_past.next_due())
        if self._redial is not None:
            if self._redial.getTime() <= when:
                return
            self._redial.cancel()
        self._redial = self._reactor.callLater(when - now, self.maintain)

    def peer_lost(self, link: Link, lasted: float) -> None:
        """
        A peer left after ``lasted`` seconds: dial it again in about a second
        (its delays start over), when it is a bootstrap peer or a past peer
        the node can dial; unless the link lasted less than `.SHORT_LIVED`
        seconds (the peer turned this node away, say): then its delays go
        on growing.  (While peers keep leaving, the earliest check already
        due stands.)
        """
        if not self._running:
            return
        self._bootstrap.lost(link, lasted)
        if link.peer_addr is not None:
            known = (link.peer_addr, link.encryption)
            if known not in self._bootstrap.known():
                self._missing_past.lost(known, lasted)
        self._schedule_maintenance()
        if not self._node.routing_table and self._redial is not None:
            delay = self._redial.getTime() - self._reactor.seconds()
            self._log.info("no peers: dialling the known peers again in {delay:.1f} s", delay=delay)
