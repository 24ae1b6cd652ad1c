"""
The deterministic mesh of `.test_simulation`, at 220 nodes: many `.MeshNode` objects
in one process, their links joined by `.twisted.test.iosim` pumps on one fake
clock, every random choice drawn from a seeded generator.

Two topologies: random links with peer exchange off (each node dials 2 to 4
earlier nodes), and one link each with peer exchange on (``max_outgoing=4``).
In each, every node broadcasts once: every node receives every other node's
broadcast exactly once and never its own, and no link carries a broadcast
back to the neighbour it came from or to its originator.  A broadcast that
is older than the message lifetime when it arrives is dropped everywhere.

Each test prints the frames sent per delivered broadcast against the flood
bounds (run with ``-s`` to see them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.test_simulation import Mesh, broadcast_from_each, check_delivery, check_relay
from twisted_mesh import flags
from twisted_mesh._core.seen import MESSAGE_LIFETIME
from twisted_mesh._link import LinkProtocol

NODES = 220


def random_mesh(count: int, seed: int) -> Mesh:
    """Peer exchange off: each node but the first dials 2 to 4 random earlier nodes."""
    mesh = Mesh(count, seed)
    for i in range(1, count):
        for j in mesh.rng.sample(range(i), min(i, mesh.rng.randint(2, 4))):
            mesh.connect(i, j)
    return mesh


def exchange_mesh(count: int, seed: int) -> Mesh:
    """Peer exchange on, ``max_outgoing=4``: each node but the first dials one random earlier node."""
    mesh = Mesh(count, seed, peer_exchange=True, max_outgoing=4)
    for i in range(1, count):
        mesh.connect(i, mesh.rng.randrange(i))
    return mesh


def index_of(mesh: Mesh) -> dict[str, int]:
    """Each node's index, by node ID."""
    return {node.id: i for i, node in enumerate(mesh.nodes)}


def check_links(mesh: Mesh) -> int:
    """
    Each node's routing table is its live links, one per peer, and both ends
    of each link agree on it.

    :return: the number of links.
    """
    index = index_of(mesh)
    ends = 0
    for i, node in enumerate(mesh.nodes):
        links = mesh.links(i)
        assert links, f"node {i} has no peer"
        assert set(node.routing_table.values()) == links, f"node {i}"
        assert len({link.peer_id for link in links}) == len(links), f"node {i} has two links to one peer"
        for link in links:
            assert link.peer_id is not None
            assert mesh.nodes[index[link.peer_id]].routing_table[node.id].peer_id == node.id
        ends += len(links)
    assert ends % 2 == 0
    return ends // 2


def check_connected(mesh: Mesh) -> None:
    """Every node can reach every other one."""
    index = index_of(mesh)
    reached, todo = {0}, [0]
    while todo:
        i = todo.pop()
        for link in mesh.links(i):
            assert link.peer_id is not None
            j = index[link.peer_id]
            if j not in reached:
                reached.add(j)
                todo.append(j)
    assert len(reached) == len(mesh.nodes)


def report(name: str, mesh: Mesh, origins: dict[bytes, int], links: int, record: Callable[[str, Any], None]) -> None:
    """
    Count the frames that carried the broadcasts, and hold them against the
    bounds: at least N-1 per message (a spanning tree), at most
    2E-(N-1) with this relay rule (each node but the originator sends on
    every link but the one it first read the message from), against 2E for
    naive flooding (every node sends on every link).
    """
    count = len(mesh.nodes)
    sent = sum(1 for _, what, _, key, _ in mesh.recorder.events if what == "sent" and key in origins)
    read = sum(1 for _, what, _, key, _ in mesh.recorder.events if what == "read" and key in origins)
    assert sent == read
    deliveries = count * (count - 1)
    assert sum(node.stats.delivered for node in mesh.nodes) >= deliveries
    upper = count * (2 * links - (count - 1))
    lower = count * (count - 1)
    assert lower <= sent <= upper
    per_delivery = sent / deliveries
    print(
        f"\n{name}: {count} nodes, {links} links; {sent} frames for {deliveries} deliveries = "
        f"{per_delivery:.2f} frames per delivered broadcast; "
        f"bounds per delivery: spanning tree 1.00, this relay rule <= {upper / deliveries:.2f}, "
        f"naive flood {2 * links * count / deliveries:.2f}"
    )
    record(f"{name}_frames_per_delivery", round(per_delivery, 3))
    record(f"{name}_naive_flood_per_delivery", round(2 * links * count / deliveries, 3))


def check_expired_everywhere(mesh: Mesh, origin: int) -> None:
    """
    A broadcast whose originator's clock is more than the lifetime behind
    when it arrives: its first hop drops it as expired, nobody delivers or
    relays it, and only the originator's links carry it (whole, or its ID
    on a pruned link, which nobody asks for).
    """
    node = mesh.nodes[origin]
    for other in mesh.nodes:
        assert not other.queue
    expired_before = [other.stats.dropped["expired"] for other in mesh.nodes]
    start = len(mesh.recorder.events)
    node.send(("too old",))
    mesh.clock.advance(MESSAGE_LIFETIME + 1)
    mesh.run()
    events = mesh.recorder.events[start:]
    keys = {key for _, _, _, key, _ in events}
    assert len(keys) == 1
    own = mesh.links(origin)
    sent_on = {link for _, what, link, _, _ in events if what == "sent"}
    assert sent_on | {link for _, what, link, _, _ in events if what == "announced"} == own
    assert sum(1 for _, what, _, _, _ in events if what == "read") == len(sent_on)
    neighbours = {link.peer_id for link in sent_on}
    for i, other in enumerate(mesh.nodes):
        assert not other.queue, f"node {i} delivered an expired broadcast"
        expired = other.stats.dropped["expired"] - expired_before[i]
        assert expired == (1 if other.id in neighbours else 0), f"node {i}"


