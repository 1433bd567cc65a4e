"""`python -m bench <scenario>` (and `pgrealtime bench` in a source checkout): the flags,
and one run from start to report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench import report, scenarios
from bench.harness import targets
from bench.harness.baseline import raise_nofile_limit
from bench.harness.procstat import cpu_layout

SCENARIO_NAMES = [*scenarios.NAMES, "all"]


def _rates(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def configure_parser(p: argparse.ArgumentParser) -> None:
    """The bench flags, shared by `python -m bench` and `pgrealtime bench`."""
    p.add_argument(
        "scenario",
        choices=SCENARIO_NAMES,
        help="fanout | channels | publish | idle | connect | changes | webhooks | presence"
        " | cluster | all",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes, a few seconds (used by the test suite)"
    )
    p.add_argument(
        "--target",
        choices=["both", "server", "baseline"],
        default="both",
        help="what to measure (default: pgrealtime and the baseline, same run)",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="database for the server the tool starts (default: embedded)",
    )
    p.add_argument(
        "--url", default=None, help="measure an already running pgrealtime at this http:// URL"
    )
    p.add_argument(
        "--jwt-secret",
        default=os.environ.get("PGREALTIME_JWT_SECRET"),
        help="with --url: the server's JWT secret",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("PGREALTIME_API_KEY"),
        help="with --url: admin key, used to create the bench:* channel",
    )
    p.add_argument(
        "--server-pid", type=int, default=None, help="with --url: its pid, to read CPU and memory"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path("benchmarks/results"),
        help="where the JSON result and the PNG plot go (default %(default)s)",
    )
    p.add_argument("--no-files", action="store_true", help="write no JSON or PNG")
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the load generator and server to separate cpus",
    )
    g = p.add_argument_group("sizes (defaults depend on the scenario and --quick)")
    g.add_argument("--subscribers", type=int, help="fanout/channels: subscriber sessions")
    g.add_argument("--publishers", type=int, help="fanout/channels: publisher sessions")
    g.add_argument("--channels", type=int, help="channels: number of channels")
    g.add_argument("--subs-per-channel", type=int, help="channels: subscribers per channel")
    g.add_argument("--clients", type=int, help="publish: publishing clients")
    g.add_argument("--connections", type=int, help="idle: idle sessions")
    g.add_argument("--sessions", type=int, help="connect, presence: sessions to establish")
    g.add_argument(
        "--rates", type=_rates, help="comma-separated publishes/s, one per step (rising)"
    )
    g.add_argument("--warmup", type=float, help="seconds per step not measured")
    g.add_argument("--duration", type=float, help="measured seconds per step")
    g.add_argument("--drain", type=float, help="seconds to wait for stragglers after a step")
    g.add_argument("--p99-limit-ms", type=float, help="a step above this p99 ends the ramp")
    g.add_argument("--concurrency", type=int, help="sessions opened at once")
    g.add_argument("--rest-seconds", type=float, help="idle: seconds to watch CPU at rest")
    g.add_argument("--payload-bytes", type=int, help="padding in each message payload")
    g.add_argument(
        "--client",
        choices=["fast", "aiohttp"],
        help="WebSocket client of the load generator: the lean protocol (default; "
        "receives far more frames per cpu second) or aiohttp's",
    )
    g.add_argument(
        "--token-alg",
        dest="token_algs",
        type=lambda text: tuple(x.strip() for x in text.split(",") if x.strip()),
        help="connect: comma-separated token algorithms, each storm in turn in the same run "
        "(HS256, RS256, PS256, ES256, EdDSA), compared with the first; default HS256",
    )
    g.add_argument(
        "--protocol",
        choices=["raw", "socketio"],
        help="fanout, channels, publish: the clients' protocol: raw (/realtime, default) "
        "or socketio (/socket.io/, as the InsForge SDK)",
    )
    g.add_argument("--rls-subscribers", type=int, help="changes: distinct users on the RLS table")
    g.add_argument("--messages", type=int, help="webhooks: messages of the throughput phase")
    g.add_argument(
        "--outage-seconds", type=float, help="webhooks: how long the receiver is stopped"
    )


SIZE_FLAGS = [
    "subscribers",
    "publishers",
    "channels",
    "subs_per_channel",
    "clients",
    "connections",
    "sessions",
    "rates",
    "warmup",
    "duration",
    "drain",
    "p99_limit_ms",
    "concurrency",
    "rest_seconds",
    "payload_bytes",
    "client",
    "protocol",
    "rls_subscribers",
    "messages",
    "outage_seconds",
    "token_algs",
    "database_url",
]


def run_bench(args: argparse.Namespace) -> int:
    """Run the chosen scenario(s); 0 when every delivery was correct, 1 otherwise."""
    raise_nofile_limit()
    layout = None if args.no_pin else cpu_layout()
    if layout is not None:
        os.sched_setaffinity(0, layout[0])
    names = list(scenarios.NAMES) if args.scenario == "all" else [args.scenario]
    status = 0
    for name in names:
        run = _run_loop(_run_scenario(name, args, layout))
        if not args.json:
            print(report.render(run), flush=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if not args.no_files:
            run["files"] = {"json": str(report.write_json(run, args.output_dir, stamp))}
            if name in ("fanout", "channels", "publish"):
                png = report.plot_steps(run, args.output_dir, stamp)
                if png is None:
                    run["notes"].append("matplotlib not installed: no PNG plot")
                else:
                    run["files"]["png"] = str(png)
                report.write_json(run, args.output_dir, stamp)
            if not args.json:
                print("files: " + ", ".join(run["files"].values()), flush=True)
        if args.json:
            print(json.dumps(run, default=str), flush=True)
        if any(report.correctness(name, r) for r in run["results"].values()):
            status = 1
        if run.get("failed_targets"):
            status = 1
    return status


def _run_loop(coro):
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def _run_scenario(name: str, args: argparse.Namespace, layout) -> dict:
    overrides = {k: getattr(args, k, None) for k in SIZE_FLAGS}
    sizes = scenarios.sizes_for(name, args.quick, overrides)
    gen_cpus, server_cpus = layout if layout else (None, None)
    all_cpus = (gen_cpus | server_cpus) if layout else None
    if layout:
        note = (
            f"load generator pinned to cpu {sorted(gen_cpus)}, server process(es) to cpu "
            f"{sorted(server_cpus)}; PostgreSQL not pinned"
        )
    else:
        note = "no cpu pinning (fewer than 2 cpus or --no-pin)"
    if args.url:
        note += "; server given by --url (its cpu pinning is not ours)"
    run: dict = {
        "scenario": name,
        "quick": args.quick,
        "machine": machine(),
        "command": " ".join(sys.argv),
        "setup_note": note,
        "sizes": sizes.__dict__,
        "results": {},
        "notes": [],
        "failed_targets": {},
    }
    kinds = ["server", "baseline"] if args.target == "both" else [args.target]
    if name in scenarios.OWN_BASELINE:  # the scenario measures its baseline itself
        kinds = ["server"]
    # Socket.IO: the baseline column is the same server's raw WebSocket path (the
    # aiohttp baseline speaks no Socket.IO), so server/baseline is socketio/raw
    raw_as_baseline = sizes.protocol == "socketio"
    if raw_as_baseline and "baseline" in kinds:
        run["notes"].append("baseline: pgrealtime itself over the raw protocol (/realtime)")
    for kind in kinds:
        target = None
        kind_sizes = sizes
        try:
            if kind == "baseline" and raw_as_baseline:
                kind_sizes = dataclasses.replace(sizes, protocol="raw")
                target = await targets.start_server(
                    args.database_url, server_cpus, all_cpus, scenarios.SERVER_ARGS.get(name)
                )
            elif kind == "baseline":
                target = await targets.start_baseline(server_cpus)
            elif args.url:
                if not args.jwt_secret:
                    raise SystemExit("--url needs --jwt-secret")
                target = await targets.attach(
                    args.url, args.jwt_secret, args.api_key, args.server_pid
                )
            else:
                target = await targets.start_server(
                    args.database_url, server_cpus, all_cpus, scenarios.SERVER_ARGS.get(name)
                )
            print(
                f"[bench] {name} against {kind} at {target.base_url} (pid {target.pid})",
                file=sys.stderr,
                flush=True,
            )
            if kind == "server":
                scope = {
                    "embedded": "its embedded cluster only",
                    "host": "every postgres process on the host",
                    "none": "none",
                }[target.postgres_scope]
                run["notes"].append(f"server: PostgreSQL CPU counts {scope}")
            result = await scenarios.load(name).run(target, kind_sizes)
            if name in scenarios.OWN_BASELINE:
                run["results"].update(result)
            else:
                run["results"][kind] = result
        except Exception as exc:  # report the other target anyway
            run["failed_targets"][kind] = f"{type(exc).__name__}: {exc}"
            run["notes"].append(f"{kind} failed: {type(exc).__name__}: {exc}")
            if target is not None and target.log_tail():
                print(f"[bench] {kind} log tail:\n{target.log_tail()}", file=sys.stderr)
        finally:
            if target is not None:
                targets.stop(target)
    if args.url and args.server_pid is None:
        run["notes"].append("no --server-pid: server CPU and memory not measured")
    return run


DESCRIPTION = (
    "Drive pgrealtime (and a minimal aiohttp broadcast baseline) over real WebSocket "
    "connections and print latency, throughput, CPU and memory."
)


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    """Parse `argv` (default: the command line) and run; the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    configure_parser(parser)
    return run_bench(parser.parse_args(argv))
