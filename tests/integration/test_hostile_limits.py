"""
A live node's limits against hostile peers (see `tests.integration.hostile`):
every kind of garbage at once, then the limits one by one: connections, the
handshake timeout, the seen-set and the queue.  (Peers that stop reading:
test_slow_peers.)
"""

from __future__ import annotations

import random
import re

import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.integration import test_hostile_frames, test_hostile_handshakes, test_hostile_messages
from tests.integration.hostile import MAX_FRAME, MAX_OUTGOING, ArenaFactory, hs, now, run_case
from tests.support import MeshNodes, wait_for, within
from twisted_mesh import Limits, flags
from twisted_mesh._frames import WireMessage

#: Every kind of garbage, by name.
CASES = {**test_hostile_handshakes.CASES, **test_hostile_frames.CASES, **test_hostile_messages.CASES}


@pytest_twisted.ensureDeferred
async def test_all_garbage_at_once(make_arena: ArenaFactory, mesh: MeshNodes) -> None:
    """
    Every kind of garbage, twice over, at the same time: the node stays up,
    closes what it must, keeps relaying every good broadcast exactly once,
    delivers nothing else, dials at most max_outgoing peers, and a new good
    peer can still join.  (Some 120 raw peers connect from one address at
    the same time, before any of them handshakes: the node makes room for
    them all.)
    """
    arena = await make_arena(limits=Limits(max_frame_size=MAX_FRAME, max_pending=256, max_pending_per_address=256))
    arena.start_traffic()
    await arena.traffic_flowing()
    # (many-repeated-codes measures how long the node is busy: it runs alone.)
    names = [name for name in CASES for _ in range(2) if name != "many-repeated-codes"]
    random.Random(3).shuffle(names)
    outcomes = await defer.gatherResults(
        [defer.ensureDeferred(run_case(arena, name, CASES[name])) for name in names], consumeErrors=True
    )
    for name, (peer, _, _) in zip(names, outcomes, strict=True):
        if CASES[name].closed is True:
            assert peer.closed, name
        elif CASES[name].closed is False:
            assert not peer.closed, name
    assert len(arena.sunk) <= MAX_OUTGOING
    await arena.stop_traffic()
    late = mesh(max_outgoing=0)
    await within(late.connect("127.0.0.1", arena.node.out_addr[1]))
    arena.good["A"].send("welcome")
    msg = await within(late.next_message())
    assert msg.packets == (flags.broadcast, "welcome")
    assert arena.node.running and arena.node.ports
    arena.assert_no_tracebacks()


# -- connection limits ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_max_connections(make_arena: ArenaFactory) -> None:
    """
    Limits(max_connections=3) with two good peers and one raw peer: a fourth
    connection is closed at once, without a handshake, and counted; the
    others are unaffected, and a slot that frees up can be taken.
    """
    arena = await make_arena(limits=Limits(max_connections=3), sinks=0)
    arena.start_traffic()
    await arena.traffic_flowing()
    first = await arena.hostile()
    await first.join()
    mark = len(arena.events)
    extra = await arena.hostile()
    await within(extra.lost, 10)
    assert extra.lost_at is not None and extra.lost_at - extra.connected_at < 5
    assert extra.received == [], "the refused connection got a handshake"
    assert arena.counters()["limit_hits.max_connections"] == 1
    assert any("max_connections" in line for line in arena.new_lines(mark))
    assert await first.barrier()
    assert first.id in arena.node.routing_table
    assert first.transport is not None
    first.transport.loseConnection()
    await wait_for(lambda: arena.connections() == 2, 10)
    again = await arena.hostile()
    await again.join()
    assert again.id in arena.node.routing_table
    assert arena.counters()["limit_hits.max_connections"] == 1
    await arena.stop_traffic()
    arena.assert_no_tracebacks()


@pytest_twisted.ensureDeferred
async def test_handshake_timeout(make_arena: ArenaFactory) -> None:
    """
    Limits(handshake_timeout=1): a silent connection, and one that sends half
    a handshake, are closed after about a second, counted and logged (the
    node, which waits for an accepted peer's handshake, sent them nothing).
    """
    arena = await make_arena(limits=Limits(handshake_timeout=1), sinks=0)
    arena.start_traffic()
    await arena.traffic_flowing()
    mark = len(arena.events)
    silent = await arena.hostile()
    halfway = await arena.hostile()
    frame = WireMessage.create(flags.whisper, halfway.id, now(), hs(halfway)).frame(True, None)
    halfway.send_raw(frame[: len(frame) // 2])
    for peer in (silent, halfway):
        await within(peer.lost, 15)
        assert peer.lost_at is not None
        assert 0.9 <= peer.lost_at - peer.connected_at < 10, peer.lost_at - peer.connected_at
        assert peer.received == []
    await wait_for(lambda: arena.connections() == 2, 10)
    assert dict(arena.counters()) == {"handshake_failures.timeout": 2}
    assert any(re.search(r"no handshake within 1 s", line) for line in arena.new_lines(mark))
    await arena.stop_traffic()
    arena.assert_no_tracebacks()


# -- memory bounds ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_seen_set_is_bounded(make_arena: ArenaFactory) -> None:
    """
    Limits(max_seen=100): after 1,000 broadcasts the seen-set holds at most
    100 keys, the limit is counted and logged, and every broadcast was still
    delivered once.
    """
    arena = await make_arena(limits=Limits(max_seen=100), sinks=0, good=1)
    mark = len(arena.events)
    sender = arena.good["A"]
    for batch in range(20):
        for i in range(50):
            sender.send("many", batch * 50 + i)
        await task.deferLater(reactor, 0.01)
    await wait_for(lambda: len(arena.delivered["N"]) >= 1000, 30, "1000 broadcasts")
    await task.deferLater(reactor, 0.1)
    assert sorted(m.packets[2] for m in arena.delivered["N"]) == list(range(1000))
    assert len(arena.node._node.seen) <= 100
    assert arena.node.status()["seen"] <= 100
    assert arena.counters()["limit_hits.max_seen"] > 0
    assert any("max_seen" in line for line in arena.new_lines(mark))
    arena.assert_no_tracebacks()


@pytest_twisted.ensureDeferred
async def test_receive_queue_is_bounded(make_arena: ArenaFactory) -> None:
    """
    Limits(max_queue=10): 50 broadcasts that nobody takes leave the 10 newest
    in the queue; the 40 dropped are counted and logged.
    """
    arena = await make_arena(limits=Limits(max_queue=10), sinks=0, good=1, drain=False)
    node = arena.node
    mark = len(arena.events)
    for i in range(50):
        arena.good["A"].send("queued", i)
    await wait_for(lambda: node.stats.delivered >= 50, 30, "50 deliveries")
    await task.deferLater(reactor, 0.1)
    assert node.status()["queued"] == 10
    messages = node.recv(100)
    assert isinstance(messages, list)
    assert [m.packets[2] for m in messages] == list(range(40, 50))
    assert arena.counters()["limit_hits.max_queue"] == 40
    assert any("max_queue" in line for line in arena.new_lines(mark))
    arena.assert_no_tracebacks()
