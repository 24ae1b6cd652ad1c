"""
Many twisted_mesh nodes in one process, meshed by peer exchange: latency,
delivery, amplification, connections, memory, and the seen-set under load.

    python -m bench.mesh latency --nodes 100 --broadcasts 200
    python -m bench.mesh memory --nodes 100
    python -m bench.mesh seen --count 200000
    python -m bench.mesh seen-alone --count 1000000

Each prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections import deque
from typing import Any

from twisted.internet import defer, task

from bench._common import Flow, filler, payload, percentile, report, rss_bytes, window_for

#: Seconds the link count must stay still for a mesh to count as settled.
SETTLE_SECONDS = 1.0


def _socket(reactor: Any, max_outgoing: int) -> Any:
    from twisted_mesh import MeshSocket

    return MeshSocket("127.0.0.1", 0, max_outgoing=max_outgoing, reactor=reactor)


async def _sleep(reactor: Any, seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def _settle(reactor: Any, nodes: list[Any], timeout: float = 60.0) -> float:
    """Wait until no link comes or goes for `.SETTLE_SECONDS`; return how long it took."""
    start = last_change = time.monotonic()
    links = -1
    while time.monotonic() - start < timeout:
        now_links = sum(len(node.routing_table) for node in nodes)
        dialling = sum(len(node._node.exchange.dialing) for node in nodes)
        if now_links != links or dialling:
            links, last_change = now_links, time.monotonic()
        elif time.monotonic() - last_change >= SETTLE_SECONDS:
            break
        await _sleep(reactor, 0.05)
    return last_change - start


async def _join(reactor: Any, nodes: list[Any], seed: int) -> None:
    """Each node dials one random earlier node; peer exchange does the rest."""
    rng = random.Random(seed)
    for index in range(1, len(nodes)):
        other = nodes[rng.randrange(index)]
        await nodes[index].connect("127.0.0.1", other.out_addr[1])


def _connections(nodes: list[Any]) -> dict[str, Any]:
    made = sum(node.stats.connections["out"] for node in nodes)
    kept = sum(len(node.routing_table) for node in nodes) // 2
    degrees = [len(node.routing_table) for node in nodes]
    # Is the mesh one piece?
    index = {node.id: i for i, node in enumerate(nodes)}
    seen, todo = {0}, deque([0])
    while todo:
        for peer in nodes[todo.popleft()].routing_table:
            if index[peer] not in seen:
                seen.add(index[peer])
                todo.append(index[peer])
    return {
        "made": made,
        "kept": kept,
        "handshake_failures": sum(sum(node.stats.handshake_failures.values()) for node in nodes),
        "degree_min": min(degrees),
        "degree_max": max(degrees),
        "degree_mean": sum(degrees) / len(degrees),
        "connected": len(seen) == len(nodes),
    }


async def latency(reactor: Any, args: argparse.Namespace) -> None:
    n = args.nodes
    nodes = [_socket(reactor, args.max_outgoing) for _ in range(n)]
    await _join(reactor, nodes, args.seed)
    settle = await _settle(reactor, nodes)
    links = _connections(nodes)
    index = {node.id: i for i, node in enumerate(nodes)}

    # times[b][i]: when node i got broadcast b (perf_counter seconds).
    times: list[dict[int, float]] = []
    duplicates = [0]
    complete: list[defer.Deferred[None]] = []

    def handler_of(i: int) -> Any:
        def handler(msg: Any, link: Any) -> bool:
            b = int.from_bytes(msg.packets[1][1:8], "big")
            got = times[b]
            if i in got:
                duplicates[0] += 1
            else:
                got[i] = time.perf_counter()
                if len(got) == n - 1 and not complete[b].called:
                    complete[b].callback(None)
            return True

        return handler

    for i, node in enumerate(nodes):
        node.register_handler(handler_of(i))
    fill = filler(args.size)
    rng = random.Random(args.seed + 1)
    frames_before = sum(node.stats.frames_out for node in nodes)
    bytes_before = sum(node.stats.bytes_out for node in nodes)
    one_hop: list[float] = []
    mesh_wide: list[float] = []
    incomplete = 0
    for b in range(args.broadcasts):
        origin = rng.randrange(n)
        times.append({})
        complete.append(defer.Deferred())
        complete[b].addTimeout(2.0, reactor).addErrback(lambda _: None)
        sent = time.perf_counter()
        nodes[origin].send(payload(args.size, 0, b, fill))
        await complete[b]
        got = times[b]
        if len(got) < n - 1:
            incomplete += 1
            continue
        mesh_wide.append(max(got.values()) - sent)
        one_hop.extend(got[index[peer]] - sent for peer in nodes[origin].routing_table)
        await _sleep(reactor, args.gap)
    await _sleep(reactor, 0.5)
    frames = sum(node.stats.frames_out for node in nodes) - frames_before
    wire_bytes = sum(node.stats.bytes_out for node in nodes) - bytes_before
    deliveries = sum(len(got) for got in times)
    edges = links["kept"]
    report(
        {
            "nodes": n,
            "broadcasts": args.broadcasts,
            "size": args.size,
            "settle_seconds": settle,
            **links,
            "delivered_all": incomplete == 0 and deliveries == args.broadcasts * (n - 1),
            "incomplete": incomplete,
            "duplicates_delivered": duplicates[0],
            "one_hop_p50_ms": percentile(one_hop, 0.5) * 1e3,
            "one_hop_p99_ms": percentile(one_hop, 0.99) * 1e3,
            "mesh_p50_ms": percentile(mesh_wide, 0.5) * 1e3,
            "mesh_p99_ms": percentile(mesh_wide, 0.99) * 1e3,
            "frames_per_broadcast": frames / args.broadcasts,
            "frames_per_delivery": frames / max(deliveries, 1),
            "flood_bound": 2 * edges,
            "flood_bound_no_echo": 2 * edges - (n - 1),
            "bytes_per_delivery": wire_bytes / max(deliveries, 1),
            "frame_bytes": wire_bytes / max(frames, 1),
            "dropped_duplicates": sum(node.stats.dropped["duplicate"] for node in nodes),
        }
    )


async def memory(reactor: Any, args: argparse.Namespace) -> None:
    n = args.nodes
    import twisted_mesh  # noqa: F401 - its import is part of the baseline

    # One node first, so that what every node shares (code, the reactor's
    # machinery) is in the baseline.
    first = _socket(reactor, args.max_outgoing)
    await _sleep(reactor, 0.2)
    gc.collect()
    base = rss_bytes()
    nodes = [first] + [_socket(reactor, args.max_outgoing) for _ in range(n - 1)]
    await _sleep(reactor, 0.5)
    gc.collect()
    idle = rss_bytes()
    await _join(reactor, nodes, args.seed)
    await _settle(reactor, nodes)
    gc.collect()
    meshed = rss_bytes()
    links = _connections(nodes)
    report(
        {
            "nodes": n,
            **links,
            "rss_base": base,
            "rss_idle": idle,
            "rss_meshed": meshed,
            "per_idle_node": (idle - base) / (n - 1),
            "per_connection": (meshed - idle) / max(links["kept"], 1),
            "per_meshed_node": (meshed - base) / (n - 1),
        }
    )


async def seen_alone(reactor: Any, args: argparse.Namespace) -> None:
    """
    The RSS a seen-set takes a key, alone in a fresh process: one filled as
    a node's is by a minute of broadcasts (a stamp's keys coming over its
    second, then packed), by default up to `.Limits.max_seen`.
    """
    from twisted_mesh._core.seen import KEY_SIZE, MESSAGE_LIFETIME, SeenSet
    from twisted_mesh.limits import Limits

    seconds = MESSAGE_LIFETIME + 1
    per_second = args.count // seconds
    gc.collect()
    before = rss_bytes()
    seen = SeenSet(Limits.max_seen)
    for second in range(seconds):
        for i in range(per_second):
            seen.add(os.urandom(KEY_SIZE), 1_000_000 + second, 1_000_000 + second + i / per_second)
    gc.collect()
    report({"keys": len(seen), "rss_growth": rss_bytes() - before, "bytes_per_key": (rss_bytes() - before) / len(seen)})


async def seen(reactor: Any, args: argparse.Namespace) -> None:
    """A line of three under load: how the seen-sets and the RSS grow."""
    from bench.line import _mesh_line, _mesh_sink

    a, b, c = await _mesh_line(reactor)
    run = [1]
    flow: list[Flow] = []
    _mesh_sink(c, run, lambda: flow[0].arrival())
    fill = filler(args.size)
    gc.collect()
    before = rss_bytes()
    flow.append(Flow(reactor, lambda i: a.send(payload(args.size, 1, i, fill)), args.count, window_for(args.size)))
    result = await flow[0].start()
    gc.collect()
    after = rss_bytes()
    entries = sum(len(node._node.seen) for node in (a, b, c))
    per_entry = (after - before) / max(entries, 1)
    limit = a.limits.max_seen
    steady = min(result["rate"] * 61, limit)
    report(
        {
            "count": args.count,
            "rate": result["rate"],
            "seen_per_node": entries / 3,
            "rss_growth": after - before,
            "bytes_per_entry": per_entry,
            "max_seen": limit,
            "steady_entries": steady,
            "steady_bytes": steady * per_entry,
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("what", choices=("latency", "memory", "seen", "seen-alone"))
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument(
        "--max-outgoing",
        type=int,
        default=4,
        help="peers each node dials (default: 4, as py2p and js2p, which bench/README.md's numbers were measured with)",
    )
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.005, help="seconds between broadcasts")
    parser.add_argument("--count", type=int, default=200000, help="broadcasts (seen), keys (seen-alone)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    command = {"latency": latency, "memory": memory, "seen": seen, "seen-alone": seen_alone}[args.what]
    task.react(lambda reactor: defer.ensureDeferred(command(reactor, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
