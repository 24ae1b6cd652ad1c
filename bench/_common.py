"""
What the benchmarks share: payloads, a windowed flow of messages, timing,
percentiles, memory, the JSON lines a benchmark process reports with, and
the child processes that report them.
"""

from __future__ import annotations

import json
import math
import os
import queue
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

#: The repository root: benchmark processes run from it, and import its code.
ROOT = Path(__file__).resolve().parent.parent

#: The project's target for the RSS an idle node adds to a process it shares with others.
TARGET_IDLE_NODE = 2 * 1024 * 1024

#: The largest payload the benchmarks send; frames of it must pass the limits.
MAX_PAYLOAD = 1024 * 1024

#: Seconds with no arrival after which a flow gives up (a node dropped messages).
STALL_SECONDS = 10.0


def payload(size: int, run: int, index: int, filler: bytes) -> bytes:
    """
    The payload of message ``index`` of run ``run``: unique (two messages with
    the same payload in the same second would be one message), ``size`` bytes.
    The first byte names the run, so a late arrival is not counted twice.
    """
    head = bytes((run & 0xFF,)) + index.to_bytes(7, "big")
    return head + filler[: max(0, size - len(head))]


def filler(size: int, kind: str = "random") -> bytes:
    """
    Bytes to pad payloads with: ``"random"`` (incompressible) or ``"text"``
    (compresses about as well as English prose or JSON).
    """
    if kind == "text":
        words = b"the mesh relays each broadcast to every peer but the one it came from; "
        return (words * (size // len(words) + 1))[:size]
    return os.urandom(size)


def window_for(size: int) -> int:
    """How many messages a sender keeps in flight: about 1 MiB of them, 4 to 1000."""
    return max(4, min(1000, (1024 * 1024) // max(size, 1)))


def run_of(data: bytes) -> int:
    """The run a payload belongs to (see `.payload`)."""
    return data[0]


class Flow:
    """
    Send ``total`` messages from one end of a line and count them at the
    other, keeping at most ``window`` in flight; fire with the numbers.

    :param send: called with the index of each message to send.
    """

    def __init__(self, reactor: Any, send: Callable[[int], object], total: int, window: int) -> None:
        self._reactor = reactor
        self._send = send
        self.total = total
        self.window = window
        self.sent = 0
        self.arrived = 0
        self.first_sent = 0.0
        self.last_arrival = 0.0
        self.done: Deferred[dict[str, Any]] = Deferred()
        self._refill_call: IDelayedCall | None = None
        self._last_progress = 0.0
        self._arrived_at_check = 0
        self._watchdog: IDelayedCall | None = None

    def start(self) -> Deferred[dict[str, Any]]:
        self.first_sent = self._last_progress = time.perf_counter()
        self._cpu = time.process_time()
        self._refill()
        self._watchdog = self._reactor.callLater(1.0, self._check_stall)
        return self.done

    def arrival(self) -> None:
        """Count one message at the far end."""
        self.arrived += 1
        self.last_arrival = time.perf_counter()
        if self.arrived >= self.total:
            self._finish()
        elif self._refill_call is None and self.sent < self.total and self.sent - self.arrived <= self.window // 2:
            self._refill_call = self._reactor.callLater(0, self._refill)

    def _refill(self) -> None:
        self._refill_call = None
        limit = min(self.total, self.arrived + self.window)
        while self.sent < limit:
            self._send(self.sent)
            self.sent += 1

    def _check_stall(self) -> None:
        now = time.perf_counter()
        if self.arrived != self._arrived_at_check:
            self._arrived_at_check = self.arrived
            self._last_progress = now
        if now - self._last_progress > STALL_SECONDS:
            self._finish()
            return
        self._watchdog = self._reactor.callLater(1.0, self._check_stall)

    def _finish(self) -> None:
        if self.done.called:
            return
        for call in (self._refill_call, self._watchdog):
            if call is not None and call.active():
                call.cancel()
        elapsed = max(self.last_arrival - self.first_sent, 1e-9)
        cpu = time.process_time() - self._cpu
        self.done.callback(
            {
                "sent": self.total,
                "delivered": self.arrived,
                "seconds": elapsed,
                "rate": self.arrived / elapsed,
                "cpu_us": cpu / max(self.arrived, 1) * 1e6,
            }
        )


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate, with every run's rate and the lowest delivery."""
    ordered = sorted(runs, key=lambda run: run["rate"])
    middle = dict(ordered[len(ordered) // 2])
    middle["rates"] = [round(run["rate"], 1) for run in runs]
    if "cpu_us" in middle:
        middle["cpu_us"] = median([run["cpu_us"] for run in runs])
        middle["cpu_us_min"] = min(run["cpu_us"] for run in runs)
    middle["delivery"] = min(run["delivered"] / run["sent"] for run in runs)
    return middle


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The ``fraction`` quantile of ``values`` (nearest rank): the smallest
    value that at least ``fraction`` of them do not exceed, so the 99th of
    100 for 0.99.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    # (Less a hair, for the product's rounding: 0.29 * 100 is 29.000000000000004.)
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[min(len(ordered), max(1, rank)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_bytes(pid: int | None = None) -> int:
    """The resident set size of a process (this one by default), in bytes."""
    with open(f"/proc/{pid or 'self'}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def report(obj: dict[str, Any]) -> None:
    """Write one JSON line for the process that runs this benchmark."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def raise_fd_limit() -> None:
    """Raise this process's limit of open files to its hard limit (a node takes one per link)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def short_by(value: float, target: float, higher_is_better: bool = True) -> str:
    """``"met"``, or by how much ``value`` misses ``target``."""
    if higher_is_better:
        return "met" if value >= target else f"MISS by {1 - value / target:.0%}"
    return "met" if value < target else f"MISS by {value / target - 1:.0%}"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table in Markdown, its columns padded to line up."""
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    lines = ["| " + " | ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    lines += [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |" for row in rows
    ]
    return "\n".join(lines)


# -- child processes -------------------------------------------------------------------

#: Seconds a benchmark process whose standard input closed has to end by
#: itself (closing its nodes and their connections) before it is killed.
STOP_GRACE = 10.0


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark process: this one's, importing the repository's code, unbuffered."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def spawn(
    command: list[str], env: dict[str, str] | None, *, stdin: int, stderr: int | IO[Any]
) -> subprocess.Popen[str]:
    """Start ``command`` from the repository root, its output read as text lines."""
    return subprocess.Popen(
        command, cwd=ROOT, env=child_env(env), stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, text=True
    )


class Child:
    """
    A benchmark process, its JSON lines read as they come.

    :param commands: give it a pipe on its standard input, for `.tell`;
        closing it (`.stop` does) tells the process to end.
    :param stderr: where its standard error goes (by default, nowhere).
    """

    def __init__(
        self,
        command: list[str],
        env: dict[str, str] | None = None,
        *,
        commands: bool = False,
        stderr: int | IO[Any] = subprocess.DEVNULL,
    ) -> None:
        stdin = subprocess.PIPE if commands else subprocess.DEVNULL
        self.process = spawn(command, env, stdin=stdin, stderr=stderr)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def tell(self, command: dict[str, Any]) -> None:
        """Write ``command`` to the process's standard input, as one JSON line."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def expect(self, key: str, timeout: float) -> Any:
        """The value of ``key`` in the next JSON line that has it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {key!r} within {timeout:g} s") from None
            if line is None:
                raise RuntimeError(f"exited ({self.process.wait()}) before {key!r}")
            if line.startswith("{"):
                event = json.loads(line)
                if key in event:
                    return event[key]

    def stop(self) -> None:
        """
        End the process: close its standard input (if it has a pipe) and give
        it `.STOP_GRACE` seconds to exit; then ``SIGTERM``, then ``SIGKILL``.
        """
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
