"""
The benchmark commands still run and measure what they say: a smoke run of
each line implementation, of the scale benchmark and of ``python -m bench``.
Nothing here is timed: the rates themselves are for ``bench/README.md``, not
for tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench._common import percentile

ROOT = Path(__file__).resolve().parents[2]


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


def test_signed_line_signs_once_and_checks_once_a_node() -> None:
    """
    The signed line delivers everything, each message signed once at its
    origin and checked once by each of the two nodes it reaches, and the
    ``signed`` section tables it beside the unsigned line.
    """
    args = ("--count", "200", "--warmup", "20", "--runs", "2")
    output = run("bench.line", "inproc", "--impl", "mesh", "--signed", *args)
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    assert result["signed"] is True and result["delivery"] == 1.0
    assert (result["signs_per_msg"], result["verifies_per_msg"]) == (1.0, 2.0)
    assert 0 < result["crypto_us"] < result["cpu_us"]
    table = run("bench", "--quick", "--only", "signed")
    rows = [line for line in table.splitlines() if line.startswith("| line of 3, signed network")]
    assert len(rows) == 4 and not any("failed" in row for row in rows)
    assert sum("1.00 signs, 2.00 checks a msg" in row for row in rows) == 2


def test_bench_prints_its_table() -> None:
    """``python -m bench`` runs a section and prints its rows, with the ratios to both relays."""
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
    ``python -m bench.producer``, paced by drained(), with a peer that never
    reads: every message reaches the good peer, none is skipped, and the
    peer that never reads is cut off after its congestion timeout.
    """
    output = run("bench.producer", "--count", "3000", "--stuck", "--congestion-timeout", "1")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    assert result["delivered"] == 3000 and result["skipped"] == 0
    assert result["cut_after"] is not None and result["cut_after"] >= 0.9
    assert result["rate"] > 0 and result["rss_growth"] >= 0


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """A scale run of 10 nodes in 2 worker processes (and the seed's): its result, its output, its JSON file."""
    saved = tmp_path_factory.mktemp("scale") / "scale.json"
    output = run("bench.scale", "--nodes", "10", "--processes", "2", "--broadcasts", "5", "--json", str(saved))
    return json.loads(output.splitlines()[0]), output, saved


def test_scale_meshes_every_node_through_the_seed(scale_run: tuple[dict[str, Any], str, Path]) -> None:
    """
    ``python -m bench.scale``: every node dials the seed and gets in, the mesh
    settles in one piece, and its shape adds up.
    """
    result, _, _ = scale_run
    assert "error" not in result
    assert result["nodes"] == 10 and result["processes"] == 2
    assert result["joins"] == {"joined": 9}
    assert result["converged"] and result["connected"] and result["pieces"] == 1 and result["isolated"] == 0
    assert 1 <= result["degree_min"] <= result["degree_mean"] <= result["degree_max"] <= 9
    assert result["seed_degree"] >= 1 and result["one_sided"] == 0
    assert result["kept"] == round(result["degree_mean"] * 10) // 2
    assert result["made"] >= result["kept"] and result["accepted"] >= result["kept"]


def test_scale_counts_every_delivery(scale_run: tuple[dict[str, Any], str, Path]) -> None:
    """Each broadcast reaches the 9 other nodes once; frames, bytes and latencies agree with that."""
    result, _, _ = scale_run
    assert result["deliveries"] == result["expected_deliveries"] == 5 * 9
    assert result["reached_every_node"] == result["once_to_every_node"] == 5
    assert result["repeats"] == 0 and result["unfinished"] == 0
    assert result["frames"] >= result["deliveries"] and result["bytes"] >= result["frames"] * result["size"]
    assert result["no_echo_bound"] is not None and result["cpu_seconds"] > 0
    assert 0 <= result["one_hop_p50_ms"] <= result["one_hop_p99_ms"]
    assert 0 <= result["mesh_p50_ms"] <= result["mesh_p99_ms"]
    assert result["rss_total"] > result["rss_seed"] > 0 and result["rss_idle_node"] is not None


def test_scale_tables_again_from_its_json(scale_run: tuple[dict[str, Any], str, Path]) -> None:
    """The tables of a run, a verdict for each target, and the same tables from its saved JSON."""
    _, output, saved = scale_run
    tables = output[output.index("| measure") :]
    targets = tables[tables.index("| target") :].splitlines()[2:]
    assert len(targets) == 7
    for row in targets:
        verdict = row.split("|")[2].strip()
        assert verdict == "met" or verdict.startswith("MISS"), row
    assert run("bench.scale", "--from-json", str(saved)).strip() == tables.strip()


def test_scale_plots_its_json(scale_run: tuple[dict[str, Any], str, Path], tmp_path: Path) -> None:
    """``--png`` draws the plot (with the bench extra's matplotlib)."""
    pytest.importorskip("matplotlib")
    _, _, saved = scale_run
    png = tmp_path / "scale.png"
    run("bench.scale", "--from-json", str(saved), "--png", str(png))
    assert png.read_bytes().startswith(b"\x89PNG")


def test_percentile_is_the_nearest_rank() -> None:
    """p99 of 100 values is the 99th, not the largest; the median of 100 the 50th."""
    values = [float(value) for value in range(100, 0, -1)]
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.5) == 50
    assert percentile(values[:10], 0.99) == 100
    assert percentile([7.0], 0.5) == 7
