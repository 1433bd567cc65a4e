"""End to end: messages stored in PostgreSQL reach real HTTP receivers."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import asyncpg
import orjson

from pgrealtime.webhooks.signing import verify

from .helpers import add_channel, all_final, deliveries, free_port, publish, wait_until

SECRET = "test-webhook-secret"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


async def message_counts(pool: asyncpg.Pool, message_id: object) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT wh_audience_count, wh_delivered_count FROM realtime.messages WHERE id = $1",
        message_id,
    )
    return row["wh_audience_count"], row["wh_delivered_count"]


async def test_body_headers_and_signature(pool, receivers, workers) -> None:
    receiver = await receivers()
    channel_id = await add_channel(pool, [receiver.url])
    await workers(webhook_secret=SECRET)
    payload = {"orderId": "123", "status": "shipped", "note": "ünïcode"}
    message_id = await publish(pool, "order:123", "order.updated", payload)
    await wait_until(lambda: len(receiver.requests) == 1)
    request = receiver.requests[0]
    message = await pool.fetchrow("SELECT * FROM realtime.messages WHERE id = $1", message_id)
    [delivery] = await deliveries(pool, message_id)

    body = request.json
    assert list(body) == [
        "messageId",
        "channelId",
        "channelName",
        "event",
        "payload",
        "senderId",
        "senderType",
        "timestamp",
    ]
    assert body["messageId"] == str(message_id)
    assert body["channelId"] == str(channel_id)
    assert body["channelName"] == "order:123"
    assert body["event"] == "order.updated"
    assert body["payload"] == payload
    assert body["senderId"] is None
    assert body["senderType"] == "system"
    assert RFC3339_Z.match(body["timestamp"])
    sent_at = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert abs(sent_at - message["created_at"]) < timedelta(milliseconds=1)

    headers = request.headers
    assert request.path == "/hook"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-InsForge-Event"] == "order.updated"
    assert headers["X-InsForge-Channel"] == "order:123"
    assert headers["X-InsForge-Message-ID"] == str(message_id)
    assert headers["X-InsForge-Delivery-ID"] == str(delivery["id"])
    assert headers["X-InsForge-Attempt"] == "1"
    timestamp = headers["X-InsForge-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 30
    signature = headers["X-InsForge-Signature"]
    assert re.fullmatch(r"v1=[0-9a-f]{64}", signature)
    to = {"delivery_id": str(delivery["id"]), "host": "127.0.0.1"}
    assert verify(SECRET, timestamp, request.body, signature, **to)
    assert not verify("another-secret", timestamp, request.body, signature, **to)
    assert not verify(SECRET, timestamp, request.body + b" ", signature, **to)

    await wait_until(lambda: all_final(pool))
    [delivery] = await deliveries(pool, message_id)
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200
    assert delivery["delivered_at"] is not None
    assert delivery["lease_token"] is None
    assert await message_counts(pool, message_id) == (1, 1)


async def test_unsigned_without_secret(pool, receivers, workers) -> None:
    receiver = await receivers()
    await add_channel(pool, [receiver.url])
    await workers()
    await publish(pool)
    await wait_until(lambda: len(receiver.requests) == 1)
    assert "X-InsForge-Signature" not in receiver.requests[0].headers
    assert "X-InsForge-Timestamp" not in receiver.requests[0].headers


async def test_user_messages_from_publish_items_under_rls(pool, receivers, workers) -> None:
    """WebSocket publishes insert as the caller's role under RLS: the triggers must
    still record deliveries and the audience."""
    first, second = await receivers(), await receivers()
    await add_channel(pool, [first.url, second.url, first.url, ""])
    sender = "770e8400-e29b-41d4-a716-446655440000"
    claims = orjson.dumps({"role": "authenticated", "sub": sender}).decode()
    message_id = uuid.uuid4()
    item = {"i": str(message_id), "r": "authenticated", "c": claims, "n": "order:9",
            "e": "chat.message", "p": {"text": "hi"}, "s": sender}  # fmt: skip
    row = await pool.fetchrow(
        "SELECT * FROM realtime.publish_items($1::text::jsonb, 'test-origin')",
        orjson.dumps([item]).decode(),
    )
    assert row["status"] == "ok"
    assert await message_counts(pool, message_id) == (2, 0)  # duplicate and blank URLs dropped
    await workers()
    await wait_until(lambda: all_final(pool))
    body = first.requests[0].json
    assert body["senderType"] == "user"
    assert body["senderId"] == sender
    assert body["payload"] == {"text": "hi"}
    assert len(first.requests) == len(second.requests) == 1
    assert await message_counts(pool, message_id) == (2, 2)


async def test_channel_without_webhooks_records_nothing(pool) -> None:
    await add_channel(pool, [])
    await add_channel(pool, None, pattern="room:%")
    for channel in ("order:1", "room:1"):
        message_id = await publish(pool, channel)
        assert await message_counts(pool, message_id) == (0, 0)
    assert await deliveries(pool) == []


async def test_rolled_back_message_has_no_delivery(pool, receivers) -> None:
    receiver = await receivers()
    await add_channel(pool, [receiver.url])
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.fetchval("SELECT realtime.publish('order:1', 'e', '{}')")
        await transaction.rollback()
    assert await deliveries(pool) == []


async def test_5xx_retried_until_delivered(pool, receivers, workers) -> None:
    receiver = await receivers(script=[500, 503])
    await add_channel(pool, [receiver.url])
    await workers()
    message_id = await publish(pool)
    await wait_until(lambda: all_final(pool))
    assert [r.status for r in receiver.requests] == [500, 503, 200]
    assert len({r.delivery_id for r in receiver.requests}) == 1
    assert [r.headers["X-InsForge-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert [r.body for r in receiver.requests[1:]] == [receiver.requests[0].body] * 2
    [delivery] = await deliveries(pool, message_id)
    assert (delivery["status"], delivery["attempts"], delivery["last_error"]) == (
        "delivered",
        3,
        None,
    )
    assert await message_counts(pool, message_id) == (1, 1)


async def test_404_is_final(pool, receivers, workers) -> None:
    receiver = await receivers(default=404)
    await add_channel(pool, [receiver.url])
    await workers()
    message_id = await publish(pool)
    await wait_until(lambda: all_final(pool))
    await asyncio.sleep(0.5)  # several poll intervals: no retry comes
    [delivery] = await deliveries(pool, message_id)
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 404
    assert delivery["last_error"].startswith("HTTP 404")
    assert len(receiver.requests) == 1
    assert await message_counts(pool, message_id) == (1, 0)


async def test_429_and_503_honour_retry_after(pool, receivers, workers) -> None:
    # an HTTP date has whole seconds: "in 3 s" is at least 2 s after the first attempt
    in_three_seconds = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    receiver = await receivers(
        script=[(429, {"Retry-After": "1"}), (503, {"Retry-After": in_three_seconds})]
    )
    await add_channel(pool, [receiver.url])
    await workers()
    await publish(pool)
    await wait_until(lambda: all_final(pool), timeout=15)
    assert [r.status for r in receiver.requests] == [429, 503, 200]
    first, second, third = (r.at for r in receiver.requests)
    assert second - first >= 0.9  # backoff alone would be ~0.05 s
    assert third - first >= 1.9


async def test_timeout_is_retried(pool, receivers, workers) -> None:
    calls = []

    async def respond(_index: int, _request: object) -> int:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(1.5)  # longer than the attempt timeout
        return 200

    receiver = await receivers(responder=respond)
    await add_channel(pool, [receiver.url])
    await workers(webhook_timeout_seconds=0.5)
    message_id = await publish(pool)
    await wait_until(lambda: all_final(pool))
    [delivery] = await deliveries(pool, message_id)
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 2


async def test_receiver_down_then_up_gets_everything(pool, receivers, workers) -> None:
    port = free_port()
    await add_channel(pool, [f"http://127.0.0.1:{port}/hook"])
    await workers()
    ids = [await publish(pool, "order:1", "e", {"i": i}) for i in range(5)]

    async def all_failed_once() -> bool:
        rows = await deliveries(pool)
        return all(r["attempts"] >= 2 and r["status"] == "pending" for r in rows)

    await wait_until(all_failed_once)
    assert all("127.0.0.1" in r["last_error"] for r in await deliveries(pool))
    receiver = await receivers(port=port)
    await wait_until(lambda: all_final(pool))
    assert sorted(r.json["payload"]["i"] for r in receiver.requests) == list(range(5))
    assert set(receiver.answered().values()) == {1}
    for message_id in ids:
        assert await message_counts(pool, message_id) == (1, 1)


async def test_dead_after_retry_period(pool, receivers, workers) -> None:
    receiver = await receivers(default=500)
    await add_channel(pool, [receiver.url])
    await workers(webhook_retry_hours=1.0 / 3600)  # one second
    message_id = await publish(pool)
    await wait_until(lambda: all_final(pool))
    [delivery] = await deliveries(pool, message_id)
    assert delivery["status"] == "dead"
    assert delivery["attempts"] >= 2
    assert delivery["last_status_code"] == 500
    count = len(receiver.requests)
    assert count == delivery["attempts"]
    assert await message_counts(pool, message_id) == (1, 0)


async def test_counts_written_by_a_client_are_overridden(pool, receivers) -> None:
    receiver = await receivers()
    channel_id = await add_channel(pool, [receiver.url])
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT realtime.assume_caller('authenticated', '{\"role\":\"authenticated\"}', 'x')"
        )
        for channel in (channel_id, None):
            await conn.execute(
                "INSERT INTO realtime.messages (event_name, channel_id, channel_name, "
                "wh_audience_count, wh_delivered_count) VALUES ('e', $1, 'order:1', 7, 7)",
                channel,
            )
    rows = await pool.fetch(
        "SELECT channel_id, wh_audience_count, wh_delivered_count FROM realtime.messages"
    )
    assert sorted((r[0] is not None, r[1], r[2]) for r in rows) == [(False, 0, 0), (True, 1, 0)]
    assert len(await deliveries(pool)) == 1
