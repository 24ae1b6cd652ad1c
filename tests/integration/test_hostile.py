"""
Hostile peers against a live node, over real loopback TCP.

A node (a `.MeshSocket`) serves two good peers (real MeshSockets) that keep
broadcasting to each other through it, while raw connections throw one kind
of garbage each at it.  For each kind: the node closes the connection (where
the protocol says so) or drops the message, logs a line that says why, moves
its counters, never logs a traceback, keeps relaying every good broadcast
exactly once, and never delivers anything malformed.

Then the limits one by one: connections, the handshake timeout, a peer that
stops reading (backpressure and the send budget), the seen-set and the queue.
"""

from __future__ import annotations

import gc
import random
import re
import socket
import struct
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import msgpack
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from tests.support import MESH, wait_for, within
from twisted_mesh import Limits, MeshSocket, Message, Protocol, flags
from twisted_mesh import _compression as compression
from twisted_mesh._connection import MAX_BAD_FRAMES, MeshProtocol
from twisted_mesh._frames import FrameError, FrameReader, WireMessage
from twisted_mesh._ids import b58encode_int, new_node_id
from twisted_mesh._node import SendResult

#: The node under attack reads frames of at most this many bytes.
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


def head(peer: Hostile) -> bytes:
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


# -- a raw peer -----------------------------------------------------------------


class Hostile(TwistedProtocol):
    """
    A connection that writes what it is told, reads what the node sends, and
    remembers when it was closed.
    """

    def __init__(self, *, codes: tuple[int, ...] = (), node_id: str | None = None) -> None:
        self.id = node_id or new_node_id(MESH)
        self.codes = list(codes)
        self.received: list[WireMessage] = []
        self.unreadable = 0
        self.lost: Deferred[None] = Deferred()
        self.connected_at = 0.0
        self.lost_at: float | None = None
        self._reader = FrameReader(64 * 1024 * 1024)

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()

    def dataReceived(self, data: bytes) -> None:
        try:
            bodies = self._reader.feed(data)
        except FrameError:
            self.unreadable += 1
            return
        for body in bodies:
            try:
                self.received.append(WireMessage.from_body(body, compression.SUPPORTED, 64 * 1024 * 1024))
            except FrameError:
                self.unreadable += 1

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost_at = time.monotonic()
        self.lost.callback(None)

    @property
    def closed(self) -> bool:
        """Whether the connection is closed."""
        return self.lost.called

    def write(self, data: bytes) -> None:
        """Write bytes as they are."""
        assert self.transport is not None
        self.transport.write(data)

    def send(self, msg_type: int, *payload: Any, sender: str | None = None, stamp: int | None = None) -> None:
        """Write a well-formed message, IDs as bin."""
        msg = WireMessage.create(msg_type, sender or self.id, now() if stamp is None else stamp, payload)
        self.write(msg.frame(True, None))

    def handshake(self, *, protocol_id: str = MESH.id, node_id: str | None = None) -> None:
        """Write a handshake."""
        node_id = node_id or self.id
        self.send(flags.whisper, flags.handshake, node_id.encode(), protocol_id.encode(), ["127.0.0.1", 1], self.codes)

    def peers_messages(self) -> int:
        """How many peers messages the node sent us."""
        return sum(1 for msg in self.received if msg.msg_type == flags.whisper and msg.payload[0] == flags.peers)

    async def join(self) -> None:
        """Handshake, and wait for the node's peers message that answers it."""
        self.handshake()
        await wait_for(lambda: self.peers_messages() > 0 or self.closed, 15, "the answer to a handshake")
        assert not self.closed, "the node closed a good handshake"

    async def barrier(self) -> bool:
        """
        Ask for peers and wait for the answer: once it is here, the node has
        read everything written before.

        :return: whether the connection is still open.
        """
        if self.closed:
            return False
        before = self.peers_messages()
        self.send(flags.whisper, flags.request, b"*")
        await wait_for(lambda: self.peers_messages() > before or self.closed, 15, "the answer to a request")
        return not self.closed

    def requests(self) -> list[WireMessage]:
        """The broadcast requests for a node's address that reached us."""
        return [
            msg
            for msg in self.received
            if msg.msg_type == flags.broadcast and msg.payload[0] == flags.request and len(msg.payload) == 3
        ]


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


