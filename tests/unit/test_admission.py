"""
Who gets a connection slot (`.twisted_mesh._admission`), with no reactor:
pending connections bounded by address and in all, peers never closed to
make room.  (Floods on loopback: test_slots.py.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress

from twisted_mesh import Limits
from twisted_mesh._admission import Admission, Slot, source_of


class Closed:
    """The connections the admission closed, and why, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def of(self, name: str) -> Any:
        return lambda reason: self.calls.append((name, reason))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class Hits:
    """A node's limit_hit: each limit that bit, with its log text."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, limit: str, text: str, **fields: Any) -> None:
        self.calls.append((limit, text.format(**fields)))

    @property
    def limits(self) -> list[str]:
        return [limit for limit, _ in self.calls]


def admission(**limits: Any) -> tuple[Admission, Closed, Hits]:
    hits = Hits()
    return Admission(Limits(**limits), hits), Closed(), hits


def test_an_address_at_its_bound_closes_its_own_oldest() -> None:
    """
    The newest connection from an address with max_pending_per_address
    pending ones takes the place of that address's oldest, not of another
    address's older one.
    """
    slots, closed, hits = admission(max_pending=10, max_pending_per_address=2)
    other = slots.admit("10.0.0.9", closed.of("other"))
    first = slots.admit("10.0.0.1", closed.of("first"))
    slots.admit("10.0.0.1", closed.of("second"))
    assert closed.names == [] and slots.pending == 3
    assert slots.admit("10.0.0.1", closed.of("third")) is not None
    assert closed.names == ["first"]
    assert "max_pending_per_address is 2" in closed.calls[0][1]
    assert hits.limits == ["max_pending_per_address"]
    assert "2 connections from 10.0.0.1 without a handshake" in hits.calls[0][1]
    assert slots.pending == 3
    assert other is not None and first is not None
    # Released by its eviction already: its connection's own close changes nothing.
    slots.release(first)
    assert slots.pending == 3


def test_a_full_pool_closes_the_oldest_of_all() -> None:
    """With max_pending pending connections, a newcomer closes the oldest, whatever its address."""
    slots, closed, hits = admission(max_pending=3, max_pending_per_address=3)
    for name in ("a", "b", "c"):
        slots.admit(f"10.0.0.{ord(name)}", closed.of(name))
    slots.admit("10.0.0.200", closed.of("d"))
    slots.admit("10.0.0.200", closed.of("e"))
    assert closed.names == ["a", "b"]
    assert hits.limits == ["max_pending", "max_pending"]
    assert "from 10.0.0.97, for a connection from 10.0.0.200" in hits.calls[0][1]
    assert slots.pending == 3


def test_peers_are_never_closed_to_make_room() -> None:
    """
    Handshaken and dialled connections are held: a full node closes its
    oldest pending connection for a newcomer, and refuses one only when
    every slot is held.
    """
    slots, closed, hits = admission(max_connections=3, max_pending=3, max_pending_per_address=3)
    dialled = slots.dial(closed.of("dialled"))
    peer = slots.admit("10.0.0.1", closed.of("peer"))
    stranger = slots.admit("10.0.0.2", closed.of("stranger"))
    assert dialled is not None and peer is not None and stranger is not None
    slots.handshaken(peer)
    assert (slots.held, slots.pending) == (2, 1)
    newcomer = slots.admit("10.0.0.3", closed.of("newcomer"))
    assert closed.names == ["stranger"] and hits.limits == ["max_connections"]
    assert newcomer is not None
    slots.handshaken(newcomer)
    assert slots.admit("10.0.0.4", closed.of("refused")) is None
    assert slots.dial(closed.of("refused dial")) is None
    assert closed.names == ["stranger"]
    assert hits.limits == ["max_connections"] * 3
    assert "refused a connection from 10.0.0.4: all 3 are peers" in hits.calls[1][1]
    assert (slots.held, slots.pending) == (3, 0)
    slots.release(peer)
    slots.release(peer)
    assert slots.held == 2
    assert slots.dial(closed.of("dialled again")) is not None


def test_a_dial_closes_the_oldest_pending_connection_of_a_full_node() -> None:
    """Dialled connections are not pending, but count among max_connections."""
    slots, closed, hits = admission(max_connections=2, max_pending=2)
    slots.admit("10.0.0.1", closed.of("old"))
    slots.admit("10.0.0.2", closed.of("new"))
    dialled = slots.dial(closed.of("dialled"))
    assert dialled is not None and repr(dialled) == "<Slot held>"
    assert closed.names == ["old"] and hits.limits == ["max_connections"]
    assert "for a connection this node dialled" in hits.calls[0][1]
    assert (slots.held, slots.pending) == (1, 1)


def test_released_and_handshaken_slots_leave_the_pool() -> None:
    """A pending slot leaves the pool once handshaken or released, once."""
    slots, closed, _ = admission(max_pending=2, max_pending_per_address=2)
    first = slots.admit("10.0.0.1", closed.of("first"))
    second = slots.admit("10.0.0.1", closed.of("second"))
    assert first is not None and second is not None
    assert repr(first) == "<Slot pending from 10.0.0.1>"
    slots.release(first)
    assert repr(first) == "<Slot released>"
    slots.handshaken(first)
    assert (slots.held, slots.pending) == (0, 1)
    slots.handshaken(second)
    slots.handshaken(second)
    assert (slots.held, slots.pending) == (1, 0)
    # The address's bound counts pending connections only.
    for name in ("a", "b"):
        slots.admit("10.0.0.1", closed.of(name))
    assert closed.names == []


def test_a_slot_closes_through_what_its_connection_set_last() -> None:
    """A WebSocket link gives its slot its own close once it is built."""
    slots, closed, _ = admission(max_pending=1)
    opening = slots.admit("10.0.0.1", closed.of("the WebSocket"))
    assert isinstance(opening, Slot)
    opening.close = closed.of("the link")
    slots.admit("10.0.0.2", closed.of("newcomer"))
    assert closed.names == ["the link"]


def test_connections_are_counted_by_ip_address() -> None:
    assert source_of(IPv4Address("TCP", "192.0.2.7", 4444)) == "192.0.2.7"
    assert source_of(UNIXAddress(None)) == "UNIXAddress"


def test_the_defaults_keep_room_for_peers() -> None:
    limits = Limits()
    assert limits.max_pending_per_address < limits.max_pending < limits.max_connections
    assert limits.handshake_timeout == 10.0


def test_a_connection_that_spoke_leaves_its_address_bound() -> None:
    """
    Pending connections that sent a well-formed frame (nodes behind one
    address joining at once) do not count against the address's bound:
    more of them than the bound stay pending, and a silent newcomer from the
    same address closes only silent ones.
    """
    slots, closed, hits = admission(max_pending=10, max_pending_per_address=2)
    for i in range(4):
        slot = slots.admit("10.0.0.1", closed.of(f"spoke{i}"))
        assert slot is not None
        slots.spoke(slot)
    assert closed.names == [] and slots.pending == 4
    for name in ("silent1", "silent2", "silent3"):
        slots.admit("10.0.0.1", closed.of(name))
    assert closed.names == ["silent1"] and hits.limits == ["max_pending_per_address"]
    assert slots.pending == 6


def test_a_full_pool_closes_silent_connections_before_those_that_spoke() -> None:
    """With max_pending pending connections, the oldest silent one makes room first, then the oldest of all."""
    slots, closed, hits = admission(max_pending=3, max_pending_per_address=3)
    first = slots.admit("10.0.0.1", closed.of("spoke"))
    assert first is not None
    slots.spoke(first)
    slots.admit("10.0.0.2", closed.of("silent"))
    slots.admit("10.0.0.3", closed.of("silent too"))
    slots.admit("10.0.0.4", closed.of("newcomer"))
    assert closed.names == ["silent"]
    slots.admit("10.0.0.5", closed.of("another"))
    assert closed.names == ["silent", "silent too"]
    slots.admit("10.0.0.6", closed.of("and another"))
    assert closed.names == ["silent", "silent too", "newcomer"]
    slots.handshaken(first)
    assert slots.held == 1 and slots.pending == 2
