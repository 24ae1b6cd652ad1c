"""
twisted_mesh meshing with the reference nodes, py2p 0.7.878 and js2p 0.7.870,
over real loopback TCP.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.logger import LogEvent

from tests.reference import KINDS, Reference, ReferenceNode
from tests.support import MeshNodes, log_text, wait_for, within
from twisted_mesh import MeshSocket, Network, ProtocolMismatch, flags


@pytest.fixture
def node(mesh: MeshNodes) -> MeshSocket:
    """A twisted_mesh node on loopback, closed at teardown."""
    return mesh()


async def settle(seconds: float = 0.5) -> None:
    """Let in-flight frames land."""
    await task.deferLater(reactor, seconds)


async def joined(node: MeshSocket, ref: ReferenceNode, we_dial: bool) -> None:
    """Connect ``node`` and ``ref``, in the direction asked, and wait for both ends."""
    if we_dial:
        assert await within(node.connect("127.0.0.1", ref.port)) == ref.id
    else:
        assert await ref.connect("127.0.0.1", node.out_addr[1])
    await wait_for(lambda: ref.id in node.routing_table, what="the reference in our routing table")
    assert node.id in await ref.wait_for_peers(1)


@pytest.mark.parametrize("we_dial", [True, False], ids=["we-dial", "they-dial"])
@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_broadcast_and_reply_both_ways(reference: Reference, node: MeshSocket, kind: str, we_dial: bool) -> None:
    ref = await reference(kind)
    await joined(node, ref, we_dial)

    # Ours to theirs, and their reply to ours.
    node.send("from twisted", b"\x00bin", 3, ["nested", b"x"], {"k": "v"})
    theirs = await ref.next_message()
    assert theirs["packets"] == [0, "from twisted", b"\x00bin", 3, ["nested", b"x"], {"k": "v"}]
    assert theirs["sender"] == node.id
    await ref.reply("their reply", 1)
    reply = await within(node.next_message())
    assert reply.packets == (flags.whisper, "their reply", 1)
    assert reply.sender == ref.id and reply.msg_type == flags.whisper

    # Theirs to ours, and our reply to theirs.
    await ref.send("from", kind, b"\xffbin")
    msg = await within(node.next_message())
    assert msg.packets == (flags.broadcast, "from", kind, b"\xffbin")
    assert msg.sender == ref.id
    msg.reply("our reply", b"\x01")
    answer = await ref.next_message()
    assert answer["packets"] == [flags.whisper, "our reply", b"\x01"]
    assert answer["sender"] == node.id

    # Each side writes IDs the way the reference reads them.
    id_type = bytes if kind == "py2p" else str
    assert type(theirs["raw_sender"]) is id_type and type(answer["raw_sender"]) is id_type

    await settle()
    assert node.recv() is None and ref.pending_messages() == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_whisper_to_direct_peers(reference: Reference, node: MeshSocket, kind: str) -> None:
    ref = await reference(kind)
    await joined(node, ref, True)
    node.send("just you", flag=flags.whisper, type=flags.whisper)
    msg = await ref.next_message()
    assert msg["packets"] == [flags.whisper, "just you"]


@pytest.mark.parametrize("we_dial", [True, False], ids=["we-dial", "they-dial"])
@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_their_whispers_arrive_once(reference: Reference, node: MeshSocket, kind: str, we_dial: bool) -> None:
    """
    A whisper the reference sends to its peers arrives once, and the same one
    sent again arrives again: the reference, told our ID once, holds us once
    (js2p told it twice writes everything twice).
    """
    ref = await reference(kind)
    await joined(node, ref, we_dial)
    # Told our ID once, in its form: the reference keys us once.
    assert [key.decode() if isinstance(key, bytes) else key for key in await ref.routing_table()] == [node.id]
    for text in ("first", "first", "second"):
        await ref.send(text, whisper=True)
    got = [(await within(node.next_message())).packets for _ in range(3)]
    assert got == [(flags.whisper, "first"), (flags.whisper, "first"), (flags.whisper, "second")]
    await settle()
    assert node.recv() is None


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_triangle_with_two_references_delivers_once(reference: Reference, node: MeshSocket, kind: str) -> None:
    """
    Two reference nodes join twisted_mesh (and, through its peer list, maybe
    each other): every broadcast reaches every node exactly once.
    """
    left, right = await reference(kind), await reference(kind)
    await joined(node, left, False)
    await joined(node, right, False)
    await left.send("left to right")
    got = await right.next_message()
    assert got["packets"] == [0, "left to right"] and got["sender"] == left.id
    await right.send("right to left")
    got = await left.next_message()
    assert got["packets"] == [0, "right to left"] and got["sender"] == right.id
    assert (await within(node.next_message())).packets == (0, "left to right")
    assert (await within(node.next_message())).packets == (0, "right to left")
    await settle()
    assert node.recv() is None
    assert left.pending_messages() == 0 and right.pending_messages() == 0


@pytest_twisted.ensureDeferred
async def test_bridge_between_py2p_and_js2p(reference: Reference, node: MeshSocket) -> None:
    """
    py2p and js2p cannot mesh with each other; one twisted_mesh node between
    them carries broadcasts both ways, each delivered once.  (A reply goes
    straight to its sender, which the other reference cannot dial.)
    """
    py2p, js2p = await reference("py2p"), await reference("js2p")
    await joined(node, py2p, False)
    await joined(node, js2p, True)

    await py2p.send("hello from py2p", b"\x00")
    got = await js2p.next_message()
    assert got["packets"] == [0, "hello from py2p", b"\x00"] and got["sender"] == py2p.id
    await js2p.send("hello from js2p", 7)
    got = await py2p.next_message()
    assert got["packets"] == [0, "hello from js2p", 7] and got["sender"] == js2p.id

    # The twisted_mesh node sees both, once each.
    seen = [await within(node.next_message()) for _ in range(2)]
    assert sorted(m.packets[1] for m in seen) == ["hello from js2p", "hello from py2p"]

    # py2p and js2p, which are not connected, reach each other's broadcasts
    # through the bridge; a burst arrives whole and in order.
    for n in range(30):
        node.send("burst", n)
        await task.deferLater(reactor, 0.01)  # py2p's reader breaks on bursts
    for ref in (py2p, js2p):
        got = [(await ref.next_message())["packets"] for _ in range(30)]
        assert got == [[0, "burst", n] for n in range(30)]
    await settle()
    assert node.recv() is None
    assert py2p.pending_messages() == 0 and js2p.pending_messages() == 0


#: Networks a reference of subnet ``subnet`` is not on, with what the log says.
OTHER_NETWORKS = {
    # Another subnet.
    "other-subnet": (Network("mesh", "Plaintext"), "another", "speaks protocol"),
    # The signed network of the same subnet: py2p and js2p sign nothing.
    "signed": (Network("mesh", "Plaintext", signed=True), "mesh", "this network is signed"),
}


@pytest.mark.parametrize("we_dial", [True, False], ids=["we-dial", "they-dial"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(OTHER_NETWORKS))
@pytest_twisted.ensureDeferred
async def test_another_network_is_refused_and_logged(
    reference: Reference, mesh: MeshNodes, log_events: list[LogEvent], kind: str, we_dial: bool, case: str
) -> None:
    """A reference of another subnet, or of the unsigned network of a signed node's subnet, is refused."""
    ours, subnet, logged = OTHER_NETWORKS[case]
    node = mesh(prot=ours)
    ref = await reference(kind, subnet=subnet)
    if we_dial:
        with pytest.raises(ProtocolMismatch) as caught:
            await within(node.connect("127.0.0.1", ref.port))
        assert caught.value.theirs == Network(subnet, "Plaintext").id
    else:
        await ref.connect("127.0.0.1", node.out_addr[1])
    await wait_for(lambda: logged in log_text(log_events), what="the mismatch in the log")
    await settle()
    assert not node.routing_table
    assert await ref.peers() == []