def transport_backlog(link: MeshProtocol) -> int:
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
    hostiles: list[Hostile] = field(default_factory=list)
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

    async def hostile(self, *, codes: tuple[int, ...] = (), node_id: str | None = None) -> Hostile:
        """A raw connection to the node."""
        peer = Hostile(codes=codes, node_id=node_id)
        self.hostiles.append(peer)
        await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.node.out_addr[1]), peer))
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
        """Stop everything this arena started."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for peer in self.hostiles:
            if not peer.closed and peer.transport is not None:
                peer.transport.abortConnection()  # type: ignore[attr-defined]
        for sink in self.sunk:
            if sink.transport is not None:
                sink.transport.abortConnection()  # type: ignore[attr-defined]
        await defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in self.sink_ports])
        await defer.gatherResults([sock.close() for sock in self.everyone.values()])


@pytest.fixture
def captured() -> Iterator[list[LogEvent]]:
    """Every log event emitted during the test."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


ArenaFactory = Callable[..., Awaitable[Arena]]


@pytest.fixture
def make_arena(captured: list[LogEvent]) -> Iterator[ArenaFactory]:
    """Arenas, all closed at teardown."""
    made: list[Arena] = []

    async def make(*, limits: Limits | None = None, sinks: int = 4, good: int = 2, drain: bool = True) -> Arena:
        # (Every hostile peer that joins is kept: they are what is tested.)
        node = MeshSocket(
            "127.0.0.1",
            0,
            MESH,
            max_outgoing=MAX_OUTGOING,
            max_incoming=1000,
            limits=limits or Limits(max_frame_size=MAX_FRAME),
        )
        peers = {name: MeshSocket("127.0.0.1", 0, MESH, max_outgoing=0) for name in "AB"[:good]}
        arena = Arena(node, peers, captured)
        made.append(arena)
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

    yield make
    pytest_twisted.blockon(defer.ensureDeferred(_close_all(made)))


async def _close_all(arenas: list[Arena]) -> None:
    for arena in arenas:
        await arena.close()


# -- the catalogue of garbage ---------------------------------------------------

Send = Callable[[Hostile, Arena], Awaitable[None]]


def frames(*make: Callable[[Hostile], bytes]) -> Send:
    """A case that writes the frames ``make`` build, in one write."""

    async def send(peer: Hostile, arena: Arena) -> None:
        peer.write(b"".join(build(peer) for build in make))

    return send


def fields(build: Callable[[Hostile], Any]) -> Send:
    """A case that writes one frame of the msgpack value ``build`` makes; its checksum holds."""
    return frames(lambda peer: frame_of_fields(build(peer)))


def message(msg_type: int, *payload: Any, sender: str | None = None, stamp: int | None = None) -> Send:
    """A case that writes one message, well formed as a frame."""

    async def send(peer: Hostile, arena: Arena) -> None:
        peer.send(msg_type, *payload, sender=sender, stamp=stamp)

    return send


def handshake_payload(build: Callable[[Hostile], list[Any]]) -> Send:
    """A case that writes a handshake whose payload ``build`` makes."""

    async def send(peer: Hostile, arena: Arena) -> None:
        peer.send(flags.whisper, *build(peer))

    return send


def hs(peer: Hostile, **change: Any) -> list[Any]:
    """A good handshake payload with some fields changed (``drop=True`` drops the codes)."""
    payload = [flags.handshake, peer.id.encode(), MESH.id.encode(), ["127.0.0.1", 1], []]
    for index, name in enumerate(("flag", "id", "protocol", "address", "codes")):
        if name in change:
            payload[index] = change[name]
    if change.get("drop"):
        payload.pop()
    return payload + list(change.get("extra", []))


def bomb(code: int) -> Callable[[Hostile], bytes]:
    """A small body that inflates, with ``code``, past the frame size limit."""

    def build(peer: Hostile) -> bytes:
        zeros = b"\0" * (MAX_FRAME + 4096)
        if code == flags.zlib:
            body = zlib.compress(zeros, 9)
        elif code == flags.gzip:
            packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
            body = packer.compress(zeros) + packer.flush()
        else:
            body = compression.compress(code, zeros)
        assert len(body) < MAX_FRAME // 16
        return frame_of_body(body)

    return build


def random_bytes(peer: Hostile) -> bytes:
    """64 KiB of seeded random bytes; their first four announce more than the limit."""
    data = random.Random(5).randbytes(65536)
    assert int.from_bytes(data[:4], "big") > MAX_FRAME
    return data


