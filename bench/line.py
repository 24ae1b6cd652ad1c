"""
A line of three nodes, A - B - C: A broadcasts, B relays, C counts.

Two implementations live here, both on Twisted:

- ``mesh``: twisted_mesh ``MeshSocket`` objects (``max_outgoing=0``, so the line stays
  a line);
- ``raw``: the practical ceiling, an ``Int32StringReceiver`` relay that does
  nothing but pass each string on (no checksum, no msgpack, no seen-set);
- ``checked``: the same relay doing the one thing per hop that the protocol
  cannot skip: A packs and checksums each message as a mesh body, B and C
  check the checksum and decode the msgpack of each one.

Each runs in one process (``inproc``: the three nodes share a reactor; A keeps
a window of messages in flight and refills it as C arrives) or as one role of
a process-per-node line (``role``: A sends as fast as its link drains, see
`.bench.run`).  Results are JSON lines on stdout.

    python -m bench.line inproc --impl mesh --size 100 --count 20000 --runs 5
    python -m bench.line inproc --impl mesh --signed --size 100 --count 5000 --runs 3

``--signed`` runs the twisted_mesh line on a signed network, and reports
the signatures made and checked per message delivered and the CPU time
they took (``crypto_us``), beside the CPU of the whole process (``cpu_us``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from hashlib import sha256
from typing import Any

import msgpack
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

from bench._common import MAX_PAYLOAD, STALL_SECONDS, Flow, filler, median_run, payload, report, run_of, window_for

# -- twisted_mesh --------------------------------------------------------------


def _mesh_socket(reactor: Any, signed: bool = False) -> Any:
    from twisted_mesh import MeshSocket, Network

    return MeshSocket("127.0.0.1", 0, Network("mesh", signed=signed), max_outgoing=0, reactor=reactor)


class CryptoMeter:
    """
    Counts the signatures made and checked in this process, and the CPU
    time they take (the thread's, so that other jobs on the machine do not
    count): a signed line's CPU split into its crypto and the rest.
    """

    def __init__(self) -> None:
        from twisted_mesh import _signing, keys

        self.signs = self.verifies = 0
        self.seconds = 0.0
        sign, verify = keys.NodeKey.sign, _signing.verify

        def timed_sign(key: Any, data: bytes) -> bytes:
            start = time.thread_time()
            try:
                return sign(key, data)
            finally:
                self.seconds += time.thread_time() - start
                self.signs += 1

        def timed_verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
            start = time.thread_time()
            try:
                return verify(public_key, signature, data)
            finally:
                self.seconds += time.thread_time() - start
                self.verifies += 1

        keys.NodeKey.sign = timed_sign  # type: ignore[method-assign]
        _signing.verify = timed_verify

    def reading(self) -> tuple[int, int, float]:
        """Signatures made, checked, and the seconds they took, so far."""
        return self.signs, self.verifies, self.seconds


def _use_codec(codec: str) -> None:
    """
    Make this process's nodes list only ``codec`` (``"off"``: none), so that
    their links agree on it; ``"default"`` leaves what is installed.
    """
    from twisted_mesh import _compression, flags

    if codec != "default":
        _compression.SUPPORTED = {"off": (), "zlib": (flags.zlib,), "snappy": (flags.snappy,)}[codec]


async def _mesh_line(reactor: Any, signed: bool = False) -> list[Any]:
    nodes = [_mesh_socket(reactor, signed) for _ in range(3)]
    for before, after in zip(nodes, nodes[1:], strict=False):
        await after.connect("127.0.0.1", before.out_addr[1])
    while len(nodes[1].routing_table) < 2 or not nodes[0].routing_table:
        await task.deferLater(reactor, 0.01, lambda: None)
    return nodes


def _mesh_sink(node: Any, run: list[int], arrived: Callable[[], None]) -> None:
    def handler(msg: Any, link: Any) -> bool:
        if run_of(msg.packets[1]) == run[0]:
            arrived()
        return True

    node.register_handler(handler)


# -- the raw relay -------------------------------------------------------------


class _Raw(Int32StringReceiver):
    MAX_LENGTH = MAX_PAYLOAD + 1024
    factory: _RawFactory

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        self.factory.made.append(self)

    def stringReceived(self, data: bytes) -> None:
        self.factory.on_string(data)


class _RawFactory(Factory):
    protocol = _Raw
    noisy = False

    def __init__(self, on_string: Callable[[bytes], object] = lambda data: None) -> None:
        self.on_string = on_string
        self.made: list[_Raw] = []


@implementer(IPushProducer)
class _PauseReading:
    """The relay's way to stop reading A while its link to C is full."""

    def __init__(self, incoming: list[_Raw]) -> None:
        self.incoming = incoming

    def pauseProducing(self) -> None:
        for link in self.incoming:
            link.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        for link in self.incoming:
            link.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        pass


