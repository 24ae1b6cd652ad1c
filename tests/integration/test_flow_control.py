"""
Flow control over real loopback TCP: what ``send()`` reports as queued to a
peer arrives there unless the connection is lost; a producer that waits on
``drained()`` loses nothing; a peer that reads, however slowly, is kept; a
peer that makes no progress is cut after ``congestion_timeout``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.logger import LogEvent

from tests.support import MeshNodes, handshaken_socket, log_text, short, wait_for, within
from twisted_mesh import Limits, MeshSocket, SendResult, flags
from twisted_mesh._frames import FrameReader, WireMessage

#: The issue's producer: 48,000 messages of 2 kB, a turn of the reactor every 500.
MESSAGES = 48_000
BATCH = 500
PAYLOAD = b"x" * 2000


class SteadyReader:
    """
    A good peer that reads all the time, at about ``rate`` bytes a second (in
    a thread of its own), and keeps the sequence numbers of the broadcasts it
    gets.
    """

    def __init__(self, port: int, rate: float) -> None:
        self.sock, self.id = handshaken_socket(port, 65536)
        self.got: list[int] = []
        self._pause = 65536 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        frames = FrameReader(1 << 24)
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for body in frames.feed(data):
                msg = WireMessage.from_body(body, ())
                if msg.msg_type == flags.broadcast and msg.payload[0] == flags.broadcast:
                    self.got.append(msg.payload[1])
            time.sleep(self._pause)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class Line:
    """A producer node, a good peer that reads steadily, and a peer that never reads."""

    def __init__(self, node: MeshSocket) -> None:
        self.node = node
        self.good: SteadyReader | None = None
        self.stuck: socket.socket | None = None
        self.stuck_id = ""

    async def start(self, rate: float) -> SteadyReader:
        port = self.node.out_addr[1]
        self.good = good = SteadyReader(port, rate)
        self.stuck, self.stuck_id = handshaken_socket(port)
        await wait_for(lambda: {good.id, self.stuck_id} <= self.node.routing_table.keys(), 15, "the handshakes")
        return good

    def close(self) -> None:
        """Close the peers' sockets (the node is the ``mesh`` fixture's)."""
        for closing in (self.good, self.stuck):
            if closing is not None:
                closing.close()


MakeLine = Callable[..., Awaitable[tuple[Line, SteadyReader]]]


@pytest.fixture
def make_line(mesh: MeshNodes) -> Iterator[MakeLine]:
    """
    Makes lines whose good peer reads about ``rate`` bytes a second:
    ``line, good = await make_line(limits, rate)``; closed at teardown.
    """
    lines: list[Line] = []

    async def make(limits: Limits | None = None, rate: float = 20e6) -> tuple[Line, SteadyReader]:
        line = Line(mesh(max_outgoing=0, limits=limits or Limits()))
        lines.append(line)
        return line, await line.start(rate)

    yield make
    for line in lines:
        line.close()


@pytest_twisted.ensureDeferred
async def test_what_send_reports_queued_arrives(make_line: MakeLine, log_events: list[LogEvent]) -> None:
    """
    The node's user sends 48,000 messages of 2 kB, a reactor turn every 500,
    faster than its good peer reads, with a peer attached that never reads.
    Every message reported queued to the good peer arrives there, in order;
    the good peer, which keeps reading, is never cut; what was not queued is
    in ``skipped`` with a reason that names the send buffer.
    """
    line, good = await make_line()
    node = line.node
    results: list[SendResult] = []
    for i in range(MESSAGES):
        results.append(node.send(i, PAYLOAD))
        if i % BATCH == BATCH - 1:
            await task.deferLater(reactor, 0)
    queued = [i for i, result in enumerate(results) if good.id in result.queued]
    assert queued, "nothing was queued to the good peer"
    await wait_for(
        lambda: len(good.got) >= len(queued) or good.id not in node.routing_table, 120, "the good peer's messages"
    )
    assert good.id in node.routing_table, "the good peer was cut"
    await task.deferLater(reactor, 0.2)
    assert good.got == queued
    for i, result in enumerate(results):
        if i not in result.queued:
            reason = result.skipped.get(good.id)
            assert reason is None or "buffer" in reason, reason
    assert "closing the connection to " + short(good.id) not in log_text(log_events)


@pytest_twisted.ensureDeferred
async def test_a_producer_that_waits_for_drained_loses_nothing(make_line: MakeLine) -> None:
    """
    The same producer waits on ``drained()`` after each batch: every message
    is queued to the good peer and arrives; ``drained()`` waits for the peer
    that never reads until it is cut after ``congestion_timeout`` (3 s here),
    and then fires.
    """
    line, good = await make_line(Limits(congestion_timeout=3))
    node = line.node
    skipped_good = 0
    started = time.monotonic()
    for i in range(MESSAGES):
        result = node.send(i, PAYLOAD)
        skipped_good += good.id in result.skipped or good.id not in result.queued
        if i % BATCH == BATCH - 1:
            await within(node.drained(), 60)
    assert skipped_good == 0
    await wait_for(lambda: len(good.got) >= MESSAGES, 120, "every message at the good peer")
    assert good.got == list(range(MESSAGES))
    assert line.stuck_id not in node.routing_table
    assert node.stats.limit_hits["congestion_timeout"] == 1
    assert time.monotonic() - started >= 2.5, "drained() did not wait for the peer that never reads"


@pytest_twisted.ensureDeferred
async def test_drained_fires_at_once_with_nothing_waiting(mesh: MeshNodes) -> None:
    """``drained()`` of a node with no peer, or peers that read, fires at once."""
    node = mesh(max_outgoing=0)
    fired: list[object] = []
    node.drained().addCallback(fired.append)
    assert fired == [None]


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_that_makes_progress_is_kept(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """
    A peer that reads 64 kB every 50 ms (about 1.3 MB/s) gets 8 MB from the
    node's user at once: its link stays congested for seconds, longer than
    ``congestion_timeout`` (1 s), but it makes progress all along, so it is
    kept and gets every message.
    """
    node = mesh(max_outgoing=0, limits=Limits(congestion_timeout=1))
    reader, reader_id = handshaken_socket(node.out_addr[1], 16384)
    try:
        await wait_for(lambda: reader_id in node.routing_table, 15, "the reader's handshake")
        count = 4000
        results = [node.send(i, PAYLOAD) for i in range(count)]
        assert all(reader_id in result.queued for result in results)
        reader.setblocking(False)
        frames = FrameReader()
        users = 0
        started = time.monotonic()
        deadline = started + 120
        while users < count and time.monotonic() < deadline and reader_id in node.routing_table:
            try:
                bodies = frames.feed(reader.recv(65536))
            except BlockingIOError:
                bodies = []
            users += sum(1 for body in bodies if WireMessage.from_body(body, ()).msg_type == flags.broadcast)
            await task.deferLater(reactor, 0.05)
        assert users == count, f"{users} of {count} messages arrived"
        assert time.monotonic() - started > 2, "the reader caught up within the timeout: the test proves nothing"
        assert reader_id in node.routing_table, "the slow reader was cut although it kept reading"
        assert node.stats.limit_hits["congestion_timeout"] == 0
        assert "is slow to read" in log_text(log_events), "the reader was never congested: the test proves nothing"
    finally:
        reader.close()
