"""
Peers that stop reading, against a live node over real loopback TCP: the
send budget (``max_send_buffer``), back-pressure and the congestion timeout
bound what the node holds for them, cut off the one that never reads, keep
the one that catches up, and never stall the relay for the others.
"""

from __future__ import annotations

import random
import re
import socket
import time
import tracemalloc

import pytest_twisted
from twisted.internet import reactor, task
from twisted.logger import LogEvent, formatEvent

from tests.integration.hostile import transport_backlog
from tests.support import MESH, MeshNodes, handshaken_socket, log_text, raw_peer, short, wait_for, within
from twisted_mesh import Limits, MeshSocket, Message, flags
from twisted_mesh._ids import new_node_id
from twisted_mesh.message import SendResult


async def collect(sock: MeshSocket, count: int, got: list[Message], timeout: float = 60) -> None:
    """Wait until ``got`` (filled by a 'message' callback) holds ``count`` messages."""
    await wait_for(lambda: len(got) >= count, timeout, f"{count} messages")


def gather_messages(sock: MeshSocket) -> list[Message]:
    """Every message ``sock`` delivers from now on, in order."""
    got: list[Message] = []
    sock.on("message", lambda s: got.extend(s.recv(10_000)))  # type: ignore[arg-type]
    return got


@pytest_twisted.ensureDeferred
async def test_slow_peer_is_cut_off_and_memory_stays_bounded(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """
    A peer that completes its handshake and never reads, and a good peer; the
    node broadcasts 5 MB in 100 kB chunks with Limits(max_send_buffer=1 MB,
    congestion_timeout=5): once about 1 MB waits for the slow peer, send()
    reports it skipped, with a reason, and counts the limit; the bytes
    waiting for it never exceed its budget by more than a frame and the
    transport's buffer; after 5 s without progress it is cut off, with a
    reason, counted; the process's traced memory grows by less than 64 MB;
    the good peer gets every chunk once.
    """
    limits = Limits(max_send_buffer=1_000_000, congestion_timeout=5)
    node = mesh(max_outgoing=0, limits=limits)
    good = mesh(max_outgoing=0)
    slow_id = new_node_id(MESH)
    slow: socket.socket | None = None
    try:
        got = gather_messages(good)
        await within(good.connect("127.0.0.1", node.out_addr[1]))
        slow, _ = handshaken_socket(node.out_addr[1], node_id=slow_id)
        await wait_for(lambda: slow_id in node.routing_table, 15, "the slow peer's handshake")
        link = node.routing_table[slow_id]
        rng = random.Random(11)
        chunks = 50
        results: list[SendResult] = []
        backlog = 0
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(chunks):
                results.append(node.send(i, rng.randbytes(100_000)))
                backlog = max(backlog, transport_backlog(link) + link._writer.unwritten_size)
                await task.deferLater(reactor, 0.01)
            await collect(good, chunks, got)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert [m.packets[1] for m in got] == list(range(chunks))
        assert all(good.id in result.queued for result in results)
        hits = node.stats.limit_hits
        skipped = [i for i, result in enumerate(results) if slow_id not in result.queued]
        # (The kernel takes a few MB of what is written before the node holds any.)
        assert skipped == list(range(skipped[0], chunks)) and skipped[0] > 0, skipped
        assert hits["max_send_buffer"] == len(skipped), dict(hits)
        assert "max_send_buffer" in results[skipped[0]].skipped[slow_id]
        text = log_text(log_events)
        assert re.search(r"limit max_send_buffer .*not queuing more", text)
        assert backlog <= limits.max_send_buffer + 100_200 + 2 * 64 * 1024 + 100_200, backlog
        assert peak < 64 * 1024 * 1024, f"traced memory grew by {peak / 1e6:.1f} MB"
        # The node lets go of the slow peer by itself, once it made no progress for 5 s.
        await wait_for(lambda: slow_id not in node.routing_table, 30, "the slow peer to be gone")
        assert hits["congestion_timeout"] == 1, dict(hits)
        text = log_text(log_events)
        assert re.search(rf"closing the connection to {short(slow_id)}: the peer read nothing for 5 s", text)
        after = node.send("after")
        assert after.queued == [good.id] and slow_id not in after.skipped
        assert (await within(good.next_message())).packets == (flags.broadcast, "after")
        assert not any("log_failure" in event for event in log_events)
    finally:
        if slow is not None:
            slow.close()


@pytest_twisted.ensureDeferred
async def test_slow_peer_that_catches_up_is_kept(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """
    A peer that stops reading until its backlog builds up in the node, then
    reads again before its budget or the congestion timeout runs out: it is
    not disconnected, and it gets every message once, as does a good peer.
    """
    limits = Limits(max_send_buffer=1_000_000, congestion_timeout=10)
    node = mesh(max_outgoing=0, limits=limits)
    good = mesh(max_outgoing=0)
    got = gather_messages(good)
    await within(good.connect("127.0.0.1", node.out_addr[1]))
    reader = await raw_peer(node.out_addr[1])
    await reader.join()
    link = node.routing_table[reader.id]
    assert reader.transport is not None
    reader.transport.pauseProducing()  # type: ignore[attr-defined]
    rng = random.Random(12)
    sent = 0
    # One message a turn until the node finds the peer slow (more waits for
    # it than its transport buffers), then a few more at once.  (Waiting for
    # that line, not for some backlog: in a turn of several messages the
    # good peer's transport may be full for a moment first, and only the
    # first slow peer is logged.)
    slow = f"peer {short(reader.id)} is slow to read"
    while not any(slow in formatEvent(event) for event in log_events):
        assert sent < 400, "the node never found the paused peer slow to read"
        node.send(sent, rng.randbytes(50_000))
        sent += 1
        await task.deferLater(reactor, 0.05)
    for _ in range(4):
        node.send(sent, rng.randbytes(50_000))
        sent += 1
    assert transport_backlog(link) > 0
    reader.transport.resumeProducing()  # type: ignore[attr-defined]

    def users() -> list[int]:
        return [m.payload[1] for m in reader.received if m.msg_type == flags.broadcast]

    await wait_for(lambda: len(users()) >= sent, 30, "the slow peer to catch up")
    await collect(good, sent, got)
    assert users() == list(range(sent))
    assert [m.packets[1] for m in got] == list(range(sent))
    assert not reader.closed and reader.id in node.routing_table
    assert not node.stats.limit_hits, dict(node.stats.limit_hits)
    assert reader.unreadable == 0


@pytest_twisted.ensureDeferred
async def test_slow_peer_does_not_stall_the_relay_for_good(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    """
    A feeder broadcasts 6 MB through the node to a good peer, while a slow
    peer of the node never reads.  The node stops reading from the feeder
    while the slow peer is congested (backpressure) and cuts the slow peer
    off after congestion_timeout (3 s); from then on nothing holds the relay
    back: the feeder's waiting broadcasts flow again at once (well within
    5 s), the feeder's link survives (its own congestion_timeout is 8 s),
    and the good peer gets every broadcast once.
    """
    node = mesh(max_outgoing=0, limits=Limits(max_send_buffer=1_000_000, congestion_timeout=3))
    good = mesh(max_outgoing=0)
    feeder = mesh(max_outgoing=0, limits=Limits(congestion_timeout=8))
    slow_id = new_node_id(MESH)
    slow: socket.socket | None = None
    try:
        arrivals: list[tuple[int, float]] = []
        good.on("message", lambda s: arrivals.extend((m.packets[1], time.time()) for m in s.recv(10_000)))
        await within(good.connect("127.0.0.1", node.out_addr[1]))
        await within(feeder.connect("127.0.0.1", node.out_addr[1]))
        slow, _ = handshaken_socket(node.out_addr[1], node_id=slow_id)
        await wait_for(lambda: slow_id in node.routing_table, 15, "the slow peer's handshake")
        rng = random.Random(13)
        chunks = 60
        results = []
        for i in range(chunks):
            results.append(feeder.send(i, rng.randbytes(100_000)))
            await task.deferLater(reactor, 0.1)
        await wait_for(
            lambda: len(arrivals) >= chunks or node.id not in feeder.routing_table, 60, "the feeder's broadcasts"
        )
        hits = node.stats.limit_hits
        assert hits["max_send_buffer"] + hits["congestion_timeout"] == 1, dict(hits)
        (cut,) = [
            event["log_time"]
            for event in log_events
            if event.get("log_source") is node._node.node_log
            and re.search(r"limit (max_send_buffer|congestion_timeout)", formatEvent(event))
        ]
        waiting = [seq for seq, at in arrivals if at > cut]
        assert waiting, "every broadcast arrived before the slow peer was cut off: nothing was held back"
        resumed = min(at for _, at in arrivals if at > cut) - cut
        assert resumed < 5, (
            f"the relay stayed stalled {resumed:.1f} s after the slow peer was cut off: the node kept its other "
            "peers paused until the slow peer's connection was finally aborted"
        )
        assert not feeder.stats.limit_hits, f"the feeder cut its link to the node: {dict(feeder.stats.limit_hits)}"
        assert node.id in feeder.routing_table
        assert all(node.id in result.queued for result in results)
        assert [seq for seq, _ in arrivals] == list(range(chunks))
        assert not any("log_failure" in event for event in log_events)
    finally:
        if slow is not None:
            slow.close()
