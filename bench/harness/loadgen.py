"""The load generator: real WebSocket sessions (aiohttp client) and an open-loop
publisher schedule.

Latency is always measured from the time a message was *scheduled* to be sent,
never from when the generator got round to sending it, so a server (or client)
that falls behind shows up as latency instead of silently lowering the offered
load (no coordinated omission). Sender and receivers share one process and one
monotonic clock (perf_counter_ns), so the scheduled time travels in the payload.

It speaks raw frames instead of using pgrealtime.client on purpose: at tens of
thousands of messages per second the generator must cost less than the server it
measures (no typed decoding, no per-message queue or resume bookkeeping), and a
benchmark wants a dropped session counted, not silently reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.harness import fastws
from bench.harness.stats import SequenceTracker

now_ns = time.perf_counter_ns
TEXT = aiohttp.WSMsgType.TEXT


class SessionError(RuntimeError):
    """The server refused or dropped a session during setup."""


@dataclass
class Recorder:
    """Everything the receivers observe, shared by all connections of a run.

    Latency samples go to the window of the step named in the payload, and only
    when the message was scheduled inside that step's measured window (after
    warm-up)."""

    tracker: SequenceTracker = field(default_factory=SequenceTracker)
    deliveries: int = 0  # message frames received by any session
    acks: int = 0  # `published` replies
    dropped: int = 0  # sessions the server closed on us
    rejected: dict[tuple[int, str], int] = field(default_factory=dict)  # (publisher, channel)
    windows: dict[int, tuple[int, int]] = field(default_factory=dict)  # step -> [t0, t1)
    latencies: dict[int, array] = field(default_factory=dict)  # step -> ns samples
    ack_latencies: dict[int, array] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    malformed: int = 0
    system_events: int = 0  # the server's own events (presence join/leave), not messages

    def open_window(self, step: int, t0: int, t1: int) -> None:
        self.windows[step] = (t0, t1)
        self.latencies[step] = array("q")
        self.ack_latencies[step] = array("q")


class Session:
    """One WebSocket session: request/reply by frame id, plus a handler that feeds
    `message` frames to the recorder. Every session is a receiver: a publisher is
    subscribed to its channels too and gets its own messages back, like anyone.

    The wire is either the lean client (`fastws`, the default) or aiohttp's."""

    __slots__ = (
        "_ids",
        "_pending",
        "_reader",
        "closed",
        "closing",
        "conn",
        "fast",
        "index",
        "recorder",
        "user_id",
    )

    def __init__(self, index: int, recorder: Recorder) -> None:
        self.index = index
        self.recorder = recorder
        self.conn: fastws.FastWebSocket | aiohttp.ClientWebSocketResponse | None = None
        self.fast = True
        self.closing = False
        self.closed = False
        self.user_id: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future | int] = {}
        self._reader: asyncio.Task | None = None

    async def _send(self, data: bytes) -> None:
        if self.fast:
            self.conn.send_text(data)
        else:
            await self.conn.send_frame(data, TEXT)

    async def request(self, frame: dict, expect: str, wait_s: float = 30.0) -> dict:
        """Send a frame with a fresh id and wait for the reply carrying that id."""
        rid = f"r{next(self._ids)}"
        frame["id"] = rid
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        await self._send(orjson.dumps(frame))
        try:
            reply = await asyncio.wait_for(fut, wait_s)
        finally:
            self._pending.pop(rid, None)
        if reply.get("type") != expect:
            raise SessionError(f"{frame['type']} -> {reply}")
        return reply

    async def auth(self, token: str) -> None:
        reply = await self.request({"type": "auth", "token": token}, "auth_success")
        self.user_id = reply.get("userId")

    async def subscribe(self, channel: str) -> None:
        await self.request({"type": "subscribe", "channel": channel}, "subscribed")

    async def publish(
        self, channel: str, step: int, pub: int, seq: int, sched: int, pad: str
    ) -> None:
        """Fire one publish; its ack is matched by id when it comes (no waiting here)."""
        rid = f"{step}:{pub}:{seq}:{channel}"
        self._pending[rid] = sched
        frame = {
            "type": "publish",
            "id": rid,
            "channel": channel,
            "event": "tick",
            "payload": {"k": step, "p": pub, "s": seq, "t": sched, "x": pad},
        }
        await self._send(orjson.dumps(frame))

    @property
    def unacked(self) -> int:
        return sum(1 for v in self._pending.values() if isinstance(v, int))

    def on_text(self, data: bytes | str) -> None:
        """Every text frame from the server, timestamped on arrival.

        A compact `message` frame (what orjson and the baseline write) takes a fast
        path that parses only the small payload object: a full parse of each frame
        would make the generator, not the server, the bottleneck. Anything else
        gets the full parse, so a differently formatted frame is still counted."""
        received = now_ns()
        rec = self.recorder
        if type(data) is bytes and data.startswith(b'{"type":"message"'):
            i = data.find(b'"payload":{')
            c = data.find(b'"channel":"')
            if i > 0 and c > 0:
                j = data.find(b"}", i)
                e = data.find(b'"', c + 11)
                try:
                    payload = orjson.loads(data[i + 10 : j + 1])
                    self._on_message(received, data[c + 11 : e].decode(), payload)
                    return
                except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                    pass  # fall through to the full parse
        try:
            frame = orjson.loads(data)
            kind = frame["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            rec.malformed += 1
            return
        if kind == "message":
            try:
                self._on_message(received, frame["channel"], frame["payload"])
            except (KeyError, TypeError):
                rec.malformed += 1
            return
        rid = frame.get("id")
        waiter = self._pending.pop(rid, None) if rid is not None else None
        if isinstance(waiter, int):  # reply to a publish
            step_s, pub_s, _, channel = rid.split(":", 3)
            if kind == "published":
                rec.acks += 1
                window = rec.windows.get(int(step_s))
                if window is not None and window[0] <= waiter < window[1]:
                    rec.ack_latencies[int(step_s)].append(received - waiter)
            else:
                key = (int(pub_s), channel)
                rec.rejected[key] = rec.rejected.get(key, 0) + 1
                rec.errors.append(frame)
        elif waiter is not None:
            if not waiter.done():
                waiter.set_result(frame)
        elif kind == "error":
            rec.errors.append(frame)
        elif kind == "presence":
            rec.system_events += 1

    def _on_message(self, received: int, channel: str, payload: dict) -> None:
        rec = self.recorder
        step, sched = payload["k"], payload["t"]
        rec.tracker.observe((self.index, payload["p"], channel), payload["s"])
        rec.deliveries += 1
        window = rec.windows.get(step)
        if window is not None and window[0] <= sched < window[1]:
            rec.latencies[step].append(received - sched)

    def on_close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.closing:
                self.recorder.dropped += 1
            for waiter in self._pending.values():
                if isinstance(waiter, asyncio.Future) and not waiter.done():
                    waiter.set_exception(SessionError("connection closed"))

    async def _read_aiohttp(self) -> None:
        try:
            async for msg in self.conn:
                if msg.type == TEXT:
                    self.on_text(msg.data)
        finally:
            self.on_close()

    async def close(self) -> None:
        self.closing = True
        if self.conn is not None:
            await self.conn.close()
        if self._reader is not None:
            self._reader.cancel()


def make_http(limit_per_host: int = 0) -> aiohttp.ClientSession:
    """One HTTP client for thousands of sockets: no connection limit, no timeout
    on an idle socket."""
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=limit_per_host, force_close=True, enable_cleanup_closed=False
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


async def open_session(
    http: aiohttp.ClientSession | None,
    url: str,
    index: int,
    recorder: Recorder,
    token: str,
    channels: Sequence[str],
) -> Session:
    """connect + auth + subscribe to every channel (subscribes are pipelined).
    Without an aiohttp session the lean client is used."""
    session = Session(index, recorder)
    if http is None:
        session.conn = await fastws.connect(url, session.on_text, session.on_close)
    else:
        session.fast = False
        session.conn = await http.ws_connect(
            url,
            autoping=True,
            heartbeat=None,
            max_msg_size=0,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=5),
        )
        session._reader = asyncio.get_running_loop().create_task(session._read_aiohttp())
    try:
        await session.auth(token)
        await asyncio.gather(*(session.subscribe(c) for c in channels))
    except BaseException:
        await session.close()
        raise
    return session


