"""
The mesh at scale: N twisted_mesh nodes spread over worker processes, every
one joining through the same seed node, over TCP on loopback.

    python -m bench.scale --nodes 10,100,300,1000 --processes 10 --png bench/scale.png
    python -m bench.scale --from-json scale.json --png bench/scale.png   # table and plot again

The seed has a process of its own; the other nodes are dealt to
``--processes`` workers (``bench/scale_worker.py``), and each dials the seed
once, as a user following the README would, at ``--join-rate`` nodes a
second.  Then, for each N: how long until the mesh is one piece and no link
comes or goes; its degrees and connections; ``--broadcasts`` broadcasts
from random nodes, one at a time: does each reach every node exactly once,
how fast, with how many frames, bytes and how much CPU.  One JSON line per
N, then a table of the measures and one of the targets (and, with
``--png``, a plot: ``pip install '.[bench]'`` brings matplotlib).  See
``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import IO, Any, NamedTuple

from bench._common import TARGET_IDLE_NODE, Child, markdown_table, percentile, raise_fd_limit, report, short_by
from twisted_mesh._core.exchange import DEFAULT_MAX_OUTGOING
from twisted_mesh._core.tree import ANNOUNCE_DELAY, GRAFT_WAIT

#: The targets: a node's degree at most this many times ``max_outgoing``;
#: at most this many connections made per connection kept; the mesh-wide
#: latency's 99th percentile under this many milliseconds.
TARGET_DEGREE_FACTOR = 4
TARGET_MADE_PER_KEPT = 1.2
TARGET_MESH_P99_MS = 250.0

#: Seconds between the join command and the first join, for the command to
#: reach every worker.
JOIN_LEAD = 1.0
#: Seconds after the last broadcast for the last relays (and repeats) to
#: land, and for every pruned link to carry its announcement of them (and
#: any graft after it): the frames and CPU they cost count.
QUIET = ANNOUNCE_DELAY + 2 * GRAFT_WAIT
#: Seconds a worker has to start and listen, or to answer a command.
WORKER_TIMEOUT = 120.0


class Layout:
    """
    Which process holds which node: the seed (node 0) alone in worker 0; the
    others dealt in turn to workers 1 to ``joiners``, so that each worker's
    nodes join all along the joining time.
    """

    def __init__(self, nodes: int, processes: int) -> None:
        self.nodes = nodes
        self.joiners = max(1, min(processes, nodes - 1))
        self.counts = [1] + [len(range(worker, nodes - 1, self.joiners)) for worker in range(self.joiners)]

    def place(self, index: int) -> tuple[int, int]:
        """The worker of node ``index``, and the node's place in it."""
        if index == 0:
            return 0, 0
        return 1 + (index - 1) % self.joiners, (index - 1) // self.joiners

    def index(self, worker: int, local: int) -> int:
        """The node at place ``local`` of ``worker``."""
        return 0 if worker == 0 else 1 + (worker - 1) + self.joiners * local


