"""
`.RoutingTable`, through `.MeshNode` with fake links and a fake clock:
connection conflicts and slow peers.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError

from tests.unit.node_support import FakeLink, add_link, make_node
from twisted_mesh._core import routing
from twisted_mesh._ids import b58decode_int, b58encode_int

# -- connection conflicts ----------------------------------------------------

LOW = b58encode_int(10**100)
HIGH = b58encode_int(10**110)


def test_conflict_ids_are_ordered() -> None:
    """The IDs used below compare as intended."""
    assert b58decode_int(LOW) < b58decode_int(HIGH)


@pytest.mark.parametrize("outgoing_first", [True, False])
@pytest.mark.parametrize(
    ("ours", "theirs", "keep_ours"), [(HIGH, LOW, True), (LOW, HIGH, False)], ids=["our_id_higher", "our_id_lower"]
)
def test_conflict_keeps_the_dial_of_the_higher_id(
    ours: str, theirs: str, keep_ours: bool, outgoing_first: bool
) -> None:
    """
    Our ID higher: the link we dialled (outgoing) is kept; lower: the link
    the peer dialled (incoming).  The other is closed.
    """
    node, _, _ = make_node(node_id=ours)
    first = FakeLink(theirs, addr=("10.5.0.1", 1), outgoing=outgoing_first)
    second = FakeLink(theirs, addr=("10.5.0.1", 1), outgoing=not outgoing_first)
    assert node.link_ready(first)
    kept = node.link_ready(second)
    outgoing, incoming = (first, second) if outgoing_first else (second, first)
    keep, drop = (outgoing, incoming) if keep_ours else (incoming, outgoing)
    assert kept == (second is keep)
    assert node.routing_table == {theirs: keep}
    assert keep.closes == [] and len(drop.closes) == 1
    # Losing the closed link leaves the kept one in place.
    node.link_lost(drop)
    assert node.routing_table == {theirs: keep}


def test_conflict_both_sides_agree() -> None:
    """Each end applies the rule and keeps the same connection."""
    low, _, _ = make_node(node_id=LOW)
    high, _, _ = make_node(node_id=HIGH)
    # Connection 1 dialled by LOW, connection 2 dialled by HIGH.
    low_1, high_1 = FakeLink(HIGH, outgoing=True), FakeLink(LOW, outgoing=False)
    low_2, high_2 = FakeLink(HIGH, outgoing=False), FakeLink(LOW, outgoing=True)
    low.link_ready(low_1)
    high.link_ready(high_2)
    low.link_ready(low_2)
    high.link_ready(high_1)
    assert low.routing_table[HIGH] is low_2 and high.routing_table[LOW] is high_2
    assert low_1.closes and high_1.closes and not low_2.closes and not high_2.closes


@pytest.mark.parametrize("lower_first", [True, False])
def test_conflict_same_direction_both_ends_agree(lower_first: bool) -> None:
    """
    Two links dialled by one end, which the two ends see in either order:
    both keep the one from the lower port, and close the other.
    """
    dialler, _, _ = make_node(node_id=HIGH)
    accepter, _, _ = make_node(node_id=LOW)
    ports = (40001, 40002) if lower_first else (40002, 40001)
    out = [FakeLink(LOW, outgoing=True) for _ in ports]
    into = [FakeLink(HIGH, outgoing=False) for _ in ports]
    for link, port in (*zip(out, ports, strict=True), *zip(into, ports, strict=True)):
        link.port = port
    dialler.link_ready(out[0])
    dialler.link_ready(out[1])
    accepter.link_ready(into[1])  # the other end sees them the other way round
    accepter.link_ready(into[0])
    assert dialler.routing_table[LOW].dialler_port() == accepter.routing_table[HIGH].dialler_port() == 40001
    assert [bool(link.closes) for link in out] == [bool(link.closes) for link in into] == [not lower_first, lower_first]


def test_conflict_same_direction_keeps_the_first() -> None:
    """Two links in the same direction, without ports: the first stays, the new one is closed."""
    node, _, _ = make_node(node_id=HIGH)
    first, second = FakeLink(LOW, outgoing=True), FakeLink(LOW, outgoing=True)
    node.link_ready(first)
    assert not node.link_ready(second)
    assert node.routing_table == {LOW: first} and second.closes and not first.closes


@pytest.mark.parametrize("outgoing", [True, False])
def test_a_redial_replaces_a_lingering_link(outgoing: bool) -> None:
    """
    A peer that dials again long after its first link (which it lost, but
    which lingers here, half open) gets the new link, whatever its port; at
    the other end, a second dial that late replaces the first as well.
    """
    node, clock, _ = make_node(node_id=HIGH)
    old, new = FakeLink(LOW, outgoing=outgoing), FakeLink(LOW, outgoing=outgoing)
    old.port, new.port = 40001, 40002
    node.link_ready(old)
    clock.advance(routing.REDIAL_AFTER)
    assert node.link_ready(new)
    assert node.routing_table == {LOW: new} and old.closes and not new.closes


def test_a_closing_link_makes_way_for_a_new_one() -> None:
    """
    A peer that connects again while its old link is still closing (a TLS or
    WebSocket closing handshake) gets the new link; the old one, once gone,
    does not take the peer out of the routing table.
    """
    node, _, _ = make_node(node_id=HIGH)
    lost: list[object] = []
    node.peer_lost = lost.append
    old, new = FakeLink(LOW, outgoing=True), FakeLink(LOW, outgoing=True)
    node.link_ready(old)
    old.close("going")
    assert node.link_ready(new)
    assert node.routing_table == {LOW: new} and not new.closes
    node.link_lost(old)
    assert node.routing_table == {LOW: new} and not lost


# -- slow peers ---------------------------------------------------------------


def test_a_slow_peer_pauses_the_others() -> None:
    """While a peer is slow to read, the node reads from no other peer, and from all once it caught up."""
    node, _, _ = make_node()
    slow, b, c = (add_link(node) for _ in range(3))
    node.link_congested(slow)
    assert (slow.reading, b.reading, c.reading) == (True, False, False)
    node.link_drained(slow)
    assert (slow.reading, b.reading, c.reading) == (True, True, True)


def test_two_slow_peers_do_not_wait_on_each_other() -> None:
    """A peer that was paused for a slow one reads while it is slow itself, and waits again once it is not."""
    node, _, _ = make_node()
    first, second, other = (add_link(node) for _ in range(3))
    node.link_congested(first)
    node.link_congested(second)
    assert (first.reading, second.reading, other.reading) == (True, True, False)
    node.link_drained(second)
    assert (first.reading, second.reading, other.reading) == (True, False, False)
    node.link_drained(first)
    assert (first.reading, second.reading, other.reading) == (True, True, True)


def test_a_peer_that_joins_while_another_is_slow_waits() -> None:
    """A new peer is not read from while a peer is slow: it would feed the slow one."""
    node, _, _ = make_node()
    slow = add_link(node)
    node.link_congested(slow)
    joined = add_link(node)
    assert not joined.reading
    node.link_drained(slow)
    assert joined.reading


def test_losing_the_slow_peer_resumes_the_others() -> None:
    """A slow peer that leaves holds no one up."""
    node, _, _ = make_node()
    slow, other = add_link(node), add_link(node)
    node.link_congested(slow)
    node.link_lost(slow)
    assert other.reading


def test_drained_fires_once_no_peer_is_congested() -> None:
    """
    drained() fires at once while no peer is congested; else once the last
    congested peer caught up or left.  A cancelled one is forgotten.
    """
    node, _, _ = make_node()
    first, second = add_link(node), add_link(node)
    fired: list[object] = []
    node.drained().addCallback(fired.append)
    assert fired == [None]
    node.link_congested(first)
    node.link_congested(second)
    waiting = node.drained()
    waiting.addCallback(fired.append)
    cancelled = node.drained()
    cancelled.addErrback(lambda failure: fired.append(failure.type))
    cancelled.cancel()
    assert fired == [None, CancelledError]
    node.link_drained(first)
    assert fired == [None, CancelledError]
    node.link_lost(second)
    assert fired == [None, CancelledError, None]