@pytest_twisted.ensureDeferred
async def test_reference_joins_a_twisted_mesh(mesh: MeshNodes, reference: Reference) -> None:
    """A py2p node joins a line of twisted_mesh nodes and hears all of them."""
    nodes = await mesh.line()
    ref = await reference("py2p")
    await joined(nodes[2], ref, False)
    for n, sock in enumerate(nodes):
        sock.send("node", n)
        await task.deferLater(reactor, 0.01)
    got = sorted([(await ref.next_message())["packets"][2] for _ in range(3)])
    assert got == [0, 1, 2]
    await ref.send("to all")
    for n, sock in enumerate(nodes):
        # The other two nodes' broadcasts, then the reference's.
        got_here = [await within(sock.next_message()) for _ in range(3)]
        assert sorted(m.packets[2] for m in got_here[:2]) == [i for i in range(3) if i != n]
        assert got_here[2].packets == (0, "to all") and got_here[2].sender == ref.id


@pytest_twisted.ensureDeferred
async def test_lazy_push_stays_between_twisted_mesh_nodes(mesh: MeshNodes, reference: Reference) -> None:
    """
    Three twisted_mesh nodes, each linked to each other, and a py2p node
    that joins one of them (and dials the others it hears of): the
    reference's broadcasts prune links between twisted_mesh nodes, at both
    ends, never a link to the reference, which says nothing of lazy push.
    Every broadcast, the reference's and theirs, reaches every node once.
    """
    a, b, c = (mesh(max_outgoing=0) for _ in range(3))
    for dialler, dialled in ((b, a), (c, a), (c, b)):
        await within(dialler.connect("127.0.0.1", dialled.out_addr[1]))
    ref = await reference("py2p")
    await joined(a, ref, False)
    nodes = (a, b, c)

    def lazy_links() -> set[tuple[str, str]]:
        return {
            (node.id, peer)
            for node in nodes
            for peer, link in node.routing_table.items()
            if link in node._node.tree.lazy
        }

    for n in range(10):
        await ref.send("from py2p", n)
        for node in nodes:
            assert (await within(node.next_message())).packets == (0, "from py2p", n)
        await settle(0.2)
        if lazy_links():
            break
    assert lazy_links(), "no link between the twisted_mesh nodes was pruned"

    def both_ends() -> bool:
        pruned = lazy_links()
        return pruned == {(there, here) for here, there in pruned}

    await wait_for(both_ends, what="each link pruned at both ends")
    pruned = lazy_links()
    assert all(ref.id not in pair for pair in pruned)
    for node in nodes:
        if ref.id in node.routing_table:
            assert not node.routing_table[ref.id].lazy_push
    for sender in nodes:
        sender.send("from", sender.id)
        assert (await ref.next_message())["packets"] == [0, "from", sender.id]
        for node in nodes:
            if node is not sender:
                assert (await within(node.next_message())).packets == (0, "from", sender.id)
    await settle(2.0)
    assert all(node.recv() is None for node in nodes) and ref.pending_messages() == 0
