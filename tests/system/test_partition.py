"""
Partition and heal, with real network namespaces.

Two namespaces, A and B, are joined by a veth pair (10.231.0.1/24 in A,
10.231.0.2/24 in B: addresses that exist only inside them).  Three node
processes run in each (``tests/system/netns_node.py``, driven over their standard
streams); A's nodes dial each other and one node of B.  Once the six form
one mesh, the veth is set down on both sides: a silent cut, as when a cable
or a switch dies, with no FIN or RST on either side.  Each side's
broadcasts must then reach that side only, and the nodes must notice the
cut (their routing tables lose the other side).  Then the link comes up
again and the mesh must re-form: broadcasts from A reach B and back, once
each, within seconds.

A node notices a silent cut only through TCP: the nodes turn keepalive on,
and a link with unacknowledged data times out after ``tcp_retries2``
retransmissions.  `.test_partition_and_heal` runs with short keepalive and
retransmission settings in the two namespaces (they are per namespace), so
the cut is noticed in seconds and the heal is what is tested;
`.test_silent_cut_noticed_with_default_tcp_settings` asks whether a node
notices it at all with the kernel's defaults (keepalive after 2 hours, about
15 minutes of retransmissions).  `.test_lone_node_redials_after_heal` cuts
a node off from all its peers: it is left alone, and must re-dial with
backoff until the link is back.

The tests need root (``ip netns add``); they skip with the reason when the
kernel or the user may not make namespaces, except under CI as root, where
that is a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import twisted_mesh
from tests.support import connected_components
from tests.system.netns import add_namespace, delete_namespace, ip_command, run_ip

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parent / "netns_node.py"

#: The veth's addresses: node processes of A listen on the first, of B on the second.
A_ADDRESS = "10.231.0.1"
B_ADDRESS = "10.231.0.2"
PREFIX = 24

#: TCP settings of the namespaces in the heal test: keepalive probes after 2 s
#: idle, one a second, 3 unanswered ones end the link; unacknowledged data
#: ends it after 5 retransmissions (about 13 s).
FAST_TCP = {
    "tcp_keepalive_time": 2,
    "tcp_keepalive_intvl": 1,
    "tcp_keepalive_probes": 3,
    "tcp_retries2": 5,
}

#: Seconds to wait: for a node to start, for the first mesh to form, for a
#: broadcast to arrive, for the nodes to notice the cut, for the mesh to
#: re-form once the link is back.
START_TIMEOUT = 30.0
FORM_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 10.0
NOTICE_TIMEOUT = 30.0
DEFAULT_NOTICE_TIMEOUT = 60.0
HEAL_TIMEOUT = 30.0
#: How long the other side is watched for a broadcast it must not get.
QUIET_TIME = 3.0

_runs = itertools.count()


@dataclass
class Namespaces:
    """Two namespaces, A and B, and the veth pair between them."""

    ip: str
    a: str
    b: str
    veth_a: str
    veth_b: str
    made: list[str] = field(default_factory=list)

    def run(self, *args: str) -> None:
        """Run ``ip args``; fail with its error output when it fails."""
        run_ip(self.ip, *args)

    def create(self) -> None:
        """Make the namespaces, the veth pair, the addresses; bring links up."""
        for name in (self.a, self.b):
            try:
                add_namespace(self.ip, name)
            except BaseException:  # (pytest's skip and fail are BaseExceptions)
                self.delete()
                raise
            self.made.append(name)
        self.run(
            "link", "add", self.veth_a, "netns", self.a, "type", "veth", "peer", "name", self.veth_b, "netns", self.b
        )
        self.run("-n", self.a, "addr", "add", f"{A_ADDRESS}/{PREFIX}", "dev", self.veth_a)
        self.run("-n", self.b, "addr", "add", f"{B_ADDRESS}/{PREFIX}", "dev", self.veth_b)
        for name in (self.a, self.b):
            self.run("-n", name, "link", "set", "lo", "up")
        self.heal()

    def delete(self) -> None:
        """Delete the namespaces (and with them the veth pair)."""
        for name in self.made:
            delete_namespace(self.ip, name)
        self.made = []

    def cut(self) -> None:
        """Set the veth down on both sides: nothing crosses, nothing is told."""
        self.run("-n", self.a, "link", "set", self.veth_a, "down")
        self.run("-n", self.b, "link", "set", self.veth_b, "down")

    def heal(self) -> None:
        """Set the veth up on both sides."""
        self.run("-n", self.a, "link", "set", self.veth_a, "up")
        self.run("-n", self.b, "link", "set", self.veth_b, "up")

    def set_tcp(self, settings: dict[str, int]) -> None:
        """Set TCP sysctls (per namespace) in both namespaces."""
        script = "; ".join(f"echo {value} > /proc/sys/net/ipv4/{name}" for name, value in settings.items())
        for name in (self.a, self.b):
            self.run("netns", "exec", name, "sh", "-c", script)


class Node(ProcessProtocol):
    """A node process (``tests/system/netns_node.py``) inside a namespace."""

    def __init__(self, name: str, group: str) -> None:
        self.name = name
        self.group = group
        self.id = ""
        self.port = 0
        self.events: list[dict[str, Any]] = []
        self.err = bytearray()
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], Deferred[dict[str, Any]]]] = []
        self._tags = itertools.count()

    def __repr__(self) -> str:
        return f"<Node {self.name}>"

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)
            self.events.append(event)
            for waiter in list(self._waiters):
                predicate, d = waiter
                if predicate(event):
                    self._waiters.remove(waiter)
                    d.callback(event)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        for _, d in self._waiters:
            d.errback(AssertionError(f"{self.name} ended: {reason.getErrorMessage()}\n{self.log()}"))
        self._waiters = []
        self.ended.callback(None)

    def log(self, lines: int = 40) -> str:
        """The end of the node's log."""
        return "\n".join(self.err.decode(errors="replace").splitlines()[-lines:])

    async def event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, after: int = 0
    ) -> dict[str, Any]:
        """The first event (past, from index ``after`` on, or coming) that ``predicate`` accepts."""
        for event in self.events[after:]:
            if predicate(event):
                return event
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiters.append((predicate, d))
        return await d.addTimeout(timeout, reactor)

    def command(self, **command: Any) -> None:
        """Write a command to the node."""
        assert self.transport is not None
        self.transport.write(json.dumps(command).encode() + b"\n")

    def send(self, tag: str) -> None:
        """Broadcast ``("part", tag)``."""
        self.command(cmd="send", tag=tag, packets=["part", tag])

    async def peers(self) -> set[str]:
        """The IDs in the node's routing table, from its status."""
        tag = next(self._tags)
        self.command(cmd="status", tag=tag)
        event = await self.event(lambda e: e["event"] == "status" and e["tag"] == tag, DELIVERY_TIMEOUT)
        return {peer["id"] for peer in event["status"]["peers"]}

    def received(self) -> Counter[str]:
        """The broadcasts received, by tag, with how many times each came."""
        return Counter(
            e["packets"][2] for e in self.events if e["event"] == "message" and e["packets"][:2] == [0, "part"]
        )

    def address(self) -> str:
        """The endpoint string that dials this node."""
        return f"tcp:host={A_ADDRESS if self.group == 'A' else B_ADDRESS}:port={self.port}:timeout=5"


