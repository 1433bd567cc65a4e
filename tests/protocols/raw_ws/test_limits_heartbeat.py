"""Per-connection limits (publish rate, subscriptions) and the WebSocket heartbeat,
against a real server; plus how the flags and variables become settings."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from tests.conftest import Server, eventually, make_settings

from pgrealtime import keys
from pgrealtime.cli import build_parser
from pgrealtime.config import settings_from_args

RATE_LIMITED = make_settings(publish_rate=1, publish_burst=3)
TWO_SUBSCRIPTIONS = make_settings(max_subscriptions=2)
FAST_HEARTBEAT = make_settings(heartbeat_seconds=0.5)
NO_HEARTBEAT = make_settings(heartbeat_seconds=0)


# --- publish rate -------------------------------------------------------------------


@pytest.mark.parametrize("server_settings", [RATE_LIMITED])
async def test_publishes_over_the_rate_are_refused_and_not_stored(server: Server) -> None:
    await server.create_channel("rate:*")
    token = server.token()
    pub = await server.connect(token)
    sub = await server.connect(server.token())
    await pub.subscribe("rate:1")
    await sub.subscribe("rate:1")
    # 6 publishes back to back: the burst of 3 passes, the rest is over 1/s
    for n in range(6):
        await pub.send({"type": "publish", "channel": "rate:1", "event": "e",
                        "payload": {"n": n}, "id": f"p{n}"})  # fmt: skip
    replies = {}
    while len(replies) < 6:
        frame = await pub.recv()
        if frame["type"] not in ("message", "presence"):
            replies[frame["id"]] = frame
    assert [replies[f"p{n}"]["type"] for n in range(6)] == ["published"] * 3 + ["error"] * 3
    for n in range(3, 6):
        error = replies[f"p{n}"]
        assert error["code"] == "RATE_LIMITED" and error["channel"] == "rate:1"
        assert "1 publishes per second" in error["message"] and "burst 3" in error["message"]
    stored = await server.db.fetch(
        "SELECT payload->>'n' AS n FROM realtime.messages WHERE channel_name = 'rate:1'"
    )
    assert sorted(int(r["n"]) for r in stored) == [0, 1, 2]
    assert [(await sub.expect("message"))["payload"]["n"] for _ in range(3)] == [0, 1, 2]

    # the connection lives on, and the limit is per connection, not per user
    assert (await pub.request({"type": "ping"}))["type"] == "pong"
    other = await server.connect(token)
    await other.subscribe("rate:1")
    assert (await other.publish("rate:1", "e", {"n": 100}))["type"] == "published"

    # a token comes back after 1/rate seconds: keep trying until one passes
    while True:
        reply = await pub.publish("rate:1", "e", {"n": 6})
        if reply["type"] == "published":
            break
        assert reply["code"] == "RATE_LIMITED"
        await asyncio.sleep(0.1)
    assert (await pub.publish("rate:1", "e", {"n": 7}))["code"] == "RATE_LIMITED"


async def test_unlimited_when_the_rate_is_zero(server: Server) -> None:
    """The default of Settings built in code is no limit: a burst far over any bucket."""
    await server.create_channel("free")
    pub = await server.connect(server.token())
    await pub.subscribe("free")
    for _ in range(300):
        await pub.send({"type": "publish", "channel": "free", "event": "e", "payload": {}})
    published = 0
    while published < 300:
        frame = await pub.recv()
        assert frame["type"] != "error", frame
        published += frame["type"] == "published"


# --- subscriptions per connection ---------------------------------------------------


@pytest.mark.parametrize("server_settings", [TWO_SUBSCRIPTIONS])
async def test_subscriptions_per_connection_are_capped(server: Server) -> None:
    await server.create_channel("room:*")
    client = await server.connect(server.token())
    assert (await client.subscribe("room:a"))["type"] == "subscribed"
    first_b = await client.subscribe("room:b")
    assert first_b["type"] == "subscribed"

    refused = await client.request({"type": "subscribe", "channel": "room:c", "id": 7})
    assert refused["type"] == "error" and refused["code"] == "TOO_MANY_SUBSCRIPTIONS"
    assert refused["id"] == 7 and refused["channel"] == "room:c"
    assert "at most 2" in refused["message"]
    hub = server.app[keys.HUB]
    assert hub.subscriber_count("room:c") == 0

    # subscribing again to a channel it has is not a new subscription
    again = await client.subscribe("room:b")
    assert again["type"] == "subscribed" and again["subscriptionId"] == first_b["subscriptionId"]
    # the connection lives on; freeing a slot makes room
    assert (await client.request({"type": "unsubscribe", "channel": "room:a"}))["type"] == (
        "unsubscribed"
    )
    assert (await client.subscribe("room:c"))["type"] == "subscribed"
    assert hub.subscriber_count("room:c") == 1
    # the cap is per connection
    other = await server.connect(server.token())
    assert (await other.subscribe("room:a"))["type"] == "subscribed"
    assert (await other.subscribe("room:d"))["type"] == "subscribed"


# --- heartbeat ----------------------------------------------------------------------


def _masked(text: str) -> bytes:
    """A client text frame (masked with a zero key, which RFC 6455 allows)."""
    data = text.encode()
    assert len(data) < 65536
    return bytes([0x81, 0x80 | 126]) + len(data).to_bytes(2, "big") + b"\0\0\0\0" + data


async def _raw_client(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake and never answers anything."""
    host, port = server.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    return reader, writer


