"""Printing results side by side (server, baseline, ratio), the JSON file and the plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from bench import scenarios
from bench.harness.stats import ratio


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[_fmt(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def best_step(result: dict, p99_limit_ms: float) -> dict | None:
    """The highest-throughput step that kept p99 within the limit with nothing missing."""
    good = [s for s in result.get("steps", []) if not s["degraded"]]
    if not good:
        return None
    return max(good, key=lambda s: (s["deliveries_per_s"], s["publishes_per_s"]))


def summary_rows(scenario: str, result: dict, p99_limit_ms: float) -> list[tuple[str, object]]:
    """The headline figures of one target, as (name, value)."""
    if scenario in scenarios.OWN_BASELINE:  # these print their own rows
        return scenarios.load(scenario).summary_rows(result)
    if scenario in ("fanout", "channels", "publish"):
        seq = result["sequence"]
        best = best_step(result, p99_limit_ms)
        rows: list[tuple[str, object]] = [
            ("sessions / subscriptions", f"{result['sessions']} / {result['subscriptions']}"),
            ("setup seconds", result["setup_seconds"]),
        ]
        best = best or {"latency": {}, "ack_latency": {}}
        lat, ack = best["latency"], best["ack_latency"]
        rows += [
            (f"best step within p99 {p99_limit_ms:g} ms: rate offered/s", best.get("rate_offered")),
            ("  publishes/s (acked)", best.get("publishes_per_s")),
            ("  deliveries/s", best.get("deliveries_per_s")),
            ("  delivery p50 ms", lat.get("p50_ms")),
            ("  delivery p99 ms", lat.get("p99_ms")),
            ("  ack p50 ms", ack.get("p50_ms")),
            ("  ack p99 ms", ack.get("p99_ms")),
            ("  server CPU us/delivery", best.get("server_cpu_us_per_delivery")),
            ("  server CPU us/publish", best.get("server_cpu_us_per_publish")),
            ("  server CPU %", best.get("server_cpu_pct")),
            ("  postgres CPU %", best.get("postgres_cpu_pct")),
        ]
        rows += [
            ("publishes sent", result["publishes_sent"]),
            ("deliveries expected", seq["expected"]),
            ("lost", seq["lost"]),
            ("duplicated", seq["duplicated"]),
            ("reordered", seq["reordered"]),
            ("unexpected", seq["unexpected"]),
            ("publishes rejected", result["publishes_rejected"]),
            ("publishes unacked", result["unacked"]),
            ("sessions dropped", result["sessions_dropped"]),
            ("system events (presence)", result.get("system_events")),
            ("server RSS MB at end", result["server_rss_mb"]),
        ]
        return rows
    if scenario == "idle":
        keys = [
            "connections",
            "open_seconds",
            "server_rss_before_mb",
            "server_rss_after_mb",
            "kb_per_connection",
            "server_cpu_pct_at_rest",
            "postgres_cpu_pct_at_rest",
            "host_cpu_pct_at_rest",
            "sessions_dropped",
        ]
        return [(k.replace("_", " "), result[k]) for k in keys]
    keys = [
        "sessions",
        "concurrency",
        "established",
        "failed",
        "seconds",
        "sessions_per_s",
        "server_cpu_us_per_session",
        "server_cpu_pct",
        "postgres_cpu_pct",
        "loadgen_cpu_pct",
        "other_cpu_pct",
    ]
    rows = [(k.replace("_", " "), result[k]) for k in keys]
    lat = result["session_latency"]
    rows += [
        ("session p50 ms", lat["p50_ms"]),
        ("session p99 ms", lat["p99_ms"]),
        ("session max ms", lat["max_ms"]),
    ]
    for alg, storm in result.get("by_token_alg", {}).items():  # --token-alg
        rows.append(
            (
                f"{alg} sessions/s (x first)",
                f"{storm['sessions_per_s']} ({storm['vs_first']}x), "
                f"{storm['server_cpu_us_per_session']} us/session, {storm['failed']} failed",
            )
        )
    return rows


def steps_table(result: dict) -> str:
    headers = [
        "rate/s",
        "pub/s",
        "deliv/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "ack p99",
        "us/deliv",
        "srv CPU%",
        "srv sys%",
        "pg CPU%",
        "gen CPU%",
        "gen sys%",
        "other%",
        "lag p99",
        "missing",
        "degraded",
    ]
    rows = []
    for s in result["steps"]:
        lat = s["latency"]
        rows.append(
            [
                s["rate_offered"],
                s["publishes_per_s"],
                s["deliveries_per_s"],
                lat["p50_ms"],
                lat["p90_ms"],
                lat["p99_ms"],
                lat["max_ms"],
                s["ack_latency"]["p99_ms"],
                s["server_cpu_us_per_delivery"],
                s["server_cpu_pct"],
                s.get("server_sys_pct"),
                s["postgres_cpu_pct"],
                s["loadgen_cpu_pct"],
                s["loadgen_sys_pct"],
                s["other_cpu_pct"],
                s["send_lag_p99_ms"],
                s["missing_after_drain"],
                s["degraded"],
            ]
        )
    return table(headers, rows)


def render(run: dict) -> str:
    """The whole human-readable report of one run."""
    scenario = run["scenario"]
    limit = run["sizes"]["p99_limit_ms"]
    out = [
        f"pgrealtime bench {scenario}" + ("  (quick)" if run["quick"] else ""),
        f"  {run['setup_note']}",
    ]
    results = run["results"]
    names = [n for n in ("server", "baseline") if n in results]
    for name in names:
        if "steps" in results[name]:
            out += ["", f"{name}: steps", steps_table(results[name])]
    per = {n: dict(summary_rows(scenario, results[n], limit)) for n in names}
    keys = list(dict.fromkeys(k for n in names for k in per[n]))
    headers = ["metric", *names]
    if len(names) == 2:
        headers.append("server/baseline")
    rows = []
    for k in keys:
        values = [per[n].get(k) for n in names]
        row = [k, *values]
        if len(names) == 2:
            a, b = values
            num = isinstance(a, int | float) and isinstance(b, int | float)
            row.append(ratio(float(a), float(b)) if num else None)
        rows.append(row)
    out += ["", table(headers, rows)]
    for n in names:
        verdict = correctness(scenario, results[n])
        out.append(f"{n}: correctness {'OK' if not verdict else 'FAILED: ' + '; '.join(verdict)}")
    for note in run.get("notes", []):
        out.append(f"note: {note}")
    return "\n".join(out)


def correctness(scenario: str, result: dict) -> list[str]:
    """Problems that are never acceptable, whatever the load (empty = clean)."""
    if scenario in scenarios.OWN_BASELINE:  # these check their own results
        return scenarios.load(scenario).correctness(result)
    problems = []
    if scenario in ("fanout", "channels", "publish"):
        for key in ("lost", "duplicated", "reordered", "unexpected"):
            if result["sequence"][key]:
                problems.append(f"{key} {result['sequence'][key]}")
        for key in ("publishes_rejected", "unacked", "sessions_dropped", "malformed"):
            if result[key]:
                problems.append(f"{key} {result[key]}")
    elif scenario == "idle":
        if result["sessions_dropped"]:
            problems.append(f"sessions dropped {result['sessions_dropped']}")
    elif result["failed"]:
        problems.append(f"failed sessions {result['failed']}")
    return problems


def write_json(run: dict, output_dir: Path, stamp: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{run['scenario']}-{stamp}.json"
    path.write_text(json.dumps(run, indent=2, default=str))
    return path


def plot_steps(run: dict, output_dir: Path, stamp: str) -> Path | None:
    """Latency (p50, p99) against deliveries/s per target; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"server": "tab:blue", "baseline": "tab:gray"}
    for name, result in run["results"].items():
        steps = result.get("steps") or []
        xs = [s["deliveries_per_s"] for s in steps]
        for q, mark in (("p50_ms", "o--"), ("p99_ms", "s-")):
            ys = [s["latency"][q] for s in steps]
            ax.plot(xs, ys, mark, color=styles.get(name), label=f"{name} {q[:3]}")
    ax.axhline(run["sizes"]["p99_limit_ms"], color="tab:red", lw=0.8, ls=":", label="p99 limit")
    ax.set_xlabel("deliveries per second (measured at the subscribers)")
    ax.set_ylabel("latency from scheduled send, ms")
    ax.set_yscale("log")
    ax.set_title(f"pgrealtime bench {run['scenario']}: latency vs throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{run['scenario']}-{stamp}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
