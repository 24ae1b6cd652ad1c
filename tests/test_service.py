"""
L{MeshService} as a service: starting, stopping and starting again, its
listeners when some of them fail or open late, and the peers it dials to
stay in the mesh.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support import log_text, wait_for, within
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import Clock
from twisted.logger import LogEvent
from zope.interface import implementer

from twisted_mesh import MeshService, Protocol
from twisted_mesh.web.status import metrics_text

MESH = Protocol("mesh", "Plaintext")
LOOPBACK = "tcp:0:interface=127.0.0.1"


@pytest.fixture
def services() -> Iterator[Callable[..., MeshService]]:
    """A factory of started MeshServices of C{MESH}, stopped at teardown."""
    made: list[MeshService] = []

    def make(**kwargs: Any) -> MeshService:
        service = MeshService(MESH, **kwargs)
        made.append(service)
        service.startService()
        return service

    yield make
    pytest_twisted.blockon(defer.gatherResults([s.stopService() for s in made if s.running]))


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    """
    Listens on a free port of loopback, once C{gate} fires (at once without
    one), and keeps the ports it opened.
    """

    def __init__(self, gate: Deferred[None] | None = None) -> None:
        self.gate = gate
        self.ports: list[IListeningPort] = []
        self.numbers: list[int] = []

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        def listen(_: object = None) -> Deferred[IListeningPort]:
            return TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory).addCallback(self._opened)

        if self.gate is None:
            return listen()
        return self.gate.addCallback(listen)

    def _opened(self, port: IListeningPort) -> IListeningPort:
        self.ports.append(port)
        self.numbers.append(port.getHost().port)
        return port


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


async def refused(port: int) -> bool:
    """Whether a TCP dial to C{port} of loopback is refused."""
    try:
        protocol = await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), TwistedProtocol()))
    except ConnectionRefusedError:
        return True
    assert protocol.transport is not None
    protocol.transport.loseConnection()
    return False


# --- starting and stopping ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_restart_listens_and_dials_again(services: Callable[..., MeshService]) -> None:
    """
    A service started again after a stop listens again, with a new
    C{listening} Deferred, tells peers its new port, and dials its
    C{connect} peers again.
    """
    peer = services(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    node = services(listen=[LOOPBACK], connect=[("127.0.0.1", peer_port.getHost().port)])
    first = node.listening
    (old,) = await within(first)
    await wait_for(lambda: node.id in peer.routing_table, what="the first dial")

    await node.stopService()
    await wait_for(lambda: node.id not in peer.routing_table, what="the peer to see the node leave")
    assert node.ports == []
    node.startService()
    assert node.listening is not first
    (new,) = await within(node.listening)
    assert node.ports == [new] and new is not old
    assert node.out_addr == ("127.0.0.1", new.getHost().port)
    await wait_for(lambda: node.id in peer.routing_table, what="the node to dial its peer again")
    assert peer.routing_table[node.id].peer_addr == node.out_addr


@pytest_twisted.ensureDeferred
async def test_failed_listener_closes_the_others(services: Callable[..., MeshService]) -> None:
    """When one listener fails, the ports that did open are closed, and C{listening} fails."""
    taken = services(listen=[LOOPBACK])
    (taken_port,) = await within(taken.listening)
    opened = RecordingEndpoint()
    node = services(listen=[opened, f"tcp:{taken_port.getHost().port}:interface=127.0.0.1"])
    with pytest.raises(CannotListenError):
        await within(node.listening)
    assert node.ports == []
    (port,) = opened.ports
    await wait_for(lambda: not port.connected, what="the port that opened to close")
    assert await refused(opened.numbers[0])


@pytest_twisted.ensureDeferred
async def test_listener_that_opens_after_the_stop_is_closed(services: Callable[..., MeshService]) -> None:
    """A port that opens once the service has stopped is closed at once, and not kept."""
    gate: Deferred[None] = Deferred()
    late = RecordingEndpoint(gate)
    node = services(listen=[late])
    await node.stopService()
    gate.callback(None)
    (port,) = late.ports
    await wait_for(lambda: not port.connected, what="the late port to close")
    assert node.ports == []
    assert not node.listening.called
    assert await refused(late.numbers[0])


# --- staying in the mesh ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_own_address_among_bootstrap_peers_is_not_dialled(services: Callable[..., MeshService]) -> None:
    """A bootstrap address that is the node's own is not dialled; the other bootstrap peers are."""
    peer = services(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    own = AdoptedEndpoint()
    node = services(listen=[own], connect=[("127.0.0.1", own.port), ("127.0.0.1", peer_port.getHost().port)])
    await within(node.listening)
    assert node.out_addr == ("127.0.0.1", own.port)
    await wait_for(lambda: peer.id in node.routing_table, what="the node to dial its peer")
    # A dial to itself would have been accepted by now, and failed its handshake.
    assert dict(node.stats.connections) == {"out": 1}
    assert "self" not in node.stats.handshake_failures


@pytest_twisted.ensureDeferred
async def test_bootstrap_endpoint_to_itself_is_dialled_once(
    services: Callable[..., MeshService], tmp_path: Path, log_events: list[LogEvent]
) -> None:
    """
    A bootstrap endpoint string that turns out to reach the node itself is
    given up after that first dial; the other bootstrap peers are dialled
    again, round after round.
    """
    own, nobody = tmp_path / "own.sock", tmp_path / "nobody.sock"
    node = services(listen=[f"unix:{own}"], connect=[f"unix:path={own}", f"unix:path={nobody}"])
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
    services: Callable[..., MeshService], log_events: list[LogEvent], form: str
) -> None:
    """
    A lost bootstrap peer, whose address is also that of a past peer, is
    dialled once a round, not twice.
    """
    peer = services(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    port = peer_port.getHost().port
    bootstrap: Any = ("127.0.0.1", port) if form == "HOST:PORT" else f"tcp:host=127.0.0.1:port={port}"
    node = services(listen=[LOOPBACK], connect=[bootstrap])
    await wait_for(lambda: peer.id in node.routing_table, what="the node to dial its peer")
    assert list(node._node.known_addresses) == [(("127.0.0.1", port), "Plaintext")]
    await peer.stopService()
    # Once when the peer leaves, and again at the end of the round that
    # dialled it, when every dial of the round has failed.
    await wait_for(lambda: log_text(log_events).count("no peers: dialling the known peers again") >= 2, 60, "a round")
    text = log_text(log_events)
    failed = re.findall(rf"could not connect to .*127\.0\.0\.1.*\b{port}\b", text)
    assert len(failed) == 1, text


# --- /metrics -----------------------------------------------------------------------------


def test_metrics_write_every_digit() -> None:
    """Counters beyond six digits are written exactly, and a float value in full."""
    clock = Clock()
    node = MeshService(MESH, reactor=clock)
    node.stats.bytes_in = 1234567891
    node.stats.dropped["old"] = 10_000_001
    clock.advance(1234567.125)
    samples = dict(line.rsplit(" ", 1) for line in metrics_text(node).splitlines() if not line.startswith("#"))
    assert samples["mesh_bytes_received_total"] == "1234567891"
    assert samples['mesh_dropped_total{reason="old"}'] == "10000001"
    assert samples["mesh_peers"] == "0"
    assert samples["mesh_uptime_seconds"] == "1234567.125"