class Graph:
    """
    The mesh at one moment, from every worker's snapshot: each node's peers
    (by node number), the pieces it is in, and the sums of the counters.
    """

    def __init__(self, layout: Layout, number_of: dict[str, int], snapshots: list[dict[str, Any]]) -> None:
        self.peers: list[list[int]] = [[] for _ in range(layout.nodes)]
        self.totals: Counter[str] = Counter()
        self.limit_hits: Counter[str] = Counter()
        self.handshake_failures: Counter[str] = Counter()
        self.dials: Counter[str] = Counter()
        for worker, snapshot in enumerate(snapshots):
            for local, ids in enumerate(snapshot.pop("peers")):
                self.peers[layout.index(worker, local)] = sorted(number_of[peer] for peer in ids)
            self.limit_hits.update(snapshot.pop("limit_hits"))
            self.handshake_failures.update(snapshot.pop("handshake_failures"))
            self.dials.update(snapshot.pop("dials"))
            self.totals.update(snapshot)
        self.rss = [snapshot["rss"] for snapshot in snapshots]
        self.degrees = [len(peers) for peers in self.peers]
        self.piece = self._pieces()

    def _pieces(self) -> list[int]:
        """The piece of the mesh each node is in (a link counts when either end lists it)."""
        links: list[set[int]] = [set(peers) for peers in self.peers]
        for node, peers in enumerate(self.peers):
            for peer in peers:
                links[peer].add(node)
        piece = [-1] * len(links)
        for start in range(len(links)):
            if piece[start] >= 0:
                continue
            piece[start] = start
            todo = deque([start])
            while todo:
                for peer in links[todo.popleft()]:
                    if piece[peer] < 0:
                        piece[peer] = start
                        todo.append(peer)
        return piece

    @property
    def connected(self) -> bool:
        return len(set(self.piece)) == 1

    def links(self) -> set[tuple[int, int]]:
        """Every link, as (lower node, higher node), listed by either end."""
        return {(min(node, peer), max(node, peer)) for node, peers in enumerate(self.peers) for peer in peers}

    def digest(self) -> tuple[Any, ...]:
        """What changes when a link comes or goes, or a connection is made, refused or lost."""
        counts = [self.totals[key] for key in ("made", "accepted", "open")]
        return (tuple(map(tuple, self.peers)), *counts, self.limit_hits.total(), self.handshake_failures.total())

    def shape(self) -> dict[str, Any]:
        """Degrees, connections, pieces: the numbers of a result."""
        sizes = Counter(self.piece)
        kept = sum(self.degrees) // 2
        return {
            "connected": self.connected,
            "pieces": len(sizes),
            "largest_piece": max(sizes.values()),
            "isolated": self.degrees.count(0),
            "degree_min": min(self.degrees),
            "degree_mean": sum(self.degrees) / len(self.degrees),
            "degree_max": max(self.degrees),
            "seed_degree": self.degrees[0],
            "degree_max_others": max(self.degrees[1:]),
            "made": self.totals["made"],
            "accepted": self.totals["accepted"],
            "kept": kept,
            "one_sided": 2 * len(self.links()) - sum(self.degrees),
            "refused": self.limit_hits["max_connections"],
            "limit_hits": dict(self.limit_hits),
            "handshake_failures": dict(self.handshake_failures),
            "joins": {outcome: count for outcome, count in self.dials.items() if count},
        }