class Lab:
    """The namespaces and the node processes in them."""

    def __init__(self, namespaces: Namespaces) -> None:
        self.ns = namespaces
        self.nodes: list[Node] = []
        self.t0 = time.monotonic()
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Remember a line for the report."""
        self.notes.append(f"{time.monotonic() - self.t0:6.1f} s  {text}")

    async def start(self, name: str, group: str, connect: list[Node]) -> Node:
        """Start a node in the namespace of ``group``, dialling ``connect``."""
        node = Node(name, group)
        ns, address = (self.ns.a, A_ADDRESS) if group == "A" else (self.ns.b, B_ADDRESS)
        argv = [self.ns.ip, "netns", "exec", ns, sys.executable, "-u", str(RUNNER)]
        argv += ["--listen", f"tcp:0:interface={address}"]
        for peer in connect:
            argv += ["--connect", peer.address()]
        env = dict(os.environ)
        # The package this test imported: from the checkout, put it on the
        # path; from an installed venv, the interpreter finds it already (and
        # site-packages on PYTHONPATH would shadow the standard library).
        package_root = Path(twisted_mesh.__file__).resolve().parent.parent
        if package_root == REPO.resolve():
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_root), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        reactor.spawnProcess(node, argv[0], argv, env=env, path=str(REPO))
        self.nodes.append(node)
        listening = await node.event(lambda e: e["event"] in ("listening", "failed"), START_TIMEOUT)
        assert listening["event"] == "listening", f"{name} could not listen: {listening}\n{node.log()}"
        node.id, node.port = listening["id"], listening["port"]
        return node

    async def stop(self) -> None:
        """Stop every node: end of input and SIGTERM, then SIGKILL."""
        running = [node for node in self.nodes if not node.ended.called]
        for node in running:
            for action in (lambda n: n.transport.closeStdin(), lambda n: n.transport.signalProcess("TERM")):
                try:
                    action(node)
                except Exception:
                    pass
        ended = defer.DeferredList([node.ended for node in running])
        await defer.DeferredList([ended]).addTimeout(10, reactor).addErrback(lambda _: None)
        for node in running:
            if not node.ended.called:
                try:
                    node.transport.signalProcess("KILL")  # type: ignore[union-attr]
                except Exception:
                    pass
        await defer.DeferredList([node.ended for node in running]).addTimeout(10, reactor).addErrback(lambda _: None)

    def group(self, name: str) -> list[Node]:
        """The nodes of group A or B."""
        return [node for node in self.nodes if node.group == name]

    async def tables(self) -> dict[Node, set[str]]:
        """Every node's routing table."""
        peers = await defer.gatherResults([defer.ensureDeferred(node.peers()) for node in self.nodes])
        return dict(zip(self.nodes, peers, strict=True))

    def describe(self, tables: dict[Node, set[str]]) -> str:
        """The routing tables, by node name."""
        names = {node.id: node.name for node in self.nodes}
        return "; ".join(f"{node.name}: {sorted(names.get(p, '?') for p in peers)}" for node, peers in tables.items())

    async def wait_tables(self, condition: Callable[[dict[Node, set[str]]], bool], timeout: float) -> float | None:
        """
        Poll the routing tables until ``condition`` holds.

        :return: how long it took, or ``None`` after ``timeout`` seconds.
        """
        start = time.monotonic()
        while True:
            tables = await self.tables()
            if condition(tables):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                return None
            await task.deferLater(reactor, 0.25)

    async def broadcast(self, prefix: str, senders: list[Node], receivers: list[Node], timeout: float) -> list[str]:
        """
        Each sender broadcasts ``prefix-name``; wait until each receiver (but
        the sender) has them all.

        :return: what was still missing after ``timeout`` seconds, one line
            a receiver.
        """
        tags = {node: f"{prefix}-{node.name}" for node in senders}
        for node, tag in tags.items():
            node.send(tag)
        deadline = time.monotonic() + timeout

        def missing() -> list[str]:
            lines = []
            for receiver in receivers:
                got = receiver.received()
                lost = [tag for node, tag in tags.items() if node is not receiver and tag not in got]
                if lost:
                    lines.append(f"{receiver.name} lacks {lost}")
            return lines

        while missing() and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.05)
        return missing()

    def duplicates(self) -> list[str]:
        """Every broadcast some node received more than once."""
        return [
            f"{n.name} got {tag} {count} times" for n in self.nodes for tag, count in n.received().items() if count > 1
        ]


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """Two fresh namespaces joined by a veth pair; processes and namespaces removed at teardown."""
    run = next(_runs)
    pid = os.getpid()
    namespaces = Namespaces(
        ip_command(), f"tm-a-{pid}-{run}", f"tm-b-{pid}-{run}", f"tma{pid}x{run}", f"tmb{pid}x{run}"
    )
    try:
        namespaces.create()
        the_lab = Lab(namespaces)
        try:
            yield the_lab
        finally:
            pytest_twisted.blockon(defer.ensureDeferred(the_lab.stop()))
            reporter: Any = request.config.pluginmanager.getplugin("terminalreporter")
            for line in [f"\n{request.node.name}:", *the_lab.notes]:
                if reporter is not None:
                    reporter.write_line(line)
    finally:
        namespaces.delete()


