"""`pgrealtime bench <scenario> --quick` end to end, checking correctness only.

Each run is a subprocess (it pins cpus, raises limits and runs its own event loop),
against the baseline and, when `pgrealtime serve` exists, the real server on the
test's fresh database. Timings are never asserted: they belong in reports.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness.targets import server_available

ROOT = Path(__file__).resolve().parents[2]  # `python -m bench` runs from the repository root

SCENARIOS = ["fanout", "channels", "publish", "idle", "connect"]
MESSAGE_SCENARIOS = {"fanout", "channels", "publish"}


@functools.cache
def _server_available() -> bool:
    return server_available()


def run_quick(scenario: str, *extra: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bench",
        scenario,
        "--quick",
        "--json",
        "--no-files",
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(scenario: str, run: dict, kind: str) -> None:
    assert run["scenario"] == scenario and run["quick"] is True
    assert not run["failed_targets"], run["failed_targets"]
    result = run["results"][kind]
    if scenario in MESSAGE_SCENARIOS:
        seq = result["sequence"]
        assert seq["expected"] > 0
        assert seq["received"] == seq["expected"]
        for key in ("lost", "duplicated", "reordered", "unexpected"):
            assert seq[key] == 0, (key, seq)
        assert result["publishes_rejected"] == 0, result["errors_sample"]
        assert result["unacked"] == 0
        assert result["sessions_dropped"] == 0
        assert result["malformed"] == 0
        assert result["steps"], "no step was measured"
        for step in result["steps"]:
            for field in (
                "deliveries_per_s",
                "publishes_per_s",
                "latency",
                "ack_latency",
                "server_cpu_us_per_delivery",
                "server_cpu_pct",
                "server_sys_pct",
                "missing_after_drain",
            ):
                assert field in step
            assert step["missing_after_drain"] == 0
            assert {"p50_ms", "p90_ms", "p99_ms", "max_ms", "count"} <= set(step["latency"])
    elif scenario == "idle":
        assert result["sessions_dropped"] == 0
        assert result["kb_per_connection"] is not None
        assert result["connections"] > 0
    else:
        assert result["failed"] == 0, result["failures_sample"]
        assert result["established"] == result["sessions"]
        assert result["sessions_per_s"] > 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_quick_against_baseline(scenario: str) -> None:
    check(scenario, run_quick(scenario, "--target", "baseline"), "baseline")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_quick_against_server(scenario: str, db_url: str) -> None:
    if not _server_available():
        pytest.skip("`pgrealtime serve` is not available yet")
    check(scenario, run_quick(scenario, "--target", "server", "--database-url", db_url), "server")


def test_connect_with_each_token_algorithm(db_url: str) -> None:
    """`--token-alg`: one storm per algorithm against the same server, every session
    established with its kind of token (the server was given the bench's keys)."""
    if not _server_available():
        pytest.skip("`pgrealtime serve` is not available yet")
    algs = "HS256,RS256,ES256,EdDSA"
    run = run_quick("connect", "--target", "server", "--database-url", db_url,
                    "--token-alg", algs)  # fmt: skip
    check("connect", run, "server")
    storms = run["results"]["server"]["by_token_alg"]
    assert list(storms) == algs.split(",")
    for storm in storms.values():
        assert storm["failed"] == 0 and storm["sessions_per_s"] > 0
    assert storms["HS256"]["vs_first"] == 1.0


def test_table_is_printed() -> None:
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "publish",
        "--quick",
        "--target",
        "baseline",
        "--no-files",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in (
        "pgrealtime bench publish",
        "baseline: steps",
        "p99 ms",
        "lost",
        "duplicated",
        "reordered",
        "baseline: correctness OK",
        "pinned",
    ):
        assert text in out, text


def test_files_are_written(tmp_path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "fanout",
        "--quick",
        "--target",
        "baseline",
        "--output-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = list(tmp_path.glob("fanout-*.json"))
    assert len(results) == 1
    run = json.loads(results[0].read_text())
    assert run["results"]["baseline"]["steps"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert any("matplotlib" in n for n in run["notes"])
    else:
        assert list(tmp_path.glob("fanout-*.png"))


def test_pgrealtime_bench_finds_the_checkout_from_any_directory(tmp_path) -> None:
    """The product CLI's thin entry runs the repository's bench/ (the baseline process
    included) whatever the working directory."""
    cmd = [sys.executable, "-m", "pgrealtime.cli", "bench", "publish", "--quick"]
    cmd += ["--target", "baseline", "--no-files", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    check("publish", run, "baseline")
