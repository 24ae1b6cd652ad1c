"""
A worker process of the scale benchmark (``bench/scale.py``): many
twisted_mesh nodes (``MeshSocket`` objects) on one reactor, listening on loopback.
The coordinator drives it with one JSON command a line on its standard
input; it answers with JSON lines on its standard output.

    python -m bench.scale_worker --nodes 100 --max-outgoing 5

It first says ``ready``: its nodes' IDs and ports, and its RSS with one node
and with all of them (idle).  Then, for each command:

- ``join``: each node dials the seed once, at its given time
  (``CLOCK_MONOTONIC``, which every process of the machine shares), as a
  user would: ``connect(host, port)``, from the worker's ``source``
  address (a host of its own);
- ``snapshot``: every node's peers, and the sums of their counters, the
  process's CPU time and RSS;
- ``reach``: how many of this worker's nodes each broadcast should reach;
  the worker says ``done`` once one has reached them all;
- ``send``: a node sends broadcast number ``number``;
- ``results``: for each broadcast, how many nodes got it, the slowest of
  them, the repeats; and the one-hop latencies.

Closing its standard input ends the worker.
"""

from __future__ import annotations

import argparse
import gc
import json
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.internet.stdio import StandardIO
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from bench._common import filler, raise_fd_limit, rss_bytes

#: The head of a benchmark broadcast's payload: its number, and when it was
#: sent (``time.monotonic()``, the same clock in every process).
HEAD = struct.Struct(">Id")


class Tally:
    """What reached a worker's nodes of one broadcast."""

    __slots__ = ("nodes", "slowest", "repeats")

    def __init__(self) -> None:
        #: How many of the nodes got it.
        self.nodes = 0
        #: The latency of the last of them, in seconds.
        self.slowest = 0.0
        #: Deliveries of it to a node that had it already.
        self.repeats = 0


