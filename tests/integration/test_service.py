"""
`.MeshService` as a service: starting, stopping and starting again, its
listeners when some of them fail or open late, and its py2p-style dialling
and misuse.  The peers it dials to stay in the mesh: test_service_rejoin.py.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import MultiService
from twisted.internet import defer, reactor, task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent
from zope.interface import implementer

from tests.support import LOOPBACK, MESH, MeshNodes, RawPeer, RawWebSocket, log_text, short, wait_for, within
from twisted_mesh import HandshakeFailed, Limits, MeshService, MeshSocket, Network
from twisted_mesh._core import routing
from twisted_mesh._ids import new_node_id
from twisted_mesh.errors import MeshClosed
from twisted_mesh.tls import self_signed_certificate
from twisted_mesh.web import WebService
from twisted_mesh.web.status import metrics_text


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    """
    Listens on a free port of loopback, once ``gate`` fires (at once without
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


async def refused(port: int) -> bool:
    """Whether a TCP dial to ``port`` of loopback is refused."""
    try:
        protocol = await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), TwistedProtocol()))
    except ConnectionRefusedError:
        return True
    assert protocol.transport is not None
    protocol.transport.loseConnection()
    return False


# --- starting and stopping ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_restart_listens_and_dials_again(mesh: MeshNodes) -> None:
    """
    A service started again after a stop listens again, with a new
    ``listening`` Deferred, tells peers its new port, and dials its
    ``connect`` peers again.
    """
    peer = mesh.service(listen=[LOOPBACK])
    (peer_port,) = await within(peer.listening)
    node = mesh.service(listen=[LOOPBACK], connect=[("127.0.0.1", peer_port.getHost().port)])
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
async def test_failed_listener_closes_the_others(mesh: MeshNodes) -> None:
    """When one listener fails, the ports that did open are closed, and ``listening`` fails."""
    taken = mesh.service(listen=[LOOPBACK])
    (taken_port,) = await within(taken.listening)
    opened = RecordingEndpoint()
    node = mesh.service(listen=[opened, f"tcp:{taken_port.getHost().port}:interface=127.0.0.1"])
    with pytest.raises(CannotListenError):
        await within(node.listening)
    assert node.ports == []
    (port,) = opened.ports
    await wait_for(lambda: not port.connected, what="the port that opened to close")
    assert await refused(opened.numbers[0])


@pytest_twisted.ensureDeferred
async def test_listener_that_opens_after_the_stop_is_closed(mesh: MeshNodes) -> None:
    """
    A port that opens once the service has stopped is closed at once, and
    not kept; ``listening`` failed with `.CancelledError` at the stop.
    """
    gate: Deferred[None] = Deferred()
    late = RecordingEndpoint(gate)
    node = mesh.service(listen=[late])
    listening = node.listening
    await node.stopService()
    with pytest.raises(CancelledError):
        await within(listening)
    gate.callback(None)
    (port,) = late.ports
    await wait_for(lambda: not port.connected, what="the late port to close")
    assert node.ports == []
    assert await refused(late.numbers[0])


@pytest.mark.parametrize("fixed", [False, True], ids=["port 0", "fixed port"])
@pytest_twisted.ensureDeferred
async def test_a_running_service_ignores_start(fixed: bool) -> None:
    """
    A MeshSocket (started as it is made) added to an application that
    starts keeps its port, and the application's stop closes it.
    """
    sock = MeshSocket("127.0.0.1", 0)
    if fixed:
        port = sock.ports[0].getHost().port
        await sock.close()
        sock = MeshSocket("127.0.0.1", port)
    (first,) = sock.ports
    number = first.getHost().port
    application = MultiService()
    sock.setServiceParent(application)
    try:
        application.startService()
        assert sock.ports == [first] and sock.listening.called
        assert not await refused(number)
    finally:
        await application.stopService()
    assert sock.ports == []
    assert await refused(number)


