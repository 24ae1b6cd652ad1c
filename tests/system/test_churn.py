"""
Churn: twenty nodes on loopback in one process, one of them stopped and a new
node started on its port every second for a minute, while every live node
broadcasts once a second.  Every broadcast must reach every node that was up
and connected while it travelled, once.

What counts ("eligible" pairs).  A message M, sent at time T by node S, and
a receiving node R (R is not S; a node restarted on the same port is a new
node, with a new ID) form an eligible pair when:

- S had at least one peer at T, and handed M to at least one of them that
  was not already being stopped: a message written only to nodes that are
  shutting down goes nowhere, whatever the mesh does;
- R had at least one peer, without a break, from ``SETTLE`` seconds before T
  until ``WINDOW`` seconds after it (its ``'connect'`` and ``'disconnect'``
  events, and its stop, bound these intervals).  The settling time covers a
  handshake that R has finished and its peer not yet: a relay can only use
  a link once both ends know it.

Nothing is assumed about the shape of the mesh: a node that has a peer but
is cut off from the rest (its peers' other links all gone) counts, and its
misses are losses.  The ratio of eligible pairs delivered is printed and
must be at least `.MIN_RATIO`; no node may deliver a message twice.  Once the
churn stops, the mesh must be whole again: every node in one component.
The run's seed is printed; ``CHURN_SEED=...`` replays its choice of nodes.

`.test_cut_off_group_rejoins` is the smallest split the churn makes, set up
on purpose: two nodes left with each other and nobody else.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from tests.support import MESH, GoneLink, MeshNodes, connected_components, wait_for, within
from twisted_mesh import MeshService, Message
from twisted_mesh._core.tree import ANNOUNCE_DELAY, GRAFT_WAIT
from twisted_mesh._ids import new_node_id
from twisted_mesh.service import MAINTENANCE_INTERVAL

HOST = "127.0.0.1"

#: Nodes in the mesh, and how many of them are seeds (everyone's bootstrap).
NODES = 20
SEEDS = 3
#: Seconds of churn: one node stopped and one restarted each second.
DURATION = 60
#: Each live node broadcasts once a second, one node every 1/NODES s.
SEND_INTERVAL = 1.0 / NODES
#: How long a broadcast may take to reach every node.
WINDOW = 3.0
#: How long a broadcast a cut tree missed may take to come: its announcement,
#: then a graft or two.  The tally waits as long after the churn.
MENDING = ANNOUNCE_DELAY + 2 * GRAFT_WAIT
#: How long after its 'connect' event a node counts as connected.
SETTLE = 0.5
#: The share of eligible (message, node) pairs that must be delivered.
MIN_RATIO = 0.99


def now() -> float:
    """The clock of this test."""
    return time.monotonic()


@dataclass
class Node:
    """One run of a node: from its start on a port until its stop."""

    slot: int
    service: MeshService
    started: float
    stopped: float | None = None
    stopping: float | None = None
    #: [start, end] of each interval with at least one peer (end is inf while open).
    connected: list[list[float]] = field(default_factory=list)
    received: Counter[str] = field(default_factory=Counter)
    receipt: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The node's ID."""
        return self.service.id

    def on_connect(self) -> None:
        """The node got its first peer."""
        if self.stopping is None:
            self.connected.append([now(), float("inf")])

    def on_disconnect(self) -> None:
        """The node lost its last peer."""
        if self.connected and self.connected[-1][1] == float("inf"):
            self.connected[-1][1] = now()

    def connected_throughout(self, start: float, end: float) -> bool:
        """Whether the node had a peer at every moment from ``start`` to ``end``."""
        return any(begin <= start and end <= finish for begin, finish in self.connected)

    def on_message(self, message: Message, link: object) -> bool:
        """Count a churn broadcast."""
        packets = message.packets
        if len(packets) == 3 and packets[1] == "churn":
            self.received[packets[2]] += 1
            self.receipt.setdefault(packets[2], now())
            return True
        return False


@dataclass
class Sent:
    """A broadcast and what its sender knew when sending it."""

    tag: str
    sender: Node
    time: float
    queued: list[str]