class Worker(LineReceiver):
    """
    The nodes of a worker process, and the commands that drive them.

    :param nodes: the nodes, listening.
    :param ready: what the worker says once its standard input is open.
    :param size: the payload size of the broadcasts its nodes send.
    """

    delimiter = b"\n"
    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(self, reactor: Any, nodes: list[Any], ready: dict[str, Any], size: int) -> None:
        self._reactor = reactor
        self.nodes = nodes
        self._ready = ready
        self._filler = filler(max(0, size - HEAD.size))
        self._dials: Counter[str] = Counter()
        self._tallies: dict[int, Tally] = {}
        self._reach: dict[int, int] = {}
        self._one_hop: list[float] = []
        self.finished: Deferred[None] = Deferred()
        for node in nodes:
            node.register_handler(self._arrivals_at(node))
        self._commands: dict[str, Callable[..., None]] = {
            "join": self.join,
            "snapshot": self.snapshot,
            "reach": self.reach,
            "send": self.send,
            "results": self.results,
        }

    def _say(self, event: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps(event).encode() + b"\n")

    def connectionMade(self) -> None:
        self._say({"ready": self._ready})

    def lineReceived(self, line: bytes) -> None:
        command = json.loads(line)
        self._commands[command.pop("cmd")](**command)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.finished.callback(None)

    # -- joining -------------------------------------------------------------

    def join(self, seed: list[Any], at: list[float], source: str) -> None:
        """Have node *i* dial ``seed`` (host, port) at ``at[i]``, from the address ``source``."""
        host, port = seed
        for node, when in zip(self.nodes, at, strict=True):
            self._dials["pending"] += 1
            endpoint = TCP4ClientEndpoint(self._reactor, host, port, bindAddress=(source, 0))
            self._reactor.callLater(max(0.0, when - time.monotonic()), self._dial, node, endpoint)

    def _dial(self, node: Any, endpoint: TCP4ClientEndpoint) -> None:
        node.connect(endpoint).addCallbacks(self._joined, self._join_failed)

    def _joined(self, peer_id: str) -> None:
        self._dials["pending"] -= 1
        self._dials["joined"] += 1

    def _join_failed(self, failure: Failure) -> None:
        self._dials["pending"] -= 1
        self._dials[f"failed: {type(failure.value).__name__}"] += 1

    # -- the state of the nodes ----------------------------------------------

    def snapshot(self) -> None:
        """Say every node's peers, and the sums of what they counted."""
        counts: Counter[str] = Counter()
        limit_hits: Counter[str] = Counter()
        handshake_failures: Counter[str] = Counter()
        for node in self.nodes:
            stats = node.stats
            counts["made"] += stats.connections["out"]
            counts["accepted"] += stats.connections["in"]
            counts["frames_out"] += stats.frames_out
            counts["bytes_out"] += stats.bytes_out
            counts["pruned"] += stats.pruned
            counts["announced"] += stats.announced
            counts["grafted"] += stats.grafted
            counts["repeats_dropped"] += stats.dropped["duplicate"]
            counts["open"] += node.status()["connections"]
            limit_hits.update(stats.limit_hits)
            handshake_failures.update(stats.handshake_failures)
        self._say(
            {
                "snapshot": {
                    "peers": [list(node.routing_table) for node in self.nodes],
                    **counts,
                    "limit_hits": limit_hits,
                    "handshake_failures": handshake_failures,
                    "dials": self._dials,
                    "cpu": time.process_time(),
                    "rss": rss_bytes(),
                }
            }
        )

    # -- broadcasts ----------------------------------------------------------

    def reach(self, counts: list[int]) -> None:
        """Say ``done`` once ``counts[number]`` of this worker's nodes got broadcast ``number`` (if not 0)."""
        self._reach = {number: count for number, count in enumerate(counts) if count}

    def send(self, number: int, origin: int) -> None:
        """Have node ``origin`` send broadcast ``number``."""
        self.nodes[origin].send(HEAD.pack(number, time.monotonic()) + self._filler)

    def _arrivals_at(self, node: Any) -> Any:
        """The handler that records what reaches ``node``, and takes it."""
        got: set[int] = set()

        def arrived(msg: Any, link: Any) -> bool:
            now = time.monotonic()
            number, sent = HEAD.unpack_from(msg.packets[1])
            tally = self._tallies.get(number)
            if tally is None:
                tally = self._tallies[number] = Tally()
            if number in got:
                tally.repeats += 1
                return True
            got.add(number)
            latency = now - sent
            tally.nodes += 1
            tally.slowest = max(tally.slowest, latency)
            if msg.sender in node.routing_table:
                self._one_hop.append(latency)
            self._check_done(number, tally)
            return True

        return arrived

    def _check_done(self, number: int, tally: Tally) -> None:
        if tally.nodes == self._reach.get(number):
            self._say({"done": number})

    def results(self) -> None:
        """Say, for each broadcast, how many nodes got it, the slowest, the repeats; and the one-hop latencies."""
        tallies = [[number, t.nodes, t.slowest, t.repeats] for number, t in self._tallies.items()]
        self._say({"results": {"tallies": tallies, "one_hop": self._one_hop}})


async def run(reactor: Any, args: argparse.Namespace) -> None:
    """Start the nodes, say ``ready``, and carry out commands until the standard input closes."""
    raise_fd_limit()
    from twisted_mesh import MeshSocket

    def node() -> Any:
        return MeshSocket("127.0.0.1", 0, max_outgoing=args.max_outgoing, reactor=reactor)

    # One node first: what all of them share (code, the reactor) is in the
    # baseline of the RSS per idle node.
    nodes = [node()]
    gc.collect()
    rss_one = rss_bytes()
    nodes += [node() for _ in range(args.nodes - 1)]
    gc.collect()
    ready = {
        "ids": [each.id for each in nodes],
        "ports": [each.out_addr[1] for each in nodes],
        "rss_one": rss_one,
        "rss_idle": rss_bytes(),
    }
    worker = Worker(reactor, nodes, ready, args.size)
    StandardIO(worker, reactor=reactor)
    await worker.finished
    await defer.gatherResults([each.close() for each in nodes])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--max-outgoing", type=int, required=True)
    parser.add_argument("--size", type=int, default=100, help="payload bytes of a broadcast")
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
