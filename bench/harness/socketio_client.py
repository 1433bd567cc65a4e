"""The load generator's Socket.IO client (`--protocol socketio`): the same Session
(recorder, schedule, sequence checks) speaking Engine.IO 4 packets over the lean
WebSocket client, as the InsForge SDK does: handshake `40{token}`, acked
`realtime:subscribe` and `realtime:publish`, message events with `meta`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import orjson

from bench.harness import fastws
from bench.harness.loadgen import Recorder, Session, SessionError, now_ns

PONG = b"3"
# the server's own events (presence:join / presence:leave, {member, meta}): counted
# apart, without a parse (1,000 sessions joining one channel send ~500k of them)
SYSTEM_EVENT = b'42["presence:'
META_CHANNEL = b',"meta":{"channel":"'


class SioSession(Session):
    """Replies come as acks (`43<n>[...]`) matched to the request by ack id."""

    __slots__ = ("_acks", "_connected")

    def __init__(self, index: int, recorder: Recorder) -> None:
        super().__init__(index, recorder)
        self._acks = itertools.count(1)
        self._connected: asyncio.Future = asyncio.get_running_loop().create_future()

    async def _emit(self, name: str, data: dict, ack_key: str | None) -> int:
        ack = next(self._acks)
        if ack_key is not None:
            self._pending[str(ack)] = self._pending.pop(ack_key)
        self.conn.send_text(b"42" + str(ack).encode() + orjson.dumps([name, data]))
        return ack

    async def auth(self, token: str) -> None:
        """The CONNECT handshake. The answer's waiter is in place *before* the packet
        goes out: under uvloop (the bench's loop) the answer can be read before a
        task started after the send has run, and an answer nobody waits for was lost
        (the 30 s TimeoutError of `bench fanout --protocol socketio`)."""
        await asyncio.wait_for(self._connected, 30)  # the open packet came
        fut = asyncio.get_running_loop().create_future()
        self._pending["connect"] = fut
        self.conn.send_text(b"40" + orjson.dumps({"token": token}))
        try:
            answer = await asyncio.wait_for(fut, 30)
        finally:
            self._pending.pop("connect", None)
        if not answer.startswith(b"40"):
            raise SessionError(f"connect refused: {answer[:200]!r}")

    async def subscribe(self, channel: str) -> None:
        fut = asyncio.get_running_loop().create_future()
        ack = next(self._acks)
        self._pending[str(ack)] = fut
        self.conn.send_text(
            b"42" + str(ack).encode() + orjson.dumps(["realtime:subscribe", {"channel": channel}])
        )
        reply = await asyncio.wait_for(fut, 30)
        if not reply.get("ok"):
            raise SessionError(f"subscribe {channel} -> {reply}")

    async def publish(
        self, channel: str, step: int, pub: int, seq: int, sched: int, pad: str
    ) -> None:
        ack = next(self._acks)
        self._pending[str(ack)] = (f"{step}:{pub}:{seq}:{channel}", sched)
        data = {
            "channel": channel,
            "event": "tick",
            "payload": {"k": step, "p": pub, "s": seq, "t": sched, "x": pad},
        }
        self.conn.send_text(b"42" + str(ack).encode() + orjson.dumps(["realtime:publish", data]))

    @property
    def unacked(self) -> int:
        return sum(1 for v in self._pending.values() if isinstance(v, tuple))

    def on_text(self, data: bytes | str) -> None:
        received = now_ns()
        rec = self.recorder
        if type(data) is str:
            data = data.encode()
        if data.startswith(b"42["):
            if data.startswith(SYSTEM_EVENT):  # presence:join/leave: not a message
                rec.system_events += 1
                return
            # fast path, as the raw client's: the bench's own payload fields come
            # first and `meta` last, so parse the fields without meta and read
            # the channel out of meta's first key (a full parse costs ~1.7x)
            start = data.find(b',{"k":', 3, 200)
            m = data.find(META_CHANNEL, start)
            if start > 0 and m > 0:
                c = m + len(META_CHANNEL)
                try:
                    payload = orjson.loads(data[start + 1 : m] + b"}")
                    channel = data[c : data.find(b'"', c)].decode()
                    self._on_message(received, channel.removeprefix("realtime:"), payload)
                    return
                except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                    pass  # fall through to the full parse
            try:
                _, body = orjson.loads(data[2:])
                meta = body["meta"]
                if meta.get("senderType") == "system" and "k" not in body:
                    rec.system_events += 1  # another system event (not a bench message)
                    return
                self._on_message(received, meta["channel"].removeprefix("realtime:"), body)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                rec.malformed += 1
            return
        if data == b"2":
            self.conn.send_text(PONG)
            return
        if data.startswith(b"43"):
            end = data.index(b"[")
            waiter = self._pending.pop(data[2:end].decode(), None)
            reply = orjson.loads(data[end:])[0]
            if isinstance(waiter, tuple):
                rid, sched = waiter
                step_s, pub_s, _, channel = rid.split(":", 3)
                if reply.get("ok"):
                    rec.acks += 1
                    window = rec.windows.get(int(step_s))
                    if window is not None and window[0] <= sched < window[1]:
                        rec.ack_latencies[int(step_s)].append(received - sched)
                else:
                    key = (int(pub_s), channel)
                    rec.rejected[key] = rec.rejected.get(key, 0) + 1
                    rec.errors.append(reply)
            elif waiter is not None and not waiter.done():
                waiter.set_result(reply)
            return
        if data.startswith(b"0") and not self._connected.done():
            self._connected.set_result(None)
            return
        if data.startswith((b"40", b"44")):
            waiter = self._pending.pop("connect", None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
            else:  # an answer nobody waits for: say so rather than lose it
                rec.errors.append({"unexpected": data[:200].decode(errors="replace")})
            return
        rec.errors.append({"packet": data[:200].decode(errors="replace")})


def socketio_url(ws_url: str) -> str:
    """The target's raw-protocol URL (ws://host:port/realtime) -> its Socket.IO one."""
    return ws_url.rsplit("/", 1)[0] + "/socket.io/?EIO=4&transport=websocket"


async def open_sio_session(
    url: str, index: int, recorder: Recorder, token: str, channels: Sequence[str]
) -> SioSession:
    session = SioSession(index, recorder)
    session.conn = await fastws.connect(socketio_url(url), session.on_text, session.on_close)
    try:
        await session.auth(token)
        await asyncio.gather(*(session.subscribe(c) for c in channels))
    except BaseException:
        await session.close()
        raise
    return session
