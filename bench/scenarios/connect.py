"""`bench connect`: a storm of connect + auth + subscribe, a fixed number in flight:
sessions established per second and what each costs the server. With `--token-alg
HS256,RS256,ES256` one storm per algorithm, in turn against the same server, each
token distinct (no verified-token cache hit): the cost of verifying each kind."""

from __future__ import annotations

from array import array

from bench.harness.loadgen import (
    Recorder,
    Session,
    bounded_gather,
    close_all,
    make_http,
    now_ns,
    open_session,
    wire,
)
from bench.harness.measure import ms, other_cpu_pct
from bench.harness.procstat import own_cpu_seconds
from bench.harness.sizes import Sizes
from bench.harness.targets import Target

DEFAULTS = dict(sessions=2000, concurrency=100)
QUICK = dict(sessions=50, concurrency=10)


async def run(target: Target, s: Sizes) -> dict:
    """The first algorithm's storm (HS256 by default); with more, theirs in turn under
    `by_token_alg`, each with its rate relative to the first's."""
    # the baseline checks no token: one storm is all it needs
    algs = tuple(dict.fromkeys(s.token_algs))  # each once, in the order given
    algs = algs if target.kind == "server" else algs[:1]
    first = await _storm(target, s, algs[0])
    if len(algs) > 1:
        storms = {algs[0]: first}
        for alg in algs[1:]:
            storms[alg] = await _storm(target, s, alg)
        base = first["sessions_per_s"] or None
        first["by_token_alg"] = {
            alg: {
                "sessions_per_s": r["sessions_per_s"],
                "server_cpu_us_per_session": r["server_cpu_us_per_session"],
                "failed": r["failed"],
                "vs_first": round(r["sessions_per_s"] / base, 2) if base else None,
            }
            for alg, r in storms.items()
        }
    first["token_alg"] = algs[0]
    return first


async def _storm(target: Target, s: Sizes, alg: str) -> dict:
    """A storm of connect + auth + subscribe with a fixed number in flight
    (closed loop: this measures capacity, sessions established per second)."""
    rec = Recorder()
    probe = target.probe
    url = target.ws_url
    tokens = [target.token(alg=alg) for _ in range(s.sessions)]
    latencies = array("q")
    failures: list[str] = []

    async with make_http() as http:

        async def one(i: int) -> Session | None:
            t = now_ns()
            try:
                session = await open_session(
                    wire(http, s.client), url, i, rec, tokens[i], [f"bench:conn:{i % 100}"]
                )
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                return None
            latencies.append(now_ns() - t)
            return session

        probe.refresh()
        c0, t0, o0 = probe.sample(), now_ns(), own_cpu_seconds()
        sessions = await bounded_gather(
            [(lambda i=i: one(i)) for i in range(s.sessions)], s.concurrency
        )
        c1, t1, o1 = probe.sample(), now_ns(), own_cpu_seconds()
        opened = [x for x in sessions if x is not None]
        await close_all(opened)
    secs = (t1 - t0) / 1e9
    return {
        "sessions": s.sessions,
        "concurrency": s.concurrency,
        "established": len(opened),
        "failed": len(failures),
        "failures_sample": failures[:5],
        "seconds": round(secs, 2),
        "sessions_per_s": round(len(opened) / secs, 1),
        "session_latency": ms(latencies),
        "server_cpu_pct": round(100 * (c1.server - c0.server) / secs, 1),
        "postgres_cpu_pct": round(100 * (c1.postgres - c0.postgres) / secs, 1),
        "loadgen_cpu_pct": round(100 * (sum(o1) - sum(o0)) / secs, 1),
        "other_cpu_pct": other_cpu_pct(c0, c1, o0, o1, secs),
        "server_cpu_us_per_session": (
            round(1e6 * (c1.server - c0.server) / len(opened), 1) if opened else None
        ),
    }
