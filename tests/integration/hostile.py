"""
The arena the hostile tests share: a node under attack, good peers that
broadcast through it, sinks it may dial, and the catalogue's machinery (a
`.Case` is one kind of garbage and what the node must do about it).

A node (a `.MeshSocket`) serves two good peers (real MeshSockets) that keep
broadcasting to each other through it, while raw connections (`.RawPeer`)
throw one kind of garbage each at it.  For each kind: the node closes the
connection (where the protocol says so) or drops the message, logs a line
that says why, moves its counters, never logs a traceback, keeps relaying
every good broadcast exactly once, and never delivers anything malformed.
"""

from __future__ import annotations

import gc
import re
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import msgpack
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import LogEvent, formatEvent

from tests.support import MESH, MeshNodes, RawPeer, raw_peer, wait_for, within
from twisted_mesh import Limits, MeshSocket, Message, flags
from twisted_mesh._link import LinkProtocol

MAX_FRAME = 1 << 20

#: How many outgoing connections the node under attack may dial.
MAX_OUTGOING = 2

#: Seconds between two good broadcasts of each good peer.
TICK = 0.02

LogCheck = Callable[[str], bool]


def now() -> int:
    """The time to stamp a message with."""
    return int(time.time())


# -- frames by hand ------------------------------------------------------------


def frame_of_serial(serial: bytes, *, corrupt: bool = False) -> bytes:
    """A frame around ``serial``; its checksum holds unless ``corrupt``."""
    checksum = bytearray(sha256(serial).digest())
    if corrupt:
        checksum[0] ^= 0xFF
    body = bytes(checksum) + serial
    return struct.pack(">I", len(body)) + body


def frame_of_fields(fields: Any) -> bytes:
    """``fields`` in msgpack (bin and str apart, ext types allowed) in a frame whose checksum holds."""
    return frame_of_serial(msgpack.packb(fields, use_bin_type=True))


def frame_of_body(body: bytes) -> bytes:
    """A length header before ``body``."""
    return struct.pack(">I", len(body)) + body


def head(peer: RawPeer) -> bytes:
    """The start of a serial ``[broadcast, sender, time, broadcast, X]``: X comes next."""
    return b"\x95" + msgpack.packb([0, peer.id.encode(), now(), 0], use_bin_type=True)[1:]


def deep(levels: int, leaf: Any = 0) -> Any:
    """Lists nested ``levels`` deep."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def deep_map(levels: int) -> Any:
    """Maps nested ``levels`` deep."""
    value: Any = 0
    for _ in range(levels):
        value = {"a": value}
    return value


class Sink(TwistedProtocol):
    """A listener's connection that never answers: a dial to it hangs."""

    def __init__(self, accepted: list[Sink]) -> None:
        accepted.append(self)


# -- the arena ------------------------------------------------------------------


def status_counters(sock: MeshSocket) -> Counter[str]:
    """The node's drop, handshake-failure and limit counters, as ``group.reason``."""
    status = sock.status()
    counters: Counter[str] = Counter()
    for group in ("dropped", "handshake_failures", "limit_hits"):
        for reason, count in status[group].items():
            counters[f"{group}.{reason}"] = count
    return counters


def transport_backlog(link: LinkProtocol) -> int:
    """Bytes waiting in a TCP transport's write buffer."""
    transport = link.transport
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return buffered + getattr(transport, "_tempDataLen", 0)


