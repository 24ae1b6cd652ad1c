"""
Many nodes that join through one seed, over real loopback TCP: the seed
keeps a bounded number of links and turns the rest away with peers to
dial; every joiner ends in one mesh, and broadcasts reach every node once.
The same with py2p and js2p nodes among the joiners.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.reference import Reference
from tests.support import MeshNodes, connected_components, wait_for, within
from twisted_mesh import MeshSocket, Message

#: The joiners' and the seed's limits: small, so that a few dozen nodes fill the seed.
MAX_OUTGOING = 2
MAX_INCOMING = 4


def tables(nodes: list[MeshSocket], others: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Each node's peers, by node ID, with ``others``' (reference nodes)."""
    return {node.id: set(node.routing_table) for node in nodes} | (others or {})


async def broadcast_reaches_everyone(origin: MeshSocket, nodes: list[MeshSocket]) -> None:
    """A broadcast from ``origin`` reaches each other node exactly once."""
    got: dict[str, list[Message]] = {node.id: [] for node in nodes}
    for node in nodes:
        node.register_handler(lambda msg, _, node=node: got[node.id].append(msg) or True)
    origin.send("to all", origin.id)
    others = [node for node in nodes if node is not origin]
    await wait_for(lambda: all(got[node.id] for node in others), 60, "the broadcast at every node")
    await task.deferLater(reactor, 0.5)
    assert all(len(got[node.id]) == 1 for node in others), {node.id[:8]: len(got[node.id]) for node in others}


@pytest_twisted.ensureDeferred
async def test_a_seed_everyone_joins_through_keeps_a_bounded_degree(mesh: MeshNodes) -> None:
    """
    30 nodes each dial the seed once, as a user following the README would:
    the seed keeps at most max_outgoing + max_incoming links (it kept all
    29 before), turns the others away with peers to dial, and they do: the
    30 end as one mesh, every node with a peer, and a broadcast reaches
    every node once.  Connections made stay within twice those kept.
    """
    seed = mesh(max_outgoing=MAX_OUTGOING, max_incoming=MAX_INCOMING)
    joiners = [mesh(max_outgoing=MAX_OUTGOING, max_incoming=MAX_INCOMING) for _ in range(29)]
    nodes = [seed, *joiners]
    for joiner in joiners:
        await joiner.connect("127.0.0.1", seed.out_addr[1])
        await task.deferLater(reactor, 0.02)

    def settled() -> bool:
        return len(connected_components(tables(nodes))) == 1 and all(node.routing_table for node in nodes)

    await wait_for(settled, 90, "one mesh")
    assert len(seed.routing_table) <= MAX_OUTGOING + MAX_INCOMING, len(seed.routing_table)
    assert seed.stats.limit_hits["max_incoming"] >= 29 - MAX_INCOMING - MAX_OUTGOING
    assert max(len(node.routing_table) for node in nodes) <= MAX_OUTGOING + MAX_INCOMING + 1
    made = sum(node.stats.connections["out"] for node in nodes)
    kept = sum(len(node.routing_table) for node in nodes) // 2
    assert made <= 2 * kept, (made, kept)
    await broadcast_reaches_everyone(joiners[-1], nodes)


@pytest.mark.parametrize("kind", ["py2p", "js2p"])
@pytest_twisted.ensureDeferred
async def test_reference_nodes_join_through_a_full_seed(mesh: MeshNodes, reference: Reference, kind: str) -> None:
    """
    A seed already full of twisted_mesh peers: py2p nodes that dial it are
    turned away with peers to dial, and dial them as they do; js2p nodes,
    which would not (on one host they take every peer for one they have),
    are kept, and a redundant link trimmed instead.  Either way the reference
    nodes end in the mesh, and broadcasts from a reference node and to it
    reach everyone.
    """
    seed = mesh(max_outgoing=MAX_OUTGOING, max_incoming=MAX_INCOMING)
    ours = [mesh(max_outgoing=MAX_OUTGOING, max_incoming=MAX_INCOMING) for _ in range(8)]
    for node in ours:
        await node.connect("127.0.0.1", seed.out_addr[1])
    nodes = [seed, *ours]
    await wait_for(lambda: len(connected_components(tables(nodes))) == 1, 60, "our nodes in one mesh")

    def seed_incoming() -> int:
        return sum(not link.outgoing for link in seed.routing_table.values())

    await wait_for(lambda: seed_incoming() == MAX_INCOMING, 30, "the seed to be full")
    refs = [await reference(kind) for _ in range(2)]
    turned_away = seed.stats.limit_hits["max_incoming"]
    trimmed = seed.stats.trimmed
    for ref in refs:
        assert await ref.connect("127.0.0.1", seed.out_addr[1])

    async def reference_tables() -> dict[str, set[str]]:
        return {ref.id: set(await ref.peers()) for ref in refs}

    async def one_mesh() -> bool:
        return len(connected_components(tables(nodes, await reference_tables()))) == 1

    for _ in range(600):
        if await one_mesh():
            break
        await task.deferLater(reactor, 0.1)
    assert await one_mesh(), f"the reference nodes did not join the mesh: {await reference_tables()}"
    if kind == "py2p":
        assert seed.stats.limit_hits["max_incoming"] > turned_away
        assert len(seed.routing_table) <= MAX_OUTGOING + MAX_INCOMING
    else:
        assert all(ref.id in seed.routing_table for ref in refs)
        await wait_for(lambda: seed.stats.trimmed > trimmed, 30, "the seed to trim a redundant link")
        await wait_for(lambda: len(seed.routing_table) <= MAX_OUTGOING + MAX_INCOMING, 30, "the seed's trimmed degree")
    await refs[0].send("from the reference")
    for node in nodes:
        assert (await within(node.next_message())).packets == (0, "from the reference")
    seed.send("from the seed")
    for ref in refs:
        packets = [(await ref.next_message())["packets"] for _ in range(2 if ref is refs[1] else 1)]
        assert packets[-1] == [0, "from the seed"], packets
