"""
A deterministic mesh in memory: many `.MeshNode` objects in one process, their
`.LinkProtocol` links joined by `.twisted.test.iosim`, on one fake clock.

Every node broadcasts once; every frame of a broadcast is recorded where it
is sent and where it is read, so the relay rules can be checked link by
link: nothing goes back where it came from, nothing to its originator, and
each node sees each message once.  Lazy push (`.BroadcastTree`) is checked
here too: the first broadcast leaves a tree of eager links, later ones
cross each of its links once, and a tree cut by a closed link mends.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.test.iosim import FakeTransport, IOPump, connect

from tests.support import MESH, connected_components
from twisted_mesh import flags
from twisted_mesh._core.exchange import DEFAULT_MAX_OUTGOING
from twisted_mesh._core.kept import KEEP_FOR
from twisted_mesh._core.link import Address, Link
from twisted_mesh._core.node import MeshNode
from twisted_mesh._core.tree import ANNOUNCE_DELAY, GRAFT_WAIT
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import b58encode_int
from twisted_mesh._link import LinkFactory, LinkProtocol, WriteBatch

#: (sequence number, "sent" or "read", the link, the message's key, its sender)
Event = tuple[int, str, LinkProtocol, bytes, str]


class Recorder:
    """Every broadcast frame sent and read, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, what: str, link: LinkProtocol, msg: WireMessage) -> None:
        """Record one broadcast frame."""
        if msg.msg_type == flags.broadcast:
            self.events.append((len(self.events), what, link, msg.key, msg.sender))


class RecordingProtocol(LinkProtocol):
    """A link that records the broadcasts it is asked to send."""

    recorder: Recorder

    def send(self, msg: WireMessage) -> None:
        """Record, then send."""
        self.recorder.add("sent", self, msg)
        super().send(msg)