class Mesh:
    """The twenty slots (ports), the node running on each, and every node that ran."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.live: dict[int, Node] = {}
        self.runs: list[Node] = []
        self.by_id: dict[str, Node] = {}
        self.sent: list[Sent] = []
        self.listen_retries = 0
        #: (time, "stop" or "start", slot)
        self.churn: list[tuple[float, str, int]] = []
        #: The splits seen: [first seen, last seen, the smaller parts' slots].
        self.splits: list[list[Any]] = []

    def bootstrap(self, slot: int) -> list[tuple[str, int]]:
        """The seeds' addresses, but the node's own."""
        return [(HOST, port) for seed, port in enumerate(self.ports[:SEEDS]) if seed != slot]

    async def start(self, slot: int) -> Node:
        """Start a node on the slot's port (a free one the first time)."""
        port = self.ports[slot] if slot < len(self.ports) else 0
        for attempt in range(50):
            service = MeshService(MESH, listen=[(HOST, port)], connect=self.bootstrap(slot), max_outgoing=4)
            node = Node(slot, service, now())
            service.register_handler(node.on_message)
            service.on("connect", lambda _, node=node: node.on_connect())
            service.on("disconnect", lambda _, node=node: node.on_disconnect())
            service.startService()
            try:
                await within(service.listening, 10)
            except CannotListenError:
                # The port is briefly someone else's (an outgoing connection's, say).
                await service.stopService()
                self.listen_retries += 1
                await task.deferLater(reactor, 0.1 * (attempt + 1))
                continue
            break
        else:
            raise AssertionError(f"could not listen on port {port} again")
        if slot == len(self.ports):
            self.ports.append(service.out_addr[1])
        self.live[slot] = node
        self.churn.append((now(), "start", slot))
        self.runs.append(node)
        self.by_id[node.id] = node
        return node

    async def stop(self, slot: int) -> None:
        """Stop the node of a slot, as ``sock.close()`` does."""
        node = self.live.pop(slot)
        node.stopping = now()
        self.churn.append((node.stopping, "stop", slot))
        node.on_disconnect()
        await within(node.service.stopService(), 15)
        node.stopped = now()

    async def stop_all(self) -> None:
        """Stop every live node."""
        for slot in list(self.live):
            await self.stop(slot)

    def send(self, slot: int, sequence: int) -> None:
        """Broadcast one message from the slot's node, if it is up."""
        node = self.live.get(slot)
        if node is None:
            return
        tag = f"{slot}-{sequence}"
        result = node.service.send("churn", tag)
        self.sent.append(Sent(tag, node, now(), list(result.queued)))

    def watch(self) -> None:
        """
        Note the groups of connected nodes cut off from the rest of the mesh
        (nodes with no peer at all are only waiting to re-dial: not counted).
        """
        parts = sorted((sorted(self.by_id[node_id].slot for node_id in part) for part in self.components()), key=len)
        cut_off = [part for part in parts[:-1] if len(part) > 1]
        if not cut_off:
            return
        t = now()
        if self.splits and self.splits[-1][2] == cut_off and t - self.splits[-1][1] < 0.2:
            self.splits[-1][1] = t
        else:
            self.splits.append([t, t, cut_off])

    def components(self) -> list[set[str]]:
        """The live nodes' connected components, by their routing tables."""
        return connected_components({node.id: set(node.service.routing_table) for node in self.live.values()})


@pytest.fixture
def churned() -> Iterator[Mesh]:
    """The churned mesh, every live node stopped at teardown."""
    churned = Mesh()
    yield churned
    if churned.live:
        pytest_twisted.blockon(defer.ensureDeferred(churned.stop_all()))


def report(request: pytest.FixtureRequest, text: str) -> None:
    """Show a line of the report, whether or not pytest captures output."""
    reporter: Any = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(text)
    else:
        print(text)


@dataclass
class Tally:
    """The eligible pairs and what happened to them."""

    eligible: int = 0
    delivered: int = 0
    late: int = 0
    missed: list[tuple[Sent, Node]] = field(default_factory=list)
    unsendable: int = 0
    sender_alone: int = 0

    @property
    def ratio(self) -> float:
        """Delivered over eligible."""
        return self.delivered / self.eligible if self.eligible else 1.0


