"""`bench presence`: a presence storm. N sessions (distinct users, already connected and
authenticated) subscribe to one channel within one second; each keeps its view of the
channel's members (the snapshot in `subscribed`, then every join and leave). Measured:
the time from the first subscribe until every session's view lists all N, the server's
CPU and the bytes it sent meanwhile. Then half of them disconnect at once: the time
until the other half's views have shrunk to the rest.

There is no baseline (the minimal broadcast server has no presence): only the server
runs, and the scenario reports for it alone.
"""

from __future__ import annotations

import asyncio

import orjson

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
from bench.harness.measure import other_cpu_pct, sleep_until, wait_until
from bench.harness.procstat import own_cpu_seconds
from bench.harness.sizes import Sizes
from bench.harness.targets import Target

DEFAULTS = dict(sessions=1000, concurrency=100, drain=60.0)
QUICK = dict(sessions=40, concurrency=20, drain=30.0)
CHANNEL = "bench:presence"
STORM_SECONDS = 1.0  # the subscribes are spread evenly over this


class View:
    """One session's members of the channel, from the frames it received."""

    __slots__ = ("bytes", "complete_at", "frames", "members", "want")

    def __init__(self) -> None:
        self.members: set[str] = set()
        self.want = 0  # how many members make it complete
        self.complete_at = 0  # now_ns() when it first was
        self.bytes = 0  # text bytes received
        self.frames = 0

    def on_frame(self, data: bytes) -> None:
        """A raw frame before the session's own handling (replies by id)."""
        self.bytes += len(data)
        self.frames += 1
        if data.startswith(b'{"type":"presence"'):
            frame = orjson.loads(data)
            if frame["event"] == "join":
                self.members.add(frame["member"]["presenceId"])
            elif frame["event"] == "leave":
                self.members.discard(frame["member"]["presenceId"])
        elif data.startswith(b'{"type":"subscribed"'):  # before any later change
            frame = orjson.loads(data)
            self.members.update(m["presenceId"] for m in frame["presence"]["members"])
        else:
            return
        if self.want and not self.complete_at and len(self.members) == self.want:
            self.complete_at = now_ns()


def _watch(session: Session, view: View) -> None:
    """Route the session's frames through its view first (the wire calls the bound
    `on_text` it was given at connect, so it is wrapped on the connection)."""
    handle = session.on_text

    def on_text(data: bytes | str) -> None:
        view.on_frame(data if type(data) is bytes else data.encode())
        handle(data)

    conn = session.conn
    if hasattr(conn, "on_text"):  # the lean client
        conn.on_text = on_text
    else:  # aiohttp: its reader task calls session.on_text
        raise RuntimeError("bench presence needs the lean client (--client fast)")


async def run(target: Target, s: Sizes) -> dict:
    n = s.sessions
    rec = Recorder()
    errors: list[str] = []
    async with make_http() as http:
        sessions = await bounded_gather(
            [
                (
                    lambda i=i: open_session(
                        wire(http, s.client), target.ws_url, i, rec, target.token(), []
                    )
                )
                for i in range(n)
            ],
            s.concurrency,
        )
        views = [View() for _ in sessions]
        for session, view in zip(sessions, views, strict=True):
            _watch(session, view)
        probe = target.probe

        # -- join storm: every session subscribes, spread over STORM_SECONDS ---------
        for view in views:
            view.want = n
        probe.refresh()
        c0, o0, t0 = probe.sample(), own_cpu_seconds(), now_ns()

        async def join(i: int) -> None:
            await sleep_until(t0 + int(i * STORM_SECONDS * 1e9 / n))
            try:
                await sessions[i].request({"type": "subscribe", "channel": CHANNEL}, "subscribed")
            except Exception as exc:
                errors.append(f"subscribe: {type(exc).__name__}: {exc}")

        await asyncio.gather(*(join(i) for i in range(n)))
        acted = now_ns()  # every subscribe answered
        await wait_until(lambda: all(v.complete_at for v in views), s.drain)
        c1, o1, t1 = probe.sample(), own_cpu_seconds(), now_ns()
        joined = _figures(views, t0, acted, t1, c0, c1, o0, o1)

        # -- leave storm: the first half disconnects at once ----------------------------
        stay, go = views[n // 2 :], sessions[: n // 2]
        for view in stay:
            view.want, view.complete_at, view.bytes, view.frames = n - len(go), 0, 0, 0
        probe.refresh()
        c0, o0, t0 = probe.sample(), own_cpu_seconds(), now_ns()
        await close_all(go)
        acted = now_ns()  # every close handshake done
        await wait_until(lambda: all(v.complete_at for v in stay), s.drain)
        c1, o1, t1 = probe.sample(), own_cpu_seconds(), now_ns()
        left = _figures(stay, t0, acted, t1, c0, c1, o0, o1)
        await close_all(sessions[n // 2 :])
    return {
        "server": {
            "sessions": n,
            "failed": len(errors) + joined["incomplete"] + left["incomplete"],
            "errors_sample": errors[:5],
            "join_storm": joined,
            "leave_storm": left,
        }
    }


def _figures(views: list[View], t0: int, acted: int, t1: int, c0, c1, o0, o1) -> dict:
    """`acted`: when the generator's part (subscribes answered, closes done) ended."""
    done = [v.complete_at for v in views if v.complete_at]
    secs = (t1 - t0) / 1e9
    sent = sum(v.bytes for v in views)
    return {
        "views": len(views),
        "incomplete": len(views) - len(done),
        "acted_s": round((acted - t0) / 1e9, 3),
        "all_complete_s": round((max(done) - t0) / 1e9, 3) if done else None,
        "seconds_measured": round(secs, 3),
        "server_cpu_s": round(c1.server - c0.server, 3),
        "server_cpu_pct": round(100 * (c1.server - c0.server) / secs, 1),
        "loadgen_cpu_pct": round(100 * (sum(o1) - sum(o0)) / secs, 1),
        "other_cpu_pct": other_cpu_pct(c0, c1, o0, o1, secs),
        "frames_received": sum(v.frames for v in views),
        "bytes_received": sent,
        "bytes_per_view": round(sent / len(views)) if views else 0,
    }


def summary_rows(result: dict) -> list[tuple[str, object]]:
    """Row names are unique: the report keys its table by them."""
    rows: list[tuple[str, object]] = [("sessions (distinct users)", result["sessions"])]
    for name, part in (("join", result["join_storm"]), ("leave", result["leave_storm"])):
        acted = "last subscribe answered" if name == "join" else "half closed"
        rows += [
            (f"{name} storm: views watched", part["views"]),
            (f"  {name}: s until {acted}", part["acted_s"]),
            (f"  {name}: s until every view is complete", part["all_complete_s"]),
            (f"  {name}: views never complete", part["incomplete"]),
            (f"  {name}: server CPU s", part["server_cpu_s"]),
            (f"  {name}: server CPU %", part["server_cpu_pct"]),
            (
                f"  {name}: gen CPU % / other %",
                f"{part['loadgen_cpu_pct']} / {part['other_cpu_pct']}",
            ),
            (f"  {name}: frames received", part["frames_received"]),
            (f"  {name}: bytes received (JSON text)", part["bytes_received"]),
            (f"  {name}: bytes per view", part["bytes_per_view"]),
        ]
    return rows


def correctness(result: dict) -> list[str]:
    server = result.get("server") or {}
    problems = []
    if server.get("failed"):
        problems.append(f"failed: {server['failed']} {server.get('errors_sample')}")
    return problems