class RecordingFactory(LinkFactory):
    """Builds `.RecordingProtocol` objects."""

    def __init__(self, recorder: Recorder, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder

    def buildProtocol(self, addr: Any) -> RecordingProtocol:
        proto = RecordingProtocol(self)
        proto.recorder = self.recorder
        return proto


class RecordingNode(MeshNode):
    """A node that records the broadcasts its links read."""

    def __init__(self, recorder: Recorder, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder
        relay, tree, announce = self.message_received, self.tree, self.tree.announce

        def recording_announce(msg: WireMessage, links: list[Link]) -> None:
            """Record, then announce."""
            for link in links:
                assert isinstance(link, LinkProtocol)
                recorder.add("announced", link, msg)
            announce(msg, links)

        tree.announce = recording_announce  # type: ignore[method-assign]

        def message_received(link: Link, msg: WireMessage) -> None:
            """Record, then handle."""
            assert isinstance(link, LinkProtocol)
            recorder.add("read", link, msg)
            relay(link, msg)

        self.message_received = message_received


class StreamTransport(FakeTransport):
    """
    iosim's transport, with TCP's half-close: once one end closes its side,
    the other (a `.LinkProtocol`, which closes when its stream ends) closes
    too, after what both wrote is delivered.
    """

    def loseWriteConnection(self) -> None:
        self.loseConnection()


class Mesh:
    """Nodes, their factories and the pumps of their links."""

    def __init__(self, count: int, seed: int, *, peer_exchange: bool = False, max_outgoing: int = 4) -> None:
        self.rng = random.Random(seed)
        self.clock = task.Clock()
        self.recorder = Recorder()
        self.nodes: list[RecordingNode] = []
        self.servers: list[RecordingFactory] = []
        self.clients: list[RecordingFactory] = []
        self.by_address: dict[Address, int] = {}
        self.pumps: list[IOPump] = []
        for i in range(count):
            address = (f"10.0.{i // 200}.{i % 200 + 1}", 4444)
            node = RecordingNode(
                self.recorder,
                MESH,
                self.clock,
                out_addr=address,
                node_id=b58encode_int(self.rng.getrandbits(384)),
                max_outgoing=max_outgoing,
            )
            if peer_exchange:
                node.dialer = self._dialer(i)
            connections: set[LinkProtocol] = set()
            batch = WriteBatch(node.clock)
            self.servers.append(RecordingFactory(self.recorder, node, False, connections, batch=batch))
            self.clients.append(RecordingFactory(self.recorder, node, True, connections, batch=batch))
            self.by_address[address] = i
            self.nodes.append(node)

    def _dialer(self, i: int) -> Any:
        def dial(host: str, port: int, encryption: str) -> Deferred[str]:
            return self.connect(i, self.by_address[host, port]).handshake_done

        return dial

    def connect(self, i: int, j: int) -> LinkProtocol:
        """Node ``i`` dials node ``j``: return ``i``'s end."""
        client = self.clients[i].buildProtocol(None)
        server = self.servers[j].buildProtocol(None)
        self.pumps.append(
            connect(
                server,
                StreamTransport(server, True),
                client,
                StreamTransport(client, False),
                greet=False,
                clock=self.clock,
            )
        )
        return client

    def run(self) -> int:
        """Pump every link until no bytes move: return the rounds it took."""
        for rounds in range(10_000):
            moved = False
            for pump in list(self.pumps):
                moved = pump.pump() or moved
            if not moved:
                return rounds
        raise AssertionError("the mesh never went quiet")

    def settle(self) -> None:
        """
        Pump every link, then let the clock run for announcements, grafts
        and their answers, until nothing is left to do.
        """
        self.run()
        # Long enough for a broadcast to be kept, announced and asked for
        # of a few peers in turn, many times over.
        for _ in range(int(4 * 4 * (KEEP_FOR + ANNOUNCE_DELAY + 4 * GRAFT_WAIT))):
            if not self.clock.getDelayedCalls():
                return
            self.clock.advance(0.25)
            self.run()
        raise AssertionError("the mesh never went quiet")

    def links(self, i: int) -> set[LinkProtocol]:
        """Node ``i``'s live links."""
        return set(self.servers[i].connections)


def random_mesh(count: int, seed: int) -> Mesh:
    """Each node but the first dials 2 or 3 random earlier nodes."""
    mesh = Mesh(count, seed)
    for i in range(1, count):
        for j in mesh.rng.sample(range(i), min(i, mesh.rng.choice((2, 3)))):
            mesh.connect(i, j)
    return mesh


def broadcast_from_each(mesh: Mesh) -> dict[bytes, int]:
    """Each node broadcasts once; return which node sent which key."""
    start = len(mesh.recorder.events)
    for i, node in enumerate(mesh.nodes):
        node.send(("hello from", i))
    origins = {}
    for _, what, _link, key, sender in mesh.recorder.events[start:]:
        assert what == "sent"
        origins[key] = next(i for i, node in enumerate(mesh.nodes) if node.id == sender)
    assert len(origins) == len(mesh.nodes)
    mesh.settle()
    return origins


def check_delivery(mesh: Mesh) -> None:
    """Every node got every other node's broadcast exactly once, and never its own."""
    for i, node in enumerate(mesh.nodes):
        got = [(m.sender, m.packets) for m in node.recv(10_000)]  # type: ignore[union-attr]
        expected = [(other.id, (flags.broadcast, "hello from", j)) for j, other in enumerate(mesh.nodes) if j != i]
        assert Counter(got) == Counter(expected), f"node {i}"


def check_relay(mesh: Mesh, origins: dict[bytes, int]) -> None:
    """
    Link by link: a node sends a message on each of its links at most once,
    never on the link it first read it from, never to its originator, and
    on every other link it has, whole or (on a pruned link) announced.
    """
    peer_of = {link: link.peer_id for i in range(len(mesh.nodes)) for link in mesh.links(i)}
    owner = {link: i for i in range(len(mesh.nodes)) for link in mesh.links(i)}
    sent: dict[tuple[LinkProtocol, bytes], list[int]] = defaultdict(list)
    announced: set[tuple[LinkProtocol, bytes]] = set()
    read: dict[tuple[LinkProtocol, bytes], list[int]] = defaultdict(list)
    first_read: dict[tuple[int, bytes], tuple[int, LinkProtocol]] = {}
    for seq, what, link, key, _ in mesh.recorder.events:
        if key not in origins:
            continue
        if what == "sent":
            sent[link, key].append(seq)
        elif what == "announced":
            announced.add((link, key))
        else:
            read[link, key].append(seq)
            first_read.setdefault((owner[link], key), (seq, link))
    # At most one frame of a message in each direction of a link.
    assert all(len(seqs) == 1 for seqs in sent.values())
    assert all(len(seqs) == 1 for seqs in read.values())
    # Every frame sent was read at the other end.
    assert sum(len(seqs) for seqs in sent.values()) == sum(len(seqs) for seqs in read.values())
    for key, origin in origins.items():
        sender_id = mesh.nodes[origin].id
        for i in range(len(mesh.nodes)):
            links = mesh.links(i)
            sent_on = {link for link in links if (link, key) in sent}
            announced_on = {link for link in links if (link, key) in announced}
            if i == origin:
                assert (i, key) not in first_read, "a node read its own broadcast"
                assert sent_on | announced_on == links
                continue
            read_seq, arrival = first_read[i, key]
            expected = {link for link in links if link is not arrival and peer_of[link] != sender_id}
            assert sent_on <= expected, f"node {i}"
            assert sent_on | announced_on == expected, f"node {i}"
            for link in sent_on:
                # Relayed after it arrived, and never back on a link that had
                # already carried it here (a later read is a frame that crossed).
                assert sent[link, key][0] > read_seq
                assert all(sent[link, key][0] < seq for seq in read.get((link, key), []))


def test_random_mesh_broadcasts() -> None:
    """50 nodes, 2-3 links each to earlier nodes: each broadcast reaches everyone once."""
    mesh = random_mesh(50, seed=7)
    mesh.run()
    for i, node in enumerate(mesh.nodes):
        assert set(node.routing_table.values()) == mesh.links(i)
        assert not node.queue
    origins = broadcast_from_each(mesh)
    check_delivery(mesh)
    check_relay(mesh, origins)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_meshes_small(seed: int) -> None:
    """Smaller meshes with other seeds, for other shapes."""
    mesh = random_mesh(12, seed=seed)
    mesh.run()
    origins = broadcast_from_each(mesh)
    check_delivery(mesh)
    check_relay(mesh, origins)


def test_line_relays_end_to_end() -> None:
    """A line of nodes: a broadcast crosses every link once, end to end."""
    mesh = Mesh(8, seed=0)
    for i in range(1, 8):
        mesh.connect(i, i - 1)
    mesh.run()
    origins = broadcast_from_each(mesh)
    check_delivery(mesh)
    check_relay(mesh, origins)
    # 8 messages, 7 links, each message crosses each link once.
    assert sum(1 for event in mesh.recorder.events if event[1] == "read") == 8 * 7


def test_peer_exchange_mesh() -> None:
    """
    With peer exchange on, nodes dial the peers they hear of (up to
    max_outgoing), double connections are settled, and broadcasts still
    arrive once each.
    """
    mesh = Mesh(30, seed=11, peer_exchange=True)
    for i in range(1, 30):
        mesh.connect(i, mesh.rng.randrange(i))
    mesh.run()
    for i, node in enumerate(mesh.nodes):
        links = mesh.links(i)
        assert set(node.routing_table.values()) == links
        # One link per peer, and both ends agree on it.
        assert len({link.peer_id for link in links}) == len(links)
        for link in links:
            j = next(j for j, other in enumerate(mesh.nodes) if other.id == link.peer_id)
            assert mesh.nodes[j].routing_table[node.id].peer_id == node.id
            assert node.id in mesh.nodes[j].routing_table
        assert sum(1 for link in links if link.outgoing) <= node.max_outgoing
    degrees = [len(mesh.links(i)) for i in range(30)]
    assert sum(degrees) > 2 * 29  # peer exchange added links
    origins = broadcast_from_each(mesh)
    check_delivery(mesh)
    check_relay(mesh, origins)


def test_joining_through_one_seed_keeps_most_connections_made() -> None:
    """
    150 nodes with the default ``max_outgoing`` each dial one seed once: the
    seed keeps ``max_incoming`` of them and turns the others away, and those
    dial the peers it named.  One piece, and the connections turned away
    (by the seed, and now and then by a node that is full in turn) are all
    that is made and not kept: at most one made in six (one in five with
    ``max_outgoing`` 4, which made 1.22 per kept here).  Peer exchange
    draws its own random choices, so the numbers move a little from run to
    run: 1.18 to 1.19 made per kept.
    """
    count = 150
    mesh = Mesh(count, seed=7, peer_exchange=True, max_outgoing=DEFAULT_MAX_OUTGOING)
    for i in range(1, count):
        mesh.connect(i, 0)
        mesh.run()
        mesh.clock.advance(0.05)
    mesh.settle()
    nodes = mesh.nodes
    tables = {node.id: set(node.routing_table) for node in nodes}
    assert len(connected_components(tables)) == 1
    assert len(nodes[0].routing_table) <= nodes[0].max_incoming + DEFAULT_MAX_OUTGOING
    made = sum(node.stats.connections["out"] for node in nodes)
    kept = sum(len(table) for table in tables.values()) // 2
    turned_away = sum(node.stats.limit_hits["max_incoming"] for node in nodes)
    assert turned_away >= count - 1 - nodes[0].max_incoming
    assert made == kept + turned_away, (made, kept, turned_away)
    assert made <= 1.2 * kept, (made, kept)


def eager_edges(mesh: Mesh) -> set[frozenset[int]]:
    """
    The links left eager at both ends, as pairs of nodes; each link pruned
    at one end is pruned at the other.
    """
    index = {node.id: i for i, node in enumerate(mesh.nodes)}
    eager, lazy = set(), set()
    for i, node in enumerate(mesh.nodes):
        for link in mesh.links(i):
            assert link.lazy_push, "a link between twisted_mesh nodes that does not speak lazy push"
            assert link.peer_id is not None
            pair = frozenset((i, index[link.peer_id]))
            (lazy if link in node.tree.lazy else eager).add(pair)
    assert not eager & lazy, "a link pruned at one end only"
    return eager


def check_tree(mesh: Mesh) -> None:
    """The eager links form a tree that spans the mesh: n - 1 of them, and one piece."""
    edges = eager_edges(mesh)
    count = len(mesh.nodes)
    assert len(edges) == count - 1
    tables: dict[str, set[str]] = {str(i): set() for i in range(count)}
    for edge in edges:
        i, j = edge
        tables[str(i)].add(str(j))
    assert len(connected_components(tables)) == 1


def reads_of(mesh: Mesh, key: bytes) -> int:
    """How many frames of the broadcast ``key`` the nodes read."""
    return sum(1 for _, what, _, read_key, _ in mesh.recorder.events if what == "read" and read_key == key)


def broadcast_one(mesh: Mesh, i: int, text: str) -> bytes:
    """Node ``i`` broadcasts ``text``; the mesh settles; return the broadcast's key."""
    start = len(mesh.recorder.events)
    mesh.nodes[i].send((text,))
    key = mesh.recorder.events[start][3]
    mesh.settle()
    return key


def check_each_got(mesh: Mesh, origin: int, text: str) -> None:
    """Every node but ``origin`` got ``text`` once."""
    for i, node in enumerate(mesh.nodes):
        got = [m.packets for m in node.recv(10_000)]  # type: ignore[union-attr]
        assert got == ([] if i == origin else [(flags.broadcast, text)]), f"node {i}"


def test_first_broadcast_leaves_a_tree() -> None:
    """
    The first broadcast prunes every link that brought a repeat: the eager
    links left span the mesh as a tree, and each later broadcast, from any
    node, is read n - 1 times in all: once by each other node, no repeat.
    """
    mesh = random_mesh(40, seed=5)
    mesh.run()
    key = broadcast_one(mesh, 0, "first")
    assert reads_of(mesh, key) > len(mesh.nodes) - 1, "the first broadcast is a flood"
    check_each_got(mesh, 0, "first")
    check_tree(mesh)
    for origin in (7, 23, 39):
        key = broadcast_one(mesh, origin, f"from {origin}")
        assert reads_of(mesh, key) == len(mesh.nodes) - 1
        check_each_got(mesh, origin, f"from {origin}")
    # Each pruned link heard of each of the three, one way or the other.
    pruned = (sum(len(node.routing_table) for node in mesh.nodes) - 2 * (len(mesh.nodes) - 1)) // 2
    assert sum(node.stats.announced for node in mesh.nodes) >= 3 * pruned
    assert sum(node.stats.grafted for node in mesh.nodes) == 0
    check_tree(mesh)


def test_a_cut_tree_mends() -> None:
    """
    When a link of the tree closes, both its ends make their pruned links
    eager again: the next broadcast crosses the cut at once, and each node
    gets it once without a graft; its repeats prune the links back to a
    tree that spans the mesh, which the broadcast after it crosses alone.
    """
    mesh = random_mesh(40, seed=9)
    mesh.run()
    broadcast_one(mesh, 0, "first")
    check_each_got(mesh, 0, "first")
    edge = next(iter(eager_edges(mesh)))
    i, j = sorted(edge)
    (link,) = [link for link in mesh.links(i) if link.peer_id == mesh.nodes[j].id]
    link.close("cut by the test")
    mesh.run()
    assert mesh.nodes[j].id not in mesh.nodes[i].routing_table
    origin = 0 if 0 not in edge else 1
    assert not mesh.nodes[i].tree.lazy and not mesh.nodes[j].tree.lazy
    broadcast_one(mesh, origin, "after the cut")
    check_each_got(mesh, origin, "after the cut")
    assert sum(node.stats.grafted for node in mesh.nodes) == 0
    check_tree(mesh)
    key = broadcast_one(mesh, origin, "mended")
    check_each_got(mesh, origin, "mended")
    check_tree(mesh)
    assert reads_of(mesh, key) == len(mesh.nodes) - 1