def check_expires_in_flight(mesh: Mesh, origin: int) -> None:
    """
    A broadcast that reaches the originator's neighbours in time (those of
    its links that are not pruned), then the clock passes its lifetime
    before it goes further: the neighbours deliver it, every later hop drops
    it as expired, and nothing read late is relayed.
    """
    node = mesh.nodes[origin]
    start = len(mesh.recorder.events)
    delivered_before = [other.stats.delivered for other in mesh.nodes]
    expired_before = sum(other.stats.dropped["expired"] for other in mesh.nodes)
    node.send(("late",))
    own = mesh.links(origin)
    neighbours = {link.peer_id for _, what, link, _, _ in mesh.recorder.events[start:] if what == "sent"}
    assert neighbours, "the originator sent it over no link"
    for pump in list(mesh.pumps):
        if pump.client in own or pump.server in own:
            pump.pump()
    late = len(mesh.recorder.events)
    mesh.clock.advance(MESSAGE_LIFETIME + 1)
    mesh.run()
    for i, other in enumerate(mesh.nodes):
        got = other.stats.delivered - delivered_before[i]
        assert got == (1 if other.id in neighbours else 0), f"node {i}"
        if other.id in neighbours:
            msg = other.recv()
            assert msg is not None and msg.packets == (flags.broadcast, "late") and msg.sender == node.id
        assert not other.queue
    after = mesh.recorder.events[late:]
    assert {key for _, _, _, key, _ in mesh.recorder.events[start:]} == {mesh.recorder.events[start][3]}
    assert [what for _, what, _, _, _ in after if what == "sent"] == [], "a broadcast read too late was relayed"
    reads = sum(1 for _, what, _, _, _ in after if what == "read")
    assert reads > 0, "nothing crossed a second hop"
    assert sum(other.stats.dropped["expired"] for other in mesh.nodes) - expired_before == reads


def sending_origin(mesh: Mesh) -> int:
    """
    A random node that has a link that is not pruned, over which its next
    broadcast goes whole.  (Every node broadcasting at once, as
    `.broadcast_from_each` does, may leave a node with all its links pruned:
    its next broadcast then goes as announcements, and its peers ask for it.)
    """
    return mesh.rng.choice(
        [i for i, node in enumerate(mesh.nodes) if set(node.routing_table.values()) - node.tree.lazy]
    )


def links_carry_nothing_twice(mesh: Mesh) -> None:
    """No link direction carries one message twice (the seen-set works across forms)."""
    sent: set[tuple[LinkProtocol, bytes]] = set()
    for _, what, link, key, _ in mesh.recorder.events:
        if what == "sent":
            assert (link, key) not in sent
            sent.add((link, key))


def broadcast_and_check(mesh: Mesh, name: str, links: int, record_property: Callable[[str, Any], None]) -> None:
    """A broadcast from each node: delivered once everywhere, relayed by the rules; then one expiring."""
    origins = broadcast_from_each(mesh)
    check_delivery(mesh)
    check_relay(mesh, origins)
    links_carry_nothing_twice(mesh)
    report(name, mesh, origins, links, record_property)
    check_expired_everywhere(mesh, origin=mesh.rng.randrange(NODES))


@pytest.mark.parametrize("seed", [2024])
def test_220_nodes_random_links_no_peer_exchange(seed: int, record_property: Callable[[str, Any], None]) -> None:
    """220 nodes, 2-4 random links each to earlier nodes: each broadcast reaches everyone once."""
    mesh = random_mesh(NODES, seed)
    mesh.run()
    links = check_links(mesh)
    check_connected(mesh)
    for node in mesh.nodes:
        assert not node.queue
    broadcast_and_check(mesh, "no_peer_exchange", links, record_property)
    check_expires_in_flight(mesh, origin=sending_origin(mesh))


@pytest.mark.parametrize("seed", [99])
def test_220_nodes_with_peer_exchange(seed: int, record_property: Callable[[str, Any], None]) -> None:
    """
    220 nodes, one link each to an earlier node, peer exchange on with
    max_outgoing=4: the links settle (one per pair, no node over its
    outgoing budget), then each broadcast reaches everyone once.
    """
    mesh = exchange_mesh(NODES, seed)
    mesh.run()
    links = check_links(mesh)
    check_connected(mesh)
    assert links > NODES - 1, "peer exchange added no link"
    for i, node in enumerate(mesh.nodes):
        assert sum(1 for link in mesh.links(i) if link.outgoing) <= node.max_outgoing, f"node {i}"
        assert not node.exchange.dialing, f"node {i} is still dialling"
        assert not node.queue
    broadcast_and_check(mesh, "peer_exchange", links, record_property)
