"""
Connections without a handshake, on loopback: strangers who connect and
never handshake cannot take the places of peers.  Floods of raw sockets
against a live node, over TCP and WebSocket, from many addresses and from
the good peers' own; then the web port.  (The slots themselves, with no
reactor: test_admission.py.)
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import LogEvent, Logger, formatEvent

from tests.support import MESH, RawWebSocket, short, wait_for, within
from twisted_mesh import Limits, MeshService, MeshSocket, Network
from twisted_mesh.web import WebService
from twisted_mesh.web.status import metrics_text

WS = Network("mesh", "ws")

#: Strangers in a flood, as many as the issue saw.
FLOOD = 1500

#: How many connect at once: fewer than a node's listen backlog (50).
BATCH = 40

#: The flood's own addresses: all from the good peers' one, or spread
#: over a hundred loopback addresses (Linux answers all of 127.0.0.0/8).
ONE_ADDRESS = ["127.0.0.1"]
MANY_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 102)]

#: The default bounds of pending connections, from one address and in all.
PER_ADDRESS = 32
IN_ALL = 64

#: How much the process's resident memory may grow while a flood lasts.
MAX_RSS_GROWTH = 100 * 1024 * 1024

_log = Logger()


# -- floods on loopback ----------------------------------------------------------


@pytest.fixture
def files_for_a_flood() -> Iterator[None]:
    """Room for a flood's sockets, both ends of each: the soft limit of open files raised, then restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * FLOOD + 512
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"a flood needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def rss() -> int:
    """The process's resident memory, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def flood(port: int, sources: list[str], first_bytes: list[bytes]) -> list[socket.socket]:
    """
    Connect ``FLOOD`` sockets to ``port`` of 127.0.0.1, from each of
    ``sources`` in turn, ``BATCH`` at a time, with a turn of the reactor
    between batches: the kernel holds each connection for the node to
    accept.  Then each writes the next of ``first_bytes``, in turn, and
    never more.  The node may close them as they come: what fails is passed
    over.
    """
    sockets: list[socket.socket] = []
    for start in range(0, FLOOD, BATCH):
        for n in range(start, min(start + BATCH, FLOOD)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sockets.append(sock)
            sock.bind((sources[n % len(sources)], 0))
            sock.connect_ex(("127.0.0.1", port))
        await task.deferLater(reactor, 0.005)
    for n, sock in enumerate(sockets):
        try:
            sock.send(first_bytes[n % len(first_bytes)])
        except OSError:
            pass
    return sockets


def still_open(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` (non-blocking) the node has not closed."""
    count = 0
    for sock in sockets:
        try:
            count += sock.recv(1) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def lines(events: list[LogEvent]) -> list[str]:
    return [formatEvent(event) for event in events]


def assert_no_tracebacks(events: list[LogEvent]) -> None:
    for event in events:
        text = formatEvent(event)
        assert "log_failure" not in event, f"a failure was logged: {text}\n{event['log_failure']}"
        assert "Traceback" not in text and "Unhandled" not in text, text


