"""
The benchmark commands still run and measure what they say: a smoke run of
each line implementation and of C{python -m bench}.  Nothing here is timed:
the rates themselves are for C{bench/README.md}, not for tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("impl", ["mesh", "raw", "checked"])
@pytest.mark.parametrize("window", ["0", "8"])
def test_line_delivers_every_message(impl: str, window: str) -> None:
    """Each implementation of the line of three delivers every message of each run."""
    output = run(
        "bench.line",
        "inproc",
        "--impl",
        impl,
        "--size",
        "100",
        "--count",
        "400",
        "--warmup",
        "50",
        "--runs",
        "2",
        "--window",
        window,
    )
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    assert result["impl"] == impl and result["sent"] == 400
    assert result["delivery"] == 1.0 and len(result["rates"]) == 2
    assert result["rate"] > 0 and result["cpu_us"] > 0
    if impl == "mesh":
        assert 100 < result["frame_bytes"] < 300


def test_bench_prints_its_table() -> None:
    """C{python -m bench} runs a section and prints its rows, with the ratios to both relays."""
    output = run("bench", "--quick", "--only", "inflight")
    rows = [line for line in output.splitlines() if line.startswith("| line of 3")]
    assert [row.split("|")[2].strip() for row in rows] == [
        f"100 B, {window} in flight, msgs/s delivered" for window in (1, 8, 64)
    ]
    for row in rows:
        assert "failed" not in row
        assert "x raw" in row and "x checked" in row


def test_producer_loses_nothing_beside_a_peer_that_never_reads() -> None:
    """
    C{python -m bench.producer}, paced by drained(), with a peer that never
    reads: every message reaches the good peer, none is skipped, and the
    peer that never reads is cut off after its congestion timeout.
    """
    output = run("bench.producer", "--count", "3000", "--stuck", "--congestion-timeout", "1")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    assert result["delivered"] == 3000 and result["skipped"] == 0
    assert result["cut_after"] is not None and result["cut_after"] >= 0.9
    assert result["rate"] > 0 and result["rss_growth"] >= 0