async def six_nodes(lab: Lab) -> tuple[list[Node], list[Node]]:
    """
    Three nodes in B dialling each other, three in A dialling each other and
    B's first node; wait until the six form one mesh.  (Not always a full
    one: peer exchange stops dialling at ``max_outgoing``.)
    """
    b1 = await lab.start("b1", "B", [])
    b2 = await lab.start("b2", "B", [b1])
    b3 = await lab.start("b3", "B", [b1, b2])
    a1 = await lab.start("a1", "A", [b1])
    a2 = await lab.start("a2", "A", [a1, b1])
    a3 = await lab.start("a3", "A", [a1, a2, b1])
    group_a, group_b = [a1, a2, a3], [b1, b2, b3]
    took = await lab.wait_tables(lambda tables: len(components(tables, lab)) == 1, FORM_TIMEOUT)
    tables = await lab.tables()
    assert took is not None, f"the six nodes did not form one mesh in {FORM_TIMEOUT:g} s: {lab.describe(tables)}"
    full = all(len(peers) == 5 for peers in tables.values())
    lab.note(f"the six nodes form one mesh ({took:.1f} s){'' if full else ', not a full one'}: {lab.describe(tables)}")
    return group_a, group_b


def components(tables: dict[Node, set[str]], lab: Lab) -> list[set[str]]:
    """The groups of nodes that reach each other through the routing tables (either end's)."""
    known = {node.id: set[str]() for node in lab.nodes}
    return connected_components(known | {node.id: peers for node, peers in tables.items()})