@pytest.mark.parametrize("face", ["node", "web"])
@pytest_twisted.ensureDeferred
async def test_websocket_still_opening_at_the_stop_is_closed(face: str) -> None:
    """
    A WebSocket of the node's own listener, or of its web site, that is
    still in its opening handshake when the service stops is closed once
    it opens, and never becomes a link of the node.
    """
    if face == "node":
        node = MeshService(Network("mesh", "ws"), listen=[("127.0.0.1", 0)])
        stopping: Any = node
        node.startService()
        (port,) = await within(node.listening)
    else:
        node = MeshService(MESH, listen=[LOOPBACK])
        stopping = WebService(node, LOOPBACK)
        node.startService()
        stopping.startService()
        port = await within(stopping.listening)
    client = RawWebSocket()
    try:
        await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client))
        await stopping.stopService()
        client.upgrade()
        await wait_for(lambda: b"\r\n\r\n" in client.received, what="the answer to the upgrade")
        assert b" 101 " in client.received, client.received
        await within(client.lost)
        assert not node._connections
        assert "in" not in node.stats.connections
    finally:
        if client.transport is not None:
            client.transport.loseConnection()
        await node.stopService()


@pytest_twisted.ensureDeferred
async def test_web_service_stops_advertising_its_port(mesh: MeshNodes) -> None:
    """Once the web site stops, WebSocket peers are no longer told to dial its port."""
    node = mesh.service(listen=[LOOPBACK])
    web = WebService(node, LOOPBACK)
    web.startService()
    try:
        port = await within(web.listening)
        assert node.status()["out_addrs"]["ws"] == ["127.0.0.1", port.getHost().port]
    finally:
        await web.stopService()
    assert "ws" not in node.status()["out_addrs"]


@pytest.mark.parametrize(("kind", "encryption"), [("tcp", "ws"), ("ssl", "wss"), ("tls", "wss")])
def test_web_service_over_tls_carries_wss(tmp_path: Path, kind: str, encryption: str) -> None:
    """A web site on Twisted's ``ssl:`` or ``tls:`` serves ``https``, and its mesh links are ``'wss'``."""
    pem = tmp_path / "localhost.pem"
    pem.write_bytes(self_signed_certificate("localhost").dumpPEM())
    endpoint = {"tcp": "tcp:0", "ssl": f"ssl:0:privateKey={pem}", "tls": f"tls:{tmp_path}:port=0"}[kind]
    assert WebService(MeshService(MESH, reactor=Clock()), endpoint).encryption == encryption


# --- dialling -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_closed_socket_dials_nothing(mesh: MeshNodes) -> None:
    """``connect()`` on a closed MeshSocket fails at once, and dials nothing."""
    peer = mesh.service(listen=[LOOPBACK])
    await within(peer.listening)
    sock = MeshSocket("127.0.0.1", 0)
    await sock.close()
    with pytest.raises(MeshClosed, match="the node is closed"):
        sock.connect(*peer.out_addr)
    assert not sock._connections
    assert not peer.stats.connections


@pytest_twisted.ensureDeferred
async def test_cancelling_connect_closes_the_link(mesh: MeshNodes) -> None:
    """
    A ``connect()`` cancelled once the connection is made, before the
    peer's handshake, closes that connection: the peer's late handshake
    makes no link.
    """
    peers: list[RawPeer] = []

    def accept() -> RawPeer:
        peers.append(RawPeer(MESH))
        return peers[-1]

    port = await within(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(accept)))
    try:
        node = mesh.service(listen=[LOOPBACK], limits=Limits(handshake_timeout=600))
        dialling = node.connect("127.0.0.1", port.getHost().port)
        await wait_for(lambda: peers and peers[0].transport is not None, what="the connection")
        await wait_for(lambda: node._connections, what="the node's end of the connection")
        dialling.cancel()
        with pytest.raises(CancelledError):
            await within(dialling)
        peers[0].handshake()
        await within(peers[0].lost)
        assert not node.routing_table
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_connect_with_the_expected_peer_id(mesh: MeshNodes) -> None:
    """
    ``connect(host, port, id)``, as py2p and js2p take it: a peer connected
    already is not dialled again, and another node at that address is
    refused.
    """
    peer = mesh.service(listen=[LOOPBACK])
    await within(peer.listening)
    node = mesh.service(listen=[LOOPBACK])
    assert await within(node.connect(*peer.out_addr, peer.id)) == peer.id
    assert await within(node.connect(*peer.out_addr, peer.id.encode())) == peer.id
    assert node.stats.connections["out"] == 1

    other, third = mesh.service(listen=[LOOPBACK]), mesh.service(listen=[LOOPBACK])
    await within(other.listening)
    with pytest.raises(HandshakeFailed, match=f"the peer is {other.id}, not {peer.id}"):
        await within(third.connect(*other.out_addr, peer.id))
    await wait_for(lambda: not third.routing_table and not other.routing_table, what="the link to close")
    assert third.stats.handshake_failures["unexpected"] == 1


