"""
`.MeshService` staying in the mesh: the bootstrap peers it dials and dials
again, and the peers that stay away (on a fake clock, the delays between
dials, the summaries, what is forgotten), with real peers that come back.
"""

from __future__ import annotations

import itertools
import math
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support import LOOPBACK, MESH, GoneLink, MeshNodes, log_text, wait_for, within
from twisted_mesh import Limits, MeshService, flags
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import new_node_id
from twisted_mesh._service.redial import JITTER, MAX_DELAY, SHORT_LIVED
from twisted_mesh.service import MAINTENANCE_INTERVAL, SUMMARY_INTERVAL
from twisted_mesh.web.status import metrics_text


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """Listens on a socket of loopback bound already, so that its port is known before the node starts."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(50)
        self._socket.setblocking(False)
        self.port: int = self._socket.getsockname()[1]

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        try:
            return defer.succeed(reactor.adoptStreamPort(self._socket.fileno(), socket.AF_INET, factory))
        finally:
            self._socket.close()  # the port has a copy


class SilentServer(ServerFactory):
    """Accepts connections, and says nothing on them."""

    noisy = False

    def __init__(self) -> None:
        self.made = 0

    def buildProtocol(self, addr: Any) -> TwistedProtocol:
        self.made += 1
        return TwistedProtocol()


@implementer(IStreamClientEndpoint)
class BrokenEndpoint:
    """A client endpoint that raises when it is asked to dial."""

    def connect(self, factory: Any) -> Deferred[Any]:
        raise RuntimeError("this endpoint is broken")

    def __repr__(self) -> str:
        return "<BrokenEndpoint>"


# --- staying in the mesh ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_own_address_among_bootstrap_peers_is_not_dialled(mesh: MeshNodes) -> None:
    """A bootstrap address that is the node's own is not dialled; the other bootstrap peers are."""
    peer = mesh.service(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    own = AdoptedEndpoint()
    node = mesh.service(listen=[own], connect=[("127.0.0.1", own.port), ("127.0.0.1", peer_port.getHost().port)])
    await within(node.listening)
    assert node.out_addr == ("127.0.0.1", own.port)
    await wait_for(lambda: peer.id in node.routing_table, what="the node to dial its peer")
    # A dial to itself would have been accepted by now, and failed its handshake.
    assert dict(node.stats.connections) == {"out": 1}
    assert "self" not in node.stats.handshake_failures


@pytest_twisted.ensureDeferred
async def test_bootstrap_endpoint_to_itself_is_dialled_once(
    mesh: MeshNodes, tmp_path: Path, log_events: list[LogEvent]
) -> None:
    """
    A bootstrap endpoint string that turns out to reach the node itself is
    given up after that first dial; the other bootstrap peers are dialled
    again, round after round.
    """
    own, nobody = tmp_path / "own.sock", tmp_path / "nobody.sock"
    node = mesh.service(listen=[f"unix:{own}"], connect=[f"unix:path={own}", f"unix:path={nobody}"])
    await within(node.listening)

    def rounds() -> int:
        return len(re.findall(r"could not connect to unix:path=\S*nobody\.sock", log_text(log_events)))

    # The third round starts once the second is over.
    await wait_for(lambda: rounds() >= 3, 60, "three rounds of dials")
    assert dict(node.stats.connections) == {"out": 1, "in": 1}  # the one dial to itself
    assert "is this node: not dialling it again" in log_text(log_events)
    assert not node.routing_table


@pytest.mark.parametrize("form", ["HOST:PORT", "endpoint"])
@pytest_twisted.ensureDeferred
async def test_bootstrap_peer_and_its_past_address_are_dialled_once(
    mesh: MeshNodes, log_events: list[LogEvent], form: str
) -> None:
    """
    A lost bootstrap peer, whose address is also that of a past peer, is
    dialled once each time it is due, not once more as a past peer.
    """
    peer = mesh.service(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    port = peer_port.getHost().port
    bootstrap: Any = ("127.0.0.1", port) if form == "HOST:PORT" else f"tcp:host=127.0.0.1:port={port}"
    node = mesh.service(listen=[LOOPBACK], connect=[bootstrap])
    await wait_for(lambda: peer.id in node.routing_table, what="the node to dial its peer")
    assert list(node._node.known_addresses) == [(("127.0.0.1", port), "Plaintext")]
    await peer.stopService()
    failed = re.compile(rf"could not connect to .*127\.0\.0\.1.*\b{port}\b")

    def failures() -> list[float]:
        return [event["log_time"] for event in log_events if failed.search(formatEvent(event) or "")]

    await wait_for(lambda: len(failures()) >= 3, 60, "three failed dials")
    # Each dial waits two thirds of a second or more after the last one
    # failed; a second dial at the same time would have failed at once.
    times = failures()
    assert all(later - earlier > 0.5 for earlier, later in itertools.pairwise(times)), times


@pytest_twisted.ensureDeferred
async def test_bootstrap_endpoint_slow_to_answer_is_dialled_once_at_a_time(
    mesh: MeshNodes, log_events: list[LogEvent]
) -> None:
    """
    A bootstrap endpoint string whose peer does not answer is not dialled
    again, by the rounds that peers leaving start, while its dial is open.
    """
    silent = SilentServer()
    port = await within(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(silent))
    try:
        bootstrap = f"tcp:host=127.0.0.1:port={port.getHost().port}"
        node = mesh.service(listen=[LOOPBACK], connect=[bootstrap], limits=Limits(handshake_timeout=600))
        await wait_for(lambda: silent.made == 1, what="the first dial of the silent peer")
        for _ in range(3):
            # A peer comes and goes: the node dials the silent peer's
            # endpoint again (not) and the peer that left (refused).
            churn = mesh.service(listen=[LOOPBACK])
            await within(churn.listening)
            await within(churn.connect(*node.out_addr))
            await churn.stopService()
            lost = re.compile(rf"could not connect to \('127\.0\.0\.1', {churn.out_addr[1]}\)")
            await wait_for(lambda lost=lost: lost.search(log_text(log_events)), 60, "a round of dials")
        assert silent.made == 1
    finally:
        await port.stopListening()


def test_bad_endpoint_strings_are_refused_at_once() -> None:
    """A ``listen`` or ``connect`` endpoint string that cannot be parsed is a ValueError naming it."""
    with pytest.raises(ValueError, match="bad endpoint string 'tcp:host=127.0.0.1'"):
        MeshService(MESH, connect=["tcp:host=127.0.0.1"], reactor=Clock())
    with pytest.raises(ValueError, match="bad endpoint string 'tcp:notaport'"):
        MeshService(MESH, listen=["tcp:notaport"], reactor=Clock())


@pytest_twisted.ensureDeferred
async def test_a_bootstrap_endpoint_that_raises_spoils_no_round(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """A bootstrap endpoint that raises when it dials is logged; the next bootstrap peer is dialled all the same."""
    peer = mesh.service(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    node = mesh.service(listen=[LOOPBACK], connect=[BrokenEndpoint(), ("127.0.0.1", peer_port.getHost().port)])
    await wait_for(lambda: peer.id in node.routing_table, what="the node to dial its second bootstrap peer")
    assert "could not connect to <BrokenEndpoint>: this endpoint is broken" in log_text(log_events)
    assert "Unhandled" not in log_text(log_events)


# --- peers that stay away -----------------------------------------------------------------

HOST = "127.0.0.1"


class Unanswered:
    """
    A node on a fake clock (a MemoryReactorClock) whose every dial is
    refused, as by a port nothing listens on.  It keeps when each dial was
    made, and to which port, and when each log line was written, by the
    fake clock.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.clock = MemoryReactorClock()
        self.logged: list[tuple[float, LogEvent]] = []
        globalLogPublisher.addObserver(self._log)
        self.service = MeshService(MESH, listen=[(HOST, 0)], reactor=self.clock, **kwargs)
        self.node = self.service._node
        self.dials: list[tuple[float, int]] = []
        self.service.startService()
        self.refuse()

    def _log(self, event: LogEvent) -> None:
        self.logged.append((self.clock.seconds(), event))

    def close(self) -> None:
        """Stop the node, and keep no more log lines."""
        globalLogPublisher.removeObserver(self._log)
        self.service.stopService()

    def refuse(self) -> None:
        """Refuse the dials made since the last call."""
        clients = self.clock.tcpClients
        while len(self.dials) < len(clients):
            _, port, factory, *_ = clients[len(self.dials)]
            self.dials.append((self.clock.seconds(), port))
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def lose(self, port: int, *, lasted: float = SHORT_LIVED) -> None:
        """
        A peer that listens on ``port``, connected for ``lasted`` seconds (by
        default long enough not to be a short link, see `.SHORT_LIVED`),
        leaves.
        """
        link = GoneLink(new_node_id(MESH), (HOST, port))
        self.node.link_ready(link)
        self.node.routing.joined[link] -= lasted
        self.node.link_lost(link)

    def run_until(self, when: float) -> None:
        """Advance the clock to ``when``, call after call, refusing each dial as it is made."""
        while True:
            due = min((call.getTime() for call in self.clock.getDelayedCalls()), default=math.inf)
            self.clock.advance(min(due, when) - self.clock.seconds())
            self.refuse()
            if due >= when:
                return

    def dials_to(self, port: int, after: float = -math.inf) -> list[float]:
        """When the dials to ``port`` made after ``after`` were made."""
        return [time for time, dialled in self.dials if dialled == port and time > after]

    def lines(self, pattern: str, level: LogLevel | None = None, after: float = -math.inf) -> list[float]:
        """When the log lines that match ``pattern`` (at ``level``) were written after ``after``."""
        return [
            time
            for time, event in self.logged
            if time > after
            and (level is None or event["log_level"] == level)
            and re.search(pattern, formatEvent(event) or "")
        ]


@pytest.fixture
def unanswered() -> Iterator[Callable[..., Unanswered]]:
    """A factory of `.Unanswered` nodes, closed at teardown."""
    made: list[Unanswered] = []

    def make(**kwargs: Any) -> Unanswered:
        made.append(Unanswered(**kwargs))
        return made[-1]

    yield make
    for net in made:
        net.close()


def test_a_vanished_peer_in_the_minute_after_it_left(unanswered: Callable[..., Unanswered]) -> None:
    """
    A past peer that leaves for good (its port refuses dials) is dialled
    again within a second, then less and less often: at most 8 times in the
    minute after it left.  Only the first failure is a warning; the others
    are logged at debug level.
    """
    net = unanswered()
    net.run_until(100.0)
    net.lose(5002)
    net.run_until(160.0)
    dials = net.dials_to(5002)
    failed = r"could not connect to \('127\.0\.0\.1', 5002\)"
    assert net.lines(failed, LogLevel.warn) == dials[:1]
    assert not net.lines("", LogLevel.warn, after=dials[0])
    assert len(net.lines(failed)) == len(dials)
    assert dials[0] <= 101.0 and 5 <= len(dials) <= 8, dials
    assert net.node.stats.failed_dials == len(dials)


def test_a_vanished_peer_is_dialled_every_few_minutes_at_most(unanswered: Callable[..., Unanswered]) -> None:
    """
    The delays between dials to a peer that never answers (here a bootstrap
    peer) double up to five minutes, and stay between two thirds of that
    and that.  A line at info level lists the peers the node cannot reach,
    at most every five minutes; the first failure is the only warning.
    Status and metrics count the failed dials, and the peer unreachable.
    """
    net = unanswered(connect=[(HOST, 5001)])
    net.run_until(3 * 3600.0)
    dials = net.dials_to(5001)
    gaps = [later - earlier for earlier, later in itertools.pairwise(dials)]
    assert all((1 - JITTER) * MAX_DELAY <= gap <= MAX_DELAY for gap in gaps[8:]), gaps
    assert gaps[:8] == sorted(gaps[:8]) and gaps[0] <= 2.0 and len(gaps) >= 30, gaps
    summaries = net.lines(r"still cannot reach these peers, .*: \('127\.0\.0\.1', 5001\); ")
    assert net.lines("still cannot reach", LogLevel.info) == summaries
    assert SUMMARY_INTERVAL <= summaries[0] <= SUMMARY_INTERVAL + MAINTENANCE_INTERVAL, summaries
    between = [later - earlier for earlier, later in itertools.pairwise(summaries)]
    assert all(SUMMARY_INTERVAL <= gap <= SUMMARY_INTERVAL + MAINTENANCE_INTERVAL for gap in between), between
    assert net.lines("", LogLevel.warn) == [0.0]
    status = net.service.status()
    assert status["failed_dials"] == len(dials) and status["unreachable"] == 1
    samples = dict(line.rsplit(" ", 1) for line in metrics_text(net.service).splitlines() if line[0] != "#")
    assert samples["mesh_failed_dials_total"] == str(len(dials))
    assert samples["mesh_unreachable_peers"] == "1"


def test_a_past_peer_is_forgotten_a_bootstrap_peer_never(unanswered: Callable[..., Unanswered]) -> None:
    """
    A past peer missing for ``Limits.forget_lost_peer_after`` (an hour) is
    forgotten: no longer dialled, its address dropped, the limit counted
    and logged.  A bootstrap peer is dialled for as long as the node runs.
    """
    net = unanswered(connect=[(HOST, 5001)])
    net.lose(5002)
    known = ((HOST, 5002), "Plaintext")
    net.run_until(3599.0)
    assert known in net.node.known_addresses
    net.run_until(3600.0)
    assert known not in net.node.known_addresses
    assert net.lines(r"forgot the past peer \('127\.0\.0\.1', 5002\): missing for 3600 s", LogLevel.info) == [3600.0]
    net.run_until(3 * 3600.0)
    assert net.dials_to(5002, after=3600.0) == []
    assert len(net.dials_to(5001, after=2 * 3600.0)) >= 3600 / MAX_DELAY
    assert net.node.stats.limit_hits == {"forget_lost_peer_after": 1}
    assert net.service.status()["unreachable"] == 1
    samples = dict(line.rsplit(" ", 1) for line in metrics_text(net.service).splitlines() if line[0] != "#")
    assert samples['mesh_limit_hits_total{limit="forget_lost_peer_after"}'] == "1"


def test_a_past_peer_named_by_peer_exchange_is_warned_of_once(unanswered: Callable[..., Unanswered]) -> None:
    """
    A missing past peer that a peers message names is dialled (it may be
    back), and that dial's failure is one more of that peer's: logged at
    debug level, not warned of again.
    """
    net = unanswered()
    net.lose(5002)
    net.run_until(3.0)  # dialled twice: within a second, then one to two seconds later
    failed = r"could not connect to \('127\.0\.0\.1', 5002\)"
    assert len(net.lines(failed, LogLevel.warn)) == 1 and len(net.dials) == 2
    other = GoneLink(new_node_id(MESH), (HOST, 5003))
    net.node.link_ready(other)
    listed = WireMessage.create(flags.whisper, other.peer_id, 5, (flags.peers, [[[HOST, 5002], new_node_id(MESH)]]))
    net.node.message_received(other, WireMessage.from_body(listed.body_in(True), ()))
    net.refuse()
    assert len(net.dials) == 3
    assert len(net.lines(failed, LogLevel.warn)) == 1
    assert net.lines(failed + r" \(3 failures in a row\)", LogLevel.debug) == [3.0]
    assert net.node.stats.failed_dials == 3


def test_a_bootstrap_peer_is_dialled_again_only_while_the_node_needs_peers(
    unanswered: Callable[..., Unanswered],
) -> None:
    """
    A bootstrap peer (a seed) is dialled when the node starts; after that,
    only while the node has fewer links it dialled than max_outgoing: a node
    with enough peers does not ask the seed again.
    """
    net = unanswered(connect=[(HOST, 5001)])
    net.run_until(1.0)
    assert len(net.dials_to(5001)) >= 1
    links = [GoneLink(new_node_id(MESH), (HOST, 6000 + i)) for i in range(net.node.max_outgoing)]
    for link in links:
        net.node.link_ready(link)
    net.run_until(600.0)
    assert net.dials_to(5001, after=1.0) == []
    net.node.link_lost(links[0])
    net.run_until(1200.0)
    assert net.dials_to(5001, after=600.0), "the node, short of peers, did not dial its seed again"


def test_a_link_that_did_not_last_does_not_start_the_delays_over(unanswered: Callable[..., Unanswered]) -> None:
    """
    A past peer whose link lasted less than SHORT_LIVED seconds (it turned
    the node away) is dialled again after a longer delay than one that left
    after a long link: its delays go on growing.
    """
    net = unanswered()
    net.run_until(100.0)
    net.lose(5002)
    net.lose(5003, lasted=0.1)
    net.run_until(103.0)
    (long_link,) = net.dials_to(5002)[:1]
    (short_link,) = net.dials_to(5003)[:1]
    # (After a long link: within a second; after a short one: the second delay, 2 s less a third at most.)
    assert long_link <= 101.0 and short_link >= 100.0 + (1 - JITTER) * 2 - 0.01, (long_link, short_link)


def test_a_node_with_room_dials_the_nodes_it_heard_of(unanswered: Callable[..., Unanswered]) -> None:
    """
    A node with room for links it dials dials nodes it heard of (from peer
    exchange, or turned away); one that cannot be dialled is forgotten.
    """
    net = unanswered()
    for port in (7001, 7002):
        net.node.peer_book.heard_of((HOST, port), "Plaintext", new_node_id(MESH))
    net.run_until(MAINTENANCE_INTERVAL + 1)
    assert net.dials_to(7001) and net.dials_to(7002)
    assert len(net.node.peer_book) == 0
    net.run_until(10 * MAINTENANCE_INTERVAL)
    assert len(net.dials_to(7001)) == len(net.dials_to(7002)) == 1


@pytest_twisted.ensureDeferred
async def test_a_peer_that_comes_back_is_joined_again(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """
    On real sockets: a past peer that stops is dialled again (its port
    refuses) and warned of once; a node that listens on its port again is
    joined; when that one stops, its first failed dial is warned of again.
    """
    peer = mesh.service(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    port = peer_port.getHost().port
    node = mesh.service(listen=[LOOPBACK])
    await within(node.connect(HOST, port))
    await peer.stopService()
    failed = re.compile(rf"could not connect to \('127\.0\.0\.1', {port}\)")

    def failures(level: LogLevel | None = None) -> int:
        return sum(
            1
            for event in log_events
            if (level is None or event["log_level"] == level) and failed.search(formatEvent(event) or "")
        )

    await wait_for(lambda: failures() >= 2, 60, "two failed dials")
    assert failures(LogLevel.warn) == 1
    back = mesh.service(listen=[f"tcp:{port}:interface=127.0.0.1"])
    await within(back.listening)
    await wait_for(lambda: back.id in node.routing_table, 60, "the node to dial the port again")
    before = failures()
    await back.stopService()
    await wait_for(lambda: failures() >= before + 2, 60, "two failed dials")
    assert failures(LogLevel.warn) == 2


@pytest_twisted.ensureDeferred
async def test_a_vanished_peer_is_forgotten(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """
    On real sockets, with a short ``Limits.forget_lost_peer_after``: a past
    peer that stops is dialled again (its port refuses) until that time has
    passed, then forgotten and no longer dialled.
    """
    peer = mesh.service(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    port = peer_port.getHost().port
    node = mesh.service(listen=[LOOPBACK], limits=Limits(forget_lost_peer_after=8.0))
    await within(node.connect(HOST, port))
    known = ((HOST, port), "Plaintext")
    assert known in node._node.known_addresses
    await peer.stopService()
    await wait_for(lambda: known not in node._node.known_addresses, 60, "the peer to be forgotten")
    assert node.stats.failed_dials >= 2
    assert node.stats.limit_hits["forget_lost_peer_after"] == 1
    assert f"forgot the past peer ('127.0.0.1', {port}): missing for 8 s" in log_text(log_events)
    failed = node.stats.failed_dials
    await task.deferLater(reactor, 3.0)
    assert node.stats.failed_dials == failed
    assert node.status()["unreachable"] == 0