class ScaleRun:
    """The worker processes of one N, and the phases of its run."""

    def __init__(self, args: argparse.Namespace, nodes: int) -> None:
        self.args = args
        self.layout = Layout(nodes, args.processes)
        self.workers: list[Child] = []
        self._stderr: list[IO[bytes]] = []
        self.ready: list[dict[str, Any]] = []
        self.number_of: dict[str, int] = {}

    def start(self) -> None:
        """Start the seed's process and the workers; wait until every node listens."""
        args = self.args
        for count in self.layout.counts:
            command = [sys.executable, "-m", "bench.scale_worker", "--nodes", str(count)]
            command += ["--max-outgoing", str(args.max_outgoing), "--size", str(args.size)]
            stderr = tempfile.TemporaryFile()
            self._stderr.append(stderr)
            self.workers.append(Child(command, commands=True, stderr=stderr))
        self.ready = self._ask_all(None, "ready")
        for worker, ready in enumerate(self.ready):
            for local, node_id in enumerate(ready["ids"]):
                self.number_of[node_id] = self.layout.index(worker, local)

    def _ask_all(self, command: str | None, answer: str) -> list[Any]:
        """Tell every worker ``command`` (if any); their answers, in order."""
        if command is not None:
            for worker in self.workers:
                worker.tell({"cmd": command})
        return [worker.expect(answer, WORKER_TIMEOUT) for worker in self.workers]

    def snapshot(self) -> Graph:
        return Graph(self.layout, self.number_of, self._ask_all("snapshot", "snapshot"))

    def converge(self) -> tuple[Graph, dict[str, Any]]:
        """
        Have every node but the seed dial the seed, one every 1/``join_rate``
        seconds, each worker's from an address of its own (127.0.0.2 and
        on), as joiners on different hosts would: the seed bounds the
        connections from one address that have not done their handshake
        (``Limits.max_pending_per_address``).  Then wait until the mesh is
        one piece and has not changed for ``settle`` seconds, or
        ``timeout`` seconds past the last join.
        """
        args, layout = self.args, self.layout
        seed = ["127.0.0.1", self.ready[0]["ports"][0]]
        first = time.monotonic() + JOIN_LEAD
        last = first + (layout.nodes - 2) / args.join_rate
        for worker in range(1, len(self.workers)):
            at = [first + (layout.index(worker, local) - 1) / args.join_rate for local in range(layout.counts[worker])]
            source = f"127.0.0.{1 + worker}"
            self.workers[worker].tell({"cmd": "join", "seed": seed, "at": at, "source": source})
        deadline = last + args.timeout
        digest: tuple[Any, ...] = ()
        changed = first
        while True:
            time.sleep(args.poll)
            graph = self.snapshot()
            now = time.monotonic()
            if graph.digest() != digest:
                digest, changed = graph.digest(), now
            joined = now >= last and graph.dials["pending"] == 0
            settled = joined and now - changed >= args.settle
            if (settled and graph.connected) or now >= deadline:
                break
        return graph, {
            "converged": settled and graph.connected,
            "converge_seconds": changed - first if settled and graph.connected else None,
            "settled": settled,
            "last_change_seconds": changed - first,
            "waited_seconds": now - first,
            "join_seconds": last - first,
        }

    def broadcasts(self, graph: Graph) -> dict[str, Any]:
        """
        Send ``broadcasts`` broadcasts from random nodes, one at a time: the
        next once every node of the origin's piece of ``graph`` got the last
        (or after ``broadcast_timeout`` seconds).
        """
        args, layout = self.args, self.layout
        # piece -> worker -> how many of its nodes are in that piece
        members: defaultdict[int, Counter[int]] = defaultdict(Counter)
        degrees: Counter[int] = Counter()
        for node, piece in enumerate(graph.piece):
            members[piece][layout.place(node)[0]] += 1
            degrees[piece] += graph.degrees[node]
        rng = random.Random(args.seed)
        origins = [rng.randrange(layout.nodes) for _ in range(args.broadcasts)]
        # reach[worker][number]: how many of the worker's nodes broadcast
        # number should reach (those of the origin's piece, but the origin).
        reach = [[0] * args.broadcasts for _ in self.workers]
        bound_frames = bound_deliveries = unfinished = 0
        for number, origin in enumerate(origins):
            piece = graph.piece[origin]
            for worker, count in members[piece].items():
                reach[worker][number] = count - (worker == layout.place(origin)[0])
            # The no-echo flood: every node of the piece sends to each of its
            # peers but the one it got the broadcast from (the origin to all).
            others = sum(members[piece].values()) - 1
            bound_frames += degrees[piece] - others
            bound_deliveries += others
        for worker, child in enumerate(self.workers):
            child.tell({"cmd": "reach", "counts": reach[worker]})
        before = self.snapshot()
        for number, origin in enumerate(origins):
            home, local = layout.place(origin)
            self.workers[home].tell({"cmd": "send", "number": number, "origin": local})
            deadline = time.monotonic() + args.broadcast_timeout
            waited = [child for worker, child in enumerate(self.workers) if reach[worker][number]]
            unfinished += not all(_done(child, number, deadline) for child in waited)
            time.sleep(args.gap)
        time.sleep(QUIET)
        after = self.snapshot()
        results = self._ask_all("results", "results")
        return {
            **_deliveries(results, layout.nodes, args.broadcasts),
            "unfinished": unfinished,
            "links_changed": len(graph.links() ^ after.links()),
            "frames": after.totals["frames_out"] - before.totals["frames_out"],
            "bytes": after.totals["bytes_out"] - before.totals["bytes_out"],
            **{
                name: after.totals[name] - before.totals[name]
                for name in ("pruned", "announced", "grafted", "repeats_dropped")
            },
            "cpu_seconds": after.totals["cpu"] - before.totals["cpu"],
            "no_echo_bound": bound_frames / bound_deliveries if bound_deliveries else None,
            "rss_total": sum(after.rss),
            "rss_seed": after.rss[0],
        }

    def idle_node_rss(self) -> float | None:
        """The RSS each idle listening node added to its worker, on average (workers of two nodes or more)."""
        grown = [(ready["rss_idle"] - ready["rss_one"], len(ready["ids"]) - 1) for ready in self.ready[1:]]
        added = sum(nodes for _, nodes in grown)
        return sum(growth for growth, nodes in grown if nodes) / added if added else None

    def stop(self) -> None:
        """End every worker (closing their standard input; killing those that stay)."""
        for worker in self.workers:
            worker.stop()
        for stderr in self._stderr:
            stderr.close()

    def failure(self, error: Exception) -> str:
        """``error``, with the end of the standard error of the first worker that ended."""
        for worker, stderr in zip(self.workers, self._stderr, strict=True):
            if worker.process.poll() is not None:
                stderr.seek(0)
                tail = stderr.read().decode(errors="replace").strip()[-600:]
                return f"{error} (a worker exited {worker.process.returncode}: {tail})"
        return str(error)


