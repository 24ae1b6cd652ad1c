"""
`.RoutingTable`: the peers of a node by node ID, which link to keep when a
peer has two, and the back-pressure of peers slow to read.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from twisted_mesh._core.context import NodeContext
from twisted_mesh._core.link import Address, Link
from twisted_mesh._ids import b58decode_int
from twisted_mesh._logs import NODE, NodeLogger, logged

#: How many addresses of past peers a node keeps, to re-dial when alone.
MAX_KNOWN_ADDRESSES = 16

#: Seconds after which a second link dialled by the same end replaces the
#: first (a peer that lost its link dials again; a browser reconnects),
#: rather than being a twin dialled at about the same time.
REDIAL_AFTER = 5.0


class RoutingTable:
    """
    The links of the peers whose handshake arrived.

    :ivar table: the links, by the peer's node ID.
    :ivar peers: the items of ``table``, as a tuple the relay goes through.
    :ivar joined: when each link in ``table`` entered it.
    :ivar known_addresses: the addresses of the latest peers, with their
        transports, oldest first (the service drops those of the peers
        missing for `.Limits.forget_lost_peer_after` seconds).
    :ivar congested: the links of the peers slow to read.
    """

    def __init__(self, node: NodeContext) -> None:
        self._log = NodeLogger(NODE, node.id, self)
        self._id_number = b58decode_int(node.id)
        self._clock = node.clock
        self.table: dict[str, Link] = {}
        self.peers: tuple[tuple[str, Link], ...] = ()
        self.joined: dict[Link, float] = {}
        self.known_addresses: dict[tuple[Address, str], None] = {}
        self.congested: set[Link] = set()
        self._drain_waiters: list[Deferred[None]] = []

    def conflict(self, link: Link) -> tuple[Link, Link] | None:
        """
        When the peer of ``link`` has a link already (that is not closing),
        the one to keep and the one to close: the one dialled by the node
        with the higher ID (the peer applies the same rule); else ``None``.
        """
        assert link.peer_id is not None
        existing = self.table.get(link.peer_id)
        if existing is None or existing is link or existing.closing:
            return None
        return self._resolve_conflict(existing, link)

    def _resolve_conflict(self, existing: Link, new: Link) -> tuple[Link, Link]:
        """Return (the link to keep, the link to close)."""
        if existing.outgoing == new.outgoing:
            # Both dialled by the same end.  Long after the first: the dialler
            # has lost the first one (which may linger here, half open) and
            # dials again, or wants the new one; both ends keep the new one.
            if self._clock.seconds() - self.joined.get(existing, 0.0) >= REDIAL_AFTER:
                return new, existing
            # At about the same time: each end may have seen the other one
            # first, so keep the one from the lower port, which both see.
            ports = existing.dialler_port(), new.dialler_port()
            if ports[0] is not None and ports[1] is not None and ports[1] < ports[0]:
                return new, existing
            return existing, new
        assert new.peer_id is not None
        we_are_higher = self._id_number > b58decode_int(new.peer_id)
        # Keep the connection the higher node dialled.
        dialled_by_higher = new if new.outgoing == we_are_higher else existing
        other = existing if dialled_by_higher is new else new
        return dialled_by_higher, other

    def enter(self, link: Link) -> None:
        """Enter ``link``, whose handshake arrived, as its peer's link."""
        assert link.peer_id is not None
        self.table[link.peer_id] = link
        self.joined[link] = self._clock.seconds()
        self.peers = tuple(self.table.items())
        if link.peer_addr is not None:
            known = (link.peer_addr, link.encryption)
            self.known_addresses.pop(known, None)
            self.known_addresses[known] = None
            while len(self.known_addresses) > MAX_KNOWN_ADDRESSES:
                del self.known_addresses[next(iter(self.known_addresses))]
        if self.congested and link not in self.congested:
            # A peer slow to read waits: this one must not feed it either.
            link.pause_reading()

    def remove(self, link: Link) -> float | None:
        """
        Forget a link that closed.

        :return: the seconds it was its peer's link, or ``None`` when it was
            not (it closed before its handshake, or lost a conflict).
        """
        if link in self.congested:
            self.congested.discard(link)
            if not self.congested:
                self._congestion_over()
        joined = self.joined.pop(link, None)
        if link.peer_id is None or self.table.get(link.peer_id) is not link:
            return None
        del self.table[link.peer_id]
        self.peers = tuple(self.table.items())
        return self._clock.seconds() - joined if joined is not None else 0.0

    # -- back-pressure ----------------------------------------------------

    def link_congested(self, link: Link) -> None:
        """
        A peer is slow to read: stop reading from the other peers (which
        would feed it more) until it catches up.  Links that are congested
        themselves keep reading, so two slow peers never wait on each other.
        """
        self.congested.add(link)
        if len(self.congested) == 1:
            self._log.info("peer {peer} is slow to read: pausing the others", peer=logged(link.peer_id))
            for other in list(self.table.values()):
                if other is not link:
                    other.pause_reading()
        else:
            # Paused for another slow peer until now.
            link.resume_reading()

    def link_drained(self, link: Link) -> None:
        """A slow peer caught up: read again once no peer is slow."""
        self.congested.discard(link)
        if self.congested:
            # Another peer is still slow: this one must not feed it.
            link.pause_reading()
        else:
            self._congestion_over()

    def _congestion_over(self) -> None:
        """No peer is slow any more: read from every peer, and tell those waiting for it."""
        for link in list(self.table.values()):
            link.resume_reading()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def drained(self) -> Deferred[None]:
        """
        A Deferred that fires once no peer is congested: none has more
        waiting for it than its transport buffers (at once when none has).
        A peer that reads nothing for `.Limits.congestion_timeout` seconds
        is cut off, so it is waited for that long at most.
        """
        if not self.congested:
            return succeed(None)
        d: Deferred[None] = Deferred(self._drain_waiters.remove)
        self._drain_waiters.append(d)
        return d