@pytest.mark.parametrize("server_settings", [FAST_HEARTBEAT])
async def test_a_peer_that_never_answers_pings_is_dropped(server: Server) -> None:
    await server.create_channel("hb:*")
    hub = server.app[keys.HUB]
    reader, writer = await _raw_client(server)
    writer.write(_masked(json.dumps({"type": "auth", "token": server.token()})))
    writer.write(_masked(json.dumps({"type": "subscribe", "channel": "hb:dead"})))
    await writer.drain()
    await eventually(lambda: hub.subscriber_count("hb:dead") == 1)

    # a normal client, whose library answers pings while it reads, stays
    live = await server.connect(server.token())
    await live.subscribe("hb:live")
    frames: list[aiohttp.WSMessage] = []

    async def read_live() -> None:
        async for msg in live.ws:
            frames.append(msg)

    reading = asyncio.create_task(read_live())
    try:
        # ping after 0.5 s of silence, no pong within 0.25 s: dropped
        await eventually(lambda: hub.subscriber_count("hb:dead") == 0)
        # several more heartbeat rounds for the live one
        for _ in range(4):
            await asyncio.sleep(0.5)
            assert hub.subscriber_count("hb:live") == 1
            assert not reading.done()
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    assert frames == []
    assert len(server.app[keys.SESSIONS].live) == 1

    # the dead one was pinged (0x89: a ping frame), then its connection was cut
    received = await asyncio.wait_for(reader.read(), timeout=5)  # up to EOF
    assert b"\x89\x00" in received
    writer.close()
    assert (await live.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("server_settings", [NO_HEARTBEAT])
async def test_heartbeat_zero_means_off(server: Server) -> None:
    client = await server.connect(server.token())
    await asyncio.sleep(0.3)
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    assert len(server.app[keys.SESSIONS].live) == 1


# --- flags and environment ----------------------------------------------------------


def _serve_settings(*argv: str):
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_limits_have_flags_variables_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PUBLISH_RATE", "PUBLISH_BURST", "MAX_SUBSCRIPTIONS", "HEARTBEAT_SECONDS",
                 "MAX_FRAME_BYTES"):  # fmt: skip
        monkeypatch.delenv(f"PGREALTIME_{name}", raising=False)
    defaults = _serve_settings()
    assert (defaults.publish_rate, defaults.publish_burst) == (100, 200)
    assert defaults.max_subscriptions == 100
    assert defaults.heartbeat_seconds == 30 and defaults.max_frame_bytes == 1024 * 1024

    flags = _serve_settings("--publish-rate", "2.5", "--publish-burst", "10",
                            "--max-subscriptions", "0", "--heartbeat-seconds", "0",
                            "--max-frame-bytes", "2048")  # fmt: skip
    assert (flags.publish_rate, flags.publish_burst, flags.max_subscriptions) == (2.5, 10, 0)
    assert (flags.heartbeat_seconds, flags.max_frame_bytes) == (0, 2048)

    monkeypatch.setenv("PGREALTIME_PUBLISH_RATE", "0")
    monkeypatch.setenv("PGREALTIME_PUBLISH_BURST", "7")
    monkeypatch.setenv("PGREALTIME_MAX_SUBSCRIPTIONS", "5")
    monkeypatch.setenv("PGREALTIME_MAX_FRAME_BYTES", "4096")
    env = _serve_settings()
    assert (env.publish_rate, env.publish_burst, env.max_subscriptions) == (0, 7, 5)
    assert env.max_frame_bytes == 4096
    assert _serve_settings("--publish-rate", "3").publish_rate == 3  # a flag wins


@pytest.mark.parametrize(
    "argv",
    [
        ["--publish-rate", "-1"],
        ["--publish-rate", "5", "--publish-burst", "0"],
        ["--max-subscriptions", "-1"],
        ["--heartbeat-seconds", "-1"],
        ["--max-frame-bytes", "0"],
    ],
)
def test_nonsense_limits_are_refused_at_start(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="error: --"):
        _serve_settings(*argv)


def test_help_lists_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--publish-rate", "--publish-burst", "--max-subscriptions",
                 "--heartbeat-seconds", "--max-frame-bytes"):  # fmt: skip
        assert flag in help_text
        assert "PGREALTIME_" + flag[2:].upper().replace("-", "_") in help_text