def _done(worker: Child, number: int, deadline: float) -> bool:
    """Whether ``worker`` says it is done with broadcast ``number`` before ``deadline``."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            if worker.expect("done", left) == number:
                return True
        except TimeoutError:
            return False
    return False


def _deliveries(results: list[dict[str, Any]], nodes: int, broadcasts: int) -> dict[str, Any]:
    """How the broadcasts arrived, from every worker's results."""
    reached: Counter[int] = Counter()
    repeats: Counter[int] = Counter()
    slowest: dict[int, float] = {}
    one_hop: list[float] = []
    for result in results:
        for number, count, latest, repeated in result["tallies"]:
            reached[number] += count
            repeats[number] += repeated
            slowest[number] = max(slowest.get(number, 0.0), latest)
        one_hop += result["one_hop"]
    everywhere = [number for number in range(broadcasts) if reached[number] == nodes - 1]
    mesh_wide = [slowest[number] for number in everywhere]
    return {
        "deliveries": sum(reached.values()),
        "expected_deliveries": broadcasts * (nodes - 1),
        "reached_every_node": len(everywhere),
        "once_to_every_node": sum(1 for number in everywhere if not repeats[number]),
        "repeats": sum(repeats.values()),
        "one_hop_p50_ms": _ms(percentile(one_hop, 0.5)),
        "one_hop_p99_ms": _ms(percentile(one_hop, 0.99)),
        "mesh_p50_ms": _ms(percentile(mesh_wide, 0.5)),
        "mesh_p99_ms": _ms(percentile(mesh_wide, 0.99)),
        "mesh_max_ms": _ms(max(mesh_wide, default=math.nan)),
        "mesh_wide_ms": [_ms(latency) for latency in mesh_wide],
    }


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else seconds * 1e3


def measure(args: argparse.Namespace, nodes: int) -> dict[str, Any]:
    """One N, in fresh processes: its result (with ``error`` when it could not be measured)."""
    run = ScaleRun(args, nodes)
    result: dict[str, Any] = {
        "nodes": nodes,
        "processes": run.layout.joiners,
        "max_outgoing": args.max_outgoing,
        "join_rate": args.join_rate,
        "broadcasts": args.broadcasts,
        "size": args.size,
    }
    started = time.monotonic()
    try:
        run.start()
        graph, joining = run.converge()
        result.update(joining)
        result.update(graph.shape())
        result.update(run.broadcasts(graph))
        result["rss_idle_node"] = run.idle_node_rss()
    except (TimeoutError, RuntimeError, OSError) as e:
        result["error"] = run.failure(e)
    finally:
        run.stop()
    result["seconds"] = time.monotonic() - started
    return result