def random_frames(peer: Hostile) -> bytes:
    """Frames with true length headers around seeded random bodies."""
    rng = random.Random(6)
    return b"".join(frame_of_body(rng.randbytes(rng.randrange(40, 400))) for _ in range(2 * MAX_BAD_FRAMES + 2))


def bad_checksums(peer: Hostile) -> bytes:
    """MAX_BAD_FRAMES + 1 well-formed broadcasts whose checksum fails."""
    serial = WireMessage.create(flags.broadcast, peer.id, now(), (flags.broadcast, "bad sum")).body_in(True)[32:]
    return frame_of_serial(serial, corrupt=True) * (MAX_BAD_FRAMES + 1)


def valid_entry(arena: Arena, index: int = 0) -> list[Any]:
    """A well-formed peers entry naming one of the arena's sinks."""
    host, port = arena.sink_addresses()[index % len(arena.sink_ports)]
    return [[host, port], b58encode_int(10_000 + index).encode()]


def peers(build: Callable[[Arena], list[Any]]) -> Send:
    """A case that whispers a peers payload built from the arena."""

    async def send(peer: Hostile, arena: Arena) -> None:
        peer.send(flags.whisper, flags.peers, *build(arena))

    return send


async def nothing_dialled(arena: Arena, peer: Hostile) -> None:
    """The node dialled none of the sinks."""
    assert not arena.node._node._dialing, "the node is dialling"
    await task.deferLater(reactor, 0.3)
    assert arena.sunk == [], "the node dialled an address of a malformed message"


async def dials_bounded(arena: Arena, peer: Hostile) -> None:
    """The node dialled at most max_outgoing of the sinks, and at least one."""
    await wait_for(lambda: len(arena.sunk) >= 1, 10, "a dial")
    for _ in range(10):
        assert arena.node._node.outgoing_count() <= MAX_OUTGOING
        await task.deferLater(reactor, 0.03)
    assert 1 <= len(arena.sunk) <= MAX_OUTGOING, f"{len(arena.sunk)} dials from one peers message"


TARGET = new_node_id(MESH)


def response(build: Callable[[bytes | str, Arena], list[Any]]) -> Send:
    """
    A case that makes the node ask the mesh for TARGET's address (a reply
    to a node it is not connected to), then answers with a response built
    from the request ID.
    """

    async def send(peer: Hostile, arena: Arena) -> None:
        arena.node._node.reply(TARGET, ("hello",))
        await wait_for(lambda: peer.requests(), 10, "the node's request")
        request_id = peer.requests()[-1].payload[1]
        peer.send(flags.broadcast, flags.response, *build(request_id, arena))

    return send


async def request_still_pending(arena: Arena, peer: Hostile) -> None:
    """The request was not answered: nothing dialled, still waiting."""
    await nothing_dialled(arena, peer)
    assert any(pending.target == TARGET for pending in arena.node._node._requests.values())


async def many_codes(peer: Hostile, arena: Arena) -> None:
    """
    A handshake that lists zlib 2000 times, then one small frame that
    inflates to just under the limit and fails its checksum.
    """
    peer.codes = [flags.zlib] * 2000
    peer.handshake()
    await wait_for(lambda: peer.peers_messages() > 0 or peer.closed, 15)
    if peer.closed:
        return
    body = zlib.compress(b"\0" * (MAX_FRAME - 1024), 9)
    started = time.monotonic()
    peer.write(frame_of_body(body))
    await peer.barrier()
    spent = time.monotonic() - started
    assert spent < 2.0, (
        f"one {len(body)}-byte frame kept the node busy for {spent:.1f} s: "
        "it was inflated once for each of the 2000 (repeated) codes of the handshake"
    )


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
    check: Callable[[Arena, Hostile], Awaitable[None]] | None = None