async def join_during_flood(
    node: MeshService,
    port: int,
    protocol: Network,
    flooding: tuple[list[str], list[bytes], int],
    events: list[LogEvent],
) -> list[socket.socket]:
    """
    With a good peer connected to ``node``, strangers flood it from
    ``sources`` and never handshake, beyond the pending bound ``limit``; a
    second after the node has seen them all, another good peer joins: its
    handshake is not refused, and a broadcast goes each way, while the
    first peer's link stays as it was and the process's memory stays
    within bounds.

    :param flooding: the strangers' addresses, what they send, and how
        many of them may stay.

    :return: the strangers' sockets, still to close.
    """
    first = MeshSocket("127.0.0.1", 0, protocol, max_outgoing=0)
    late = MeshSocket("127.0.0.1", 0, protocol, max_outgoing=0)
    strangers: list[socket.socket] = []
    try:
        assert await within(first.connect("127.0.0.1", port)) == node.id
        first_link = node.routing_table[first.id]
        sources, first_bytes, bound = flooding
        before = rss()
        started = time.monotonic()
        strangers = await flood(port, sources, first_bytes)
        flooded = time.monotonic() - started
        peak = rss()
        await task.deferLater(reactor, 1.0)
        joining = time.monotonic()
        # The handshake is not refused: the dial fires with the node's ID.
        assert await within(late.connect("127.0.0.1", port)) == node.id
        await wait_for(lambda: late.id in node.routing_table, 30, "the late peer in the node's table")
        late.send("from the late peer")
        got = await within(first.next_message())
        assert got.packets == (0, "from the late peer") and got.sender == late.id
        first.send("to the late peer")
        got = await within(late.next_message())
        assert got.packets == (0, "to the late peer") and got.sender == first.id
        joined = time.monotonic() - joining
        # The strangers beyond the bound were closed as newer ones came.
        await wait_for(lambda: still_open(strangers) <= bound, 10, "the strangers beyond the bound to be closed")
        peak = max(peak, rss())
        _log.info(
            "{count} strangers connected in {flooded:.2f} s; a good peer joined and a broadcast went each way "
            "in {joined:.2f} s; resident memory grew by {grown:.1f} MB",
            count=FLOOD,
            flooded=flooded,
            joined=joined,
            grown=(peak - before) / 1e6,
        )
        assert peak - before < MAX_RSS_GROWTH, f"resident memory grew by {(peak - before) / 1e6:.1f} MB"
        # No peer was closed to make room.
        assert node.routing_table[first.id] is first_link and not first_link.closing
        assert set(node.routing_table) == {first.id, late.id}
        assert not any(f"peer {short(first.id)} left" in line for line in lines(events))
        return strangers
    except BaseException:
        close_all(strangers)
        raise
    finally:
        await first.close()
        await late.close()


