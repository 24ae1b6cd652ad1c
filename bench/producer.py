"""
A producer: a node's user sends messages in batches of 500, with a good
peer that reads (a node on the same reactor) and, optionally, a peer that
handshakes and never reads.  Paced, it waits on ``drained()`` between
batches; unpaced, it only lets the reactor turn.

    python -m bench.producer --count 100000 --size 2000
    python -m bench.producer --count 100000 --size 2000 --stuck --congestion-timeout 5
    python -m bench.producer --count 100000 --size 2000 --stuck --unpaced

Prints one JSON line: the rate at which the good peer received, how many
were skipped for it (none, when the producer waits), the growth of the
process's RSS, and when the peer that never reads was cut off.
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

from twisted.internet import defer, task

from bench._common import report, rss_bytes

#: Messages sent between two waits on drained().
BATCH = 500


def _never_reading(port: int) -> tuple[socket.socket, str]:
    """A handshaken peer of the node on ``port`` that reads nothing: its socket and ID."""
    from twisted_mesh import Network, flags
    from twisted_mesh._frames import WireMessage
    from twisted_mesh._ids import new_node_id

    mesh = Network("mesh", "Plaintext")
    node_id = new_node_id(mesh)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    payload = (flags.handshake, node_id.encode(), mesh.id.encode(), ["127.0.0.1", 1], [])
    sock.sendall(WireMessage.create(flags.whisper, node_id, int(time.time()), payload).frame(True, None))
    return sock, node_id


async def produce(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    from twisted_mesh import Limits, MeshSocket

    limits = Limits(congestion_timeout=args.congestion_timeout)
    node = MeshSocket("127.0.0.1", 0, max_outgoing=0, limits=limits, reactor=reactor)
    good = MeshSocket("127.0.0.1", 0, max_outgoing=0, reactor=reactor)
    arrived = [0]
    good.on("message", lambda sock: arrived.__setitem__(0, arrived[0] + len(sock.recv(100_000))))
    stuck: socket.socket | None = None
    try:
        await good.connect("127.0.0.1", node.out_addr[1])
        if args.stuck:
            stuck, stuck_id = _never_reading(node.out_addr[1])
            while stuck_id not in node.routing_table:
                await task.deferLater(reactor, 0.01)
        body = b"x" * args.size
        base_rss = peak_rss = rss_bytes()
        skipped = 0
        cut_at: float | None = None
        arrived_at_cut = 0
        start = time.perf_counter()
        cpu = time.process_time()
        for i in range(args.count):
            result = node.send(i, body)
            skipped += good.id not in result.queued
            if i % BATCH == BATCH - 1:
                await (task.deferLater(reactor, 0) if args.unpaced else node.drained())
                peak_rss = max(peak_rss, rss_bytes())
                if cut_at is None and args.stuck and stuck_id not in node.routing_table:
                    cut_at, arrived_at_cut = time.perf_counter() - start, arrived[0]
        while arrived[0] < args.count - skipped:
            await task.deferLater(reactor, 0.001)
        elapsed = time.perf_counter() - start
        return {
            "count": args.count,
            "size": args.size,
            "stuck": args.stuck,
            "paced": not args.unpaced,
            "congestion_timeout": args.congestion_timeout,
            "delivered": arrived[0],
            "skipped": skipped,
            "seconds": elapsed,
            "rate": arrived[0] / elapsed,
            "rate_after_cut": (arrived[0] - arrived_at_cut) / (elapsed - cut_at) if cut_at is not None else None,
            "cut_after": cut_at,
            "cpu_us": (time.process_time() - cpu) / max(arrived[0], 1) * 1e6,
            "rss_growth": peak_rss - base_rss,
        }
    finally:
        if stuck is not None:
            stuck.close()
        await defer.gatherResults([node.close(), good.close()])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer", description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--stuck", action="store_true", help="attach a peer that never reads")
    parser.add_argument("--unpaced", action="store_true", help="let the reactor turn between batches, no more")
    parser.add_argument("--congestion-timeout", type=float, default=5.0)
    args = parser.parse_args()

    async def run(reactor: Any) -> None:
        report(await produce(reactor, args))

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