TOO_LARGE = {"dropped.too_large": 1, "limit_hits.max_frame_size": 1}
MALFORMED = {"dropped.malformed": 1}
BAD_HANDSHAKE = {"handshake_failures.malformed": 1}
CLOSED_EARLY = {"handshake_failures.closed": 1}
SIZE_LOG = matches(r"max_frame_size|limit|exceeds|too large")
BAD_FRAME_LOG = matches(r"bad frame|malformed|msgpack|array|type|sender|time|extension|nest")
HANDSHAKE_LOG = matches(r"malformed handshake")
PEERS_LOG = matches(r"malformed peers")


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}
    # -- before any handshake --
    c["random-bytes"] = Case(
        frames(random_bytes), counters={**TOO_LARGE, **CLOSED_EARLY}, log=SIZE_LOG, handshake=False
    )
    c["random-frames"] = Case(
        frames(random_frames),
        counters={"dropped.bad_checksum": MAX_BAD_FRAMES + 1, **CLOSED_EARLY},
        log=matches("checksum"),
        handshake=False,
    )
    c["header-4GiB-before-handshake"] = Case(
        frames(lambda p: struct.pack(">I", 2**32 - 1)),
        counters={**TOO_LARGE, **CLOSED_EARLY},
        log=SIZE_LOG,
        handshake=False,
    )
    c["message-before-handshake"] = Case(
        message(flags.broadcast, flags.broadcast, "too early"),
        counters=BAD_HANDSHAKE,
        log=matches("before the handshake"),
        handshake=False,
    )
    c["whisper-before-handshake"] = Case(
        message(flags.whisper, flags.whisper, "too early"),
        counters=BAD_HANDSHAKE,
        log=matches("before the handshake"),
        handshake=False,
    )
    c["handshake-other-subnet"] = Case(
        handshake_payload(lambda p: hs(p, protocol=Protocol("other").id.encode())),
        counters={"handshake_failures.protocol_mismatch": 1},
        log=matches("protocol"),
        handshake=False,
    )
    c["handshake-other-transport"] = Case(
        handshake_payload(lambda p: hs(p, protocol=Protocol("mesh", "SSL").id)),
        counters={"handshake_failures.protocol_mismatch": 1},
        log=matches("protocol"),
        handshake=False,
    )
    c["handshake-as-broadcast"] = Case(
        message(flags.broadcast, flags.handshake, b"x", MESH.id.encode(), ["127.0.0.1", 1], []),
        counters=BAD_HANDSHAKE,
        log=matches("before the handshake"),
        handshake=False,
    )
    c["handshake-own-id"] = Case(
        _handshake_as_the_node(),
        counters={"handshake_failures.self": 1},
        log=matches("itself"),
        handshake=False,
    )
    bad_handshakes: dict[str, Callable[[Hostile], list[Any]]] = {
        "only-flag": lambda p: [flags.handshake],
        "too-short": lambda p: hs(p, drop=True),
        "too-long": lambda p: hs(p, extra=[1]),
        "id-int": lambda p: hs(p, id=5),
        "id-empty": lambda p: hs(p, id=b""),
        "id-non-base58": lambda p: hs(p, id=b"0OIl0OIl"),
        "id-non-ascii": lambda p: hs(p, id="\u00e9\u00e9\u00e9"),
        "id-list": lambda p: hs(p, id=[p.id]),
        "protocol-int": lambda p: hs(p, protocol=7),
        "protocol-none": lambda p: hs(p, protocol=None),
        "address-str": lambda p: hs(p, address="127.0.0.1:1"),
        "address-short": lambda p: hs(p, address=["127.0.0.1"]),
        "address-map": lambda p: hs(p, address={"host": "127.0.0.1", "port": 1}),
        "port-str": lambda p: hs(p, address=["127.0.0.1", "1"]),
        "port-70000": lambda p: hs(p, address=["127.0.0.1", 70000]),
        "port-negative": lambda p: hs(p, address=["127.0.0.1", -1]),
        "port-float": lambda p: hs(p, address=["127.0.0.1", 1.0]),
        "host-int": lambda p: hs(p, address=[127, 1]),
        "host-empty": lambda p: hs(p, address=["", 1]),
        "codes-int": lambda p: hs(p, codes=flags.zlib),
        "codes-str": lambda p: hs(p, codes=["zlib"]),
        "codes-none": lambda p: hs(p, codes=None),
        "codes-float": lambda p: hs(p, codes=[19.0]),
        "codes-nested": lambda p: hs(p, codes=[[flags.zlib]]),
    }
    for name, build in bad_handshakes.items():
        c[f"handshake-{name}"] = Case(
            handshake_payload(build), counters=BAD_HANDSHAKE, log=HANDSHAKE_LOG, handshake=False
        )

    # -- after a good handshake: frames --
    c["header-over-limit"] = Case(frames(lambda p: struct.pack(">I", MAX_FRAME + 1)), counters=TOO_LARGE, log=SIZE_LOG)
    c["truncated-frame-then-hang-up"] = Case(
        frames(lambda p: struct.pack(">I", 1000) + b"\0" * 500), counters={}, log=matches("left"), hang_up=True
    )
    c["bad-checksum-repeated"] = Case(
        frames(bad_checksums), counters={"dropped.bad_checksum": MAX_BAD_FRAMES + 1}, log=matches("checksum")
    )
    c["not-msgpack"] = Case(
        frames(lambda p: frame_of_serial(b"\xc1\xc1\xc1\xc1")), counters=MALFORMED, log=BAD_FRAME_LOG
    )
    c["msgpack-trailing-bytes"] = Case(
        frames(lambda p: frame_of_serial(msgpack.packb([0, p.id.encode(), now(), 0, "x"]) + b"\x00")),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    c["msgpack-truncated"] = Case(
        frames(lambda p: frame_of_serial(msgpack.packb([0, p.id.encode(), now(), 0, "x" * 40])[:-5])),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    c["msgpack-bad-utf8"] = Case(
        frames(lambda p: frame_of_serial(b"\x95\x00\xa3\xff\xfe\xfd\x01\x00\xa1x")),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    c["not-an-array-map"] = Case(fields(lambda p: {"msg_type": 0}), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["not-an-array-int"] = Case(fields(lambda p: 5), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["not-an-array-str"] = Case(fields(lambda p: "hello"), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["array-empty"] = Case(fields(lambda p: []), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["array-too-short"] = Case(fields(lambda p: [0, p.id.encode(), now()]), counters=MALFORMED, log=BAD_FRAME_LOG)
    for name, msg_type in {"str": "0", "negative": -1, "128": 128, "float": 0.0, "bool": False, "none": None,
                           "bin": b"\x00", "list": [0]}.items():  # fmt: skip
        c[f"msg-type-{name}"] = Case(
            fields(lambda p, t=msg_type: [t, p.id.encode(), now(), 0, "x"]), counters=MALFORMED, log=BAD_FRAME_LOG
        )
    for name, sender in {"int": 5, "none": None, "empty-bin": b"", "empty-str": "", "list": [b"x"], "map": {1: 2},
                         "float": 1.5, "non-ascii-str": "\u00e9" * 40,
                         "non-ascii-bin": "\u00e9".encode() * 20}.items():  # fmt: skip
        c[f"sender-{name}"] = Case(
            fields(lambda p, s=sender: [0, s, now(), 0, "x"]), counters=MALFORMED, log=BAD_FRAME_LOG
        )
    for name, stamp in {"str": "now", "float": 1.5, "none": None, "bool": True, "bin": b"1", "list": [1]}.items():
        c[f"time-{name}"] = Case(
            fields(lambda p, t=stamp: [0, p.id.encode(), t, 0, "x"]), counters=MALFORMED, log=BAD_FRAME_LOG
        )
    exts: dict[str, Callable[[Hostile], Any]] = {
        "payload": lambda p: [0, p.id.encode(), now(), 0, msgpack.ExtType(5, b"x")],
        "timestamp-payload": lambda p: [0, p.id.encode(), now(), 0, msgpack.Timestamp(now())],
        "timestamp-time": lambda p: [0, p.id.encode(), msgpack.Timestamp(now()), 0, "x"],
        "timestamp-map-key": lambda p: [0, p.id.encode(), now(), 0, {msgpack.Timestamp(1): 1}],
        "sender": lambda p: [0, msgpack.ExtType(1, p.id.encode()), now(), 0, "x"],
        "deep": lambda p: [0, p.id.encode(), now(), 0, deep(5, msgpack.ExtType(3, b""))],
    }
    for name, build in exts.items():
        c[f"ext-{name}"] = Case(fields(build), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["ext-reserved-negative-code"] = Case(
        # msgpack's own ExtType refuses codes below 0: fixext1 with code -100 by hand.
        frames(lambda p: frame_of_serial(head(p) + b"\xd4" + struct.pack("b", -100) + b"x")),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    depth = Limits.max_depth
    c["nested-lists-too-deep"] = Case(
        fields(lambda p: [0, p.id.encode(), now(), 0, deep(depth + 8)]), counters=MALFORMED, log=BAD_FRAME_LOG
    )
    c["nested-maps-too-deep"] = Case(
        fields(lambda p: [0, p.id.encode(), now(), 0, deep_map(depth + 8)]), counters=MALFORMED, log=BAD_FRAME_LOG
    )
    c["nested-lists-thousands-deep"] = Case(
        # Deeper than msgpack's own packer goes: written by hand.
        frames(lambda p: frame_of_serial(head(p) + b"\x91" * 5000 + b"\x00")),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    for code in (flags.zlib, flags.gzip, flags.bz2, flags.lzma):
        # Counted as a dropped frame (limits.py), not as a limit hit.
        c[f"bomb-{compression.NAMES[code]}"] = Case(
            frames(bomb(code)), counters={"dropped.too_large": 1}, log=SIZE_LOG, codes=(code,)
        )
    c["bomb-not-listed"] = Case(
        # zlib is not in the peer's list: the body is read raw, and fails its checksum.
        frames(bomb(flags.zlib)),
        closed=False,
        counters={"dropped.bad_checksum": 1},
        log=matches("checksum"),
    )
    c["many-repeated-codes"] = Case(many_codes, closed=None, log=ANY_LINE, handshake=False)
    c["renegotiate-codes-str"] = Case(
        message(flags.renegotiate, flags.compression, "zlib"), log=matches("renegotiation")
    )
    c["second-handshake-other-id"] = Case(
        handshake_payload(lambda p: hs(p, id=new_node_id(MESH).encode())), counters={}, log=matches("changed its ID")
    )

    # -- after a good handshake: messages that are dropped --
    c["broadcast-an-hour-old"] = Case(
        message(flags.broadcast, flags.broadcast, "old", stamp=now() - 3600),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("older than"),
    )
    c["broadcast-time-zero"] = Case(
        message(flags.broadcast, flags.broadcast, "old", stamp=0),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("older than"),
    )
    c["broadcast-time-most-negative"] = Case(
        message(flags.broadcast, flags.broadcast, "old", stamp=-(2**63)),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("older than"),
    )
    c["broadcast-an-hour-ahead"] = Case(
        message(flags.broadcast, flags.broadcast, "ahead", stamp=now() + 3600),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("stamped ahead"),
    )
    c["broadcast-time-most-positive"] = Case(
        message(flags.broadcast, flags.broadcast, "ahead", stamp=2**64 - 1),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("stamped ahead"),
    )
    c["broadcast-sender-longer-than-an-id"] = Case(
        message(flags.broadcast, flags.broadcast, "who am I", sender="2" * 200), closed=None, counted=True
    )
    c["broadcast-non-base58-sender"] = Case(
        message(flags.broadcast, flags.broadcast, "who am I", sender="0OIl-not-base58!"), closed=None, counted=True
    )
    c["whisper-non-base58-sender"] = Case(
        message(flags.whisper, flags.whisper, "who am I", sender="0OIl-not-base58!"), closed=None, counted=True
    )
    c["peers-10000-entries"] = Case(
        peers(lambda a: [[valid_entry(a, i) for i in range(10_000)]]),
        closed=False,
        counters={"limit_hits.max_peers_per_message": 1},
        log=matches("max_peers_per_message"),
        check=dials_bounded,
    )
    bad_peers: dict[str, Callable[[Arena], list[Any]]] = {
        "no-list": lambda a: [],
        "str": lambda a: ["127.0.0.1:1"],
        "map": lambda a: [{"127.0.0.1": 1}],
        "extra-field": lambda a: [[valid_entry(a)], "extra"],
        "entry-str": lambda a: [[valid_entry(a, 0), valid_entry(a, 1), "127.0.0.1:1"]],
        "entry-short": lambda a: [[valid_entry(a, 0), [["127.0.0.1", 1]]]],
        "entry-long": lambda a: [[valid_entry(a, 0), [*valid_entry(a, 1), "x"]]],
        "port-str": lambda a: [[valid_entry(a, 0), [["127.0.0.1", "1"], b"abc"]]],
        "port-70000": lambda a: [[valid_entry(a, 0), [["127.0.0.1", 70000], b"abc"]]],
        "host-int": lambda a: [[valid_entry(a, 0), [[127, 1], b"abc"]]],
        "id-int": lambda a: [[valid_entry(a, 0), [["127.0.0.1", 1], 7]]],
        "id-empty": lambda a: [[valid_entry(a, 0), [["127.0.0.1", 1], b""]]],
    }
    for name, build in bad_peers.items():
        c[f"peers-{name}"] = Case(peers(build), closed=False, counted=True, log=PEERS_LOG, check=nothing_dialled)
    bad_requests: dict[str, Send] = {
        "whisper-alone": message(flags.whisper, flags.request),
        "whisper-int": message(flags.whisper, flags.request, 5),
        "whisper-list": message(flags.whisper, flags.request, [b"*"]),
        "broadcast-target-int": message(flags.broadcast, flags.request, b"rid", 12345),
        "broadcast-id-map": message(flags.broadcast, flags.request, {"a": 1}, [1]),
    }
    for name, send in bad_requests.items():
        c[f"request-{name}"] = Case(send, closed=False, counted=True, log=matches("request"))
    bad_responses: dict[str, Callable[[bytes | str, Arena], list[Any]]] = {
        "no-info": lambda rid, a: [rid],
        "info-str": lambda rid, a: [rid, "127.0.0.1:1"],
        "port-str": lambda rid, a: [rid, [["127.0.0.1", "1"], TARGET.encode()]],
        "target-int": lambda rid, a: [rid, [list(a.sink_addresses()[0]), 7]],
        "info-long": lambda rid, a: [rid, [list(a.sink_addresses()[0]), TARGET.encode(), b"x"]],
    }
    for name, build in bad_responses.items():
        c[f"response-{name}"] = Case(
            response(build), closed=False, counted=True, log=matches("response"), check=request_still_pending
        )
    return c


def _handshake_as_the_node() -> Send:
    async def send(peer: Hostile, arena: Arena) -> None:
        peer.handshake(node_id=arena.node.id)

    return send


CASES = _cases()


async def run_case(arena: Arena, name: str, case: Case) -> tuple[Hostile, int, Counter[str]]:
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


async def check_case(arena: Arena, name: str, case: Case, peer: Hostile, mark: int, before: Counter[str]) -> None:
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


@pytest.mark.parametrize("name", list(CASES))
@pytest_twisted.ensureDeferred
async def test_hostile_input(make_arena: ArenaFactory, name: str) -> None:
    """
    One kind of garbage from a raw connection while the good peers keep
    broadcasting: the connection is closed or the message dropped, with a
    log line and the counters moved, and every good broadcast is delivered
    exactly once, nothing else.
    """
    case = CASES[name]
    arena = await make_arena()
    arena.start_traffic()
    await arena.traffic_flowing()
    peer, mark, before = await run_case(arena, name, case)
    await check_case(arena, name, case, peer, mark, before)
    await arena.stop_traffic()
    assert arena.node.running and arena.node.ports
    arena.assert_no_tracebacks()


@pytest_twisted.ensureDeferred
async def test_all_garbage_at_once(make_arena: ArenaFactory) -> None:
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
    late = MeshSocket("127.0.0.1", 0, MESH, max_outgoing=0)
    try:
        await within(late.connect("127.0.0.1", arena.node.out_addr[1]))
        arena.good["A"].send("welcome")
        msg = await within(late.next_message())
        assert msg.packets == (flags.broadcast, "welcome")
    finally:
        await late.close()
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
    halfway.write(frame[: len(frame) // 2])
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


# -- a peer that stops reading --------------------------------------------------------


def slow_socket(port: int, node_id: str) -> socket.socket:
    """
    A blocking socket with a tiny receive buffer, connected to the node and
    handshaken, that is never read from.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    payload = (flags.handshake, node_id.encode(), MESH.id.encode(), ["127.0.0.1", 1], [])
    sock.sendall(WireMessage.create(flags.whisper, node_id, now(), payload).frame(True, None))
    return sock


async def collect(sock: MeshSocket, count: int, got: list[Message], timeout: float = 60) -> None:
    """Wait until ``got`` (filled by a 'message' callback) holds ``count`` messages."""
    await wait_for(lambda: len(got) >= count, timeout, f"{count} messages")


def gather_messages(sock: MeshSocket) -> list[Message]:
    """Every message ``sock`` delivers from now on, in order."""
    got: list[Message] = []
    sock.on("message", lambda s: got.extend(s.recv(10_000)))  # type: ignore[arg-type]
    return got


@pytest_twisted.ensureDeferred
async def test_slow_peer_is_cut_off_and_memory_stays_bounded(captured: list[LogEvent]) -> None:
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
    node = MeshSocket("127.0.0.1", 0, MESH, max_outgoing=0, limits=limits)
    good = MeshSocket("127.0.0.1", 0, MESH, max_outgoing=0)
    slow_id = new_node_id(MESH)
    slow: socket.socket | None = None
    try:
        got = gather_messages(good)
        await within(good.connect("127.0.0.1", node.out_addr[1]))
        slow = slow_socket(node.out_addr[1], slow_id)
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
                backlog = max(backlog, transport_backlog(link) + link._unwritten_size)
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
        text = "\n".join(formatEvent(event) for event in captured)
        assert re.search(r"limit max_send_buffer .*not queuing more", text)
        assert backlog <= limits.max_send_buffer + 100_200 + 2 * 64 * 1024 + 100_200, backlog
        assert peak < 64 * 1024 * 1024, f"traced memory grew by {peak / 1e6:.1f} MB"
        # The node lets go of the slow peer by itself, once it made no progress for 5 s.
        await wait_for(lambda: slow_id not in node.routing_table, 30, "the slow peer to be gone")
        assert hits["congestion_timeout"] == 1, dict(hits)
        text = "\n".join(formatEvent(event) for event in captured)
        assert re.search(rf"closing the connection to {slow_id}: the peer read nothing for 5 s", text)
        after = node.send("after")
        assert after.queued == [good.id] and slow_id not in after.skipped
        assert (await within(good.next_message())).packets == (flags.broadcast, "after")
        assert not any("log_failure" in event for event in captured)
    finally:
        if slow is not None:
            slow.close()
        await defer.gatherResults([node.close(), good.close()])


@pytest_twisted.ensureDeferred
async def test_slow_peer_that_catches_up_is_kept(captured: list[LogEvent]) -> None:
    """
    A peer that stops reading until its backlog builds up in the node, then
    reads again before its budget or the congestion timeout runs out: it is
    not disconnected, and it gets every message once, as does a good peer.
    """
    limits = Limits(max_send_buffer=1_000_000, congestion_timeout=10)
    node = MeshSocket("127.0.0.1", 0, MESH, max_outgoing=0, limits=limits)
    good = MeshSocket("127.0.0.1", 0, MESH, max_outgoing=0)
    try:
        got = gather_messages(good)
        await within(good.connect("127.0.0.1", node.out_addr[1]))
        reader = Hostile()
        await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", node.out_addr[1]), reader))
        await reader.join()
        link = node.routing_table[reader.id]
        assert reader.transport is not None
        reader.transport.pauseProducing()  # type: ignore[attr-defined]
        rng = random.Random(12)
        sent = 0
        backed_up = 0
        while backed_up < 2:
            assert sent < 400, "the node's buffer for the paused peer never filled"
            node.send(sent, rng.randbytes(50_000))
            sent += 1
            await task.deferLater(reactor, 0.05)
            backed_up = backed_up + 1 if transport_backlog(link) > 0 else 0
        for _ in range(4):
            node.send(sent, rng.randbytes(50_000))
            sent += 1
        assert any(f"peer {reader.id} is slow to read" in formatEvent(event) for event in captured)
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
    finally:
        await defer.gatherResults([node.close(), good.close()])


@pytest_twisted.ensureDeferred
async def test_slow_peer_does_not_stall_the_relay_for_good(captured: list[LogEvent]) -> None:
    """
    A feeder broadcasts 6 MB through the node to a good peer, while a slow
    peer of the node never reads.  The node stops reading from the feeder
    while the slow peer is congested (backpressure) and cuts the slow peer
    off after congestion_timeout (3 s); from then on nothing holds the relay
    back: the feeder's waiting broadcasts flow again at once (well within
    5 s), the feeder's link survives (its own congestion_timeout is 8 s),
    and the good peer gets every broadcast once.
    """
    node = MeshSocket(
        "127.0.0.1", 0, MESH, max_outgoing=0, limits=Limits(max_send_buffer=1_000_000, congestion_timeout=3)
    )
    good = MeshSocket("127.0.0.1", 0, MESH, max_outgoing=0)
    feeder = MeshSocket("127.0.0.1", 0, MESH, max_outgoing=0, limits=Limits(congestion_timeout=8))
    slow_id = new_node_id(MESH)
    slow: socket.socket | None = None
    try:
        arrivals: list[tuple[int, float]] = []
        good.on("message", lambda s: arrivals.extend((m.packets[1], time.time()) for m in s.recv(10_000)))
        await within(good.connect("127.0.0.1", node.out_addr[1]))
        await within(feeder.connect("127.0.0.1", node.out_addr[1]))
        slow = slow_socket(node.out_addr[1], slow_id)
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
            for event in captured
            if event.get("log_source") is node._node
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
        assert not any("log_failure" in event for event in captured)
    finally:
        if slow is not None:
            slow.close()
        await defer.gatherResults([node.close(), good.close(), feeder.close()])


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