def tally(mesh: Mesh) -> Tally:
    """Count the eligible (message, node) pairs, delivered or not."""
    result = Tally()
    for sent in mesh.sent:
        sender = sent.sender
        if not sent.queued or not sender.connected_throughout(sent.time, sent.time):
            result.sender_alone += 1
            continue
        carriers = [mesh.by_id.get(peer) for peer in sent.queued]
        if all(carrier is None or (carrier.stopping or 1e18) <= sent.time for carrier in carriers):
            result.unsendable += 1
            continue
        for node in mesh.runs:
            if node is sender or not node.connected_throughout(sent.time - SETTLE, sent.time + WINDOW):
                continue
            result.eligible += 1
            if sent.tag in node.received:
                result.delivered += 1
                if node.receipt[sent.tag] > sent.time + WINDOW:
                    result.late += 1
            else:
                result.missed.append((sent, node))
    return result


def describe(mesh: Mesh, sent: Sent, node: Node) -> str:
    """One missed pair, for the failure message."""
    sender = sent.sender
    t0 = mesh.runs[0].started

    def when(value: float | None) -> str:
        return "-" if value is None else f"{value - t0:.2f}"

    intervals = ", ".join(f"[{when(a)}, {when(b if b != float('inf') else None)}]" for a, b in node.connected)
    return (
        f"{sent.tag} sent at {when(sent.time)} by slot {sender.slot} (to {len(sent.queued)} peers) "
        f"missed by slot {node.slot} (run {when(node.started)}..{when(node.stopping)}, connected {intervals})"
    )