# -- the tables ------------------------------------------------------------------------


class Measure(NamedTuple):
    """One line of a result: what, its value, and the target it is held to (if any) with the verdict."""

    case: str
    value: str
    target: str = ""
    result: str = ""


def at_most(value: float, limit: float) -> str:
    """``"met"``, or by how much ``value`` is over ``limit``."""
    over = value / limit - 1
    return "met" if over <= 0 else f"MISS by {over:.1%}" if over < 0.1 else f"MISS by {over:.0%}"


def measures(result: dict[str, Any]) -> list[Measure]:
    """What a result says, line by line, with the targets."""
    if "error" in result:
        return [Measure("run", "failed: " + result["error"])]
    deliveries = max(result["deliveries"], 1)
    limit = TARGET_DEGREE_FACTOR * result["max_outgoing"]
    kept = max(result["kept"], 1)
    if result["converged"]:
        joined = f"yes, {result['converge_seconds']:.1f} s after the first join"
    elif result["connected"]:
        joined = f"one piece, still changing after {result['waited_seconds']:.0f} s"
    else:
        joined = (
            f"no: {result['isolated']:,} isolated, {result['pieces']:,} pieces (largest {result['largest_piece']:,}), "
            f"unchanged from {result['last_change_seconds']:.1f} s to {result['waited_seconds']:.0f} s"
        )
    joined += f"; joins over {result['join_seconds']:.1f} s"
    mesh_p99 = result["mesh_p99_ms"]
    frames = result["frames"] / deliveries
    bound = result["no_echo_bound"]
    idle = result["rss_idle_node"]
    mib = 1024 * 1024
    return [
        Measure(
            "joined and settled",
            joined,
            "one piece",
            "met" if result["converged"] else "MISS",
        ),
        Measure(
            "degree min / mean / max",
            f"{result['degree_min']} / {result['degree_mean']:.1f} / {result['degree_max']} "
            f"(the seed {result['seed_degree']}, the others {result['degree_max_others']} at most)",
            f"max <= {limit}",
            at_most(result["degree_max"], limit),
        ),
        Measure(
            "connections made / kept",
            f"{result['made']:,} / {result['kept']:,} = {result['made'] / kept:.2f} "
            f"({result['refused']:,} refused by the seed's max_connections)",
            f"made <= {TARGET_MADE_PER_KEPT}x kept",
            at_most(result["made"] / kept, TARGET_MADE_PER_KEPT),
        ),
        Measure(
            "broadcasts delivered once to every node",
            f"{result['once_to_every_node']} of {result['broadcasts']} "
            f"({result['deliveries'] / max(result['expected_deliveries'], 1):.1%} of deliveries, "
            f"{result['repeats']:,} repeats)",
            "every one, once",
            "met" if result["once_to_every_node"] == result["broadcasts"] else "MISS",
        ),
        Measure("one-hop latency p50 / p99", _latency(result["one_hop_p50_ms"], result["one_hop_p99_ms"])),
        Measure(
            "mesh-wide latency p50 / p99",
            _latency(result["mesh_p50_ms"], mesh_p99)
            + ("" if result.get("mesh_max_ms") is None else f" (the slowest {result['mesh_max_ms']:.0f} ms)"),
            f"p99 < {TARGET_MESH_P99_MS:.0f} ms",
            "MISS: none reached every node" if mesh_p99 is None else short_by(mesh_p99, TARGET_MESH_P99_MS, False),
        ),
        Measure(
            "frames per delivery",
            f"{frames:.2f} (no-echo bound {bound:.2f}; mean degree - 1 = {result['degree_mean'] - 1:.2f})"
            if bound is not None
            else f"{frames:.2f}",
            "<= no-echo bound",
            "-" if bound is None else at_most(frames, bound),
        ),
        Measure("bytes per delivery", f"{result['bytes'] / deliveries:,.0f} B ({result['size']} B payload)"),
        Measure("CPU per delivery (all processes)", f"{result['cpu_seconds'] / deliveries * 1e6:,.0f} us"),
        Measure(
            "RSS per node (process RSS / its nodes)",
            f"{result['rss_total'] / result['nodes'] / 1024:,.0f} KiB "
            f"(the seed's process {result['rss_seed'] / mib:.0f} MiB)",
        ),
        Measure(
            "RSS per idle node (shared process)",
            "-" if idle is None else f"{idle / 1024:,.0f} KiB",
            f"< {TARGET_IDLE_NODE // mib} MiB",
            "-" if idle is None else short_by(idle, TARGET_IDLE_NODE, False),
        ),
        Measure("run time", f"{result['seconds']:.0f} s"),
    ]


