"""The hub's fan-out rules, without sockets: order, one write per connection per
flush, no loss to live readers, and the cut-off of a reader that stays behind."""

from __future__ import annotations

import asyncio

import pytest

from pgrealtime.engine.hub import Hub, Outbox

pytestmark = pytest.mark.pure


class FakeTransport:
    """Records each write; `backlog` plays the kernel's unsent bytes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.backlog = 0
        self.closing = False
        self.fail = False

    def write(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionResetError("peer reset")
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.backlog

    @property
    def received(self) -> bytes:
        return b"".join(self.writes)


class Conn:
    def __init__(self, hub: Hub) -> None:
        self.transport = FakeTransport()
        self.overflows = 0
        self.outbox = Outbox(hub, self.transport, self._on_overflow)

    def _on_overflow(self) -> None:
        self.overflows += 1


async def ticks(n: int = 2) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def until(predicate, limit: int = 2000) -> None:
    """Let the loop run until `predicate()` holds (bounded by iterations, not time)."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def subscribed(hub: Hub, channel: str, n: int) -> list[Conn]:
    conns = [Conn(hub) for _ in range(n)]
    for c in conns:
        hub.subscribe(channel, c.outbox)
    return conns


async def test_frames_of_one_tick_share_one_write_in_order() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    conns = subscribed(hub, "room:1", 3)
    assert hub.broadcast("room:1", b"a") == 3
    hub.broadcast("room:1", b"b")
    conns[0].outbox.send(b"reply")  # a direct frame keeps its place in the sequence
    hub.broadcast("room:1", b"c")
    assert all(c.transport.writes == [] for c in conns)  # nothing before the tick ends
    await ticks()
    assert conns[0].transport.writes == [b"abreplyc"]
    assert conns[1].transport.writes == [b"abc"]
    assert conns[2].transport.writes == [b"abc"]


async def test_a_lone_frame_is_written_as_is_and_idle_outboxes_keep_nothing() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    (conn,) = subscribed(hub, "room:1", 1)
    assert conn.outbox.pending is None
    frame = b"x" * 100
    hub.broadcast("room:1", frame)
    await ticks()
    assert conn.transport.writes[0] is frame
    assert conn.outbox.pending is None


async def test_channels_do_not_leak_into_each_other() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    (a,) = subscribed(hub, "a", 1)
    (b,) = subscribed(hub, "b", 1)
    hub.broadcast("a", b"1")
    hub.broadcast("b", b"2")
    assert hub.broadcast("nobody", b"3") == 0
    await ticks()
    assert a.transport.received == b"1"
    assert b.transport.received == b"2"


async def test_order_holds_across_many_flushes() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    conns = subscribed(hub, "seq", 5)
    expected = b""
    for burst in range(20):
        for k in range(burst % 4 + 1):
            frame = f"[{burst}.{k}]".encode()
            hub.broadcast("seq", frame)
            expected += frame
        await ticks()
    for c in conns:
        assert c.transport.received == expected


async def test_unsubscribe_and_counts() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    a, b = subscribed(hub, "room", 2)
    assert hub.subscriber_count("room") == 2
    hub.unsubscribe("room", a.outbox)
    hub.unsubscribe("room", a.outbox)  # twice is harmless
    assert hub.subscriber_count("room") == 1
    hub.broadcast("room", b"m")
    await ticks()
    assert a.transport.writes == [] and b.transport.received == b"m"
    hub.unsubscribe("room", b.outbox)
    assert hub.channel_names() == []


async def test_a_dead_peer_does_not_stop_the_broadcast() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    conns = subscribed(hub, "room", 4)
    conns[1].transport.fail = True
    conns[2].transport.closing = True
    hub.broadcast("room", b"m1")
    await ticks()
    hub.broadcast("room", b"m2")
    await ticks()
    assert conns[0].transport.received == b"m1m2"
    assert conns[3].transport.received == b"m1m2"
    assert conns[1].outbox.closed and conns[2].outbox.closed
    assert conns[2].transport.writes == []


async def test_closed_outbox_gets_nothing_more() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    a, b = subscribed(hub, "room", 2)
    hub.broadcast("room", b"before")
    a.outbox.closed = True  # the session ended between queueing and the flush
    hub.broadcast("room", b"after")
    a.outbox.send(b"direct")
    await ticks()
    assert a.transport.writes == []
    assert b.transport.received == b"beforeafter"