@dataclass
class Arena:
    """
    The node under attack, two good peers that broadcast through it, sinks
    (listeners that accept and never answer) and the log.
    """

    node: MeshSocket
    good: dict[str, MeshSocket]
    events: list[LogEvent]
    sink_ports: list[IListeningPort] = field(default_factory=list)
    sunk: list[Sink] = field(default_factory=list)
    hostiles: list[RawPeer] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    delivered: dict[str, list[Message]] = field(default_factory=dict)
    _loop: task.LoopingCall | None = None

    @property
    def everyone(self) -> dict[str, MeshSocket]:
        """The node and the good peers, by name."""
        return {"N": self.node, **self.good}

    def counters(self) -> Counter[str]:
        """The node's counters."""
        return status_counters(self.node)

    def sink_addresses(self) -> list[tuple[str, int]]:
        """Where the sinks listen."""
        return [("127.0.0.1", port.getHost().port) for port in self.sink_ports]

    async def hostile(self, *, codes: tuple[int, ...] = ()) -> RawPeer:
        """A raw connection to the node."""
        peer = await raw_peer(self.node.out_addr[1], codes=codes)
        self.hostiles.append(peer)
        return peer

    def connections(self) -> int:
        """The node's open connections."""
        count: int = self.node.status()["connections"]
        return count

    # good traffic

    def _tick(self) -> None:
        for name, sock in self.good.items():
            sock.send("good", name, self.sent[name])
            self.sent[name] += 1

    def start_traffic(self) -> None:
        """The good peers start broadcasting, one message each per tick."""
        self._loop = task.LoopingCall(self._tick)
        self._loop.start(TICK, now=True)

    async def traffic_flowing(self) -> None:
        """Wait until the node has delivered good broadcasts from both peers."""
        await wait_for(
            lambda: all(any(m.sender == sock.id for m in self.delivered["N"]) for sock in self.good.values()),
            15,
            "good traffic",
        )

    async def stop_traffic(self) -> None:
        """
        Broadcast a few more ticks, stop, and check that every good broadcast
        reached each other node exactly once and nothing else was delivered.
        """
        for _ in range(3):
            await task.deferLater(reactor, TICK)
        if self._loop is not None and self._loop.running:
            self._loop.stop()

        def complete() -> bool:
            return all(
                sum(1 for m in self.delivered[receiver] if m.sender == self.good[sender].id) >= self.sent[sender]
                for receiver in self.everyone
                for sender in self.good
                if sender != receiver
            )

        await wait_for(complete, 30, "every good broadcast")
        await task.deferLater(reactor, 0.1)
        for receiver, messages in self.delivered.items():
            for sender in self.good:
                if sender == receiver:
                    continue
                seqs = [m.packets[3] for m in messages if m.sender == self.good[sender].id]
                assert Counter(seqs) == Counter(range(self.sent[sender])), (
                    f"{receiver} got {sender}'s broadcasts {sorted(Counter(seqs).items())[:20]}..., "
                    f"expected each of 0..{self.sent[sender] - 1} once"
                )
        self.assert_only_good_delivered()

    def assert_only_good_delivered(self, case: str = "") -> None:
        """Every message delivered so far is a good peer's broadcast."""
        names = {sock.id: name for name, sock in self.good.items()}
        for receiver, messages in self.delivered.items():
            bad = [m for m in messages if names.get(m.sender) is None or m.packets[:3] != (0, "good", names[m.sender])]
            assert not bad, f"{case}: {receiver} delivered messages no good peer sent: {bad}"

    def new_lines(self, mark: int) -> list[str]:
        """twisted_mesh's log lines since ``mark``."""
        return [
            formatEvent(event)
            for event in self.events[mark:]
            if str(event.get("log_namespace", "")).startswith("twisted_mesh")
        ]

    def assert_no_tracebacks(self) -> None:
        """No captured event is a failure, a traceback or an unhandled error."""
        gc.collect()
        for event in self.events:
            text = formatEvent(event)
            assert "log_failure" not in event, f"a failure was logged: {text}\n{event['log_failure']}"
            assert "Traceback" not in text and "Unhandled" not in text, text

    async def close(self) -> None:
        """Stop the traffic, the raw peers and the sinks (the nodes are the ``mesh`` fixture's)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for peer in self.hostiles:
            if not peer.closed and peer.transport is not None:
                peer.transport.abortConnection()  # type: ignore[attr-defined]
        for sink in self.sunk:
            if sink.transport is not None:
                sink.transport.abortConnection()  # type: ignore[attr-defined]
        await defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in self.sink_ports])


async def open_arena(
    mesh: MeshNodes,
    events: list[LogEvent],
    arenas: list[Arena],
    *,
    limits: Limits | None = None,
    sinks: int = 4,
    good: int = 2,
    drain: bool = True,
) -> Arena:
    """
    An arena of nodes made by ``mesh``, kept in ``arenas`` (to be closed),
    once the good peers are connected and the sinks listen.

    :param limits: the node's limits (by default: frames up to `.MAX_FRAME`).
    :param sinks: how many sinks listen.
    :param good: how many good peers there are (at most two).
    :param drain: whether the node's messages are taken as they come.
    """
    # (Every hostile peer that joins is kept: they are what is tested.)
    node = mesh(max_outgoing=MAX_OUTGOING, max_incoming=1000, limits=limits or Limits(max_frame_size=MAX_FRAME))
    peers = {name: mesh(max_outgoing=0) for name in "AB"[:good]}
    arena = Arena(node, peers, events)
    arenas.append(arena)
    for name, sock in arena.everyone.items():
        arena.delivered[name] = []
        if not drain and sock is node:
            continue
        sock.on("message", lambda s, name=name: arena.delivered[name].extend(s.recv(10_000)))  # type: ignore[misc]
    for sock in peers.values():
        await within(sock.connect("127.0.0.1", node.out_addr[1]))
    await wait_for(lambda: len(node.routing_table) == len(peers), 15, "the good peers")
    for _ in range(sinks):
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        factory = Factory.forProtocol(lambda: Sink(arena.sunk))  # type: ignore[arg-type]
        arena.sink_ports.append(await endpoint.listen(factory))
    return arena


#: What the ``make_arena`` fixture is: ``await make_arena(**kwargs)`` takes `.open_arena`'s keywords.
ArenaFactory = Callable[..., Awaitable[Arena]]


# -- the catalogue of garbage ---------------------------------------------------

Send = Callable[[RawPeer, Arena], Awaitable[None]]


def frames(*make: Callable[[RawPeer], bytes]) -> Send:
    """A case that writes the frames ``make`` build, in one write."""

    async def send(peer: RawPeer, arena: Arena) -> None:
        peer.send_raw(b"".join(build(peer) for build in make))

    return send


def fields(build: Callable[[RawPeer], Any]) -> Send:
    """A case that writes one frame of the msgpack value ``build`` makes; its checksum holds."""
    return frames(lambda peer: frame_of_fields(build(peer)))


def message(msg_type: int, *payload: Any, sender: str | None = None, stamp: int | None = None) -> Send:
    """A case that writes one message, well formed as a frame."""

    async def send(peer: RawPeer, arena: Arena) -> None:
        peer.send(msg_type, *payload, sender=sender, stamp=stamp)

    return send


def handshake_payload(build: Callable[[RawPeer], list[Any]]) -> Send:
    """A case that writes a handshake whose payload ``build`` makes."""

    async def send(peer: RawPeer, arena: Arena) -> None:
        peer.send(flags.whisper, *build(peer))

    return send


def hs(peer: RawPeer, **change: Any) -> list[Any]:
    """A good handshake payload with some fields changed (``drop=True`` drops the codes)."""
    payload = [flags.handshake, peer.id.encode(), MESH.id.encode(), ["127.0.0.1", 1], []]
    for index, name in enumerate(("flag", "id", "protocol", "address", "codes")):
        if name in change:
            payload[index] = change[name]
    if change.get("drop"):
        payload.pop()
    return payload + list(change.get("extra", []))


def matches(pattern: str) -> LogCheck:
    """A log check: some new line matches ``pattern``."""
    return lambda text: re.search(pattern, text, re.IGNORECASE) is not None


ANY_LINE: LogCheck = lambda text: bool(text.strip())  # noqa: E731


@dataclass(frozen=True)
class Case:
    """
    One kind of garbage and what the node must do about it.

    :ivar send: what the raw connection writes (after its handshake when
        ``handshake``).
    :ivar closed: whether the node must close the connection (True), keep it
        and drop the message (False), or may do either (None).
    :ivar counters: the exact change of the node's drop, handshake-failure
        and limit counters, when given.
    :ivar counted: whether some counter must move (when ``counters`` is None).
    :ivar log: a check that one of the node's new log lines must pass.
    :ivar check: more checks after the case.
    """

    send: Send
    closed: bool | None = True
    counters: dict[str, int] | None = None
    counted: bool = False
    log: LogCheck = ANY_LINE
    handshake: bool = True
    codes: tuple[int, ...] = ()
    hang_up: bool = False
    check: Callable[[Arena, RawPeer], Awaitable[None]] | None = None


TOO_LARGE = {"dropped.too_large": 1, "limit_hits.max_frame_size": 1}
MALFORMED = {"dropped.malformed": 1}
BAD_HANDSHAKE = {"handshake_failures.malformed": 1}
CLOSED_EARLY = {"handshake_failures.closed": 1}
NOT_MESH = {"dropped.too_large": 1, "handshake_failures.not_mesh": 1}
SIZE_LOG = matches(r"max_frame_size|limit|exceeds|too large")
NOT_MESH_LOG = matches(r"did not speak the mesh protocol")
BAD_FRAME_LOG = matches(r"bad frame|malformed|msgpack|array|type|sender|time|extension|nest")
HANDSHAKE_LOG = matches(r"malformed handshake")
PEERS_LOG = matches(r"malformed peers")


async def run_case(arena: Arena, name: str, case: Case) -> tuple[RawPeer, int, Counter[str]]:
    """
    Connect a raw peer, let it do its worst, and wait for the node's answer.

    :return: the peer, and the log's length and the node's counters before
        the garbage (after the peer's handshake).
    """
    peer = await arena.hostile(codes=case.codes)
    if case.handshake:
        await peer.join()
    mark, before = len(arena.events), arena.counters()
    await case.send(peer, arena)
    if case.hang_up:
        assert peer.transport is not None
        peer.transport.loseConnection()
    if case.closed is True or case.hang_up:
        await within(peer.lost, 15)
    elif case.closed is False:
        assert await peer.barrier(), f"{name}: the node closed the connection"
    else:
        await peer.barrier()
    return peer, mark, before


async def check_case(arena: Arena, name: str, case: Case, peer: RawPeer, mark: int, before: Counter[str]) -> None:
    """What the node must have done about ``case``."""
    if peer.closed:
        # The node's side is gone too, and the peer left its routing table.
        await wait_for(lambda: arena.connections() == len(arena.good), 15, f"{name}: the node to drop the connection")
        assert peer.id not in arena.node.routing_table
    arena.assert_only_good_delivered(name)
    delta = arena.counters() - before
    if case.counters is not None:
        assert dict(delta) == case.counters, f"{name}: counters moved by {dict(delta)}, expected {case.counters}"
    if case.counted:
        assert peer.closed or delta, f"{name}: the message was dropped, but no counter of node.status() moved"
    lines = arena.new_lines(mark)
    assert any(case.log(line) for line in lines), f"{name}: no clear log line; the node logged {lines}"
    if case.check is not None:
        await case.check(arena, peer)


async def hostile_input(arena: Arena, name: str, case: Case) -> None:
    """
    One kind of garbage from a raw connection while the good peers keep
    broadcasting: the connection is closed or the message dropped, with a
    log line and the counters moved, and every good broadcast is delivered
    exactly once, nothing else.
    """
    arena.start_traffic()
    await arena.traffic_flowing()
    peer, mark, before = await run_case(arena, name, case)
    await check_case(arena, name, case, peer, mark, before)
    await arena.stop_traffic()
    assert arena.node.running and arena.node.ports
    arena.assert_no_tracebacks()


def catalogue_test(cases: dict[str, Case]) -> Callable[[ArenaFactory, str], Deferred[None]]:
    """A test of each of ``cases``, by name: `.hostile_input` in a new arena."""

    @pytest.mark.parametrize("name", list(cases))
    @pytest_twisted.ensureDeferred
    async def test(make_arena: ArenaFactory, name: str) -> None:
        await hostile_input(await make_arena(), name, cases[name])

    return test