#: A node ID's length, for the sender field of a checked body.
_SENDER = b"1" * 66


def _sealed(data: bytes) -> bytes:
    """``data`` as a mesh body carries it: checksum + msgpack([type, sender, time, subflag, data])."""
    serial = msgpack.packb([0, _SENDER, int(time.time()), 0, data])
    return sha256(serial).digest() + serial


def _opened(body: bytes) -> bytes:
    """The data of a checked body, once its checksum holds and it decodes."""
    serial = body[32:]
    if sha256(serial).digest() != body[:32]:
        raise ValueError("checksum mismatch")
    data: bytes = msgpack.unpackb(serial)[4]
    return data


def _relaying(impl: str, send: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """What B does with each string: pass it on, checking it first (``checked``)."""
    if impl == "raw":
        return send

    def check_and_send(body: bytes) -> None:
        _opened(body)
        send(body)

    return check_and_send


def _sealing(impl: str, send: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """What A does with each payload: send it, sealed first (``checked``)."""
    if impl == "raw":
        return send
    return lambda data: send(_sealed(data))


async def _raw_listen(reactor: Any, on_string: Callable[[bytes], object]) -> tuple[_RawFactory, int]:
    factory = _RawFactory(on_string)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    return factory, port.getHost().port


async def _raw_dial(reactor: Any, port: int) -> _Raw:
    factory = _RawFactory()
    link = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    assert isinstance(link, _Raw)
    return link


async def _raw_relay(reactor: Any, sink_port: int, impl: str) -> tuple[_RawFactory, int]:
    """B: accept A, dial C, pass every string from A to C."""
    out = await _raw_dial(reactor, sink_port)
    incoming, port = await _raw_listen(reactor, _relaying(impl, out.sendString))
    out.transport.registerProducer(_PauseReading(incoming.made), True)  # type: ignore[union-attr]
    return incoming, port


# -- one process ---------------------------------------------------------------


async def inproc(reactor: Any, args: argparse.Namespace) -> None:
    size, fill = args.size, filler(args.size, args.payload)
    run = [0]
    flow: list[Flow] = []
    meter = CryptoMeter() if args.signed else None
    if args.impl == "mesh":
        _use_codec(args.codec)
        a, b, c = await _mesh_line(reactor, args.signed)
        _mesh_sink(c, run, lambda: flow[0].arrival())
        b.register_handler(lambda msg, link: True)  # B's user takes its messages too

        def send(index: int) -> None:
            a.send(payload(size, run[0], index, fill))

    else:
        impl = args.impl

        def count(data: bytes) -> None:
            if run_of(data) == run[0]:
                flow[0].arrival()

        def open_and_count(body: bytes) -> None:
            count(_opened(body))

        sink, sink_port = await _raw_listen(reactor, count if impl == "raw" else open_and_count)
        _, relay_port = await _raw_relay(reactor, sink_port, impl)
        source = await _raw_dial(reactor, relay_port)
        while not sink.made:
            await task.deferLater(reactor, 0.01, lambda: None)

        seal = _sealing(impl, source.sendString)

        def send(index: int) -> None:
            seal(payload(size, run[0], index, fill))

    window = args.window or window_for(size)
    results = []
    extra: dict[str, Any] = {}
    for number in range(args.runs + 1):
        run[0] = number
        total = args.warmup if number == 0 else args.count
        flow[:] = [Flow(reactor, send, total, window)]
        before = meter.reading() if meter is not None else None
        result = await flow[0].start()
        if meter is not None and before is not None:
            signs, verifies, seconds = (after - then for after, then in zip(meter.reading(), before, strict=True))
            delivered = max(result["delivered"], 1)
            result["signs_per_msg"], result["verifies_per_msg"] = signs / delivered, verifies / delivered
            result["crypto_us"] = seconds / delivered * 1e6
        if number:
            results.append(result)
        await task.deferLater(reactor, 0.05, lambda: None)
    if args.impl == "mesh":
        link = next(iter(a.routing_table.values()))
        extra["frame_bytes"] = link.stats.bytes_out / link.stats.frames_out
        extra["compression"] = link.compression_name()
    if meter is not None:
        for name in ("signs_per_msg", "verifies_per_msg", "crypto_us"):
            extra[name] = sorted(result[name] for result in results)[len(results) // 2]
    report(
        {
            "impl": args.impl,
            "size": size,
            "payload": args.payload,
            "window": window,
            "signed": args.signed,
            **extra,
            **median_run(results),
        }
    )


# -- one process per node --------------------------------------------------------


async def role(reactor: Any, args: argparse.Namespace) -> None:
    """
    One node of a process-per-node line.  Each prints ``{"ready": port}``
    once it is connected; A then sends ``warmup`` messages (run 0), waits a
    moment, notes ``t0`` and sends ``count`` messages (run 1) as fast as its
    link drains; C prints ``{"done": ...}`` with the time of the last one.
    """
    if args.impl == "mesh":
        _use_codec(args.codec)
    if args.role == "sink":
        await _sink_role(reactor, args)
    elif args.role == "relay":
        if args.impl == "mesh":
            node = _mesh_socket(reactor)
            await node.connect("127.0.0.1", args.connect)
            report({"ready": node.out_addr[1]})
        else:
            _, port = await _raw_relay(reactor, args.connect, args.impl)
            report({"ready": port})
        await defer.Deferred()  # until killed
    else:
        await _source_role(reactor, args)


async def _sink_role(reactor: Any, args: argparse.Namespace) -> None:
    state = {"count": 0, "last": 0.0, "progress": time.monotonic()}
    finished: defer.Deferred[None] = defer.Deferred()

    def arrived(data: bytes) -> None:
        if args.impl == "checked":
            data = _opened(data)
        if run_of(data) != 1:
            return
        state["count"] += 1
        state["last"] = time.monotonic()
        if state["count"] >= args.count and not finished.called:
            finished.callback(None)

    if args.impl == "mesh":
        node = _mesh_socket(reactor)
        node.register_handler(lambda msg, link: arrived(msg.packets[1]) or True)
        report({"ready": node.out_addr[1]})
    else:
        _, port = await _raw_listen(reactor, arrived)
        report({"ready": port})

    def check() -> None:
        if finished.called:
            return
        if state["count"] and time.monotonic() - state["last"] > STALL_SECONDS:
            finished.callback(None)
            return
        reactor.callLater(1.0, check)

    reactor.callLater(1.0, check)
    await finished
    report({"done": {"delivered": state["count"], "last": state["last"]}})


async def _source_role(reactor: Any, args: argparse.Namespace) -> None:
    fill = filler(args.size, args.payload)
    # Fired when A's link has written all it was given, after it said it was full.
    drained: list[defer.Deferred[None]] = []

    def on_drained(*_: object) -> None:
        waiting = drained[:]
        del drained[:]
        for d in waiting:
            d.callback(None)

    if args.impl == "mesh":
        node = _mesh_socket(reactor)
        await node.connect("127.0.0.1", args.connect)
        link_transport = next(iter(node.routing_table.values())).transport
        # The node hears of its link draining (after a pause): so do we.
        link_drained = node._node.link_drained

        def note_drained(link: Any) -> None:
            link_drained(link)
            on_drained()

        node._node.link_drained = note_drained

        def send(data: bytes) -> None:
            node.send(data)

    else:
        link = await _raw_dial(reactor, args.connect)
        link_transport = link.transport

        @implementer(IPushProducer)
        class Drained:
            def pauseProducing(self) -> None:
                pass

            def resumeProducing(self) -> None:
                on_drained()

            def stopProducing(self) -> None:
                pass

        # A producer makes the transport say when its buffer is full (producerPaused), then drained.
        link_transport.registerProducer(Drained(), True)
        send = _sealing(args.impl, link.sendString)
    report({"ready": 0})

    async def burst(run: int, total: int) -> None:
        sent = 0
        while sent < total:
            while sent < total and not link_transport.producerPaused:
                send(payload(args.size, run, sent, fill))
                sent += 1
            if link_transport.producerPaused:
                waiting: defer.Deferred[None] = defer.Deferred()
                drained.append(waiting)
                await waiting

    await burst(0, args.warmup)
    await task.deferLater(reactor, 1.0, lambda: None)
    t0 = time.monotonic()
    await burst(1, args.count)
    report({"t0": t0})
    await defer.Deferred()  # until killed: closing would race the last frames


# -- the command line ------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("mode", choices=("inproc", "role"))
    parser.add_argument("--impl", choices=("mesh", "raw", "checked"), default="mesh")
    parser.add_argument("--role", choices=("source", "relay", "sink"))
    parser.add_argument("--connect", type=int, help="the port of the next node (role mode)")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=int, default=0, help="messages in flight (inproc); 0: about 1 MiB")
    parser.add_argument(
        "--codec",
        choices=("default", "off", "zlib", "snappy"),
        default="default",
        help="the compression the nodes offer (mesh)",
    )
    parser.add_argument("--payload", choices=("random", "text"), default="random", help="incompressible or not")
    parser.add_argument("--signed", action="store_true", help="a signed network, its crypto measured (mesh, inproc)")
    args = parser.parse_args(argv)
    if args.signed and (args.impl != "mesh" or args.mode != "inproc"):
        parser.error("--signed is for --impl mesh, inproc")
    if args.size > MAX_PAYLOAD:
        parser.error(f"--size is at most {MAX_PAYLOAD}")
    command = inproc if args.mode == "inproc" else role
    task.react(lambda reactor: defer.ensureDeferred(command(reactor, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