async def test_flush_writes_what_is_queued_at_once() -> None:
    """What Session.close relies on: the frame saying why goes out before the close."""
    hub = Hub(send_buffer_limit=1 << 20, flush_interval=3600)
    (conn,) = subscribed(hub, "room", 1)
    conn.outbox.send(b"why")
    conn.outbox.flush()
    assert conn.transport.writes == [b"why"]
    await ticks()
    assert conn.transport.writes == [b"why"]  # the hub's own flush finds nothing left


async def test_slow_reader_is_cut_after_a_sweep_and_others_keep_receiving() -> None:
    hub = Hub(send_buffer_limit=1000, sweep_seconds=0.01)
    slow, fast = subscribed(hub, "room", 2)
    slow.transport.backlog = 1500  # over the limit (under twice it) and staying there
    hub.broadcast("room", b"m1")
    await ticks()
    assert slow.overflows == 0  # a burst gets a sweep's grace
    await until(lambda: slow.overflows == 1)
    assert slow.outbox.closed
    hub.broadcast("room", b"m2")
    await ticks()
    assert fast.transport.received == b"m1m2"
    assert slow.transport.received == b"m1"
    await asyncio.sleep(0.03)
    assert slow.overflows == 1  # cut once


async def test_reader_that_catches_up_within_the_sweep_is_kept() -> None:
    hub = Hub(send_buffer_limit=1000, sweep_seconds=0.01)
    (conn,) = subscribed(hub, "room", 1)
    conn.transport.backlog = 1500
    hub.broadcast("room", b"m1")
    await ticks()
    conn.transport.backlog = 0  # the kernel drained it
    await asyncio.sleep(0.03)
    assert conn.overflows == 0 and not conn.outbox.closed
    hub.broadcast("room", b"m2")
    await ticks()
    assert conn.transport.received == b"m1m2"


async def test_reader_past_twice_the_limit_is_cut_at_once() -> None:
    hub = Hub(send_buffer_limit=1000, sweep_seconds=3600)
    slow, fast = subscribed(hub, "room", 2)
    slow.transport.backlog = 2001
    hub.broadcast("room", b"m1")
    await ticks()
    assert slow.overflows == 1 and slow.outbox.closed  # no sweep's grace
    hub.broadcast("room", b"m2")
    await ticks()
    assert fast.transport.received == b"m1m2"
    assert slow.overflows == 1


async def test_flush_interval_sends_a_lone_message_at_once() -> None:
    hub = Hub(send_buffer_limit=1 << 20, flush_interval=3600)
    (conn,) = subscribed(hub, "room", 1)
    hub.broadcast("room", b"first")
    await ticks()
    assert conn.transport.writes == [b"first"]  # idle before: no waiting


async def test_flush_interval_joins_what_follows_within_the_interval() -> None:
    hub = Hub(send_buffer_limit=1 << 20, flush_interval=3600)
    (conn,) = subscribed(hub, "room", 1)
    hub.broadcast("room", b"1")
    await ticks()
    hub.broadcast("room", b"2")
    await ticks()
    hub.broadcast("room", b"3")
    conn.outbox.send(b"r")
    await ticks(5)
    assert conn.transport.writes == [b"1"]  # held until the interval has passed
    conn.outbox.flush()
    assert conn.transport.writes == [b"1", b"23r"]


@pytest.mark.parametrize("interval", [0.0, 0.002])
async def test_no_loss_and_order_under_a_stream(interval: float) -> None:
    hub = Hub(send_buffer_limit=1 << 20, flush_interval=interval)
    conns = subscribed(hub, "s", 3)
    expected = b""
    for n in range(300):
        frame = f"<{n}>".encode()
        hub.broadcast("s", frame)
        expected += frame
        if n % 7 == 0:
            await asyncio.sleep(0.001)
    await until(lambda: all(c.transport.received == expected for c in conns))
    if interval:
        assert all(len(c.transport.writes) < 300 for c in conns)


def test_flush_interval_flag_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pgrealtime.cli import build_parser
    from pgrealtime.config import settings_from_args

    parse = build_parser().parse_args
    assert settings_from_args(parse(["serve"])).flush_interval_ms == 0
    assert settings_from_args(parse(["serve", "--flush-interval-ms", "2"])).flush_interval_ms == 2
    monkeypatch.setenv("PGREALTIME_FLUSH_INTERVAL_MS", "1.5")
    assert settings_from_args(build_parser().parse_args(["serve"])).flush_interval_ms == 1.5
    with pytest.raises(SystemExit):
        settings_from_args(parse(["serve", "--flush-interval-ms", "-1"]))