def crossing(tables: dict[Node, set[str]], lab: Lab) -> list[str]:
    """The links that cross the cut, as 'a1-b2'."""
    names = {node.id: node for node in lab.nodes}
    return sorted(
        f"{node.name}-{names[peer].name}"
        for node, peers in tables.items()
        for peer in peers
        if peer in names and names[peer].group != node.group
    )


async def cut_and_check_isolation(lab: Lab, group_a: list[Node], group_b: list[Node], prefix: str) -> float:
    """
    Cut the link; each side's broadcasts reach that side, and not the other.

    :return: when the link was cut (``time.monotonic()``).
    """
    lab.ns.cut()
    cut = time.monotonic()
    lab.note("link cut")
    for side in (group_a, group_b):
        missing = await lab.broadcast(prefix, side, side, DELIVERY_TIMEOUT)
        assert not missing, f"during the cut, broadcasts did not reach their own side: {missing}"
    await task.deferLater(reactor, QUIET_TIME)
    leaked = [
        f"{node.name} got {tag}"
        for node in lab.nodes
        for tag in node.received()
        if tag.startswith(prefix) and tag.split("-")[-1][0] != node.name[0]
    ]
    assert not leaked, f"broadcasts crossed a cut link: {leaked}"
    lab.note("during the cut, each side's broadcasts reached that side only")
    return cut


@pytest_twisted.ensureDeferred
async def test_partition_and_heal(lab: Lab) -> None:
    """
    Six nodes in two namespaces: cut the link between them, and each side
    carries on alone and drops the other side's peers; heal it, and the
    mesh re-forms within seconds: broadcasts cross again, once each.
    """
    lab.ns.set_tcp(FAST_TCP)
    group_a, group_b = await six_nodes(lab)
    missing = await lab.broadcast("pre", lab.nodes, lab.nodes, DELIVERY_TIMEOUT)
    assert not missing, f"before the cut, broadcasts did not reach everyone: {missing}"

    cut = await cut_and_check_isolation(lab, group_a, group_b, "cut")
    noticed = await lab.wait_tables(lambda tables: not crossing(tables, lab), NOTICE_TIMEOUT)
    tables = await lab.tables()
    assert noticed is not None, (
        f"{NOTICE_TIMEOUT:g} s after the cut (with TCP keepalive {FAST_TCP}), nodes still list peers across it: "
        f"{crossing(tables, lab)}; tables: {lab.describe(tables)}"
    )
    lab.note(f"every node dropped its peers across the cut, {time.monotonic() - cut:.1f} s after it")

    lab.ns.heal()
    lab.note("link healed")
    reknit = await lab.wait_tables(lambda tables: bool(crossing(tables, lab)), HEAL_TIMEOUT)
    tables = await lab.tables()
    assert reknit is not None, (
        f"the mesh did not re-form within {HEAL_TIMEOUT:g} s of healing the link: no link crosses it. "
        f"Tables: {lab.describe(tables)}\n{group_a[0].name}'s log:\n{group_a[0].log(15)}"
    )
    lab.note(f"the mesh re-formed {reknit:.1f} s after the heal: {crossing(tables, lab)}")
    missing = await lab.broadcast("post", lab.nodes, lab.nodes, DELIVERY_TIMEOUT)
    assert not missing, f"after the heal, broadcasts did not reach everyone: {missing}"
    lab.note("after the heal, every broadcast reached all six nodes")
    await task.deferLater(reactor, 1.0)
    assert not lab.duplicates(), f"broadcasts delivered more than once: {lab.duplicates()}"