async def bounded_gather(
    factories: Sequence[Callable[[], object]],
    concurrency: int,
    on_done: Callable[[int], None] | None = None,
) -> list:
    """Run coroutine factories with at most `concurrency` in flight, in order of index."""
    results: list = [None] * len(factories)
    it = iter(range(len(factories)))

    async def worker() -> None:
        for i in it:
            results[i] = await factories[i]()
            if on_done is not None:
                on_done(i)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(factories))))))
    return results


async def close_all(sessions: Sequence[Session], concurrency: int = 500) -> None:
    """Close every session (each within 5 s, errors ignored), `concurrency` at once."""

    async def close(s: Session) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(s.close(), 5)

    await bounded_gather([(lambda s=s: close(s)) for s in sessions], concurrency)


def wire(http: aiohttp.ClientSession, client: str) -> aiohttp.ClientSession | None:
    """The aiohttp session when that client was chosen (`--client aiohttp`); None
    means the lean client (`fastws`)."""
    return http if client == "aiohttp" else None


@dataclass
class SendStats:
    """How well the generator itself kept to the schedule."""

    sent: int = 0
    lag_ns: array = field(default_factory=lambda: array("q"))


async def run_schedule(
    rate: float,
    duration: float,
    start_ns: int,
    send: Callable[[int, int], object],
    stats: SendStats,
) -> None:
    """Open loop: message k is due at start + k/rate. Whatever is due is sent at
    once; a late generator sends late but the message keeps its scheduled time."""
    total = int(rate * duration)
    interval = 1e9 / rate
    k = 0
    while k < total:
        due = start_ns + int(k * interval)
        now = now_ns()
        if due > now:
            # libuv timers have millisecond resolution: a shorter sleep would spin
            # the loop; messages due meanwhile go out together, late by < 1 ms,
            # and that delay is part of the measured latency
            await asyncio.sleep(max((due - now) / 1e9, 0.001))
            now = now_ns()
        while k < total:
            due = start_ns + int(k * interval)
            if due > now:
                break
            await send(k, due)
            stats.lag_ns.append(now_ns() - due)
            stats.sent += 1
            k += 1