def _latency(p50: float | None, p99: float | None) -> str:
    if p50 is None or p99 is None:
        return "-"
    return f"{p50:.1f} / {p99:.1f} ms"


def tables(results: list[dict[str, Any]]) -> str:
    """The measures of every N side by side; then the targets, met or missed at each N."""
    heads = [f"{result['nodes']:,} nodes" for result in results]
    columns = [measures(result) for result in results]
    cases = list(dict.fromkeys(measure.case for column in columns for measure in column))
    found = [{measure.case: measure for measure in column} for column in columns]
    missing = Measure("", "")
    rows = [[case, *(by_case.get(case, missing).value for by_case in found)] for case in cases]
    targets = [
        [f"{case}: {target}", *(by_case.get(case, missing).result for by_case in found)]
        for case in cases
        if (target := next((by_case[case].target for by_case in found if case in by_case), ""))
    ]
    return markdown_table(["measure", *heads], rows) + "\n\n" + markdown_table(["target", *heads], targets)


# -- the plot --------------------------------------------------------------------------


def plot(results: list[dict[str, Any]], path: str) -> None:
    """Each measure against N, one panel each, in a PNG at ``path`` (needs matplotlib: the ``bench`` extra)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install '.[bench]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    done = [result for result in results if "error" not in result]
    nodes = [result["nodes"] for result in done]

    def series(key: str, scale: float = 1.0, when: bool | None = None) -> list[float]:
        """``key`` of each result (times ``scale``); NaN where missing, or where ``converged`` is not ``when``."""
        return [
            math.nan if result[key] is None or when not in (None, result["converged"]) else result[key] * scale
            for result in done
        ]

    def per_delivery(key: str, scale: float = 1.0) -> list[float]:
        return [result[key] * scale / max(result["deliveries"], 1) for result in done]

    # (title, y scale, target line, [(label, values, format)])
    panels: list[tuple[str, str, float | None, list[tuple[str, list[float], str]]]] = [
        (
            "time to converge (s)",
            "linear",
            None,
            [
                ("converged", series("converge_seconds", when=True), "o-"),
                ("did not: gave up after", series("waited_seconds", when=False), "rx"),
            ],
        ),
        (
            "degree",
            "symlog",
            TARGET_DEGREE_FACTOR * done[0]["max_outgoing"] if done else None,
            [
                ("min", series("degree_min"), "o-"),
                ("mean", series("degree_mean"), "o-"),
                ("max", series("degree_max"), "o-"),
            ],
        ),
        ("connections", "log", None, [("made", series("made"), "o-"), ("kept", series("kept"), "o-")]),
        (
            "broadcasts (%)",
            "linear",
            None,
            [
                ("delivered once to every node", [100 * r["once_to_every_node"] / r["broadcasts"] for r in done], "o-"),
                ("deliveries", [100 * r["deliveries"] / max(r["expected_deliveries"], 1) for r in done], "o-"),
            ],
        ),
        (
            "latency (ms)",
            "log",
            TARGET_MESH_P99_MS,
            [
                ("one-hop p50", series("one_hop_p50_ms"), "o-"),
                ("one-hop p99", series("one_hop_p99_ms"), "o-"),
                ("mesh-wide p50", series("mesh_p50_ms"), "o-"),
                ("mesh-wide p99", series("mesh_p99_ms"), "o-"),
            ],
        ),
        (
            "frames per delivery",
            "linear",
            None,
            [
                ("measured", per_delivery("frames"), "o-"),
                ("no-echo bound", series("no_echo_bound"), "o--"),
                ("mean degree - 1", [r["degree_mean"] - 1 for r in done], "o:"),
            ],
        ),
        ("bytes per delivery", "linear", None, [("measured", per_delivery("bytes"), "o-")]),
        ("CPU per delivery (us)", "linear", None, [("all processes", per_delivery("cpu_seconds", 1e6), "o-")]),
        (
            "RSS (KiB)",
            "log",
            TARGET_IDLE_NODE / 1024,
            [
                ("per node (process RSS / its nodes)", [r["rss_total"] / r["nodes"] / 1024 for r in done], "o-"),
                ("per idle node (shared process)", series("rss_idle_node", 1 / 1024), "o-"),
            ],
        ),
    ]
    figure, axes = pyplot.subplots(3, 3, figsize=(15, 12))
    for axis, (title, yscale, target, lines) in zip(axes.flat, panels, strict=True):
        for label, values, style in lines:
            axis.plot(nodes, values, style, label=label)
        if target is not None:
            axis.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target ({target:g})")
        axis.set_xscale("log")
        axis.set_xticks(nodes, [f"{n:,}" for n in nodes])
        axis.minorticks_off()
        axis.set_yscale(yscale)
        if yscale != "log":
            axis.set_ylim(bottom=0)
        axis.set_xlabel("nodes")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle("twisted_mesh: every node joining through one seed, TCP on loopback")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


# -- the command -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[1])
    parser.add_argument("--nodes", default="10,100,300,1000", help="the sizes of mesh, comma-separated")
    parser.add_argument("--processes", type=int, default=10, help="worker processes (the seed has one more)")
    parser.add_argument(
        "--max-outgoing",
        type=int,
        default=DEFAULT_MAX_OUTGOING,
        help=f"peers each node dials (default: the node's, {DEFAULT_MAX_OUTGOING})",
    )
    parser.add_argument("--join-rate", type=float, default=100.0, help="nodes dialling the seed per second")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds with no link change: settled")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds after the last join to settle")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the mesh")
    parser.add_argument("--broadcasts", type=int, default=100)
    parser.add_argument("--size", type=int, default=100, help="payload bytes of a broadcast")
    parser.add_argument("--gap", type=float, default=0.01, help="seconds between broadcasts")
    parser.add_argument("--broadcast-timeout", type=float, default=5.0, help="seconds to wait for one broadcast")
    parser.add_argument("--seed", type=int, default=7, help="of the random origins")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("--png", help="plot the results to this file (needs matplotlib)")
    parser.add_argument("--from-json", help="no run: the table and plot of results written by --json")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        sizes = [int(size) for size in args.nodes.split(",")]
        if min(sizes) < 2:
            parser.error("a mesh has 2 nodes or more")
        raise_fd_limit()
        results = []
        for nodes in sizes:
            print(f"... {nodes} nodes", file=sys.stderr, flush=True)
            results.append(measure(args, nodes))
            report(results[-1])
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(tables(results))
    if args.png:
        plot(results, args.png)


if __name__ == "__main__":
    main(sys.argv[1:])