@pytest_twisted.ensureDeferred
async def test_silent_cut_noticed_with_default_tcp_settings(lab: Lab) -> None:
    """
    With the kernel's own TCP settings, a node notices within a minute that
    the link to its peers across a silent cut is dead, and drops them.
    """
    group_a, group_b = await six_nodes(lab)
    cut = await cut_and_check_isolation(lab, group_a, group_b, "cut")
    noticed = await lab.wait_tables(lambda tables: not crossing(tables, lab), DEFAULT_NOTICE_TIMEOUT)
    tables = await lab.tables()
    if noticed is None:
        lab.note(f"{time.monotonic() - cut:.1f} s after the cut, links still listed across it: {crossing(tables, lab)}")
    else:
        lab.note(f"every node dropped its peers across the cut, {time.monotonic() - cut:.1f} s after it")
    assert noticed is not None, (
        f"{DEFAULT_NOTICE_TIMEOUT:g} s after a silent cut, with the kernel's TCP settings, nodes still list "
        f"peers across it: {crossing(tables, lab)}"
    )


@pytest_twisted.ensureDeferred
async def test_lone_node_redials_after_heal(lab: Lab) -> None:
    """
    A node whose every peer is across the cut is left with none: it re-dials
    its bootstrap and past peers with backoff, through the cut (failing) and
    then through the healed link, and the mesh re-forms.
    """
    lab.ns.set_tcp(FAST_TCP)
    b1 = await lab.start("b1", "B", [])
    b2 = await lab.start("b2", "B", [b1])
    b3 = await lab.start("b3", "B", [b1, b2])
    a1 = await lab.start("a1", "A", [b1])
    took = await lab.wait_tables(lambda tables: len(components(tables, lab)) == 1, FORM_TIMEOUT)
    assert took is not None, f"the four nodes did not form one mesh: {lab.describe(await lab.tables())}"
    missing = await lab.broadcast("pre", lab.nodes, lab.nodes, DELIVERY_TIMEOUT)
    assert not missing, f"before the cut, broadcasts did not reach everyone: {missing}"

    cut = await cut_and_check_isolation(lab, [a1], [b1, b2, b3], "cut")
    noticed = await lab.wait_tables(lambda tables: not crossing(tables, lab), NOTICE_TIMEOUT)
    assert noticed is not None, f"the cut went unnoticed: {lab.describe(await lab.tables())}"
    lab.note(f"a1 lost its peers {time.monotonic() - cut:.1f} s after the cut")
    await a1.event(lambda e: e["event"] == "disconnect", DELIVERY_TIMEOUT)
    # Its first re-dials (after 1 to 2 s) fail: the link is still down.
    await task.deferLater(reactor, 4.0)

    redials = re.findall(r"dialling the known peers again in (\S+ s)", a1.log(1000))
    failures = a1.log(1000).count("could not connect")
    lab.note(f"a1 re-dialled through the cut: {failures} failed dials; next tries after {', '.join(redials)}")
    lab.ns.heal()
    healed = time.monotonic()
    lab.note("link healed")
    await a1.event(lambda e: e["event"] == "connect", HEAL_TIMEOUT, after=len(a1.events))
    reknit = await lab.wait_tables(lambda tables: len(components(tables, lab)) == 1, HEAL_TIMEOUT)
    tables = await lab.tables()
    assert reknit is not None, f"the mesh did not re-form after the heal: {lab.describe(tables)}\n{a1.log(15)}"
    lab.note(f"a1 rejoined {time.monotonic() - healed:.1f} s after the heal: {lab.describe(tables)}")
    missing = await lab.broadcast("post", lab.nodes, lab.nodes, DELIVERY_TIMEOUT)
    assert not missing, f"after the heal, broadcasts did not reach everyone: {missing}"
    await task.deferLater(reactor, 1.0)
    assert not lab.duplicates(), f"broadcasts delivered more than once: {lab.duplicates()}"