@pytest_twisted.ensureDeferred
async def test_connect_to_a_connected_peer_dials_nothing(mesh: MeshNodes) -> None:
    """``connect()`` to the address of a peer connected already fires with its ID, and makes no second link."""
    peer = mesh.service(listen=[LOOPBACK])
    node = mesh.service(listen=[LOOPBACK], max_outgoing=0)
    await within(peer.listening)
    assert await within(node.connect(*peer.out_addr)) == peer.id
    assert await within(node.connect(*peer.out_addr)) == peer.id
    assert await within(node.connect(peer.out_addr)) == peer.id
    assert node.stats.connections["out"] == 1
    with pytest.raises(HandshakeFailed):
        await within(node.connect(*peer.out_addr, new_node_id(MESH)))


@pytest_twisted.ensureDeferred
async def test_connect_with_a_wrong_id_keeps_the_peer_at_that_address(
    mesh: MeshNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A dial for another ID, to the address of a peer connected long since,
    leaves that peer's link as it is (the new one never enters the routing
    table, where it would replace it).
    """
    monkeypatch.setattr(routing, "REDIAL_AFTER", 0.2)
    peer = mesh.service(listen=[LOOPBACK])
    node = mesh.service(listen=[LOOPBACK], max_outgoing=0)
    await within(peer.listening)
    await within(node.connect(*peer.out_addr))
    link = node.routing_table[peer.id]
    await task.deferLater(reactor, 0.3)
    with pytest.raises(HandshakeFailed):
        await within(node.connect(*peer.out_addr, new_node_id(MESH)))
    assert node.routing_table == {peer.id: link} and not link.closing


@pytest_twisted.ensureDeferred
async def test_disconnect_closes_a_link(mesh: MeshNodes) -> None:
    """``disconnect(conn)`` closes the connection a handler is given, as in py2p and js2p."""
    peer = mesh.service(listen=[LOOPBACK])
    await within(peer.listening)
    node = mesh.service(listen=[LOOPBACK], max_outgoing=0)
    links: list[Any] = []
    node.register_handler(lambda msg, conn: links.append(conn) or True)
    await within(node.connect(*peer.out_addr))
    peer.send("hello")
    await wait_for(lambda: links, what="the message")
    await within(node.disconnect(links[0]))
    await wait_for(lambda: node.id not in peer.routing_table, what="the peer to see the link close")
    assert not node.routing_table
    with pytest.raises(ValueError, match="not a connection of this node"):
        node.disconnect(object())  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_py2p_socket_arguments() -> None:
    """py2p's and js2p's ``MeshSocket(addr, port, prot, out_addr, debug_level)``: ``debug_level`` is taken."""
    sock = MeshSocket("127.0.0.1", 0, MESH, None, 1)
    try:
        assert sock.running and sock.listening.called
    finally:
        await sock.close()


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


# --- closing and misuse -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_closing_fails_a_waiting_next_message() -> None:
    """
    A next_message() that waits when the node closes fails with MeshClosed
    (it would wait for ever); one asked for after the close fails at once.
    """
    sock = MeshSocket("127.0.0.1", 0)
    waiting = sock.next_message()
    await sock.close()
    with pytest.raises(MeshClosed, match="the node is closed"):
        await within(waiting, 5)
    with pytest.raises(MeshClosed):
        await within(sock.next_message(), 5)


@pytest_twisted.ensureDeferred
async def test_send_reply_and_connect_on_a_closed_node_raise() -> None:
    """
    send(), a message's reply() and connect() on a closed node raise
    MeshClosed, where they returned an empty result (or a failed dial).
    """
    alice, bob = MeshSocket("127.0.0.1", 0), MeshSocket("127.0.0.1", 0)
    try:
        await within(bob.connect("127.0.0.1", alice.out_addr[1]))
        bob.send("hello")
        msg = await within(alice.next_message())
        await alice.close()
        with pytest.raises(MeshClosed):
            alice.send("anyone?")
        with pytest.raises(MeshClosed):
            msg.reply("too late")
        with pytest.raises(MeshClosed):
            alice.connect("127.0.0.1", bob.out_addr[1])
    finally:
        await defer.gatherResults([alice.close(), bob.close()])


@pytest_twisted.ensureDeferred
async def test_a_service_not_started_says_so() -> None:
    """A MeshService that was never started raises MeshClosed that says to start it."""
    service = MeshService(MESH, listen=[LOOPBACK])
    with pytest.raises(MeshClosed, match="has not started"):
        service.send("hello")
    with pytest.raises(MeshClosed, match="has not started"):
        service.connect("127.0.0.1", 1)


@pytest_twisted.ensureDeferred
async def test_reply_to_a_sender_that_cannot_be_reached_says_so(log_events: list[LogEvent]) -> None:
    """
    Bob replies to Carol, whom he reaches only through Alice, and whose
    address (as she gives it) refuses connections: reply() returns a result
    with Carol pending; it settles with Carol skipped, and the reason; the
    log says why.  A peer of Bob's gets a reply queued at once.
    """
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    dead_port = refusing.getsockname()[1]
    refusing.close()
    alice = MeshSocket("127.0.0.1", 0, max_outgoing=0)
    bob = MeshSocket("127.0.0.1", 0, max_outgoing=0)
    carol = MeshSocket("127.0.0.1", 0, max_outgoing=0, out_addr=("127.0.0.1", dead_port))
    try:
        await within(bob.connect("127.0.0.1", alice.out_addr[1]))
        await within(carol.connect("127.0.0.1", alice.out_addr[1]))
        carol.send("hello from carol")
        msg = await within(bob.next_message())
        assert msg.sender == carol.id
        result = msg.reply("hello back")
        assert result.pending == (carol.id,) and not result and not result.skipped
        settled = await within(result.settled())
        assert settled is result and result.pending == ()
        assert carol.id in result.skipped and f"could not connect to 127.0.0.1:{dead_port}" in result.skipped[carol.id]
        assert f"could not reach {short(carol.id)} to reply" in log_text(log_events)
        (event,) = [e for e in log_events if "could not reach" in e["log_format"]]
        assert event["target"] == carol.id and event["node"] == bob.id
        alice.send("hello from alice")
        from_alice = await within(bob.next_message())
        direct = from_alice.reply("hi alice")
        assert direct.queued == [alice.id] and not direct.pending
        assert (await within(direct.settled())) is direct
    finally:
        await defer.gatherResults([alice.close(), bob.close(), carol.close()])


@pytest_twisted.ensureDeferred
async def test_a_message_no_handler_took_is_counted_and_told(log_events: list[LogEvent]) -> None:
    """
    Messages of a sub-flag of the application's that no handler took are
    counted (dropped, reason unhandled) and the first of each sub-flag is
    logged at info, where they vanished with a debug line.
    """
    alice, bob = MeshSocket("127.0.0.1", 0), MeshSocket("127.0.0.1", 0)
    try:
        await within(bob.connect("127.0.0.1", alice.out_addr[1]))
        for i in range(3):
            bob.send("custom", i, type=0x40)
        bob.send("last")
        assert (await within(alice.next_message())).packets == (0, "last")
        assert alice.stats.dropped["unhandled"] == 3
        lines = [e for e in log_events if "no handler took it" in formatEvent(e) and e["log_level"] == LogLevel.info]
        assert len(lines) == 1 and "64" in formatEvent(lines[0])
    finally:
        await defer.gatherResults([alice.close(), bob.close()])