#: What the strangers of each transport send: three bytes of a frame's
#: length header, or part of an HTTP upgrade; or nothing.
FIRST_BYTES = {
    "tcp": [b"", b"\x00\x00\x01"],
    "ws": [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConn"],
}


@pytest.mark.parametrize(
    ("sources", "limit", "bound"),
    [(ONE_ADDRESS, "max_pending_per_address", PER_ADDRESS), (MANY_ADDRESSES, "max_pending", IN_ALL)],
    ids=["one-address", "many-addresses"],
)
@pytest.mark.parametrize("transport", ["tcp", "ws"])
@pytest_twisted.ensureDeferred
async def test_strangers_do_not_take_the_slots_of_peers(
    transport: str, sources: list[str], limit: str, bound: int, log_events: list[LogEvent], files_for_a_flood: None
) -> None:
    """
    1,500 raw connections that never handshake, from the good peers' own
    address or from a hundred others: over TCP, half of them send three
    bytes of a frame header; on a ws: listener, they never finish their
    HTTP upgrade (half of them send part of one), which makes them pending
    connections too.  With the node's default limits, a good peer that
    connects a second later joins; the strangers beyond the pending bound
    were closed, and the log says why.
    """
    protocol = MESH if transport == "tcp" else WS
    node = MeshService(protocol, listen=[f"{transport}:0:interface=127.0.0.1"])
    node.startService()
    strangers: list[socket.socket] = []
    try:
        (listening,) = await within(node.listening)
        port = listening.getHost().port
        flooding = (sources, FIRST_BYTES[transport], bound)
        strangers = await join_during_flood(node, port, protocol, flooding, log_events)
        # Each stranger is pending, or was closed for a newer one; and the log says why.
        assert getattr(node.limits, limit) == bound
        status = node.status()
        assert 0 < status["pending"] <= bound
        assert status["limit_hits"].keys() == {limit}
        assert status["pending"] + status["limit_hits"][limit] == FLOOD
        why = "without a handshake: closed the oldest"
        assert any(f"limit {limit}" in line and why in line for line in lines(log_events))
        assert_no_tracebacks(log_events)
    finally:
        close_all(strangers)
        await node.stopService()


class Watched(TwistedProtocol):
    """A client that sends nothing; ``lost`` fires with the time its connection was lost."""

    def __init__(self) -> None:
        self.lost: Deferred[float] = Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(time.monotonic())


@pytest_twisted.ensureDeferred
async def test_a_websocket_has_the_handshake_timeout_to_open() -> None:
    """
    A connection to a ws: listener that sends nothing is closed once
    Limits.handshake_timeout has passed, not Autobahn's 30 s.
    """
    node = MeshService(WS, listen=["ws:0:interface=127.0.0.1"], limits=Limits(handshake_timeout=1))
    node.startService()
    silent = Watched()
    try:
        (listening,) = await within(node.listening)
        await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", listening.getHost().port), silent))
        started = time.monotonic()
        closed_at = await within(silent.lost, 15)
        assert closed_at - started < 10
        await wait_for(lambda: node.status()["pending"] == 0, 10, "the pending connection to be released")
    finally:
        if silent.transport is not None:
            silent.transport.loseConnection()
        await node.stopService()


# -- the web port ------------------------------------------------------------------


class Trickle(Watched):
    """An HTTP client that sends a request a byte at a time, slower than any browser."""

    def __init__(self) -> None:
        super().__init__()
        self._request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: a very slow client\r\n\r\n"
        self._sending: task.LoopingCall | None = None

    def connectionMade(self) -> None:
        self._sending = task.LoopingCall(self._next)
        self._sending.start(0.2)

    def _next(self) -> None:
        assert self.transport is not None
        byte, self._request = self._request[:1], self._request[1:]
        if byte:
            self.transport.write(byte)

    def connectionLost(self, reason: Any = None) -> None:
        if self._sending is not None and self._sending.running:
            self._sending.stop()
        super().connectionLost(reason)


@pytest_twisted.ensureDeferred
async def test_a_trickled_http_request_does_not_hold_the_web_port() -> None:
    """
    A request to the web port sent a byte every 0.2 s, which twisted.web's
    idle timeout would wait for as long as it lasts, is cut off once the
    node's handshake timeout has passed.
    """
    node = MeshService(MESH, listen=["tcp:0:interface=127.0.0.1"], limits=Limits(handshake_timeout=1))
    web = WebService(node, "tcp:0:interface=127.0.0.1")
    node.startService()
    web.startService()
    client = Trickle()
    try:
        port = await within(web.listening)
        await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client))
        started = time.monotonic()
        closed_at = await within(client.lost, 15)
        assert closed_at - started < 10
    finally:
        if client.transport is not None:
            client.transport.loseConnection()
        await web.stopService()
        await node.stopService()


@pytest_twisted.ensureDeferred
async def test_an_upgrade_on_the_web_port_is_pending_until_its_handshake(log_events: list[LogEvent]) -> None:
    """
    WebSockets opened on the web port that never send a mesh handshake are
    the node's pending connections: one more than max_pending_per_address
    closes the oldest at once, and the others stay pending.
    """
    node = MeshService(MESH, listen=["tcp:0:interface=127.0.0.1"])
    web = WebService(node, "tcp:0:interface=127.0.0.1")
    node.startService()
    web.startService()
    clients = [RawWebSocket() for _ in range(PER_ADDRESS + 1)]
    try:
        port = (await within(web.listening)).getHost().port
        for client in clients:
            await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client))
            client.upgrade()
            await wait_for(lambda client=client: b" 101 " in client.received, 10, "the WebSocket to open")
        await within(clients[0].lost, 5)
        assert not any(client.lost.called for client in clients[1:])
        assert node.status()["pending"] == PER_ADDRESS
        assert f"\nmesh_pending_connections {PER_ADDRESS}\n" in metrics_text(node)
        assert node.status()["limit_hits"] == {"max_pending_per_address": 1}
        assert any("limit max_pending_per_address" in line for line in lines(log_events))
        assert_no_tracebacks(log_events)
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.loseConnection()
        await web.stopService()
        await node.stopService()