@pytest_twisted.ensureDeferred
async def test_churn_delivery(churned: Mesh, request: pytest.FixtureRequest) -> None:
    """
    Twenty nodes, one restarted each second for a minute: every broadcast
    reaches every node up and connected while it travelled, once; then the
    mesh is whole again.
    """
    seed = int(os.environ.get("CHURN_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    for slot in range(NODES):
        await churned.start(slot)
    await wait_for(
        lambda: len(churned.components()) == 1 and all(node.service.routing_table for node in churned.live.values()),
        30,
        "the first mesh to form",
    )
    await task.deferLater(reactor, 1.0)

    ticks = 0

    def send_one() -> None:
        nonlocal ticks
        churned.send(ticks % NODES, ticks // NODES)
        churned.watch()
        ticks += 1

    sender = task.LoopingCall(send_one)
    sending = sender.start(SEND_INTERVAL, now=True)
    begin = now()
    down: int | None = None
    kills = 0
    try:
        for second in range(1, DURATION + 1):
            await task.deferLater(reactor, max(0.0, begin + second - now()))
            if down is not None:
                await churned.start(down)
            down = rng.choice([slot for slot in range(NODES) if slot != down])
            await churned.stop(down)
            kills += 1
        await task.deferLater(reactor, max(0.0, begin + DURATION + 1 - now()))
        assert down is not None
        await churned.start(down)
    finally:
        sender.stop()
        await sending
    churn_time = now() - begin
    await task.deferLater(reactor, max(WINDOW, MENDING) + 1.0)

    counts = tally(churned)
    duplicates = [
        (node.slot, node.id[:8], tag, count)
        for node in churned.runs
        for tag, count in node.received.items()
        if count > 1
    ]
    report(
        request,
        f"\nchurn (seed {seed}): {NODES} nodes, {kills} stopped and restarted in {churn_time:.1f} s, "
        f"{len(churned.sent)} broadcasts; delivery ratio {counts.delivered}/{counts.eligible} = {counts.ratio:.4%} "
        f"of eligible pairs ({len(counts.missed)} missed, {counts.late} later than {WINDOW:g} s); "
        f"not counted: {counts.sender_alone} sent with no peer, {counts.unsendable} handed only to stopping nodes; "
        f"{len(duplicates)} duplicates; {churned.listen_retries} listen retries",
    )
    t0 = churned.runs[0].started
    for first, last, parts in churned.splits:
        around = [f"{what} {slot} at {t - t0:.2f}" for t, what, slot in churned.churn if first - 1.5 <= t <= last + 0.1]
        report(request, f"  split from {first - t0:.2f} to {last - t0:.2f} s: {parts} cut off; churn: {around}")
    for sent, node in counts.missed[:20]:
        report(request, "  missed: " + describe(churned, sent, node))

    healed = now()
    try:
        await wait_for(lambda: len(churned.components()) == 1, 15, "the mesh to be whole again after the churn")
        whole = ""
        report(request, f"  the mesh was one component {now() - healed:.1f} s after the churn stopped")
    except AssertionError:
        parts = sorted(([churned.by_id[i].slot for i in part] for part in churned.components()), key=len)
        whole = f"the mesh is still split 15 s after the churn stopped, into slots {parts}"
        report(request, "  " + whole)

    assert not duplicates, f"messages delivered twice: {duplicates[:10]}"
    assert len(churned.sent) >= DURATION * (NODES - 1) * 0.8, "too few broadcasts sent to judge"
    assert counts.eligible >= len(churned.sent) * (NODES - 2) // 2, "too few eligible pairs to judge"
    assert counts.ratio >= MIN_RATIO, "\n".join(
        [f"delivery ratio {counts.ratio:.4%} < {MIN_RATIO:.0%}"]
        + [describe(churned, s, n) for s, n in counts.missed[:30]]
    )
    assert not whole, whole


@pytest_twisted.ensureDeferred
async def test_cut_off_group_rejoins(mesh: MeshNodes, request: pytest.FixtureRequest) -> None:
    """
    The smallest split the churn makes: two nodes whose only link to the
    rest of the mesh is their bootstrap node X, and which peer with each
    other.  X stops; a new X starts on its port.  The two must find their
    way back to it, as a lone node re-dials its bootstrap and past peers;
    and soon: a node that loses a peer looks for others after a second or
    two, not at its next routine check (every MAINTENANCE_INTERVAL, 15 s).
    """

    async def start(port: int, bootstrap: list[tuple[str, int]]) -> MeshService:
        service = mesh.service(listen=[(HOST, port)], connect=bootstrap, max_outgoing=4)
        await within(service.listening, 10)
        return service

    x = await start(0, [])
    port = x.out_addr[1]
    a = await start(0, [(HOST, port)])
    await wait_for(lambda: a.id in x.routing_table, 10, "a to join x")
    b = await start(0, [(HOST, port)])
    await wait_for(lambda: b.id in a.routing_table and a.id in b.routing_table, 10, "b to peer with a too")
    # Past their first re-check (a second or two after dialling x): from
    # here on, a and b only check every MAINTENANCE_INTERVAL.
    await task.deferLater(reactor, 3.0, lambda: None)
    await x.stopService()
    await wait_for(lambda: set(a.routing_table) == {b.id} and set(b.routing_table) == {a.id}, 10, "the cut")
    x = await start(port, [])
    began = now()
    try:
        await wait_for(lambda: x.routing_table, MAINTENANCE_INTERVAL - 5, "a or b to dial x again")
    except AssertionError:
        raise AssertionError(
            "a and b, cut off together from the rest of the mesh, did not dial their bootstrap peer again "
            f"(back on its port for {MAINTENANCE_INTERVAL - 5:g} s): a's peers {len(a.routing_table)}, "
            f"b's {len(b.routing_table)}.  A node that loses a peer should look for others within seconds."
        ) from None
    report(request, f"\n  the cut-off pair rejoined {now() - began:.1f} s after their bootstrap node came back")


def test_lost_peers_bring_the_next_check_forward_never_back() -> None:
    """
    On a fake clock: a node that loses a peer checks its links within two
    seconds, not at its routine check; peers that keep leaving never push
    that check back (it would never come under steady churn).
    """
    clock = MemoryReactorClock()
    service = MeshService(MESH, listen=[(HOST, 0)], reactor=clock)
    service.startService()
    node = service._node

    def next_check() -> float:
        (call,) = clock.getDelayedCalls()
        return call.getTime()

    assert next_check() - clock.seconds() == MAINTENANCE_INTERVAL
    links = [GoneLink(new_node_id(MESH), (HOST, 5000 + i)) for i in range(5)]
    for link in links:
        node.link_ready(link)
    node.link_lost(links[0])
    due = next_check()
    assert 0 < due - clock.seconds() <= 2.0
    for link in links[1:]:
        clock.advance((due - clock.seconds()) / 5)
        node.link_lost(link)
        assert clock.seconds() < next_check() <= due
        due = next_check()
    service.stopService()
    assert not clock.getDelayedCalls()
