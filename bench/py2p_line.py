"""
The line benchmark for py2p (the reference Python node): A - B - C, A
broadcasts, B relays, C counts.  The counterpart of `.bench.line`; py2p runs
a thread per node, so this uses threads, not Twisted.

    python -m bench.py2p_line inproc --size 100 --count 2000 --runs 3
    python -m bench.py2p_line role --role sink|relay|source --connect PORT ...

The role mode speaks the JSON lines of `.bench.line`'s.  py2p drops
messages under a burst (its frame reader misreads the stream when a read
ends right after a 4-byte header): a run that stops making progress for
`.STALL_SECONDS` ends with what arrived.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import threading
import time
from typing import Any, BinaryIO

# py2p prints its own diagnostics with print(): keep fd 1 for the JSON lines.
_OUT: BinaryIO = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)
sys.stdout = sys.stderr

from py2p import mesh  # noqa: E402 - after the stdout swap above

from bench._common import filler, payload, run_of, window_for  # noqa: E402

# The line stays a line: no node dials the peers it hears of.
mesh.max_outgoing = 0

#: Seconds with no arrival after which a run ends with what arrived.
STALL_SECONDS = 5.0


def emit(obj: dict[str, Any]) -> None:
    _OUT.write(json.dumps(obj).encode() + b"\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_socket() -> Any:
    """A MeshSocket on a free port (py2p makes its ID from its address)."""
    for _ in range(20):
        try:
            return mesh.MeshSocket("127.0.0.1", free_port())
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free port")


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("py2p nodes did not connect")
        time.sleep(0.01)


class Counter:
    """Counts the current run's broadcasts at C, from py2p's thread."""

    def __init__(self) -> None:
        self.run = 0
        self.arrived = 0
        self.last = 0.0
        self.changed = threading.Condition()

    def handler(self, msg: Any, conn: Any) -> bool:
        packets = msg.packets
        if len(packets) > 1 and isinstance(packets[1], bytes) and run_of(packets[1]) == self.run:
            with self.changed:
                self.arrived += 1
                self.last = time.monotonic()
                self.changed.notify()
            return True
        return False


def inproc(args: argparse.Namespace) -> None:
    a, b, c = make_socket(), make_socket(), make_socket()
    b.connect("127.0.0.1", a.out_addr[1])
    c.connect("127.0.0.1", b.out_addr[1])
    wait_for(lambda: len(a.routing_table) == 1 and len(b.routing_table) == 2 and len(c.routing_table) == 1)
    counter = Counter()
    c.register_handler(counter.handler)
    fill = filler(args.size)
    window = args.window or window_for(args.size)
    results = []
    for run in range(args.runs + 1):
        total = args.warmup if run == 0 else args.count
        with counter.changed:
            counter.run, counter.arrived = run, 0
        first = time.monotonic()
        sent = 0
        stalled = False
        with counter.changed:
            while counter.arrived < total and not stalled:
                while sent < total and sent - counter.arrived < window:
                    counter.changed.release()
                    try:
                        a.send(payload(args.size, run, sent, fill))
                    finally:
                        counter.changed.acquire()
                    sent += 1
                before = counter.arrived
                counter.changed.wait(STALL_SECONDS)
                stalled = counter.arrived == before and counter.arrived < total
            arrived, last = counter.arrived, counter.last
        seconds = max(last - first, 1e-9)
        result = {"sent": total, "delivered": arrived, "seconds": seconds, "rate": arrived / seconds}
        if run:
            results.append(result)
        if arrived < total:
            break  # py2p dropped the link: later runs would find no line
        time.sleep(0.05)
    results.sort(key=lambda result: result["rate"])
    middle = dict(results[len(results) // 2]) if results else dict(result)
    middle["rates"] = [round(result["rate"], 1) for result in results]
    middle["delivery"] = min(result["delivered"] / result["sent"] for result in results) if results else 0.0
    emit({"impl": "py2p", "size": args.size, "window": window, **middle})
    for sock in (a, b, c):
        sock.close()
    os._exit(0)


def role(args: argparse.Namespace) -> None:
    sock = make_socket()
    if args.role == "sink":
        counter = Counter()
        counter.run = 1
        sock.register_handler(counter.handler)
        emit({"ready": sock.out_addr[1]})
        with counter.changed:
            while counter.arrived < args.count:
                before = counter.arrived
                counter.changed.wait(STALL_SECONDS)
                if counter.arrived == before and counter.arrived:
                    break
            emit({"done": {"delivered": counter.arrived, "last": counter.last}})
        os._exit(0)
    sock.connect("127.0.0.1", args.connect)
    wait_for(lambda: len(sock.routing_table) == 1)
    if args.role == "relay":
        emit({"ready": sock.out_addr[1]})
        threading.Event().wait()
    emit({"ready": 0})
    fill = filler(args.size)
    for index in range(args.warmup):
        sock.send(payload(args.size, 0, index, fill))
    time.sleep(1.0)
    t0 = time.monotonic()
    for index in range(args.count):
        sock.send(payload(args.size, 1, index, fill))
    emit({"t0": t0})
    threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("mode", choices=("inproc", "role"))
    parser.add_argument("--role", choices=("source", "relay", "sink"))
    parser.add_argument("--connect", type=int)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=0)
    args = parser.parse_args()
    (inproc if args.mode == "inproc" else role)(args)


if __name__ == "__main__":
    main()
