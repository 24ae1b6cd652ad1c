"""
Who gets a connection slot.

Every open connection of a node holds a `.Slot`.  One it dialled, or one
whose peer's handshake arrived, is held for good; one it accepted is
*pending* until its handshake comes.  Pending connections are bounded on
their own, well under `.Limits.max_connections`, so that strangers who
connect and never handshake cannot take the place of peers: when the bound
is reached, the oldest pending connection is closed to make room for the
newcomer (the oldest from the newcomer's address when that address is at
its own bound, so that a flood from one address closes its own connections
first).  A pending connection that has spoken (sent a well-formed frame: a
twisted_mesh dialler's first word, which waits for an answer) no longer
counts against its address's bound, and is closed to make room only when
no silent one is left: many nodes behind one address that join at once are
not strangers.  A held connection is never closed to make room; a newcomer
is refused only when every slot is held.

Pure logic: connections are named by their source address and closed
through the function they gave.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted_mesh.limits import Limits

#: What a slot's connection is closed with: it is told why.
Close = Callable[[str], None]

#: What the log says when each limit makes a pending connection close.
_EVICTED = {
    "max_pending_per_address": "{most} connections from {host} without a handshake: closed the oldest for {newcomer}",
    "max_pending": "{most} connections without a handshake: closed the oldest, from {host}, for {newcomer}",
    "max_connections": "{most} connections: closed the oldest without a handshake, from {host}, for {newcomer}",
}


class Slot:
    """
    One connection's place among a node's connections.

    :ivar host: the address the connection came from, while it is pending;
        ``None`` once it is held.
    :ivar close: drops the connection (told why) when it must make room for
        another; the connection may set its own once it has one.
    """

    __slots__ = ("host", "close", "_released")

    def __init__(self, host: str | None, close: Close) -> None:
        self.host = host
        self.close = close
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "held" if self.host is None else f"pending from {self.host}"
        return f"<Slot {state}>"


def source_of(address: object) -> str:
    """
    The key a connection from ``address`` (a Twisted address) is counted
    under: its IP address; the kind of address for any other (all the
    connections of a unix socket come from the same place).
    """
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else type(address).__name__


class Admission:
    """
    The slots of one node's connections: pending ones (accepted, no
    handshake yet) by age, and a count of held ones.

    :param limits: the node's limits: ``max_connections``, ``max_pending``
        and ``max_pending_per_address`` bound the slots.
    :param limit_hit: called as the node's ``limit_hit(limit, text,
        **fields)`` each time a connection is closed to make room, or refused.
    """

    def __init__(self, limits: Limits, limit_hit: Callable[..., None]) -> None:
        self._limits = limits
        self._limit_hit = limit_hit
        # Oldest first (dicts keep their order); those that have not spoken,
        # and the same by address.
        self._pending: dict[Slot, None] = {}
        self._silent: dict[Slot, None] = {}
        self._by_host: dict[str, dict[Slot, None]] = {}
        self._held = 0

    @property
    def pending(self) -> int:
        """How many accepted connections wait for their handshake."""
        return len(self._pending)

    @property
    def held(self) -> int:
        """How many connections were dialled, or handshook, and are open."""
        return self._held

    def admit(self, host: str, close: Close) -> Slot | None:
        """
        A slot for a connection accepted from ``host``: pending until
        `.handshaken`.  To make room, the oldest pending connection of
        ``host`` is closed when ``host`` has ``max_pending_per_address``, else
        the oldest of all when there are ``max_pending``; and the oldest of
        all when the node has ``max_connections``.

        :param close: drops the connection when it must make room in turn.
        :return: the slot, or ``None`` when every slot is held: the
            connection is refused.
        """
        limits, newcomer = self._limits, f"a connection from {host}"
        same = self._by_host.get(host)
        if same is not None and len(same) >= limits.max_pending_per_address:
            self._evict(next(iter(same)), "max_pending_per_address", newcomer)
        elif self._pending and len(self._pending) >= limits.max_pending:
            self._evict(self._oldest(), "max_pending", newcomer)
        if not self._make_room(newcomer):
            return None
        slot = Slot(host, close)
        self._pending[slot] = None
        self._silent[slot] = None
        self._by_host.setdefault(host, {})[slot] = None
        return slot

    def spoke(self, slot: Slot) -> None:
        """
        The pending ``slot``'s connection sent a well-formed frame: it counts
        against its address's bound no more, and makes room only when no
        silent connection is left to.
        """
        if slot.host is not None and slot in self._silent:
            del self._silent[slot]
            self._forget_host(slot, slot.host)

    def _oldest(self) -> Slot:
        """The pending connection to close first: the oldest silent one, else the oldest."""
        return next(iter(self._silent or self._pending))

    def dial(self, close: Close) -> Slot | None:
        """
        A held slot for a connection this node dialled, once the oldest
        pending connection is closed if the node has ``max_connections``.

        :return: the slot, or ``None`` when every slot is held.
        """
        if not self._make_room("a connection this node dialled"):
            return None
        self._held += 1
        return Slot(None, close)

    def handshaken(self, slot: Slot) -> None:
        """The handshake of ``slot``'s connection arrived: its slot is held from now on."""
        if slot.host is not None and not slot._released:
            self._forget(slot, slot.host)
            self._held += 1

    def release(self, slot: Slot) -> None:
        """``slot``'s connection is closed; releasing it again does nothing."""
        if slot._released:
            return
        slot._released = True
        if slot.host is None:
            self._held -= 1
        else:
            self._forget(slot, slot.host)

    def _make_room(self, newcomer: str) -> bool:
        """Whether ``newcomer`` fits, once the oldest pending connection is closed if need be."""
        most = self._limits.max_connections
        if self._held + len(self._pending) < most:
            return True
        if self._pending:
            self._evict(self._oldest(), "max_connections", newcomer)
            return True
        self._limit_hit("max_connections", "refused {newcomer}: all {most} are peers", newcomer=newcomer, most=most)
        return False

    def _evict(self, slot: Slot, limit: str, newcomer: str) -> None:
        """Close the pending ``slot``'s connection to make room for ``newcomer``, a description."""
        most = int(getattr(self._limits, limit))
        self._limit_hit(limit, _EVICTED[limit], most=most, host=slot.host, newcomer=newcomer)
        self.release(slot)
        slot.close(f"no handshake yet, and a newer connection needs its place ({limit} is {most})")

    def _forget(self, slot: Slot, host: str) -> None:
        del self._pending[slot]
        if slot in self._silent:
            del self._silent[slot]
            self._forget_host(slot, host)
        slot.host = None

    def _forget_host(self, slot: Slot, host: str) -> None:
        same = self._by_host[host]
        del same[slot]
        if not same:
            del self._by_host[host]
