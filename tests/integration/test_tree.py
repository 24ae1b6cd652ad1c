"""
Lazy push between twisted_mesh nodes over real loopback TCP: the first
broadcast leaves a tree of eager links, later ones cross only it, and a tree
cut by a closed connection mends.  (``tests/unit/test_tree.py`` and
``test_simulation.py`` check the rules one by one, and on larger meshes.)
"""

from __future__ import annotations

import itertools

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.support import MESH, MeshNodes, connected_components, wait_for, within
from twisted_mesh import MeshSocket, Network
from twisted_mesh._core.tree import ANNOUNCE_DELAY, GRAFT_WAIT

#: A network whose nodes prove their keys and sign their messages.
SIGNED = Network("mesh", "Plaintext", signed=True)

#: The same nodes' network over WebSocket, and over TLS.
OVER_WS = Network("mesh", "ws")
OVER_TLS = Network("mesh", "SSL")

#: Seconds for announcements, and the grafts after them, to be done with.
QUIET = ANNOUNCE_DELAY + 2 * GRAFT_WAIT + 1.0


async def full_mesh(mesh: MeshNodes, count: int, network: Network = MESH) -> list[MeshSocket]:
    """``count`` nodes, each joined to each other one; no peer exchange."""
    nodes = [mesh(prot=network, max_outgoing=0) for _ in range(count)]
    for later, earlier in itertools.combinations(range(count), 2):
        await within(nodes[earlier].connect("127.0.0.1", nodes[later].out_addr[1]))
    for node in nodes:
        await wait_for(lambda node=node: len(node.routing_table) == count - 1, what="every node's links")
    return nodes


def eager_pairs(nodes: list[MeshSocket]) -> set[frozenset[str]] | None:
    """The links eager at both ends, as pairs of node IDs; ``None`` while some link is pruned at one end only."""
    eager, lazy = set(), set()
    for node in nodes:
        for peer_id, link in node.routing_table.items():
            (lazy if link in node._node.tree.lazy else eager).add(frozenset((node.id, peer_id)))
    return None if eager & lazy else eager


async def broadcast(nodes: list[MeshSocket], origin: int, text: str) -> None:
    """
    ``nodes[origin]`` broadcasts ``text``: every other node gets it (a
    second copy would be read as the next broadcast, or by `.quiet`).
    """
    nodes[origin].send(text)
    for i, node in enumerate(nodes):
        if i != origin:
            msg = await within(node.next_message())
            assert msg.packets == (0, text) and msg.sender == nodes[origin].id


async def quiet(nodes: list[MeshSocket]) -> None:
    """Wait for the announcements, and any graft after them: no broadcast came twice."""
    await task.deferLater(reactor, QUIET)
    assert all(node.recv() is None for node in nodes), "a broadcast came twice"


async def tree_formed(nodes: list[MeshSocket]) -> set[frozenset[str]]:
    """Wait for the repeats of a broadcast to prune every link but a tree that spans ``nodes``; return it."""

    def formed() -> bool:
        eager = eager_pairs(nodes)
        return eager is not None and len(eager) == len(nodes) - 1 and spans(nodes, eager)

    await wait_for(formed, what="the eager links to be a tree, both ends of each link agreeing")
    return eager_pairs(nodes) or set()


def repeats(nodes: list[MeshSocket]) -> int:
    """The repeats that all the nodes dropped."""
    return sum(node.stats.dropped["duplicate"] for node in nodes)


@pytest.mark.parametrize("network", [MESH, SIGNED, OVER_WS, OVER_TLS], ids=["unsigned", "signed", "ws", "tls"])
@pytest_twisted.ensureDeferred
async def test_later_broadcasts_cross_only_the_tree(mesh: MeshNodes, network: Network) -> None:
    """
    Five nodes, each linked to each other: the first broadcast is a flood,
    and prunes the links that brought repeats; the eager links left are a
    tree of four, and the next broadcasts, from every node, bring no repeat.
    The pruned links carry their announcements.  The same on a signed
    network, where a repeat is dropped before its signature is checked, and
    over WebSocket and TLS.
    """
    nodes = await full_mesh(mesh, 5, network)
    await broadcast(nodes, 0, "first")
    await tree_formed(nodes)
    flood_repeats = repeats(nodes)
    assert flood_repeats > 0
    for origin in range(len(nodes)):
        await broadcast(nodes, origin, f"from {origin}")
    await quiet(nodes)
    assert repeats(nodes) == flood_repeats
    assert sum(node.stats.announced for node in nodes) > 0
    assert sum(node.stats.grafted for node in nodes) == 0


@pytest_twisted.ensureDeferred
async def test_a_tree_cut_by_a_closed_connection_mends(mesh: MeshNodes) -> None:
    """
    A connection of the tree closes: both its ends make their pruned links
    eager again, at both ends.  The next broadcast crosses the cut at once,
    reaching each node once without a graft, and its repeats prune the
    links back to a tree that spans the nodes; the one after crosses only
    that tree.
    """
    nodes = await full_mesh(mesh, 5)
    await broadcast(nodes, 0, "first")
    cut = next(iter(await tree_formed(nodes)))
    a, b = (next(node for node in nodes if node.id == peer) for peer in cut)
    a.routing_table[b.id].close("cut by the test", error=False)
    await wait_for(lambda: b.id not in a.routing_table and a.id not in b.routing_table, what="the cut")

    def ends_eager() -> bool:
        pairs = eager_pairs(nodes)
        return pairs is not None and all(not node._node.tree.lazy for node in (a, b))

    await wait_for(ends_eager, what="the pruned links of the cut's ends to be eager again, both ends")
    await broadcast(nodes, nodes.index(a), "after the cut")
    await tree_formed(nodes)
    mended_repeats = repeats(nodes)
    await broadcast(nodes, nodes.index(b), "mended")
    await quiet(nodes)
    assert repeats(nodes) == mended_repeats, "a broadcast crossed more than the mended tree"
    assert sum(node.stats.grafted for node in nodes) == 0, "the tree was mended, yet a graft was needed"


def spans(nodes: list[MeshSocket], pairs: set[frozenset[str]]) -> bool:
    """Whether ``pairs`` join all of ``nodes`` in one piece."""
    tables = {node.id: {peer for pair in pairs if node.id in pair for peer in pair - {node.id}} for node in nodes}
    return len(connected_components(tables)) == 1
