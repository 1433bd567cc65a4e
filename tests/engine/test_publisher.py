"""The publisher's storage path: realtime.publish_items (migration 006) and the lanes'
own connections. The WebSocket side is covered by test_ws_protocol, test_policies,
test_resume and test_faults."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import orjson
import pytest

from pgrealtime.auth import Principal
from pgrealtime.engine.messages import StoredMessage
from pgrealtime.engine.publisher import (
    PUBLISH_ITEMS_SQL,
    DatabaseUnavailable,
    Publisher,
    PublishRefused,
    new_message_ids,
)


class _Delivery:
    """Records what the publisher fans out, in order."""

    def __init__(self) -> None:
        self.delivered: list[StoredMessage] = []

    def deliver(self, message: StoredMessage) -> int:
        self.delivered.append(message)
        return 0


def _caller(role: str = "authenticated", sub: str | None = None) -> Principal:
    sub = sub or str(uuid.uuid4())
    return Principal.from_claims(role, sub, {"sub": sub, "role": role})


def _item(principal: Principal, channel: str, payload: object = None) -> dict:
    return {
        "i": str(uuid.uuid4()),
        "r": principal.role,
        "c": principal.claims_json,
        "n": channel,
        "e": "e",
        "p": payload if payload is not None else {"k": 1},
        "s": principal.user_id,
    }


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db_url)
    try:
        yield c
    finally:
        await c.close()


async def _publish_items(conn: asyncpg.Connection, items: list[dict]) -> list[asyncpg.Record]:
    return await conn.fetch(PUBLISH_ITEMS_SQL, orjson.dumps(items).decode(), "test-origin")


async def test_governing_channel_is_the_one_match_channel_picks(
    conn: asyncpg.Connection,
) -> None:
    """publish_items looks channels up for all names at once; it must choose exactly
    what realtime.match_channel chooses (exact name, fewer wildcards, longer literal
    text, pattern text), and skip disabled channels."""
    patterns = ["a:*", "a:%", "a:b:*", "a:b:c", "*", "a_c:*", "x:*:y", "x:%", "off:*"]
    for pattern in patterns:
        if pattern == "a:%":
            continue  # same normalized pattern as 'a:*': refused by the unique index
        await conn.execute(
            "INSERT INTO realtime.channels (pattern, enabled) VALUES ($1, $2)",
            pattern,
            not pattern.startswith("off"),
        )
    names = ["a:1", "a:b:1", "a:b:c", "abc", "a_c:1", "aXc:1", "x:1:y", "x:1:z", "off:1", "z"]
    expected = {
        n: await conn.fetchval("SELECT (realtime.match_channel($1)).id::text", n) for n in names
    }
    rows = await _publish_items(conn, [_item(_caller(), n) for n in names])
    assert {n: r["channel_id"] for n, r in zip(names, rows, strict=True)} == expected

    await conn.execute("DELETE FROM realtime.channels WHERE pattern = '*'")
    rows = await _publish_items(conn, [_item(_caller(), "z"), _item(_caller(), "a:1")])
    assert [r["status"] for r in rows] == ["no_channel", "ok"]


async def test_items_are_stored_in_order_with_consecutive_positions(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("INSERT INTO realtime.channels (pattern) VALUES ('room:*')")
    alice = _caller()
    items = [_item(alice, f"room:{k % 3}", {"k": k}) for k in range(30)]
    rows = await _publish_items(conn, items)
    assert [r["idx"] for r in rows] == list(range(1, 31))
    assert all(r["status"] == "ok" and isinstance(r["created_at"], datetime) for r in rows)
    for room in range(3):
        positions = [r["position"] for r, it in zip(rows, items, strict=True)
                     if it["n"] == f"room:{room}"]  # fmt: skip
        assert positions == list(range(1, 11))
    stored = await conn.fetch(
        "SELECT id::text, payload, seq, position, sender_id::text, sender_type"
        " FROM realtime.messages ORDER BY seq"
    )
    assert [s["id"] for s in stored] == [it["i"] for it in items]
    assert [orjson.loads(s["payload"]) for s in stored] == [it["p"] for it in items]
    assert [s["seq"] for s in stored] == [r["seq"] for r in rows]
    assert {s["sender_id"] for s in stored} == {alice.user_id}
    assert {s["sender_type"] for s in stored} == {"user"}


async def test_a_refused_item_refuses_only_itself(conn: asyncpg.Connection) -> None:
    """Refused by a policy, a policy that fails, a role off the allow-list: each of
    those items alone is refused, and positions stay consecutive around them."""
    await conn.execute("""
        INSERT INTO realtime.channels (pattern) VALUES ('chat:*');
        DROP POLICY allow_authenticated_publish ON realtime.messages;
        CREATE POLICY only_uuid_rooms_of_the_sender ON realtime.messages
          FOR INSERT TO authenticated
          WITH CHECK (split_part(channel_name, ':', 2)::uuid = auth.uid());
    """)
    alice = _caller()
    own = f"chat:{alice.user_id}"
    items = [
        _item(alice, own),
        _item(alice, f"chat:{uuid.uuid4()}"),  # refused by the policy
        _item(alice, "chat:not-a-uuid"),  # the policy itself fails
        _item(alice, own),
        _item(_caller(role="postgres", sub=alice.user_id), own),  # role not allowed
        _item(alice, "nowhere"),  # no channel
        _item(alice, own),
    ]
    rows = await _publish_items(conn, items)
    assert [r["status"] for r in rows] == [
        "ok", "denied", "denied", "ok", "denied", "no_channel", "ok",
    ]  # fmt: skip
    assert [r["position"] for r in rows if r["status"] == "ok"] == [1, 2, 3]
    assert "not allowed" in rows[4]["detail"]
    assert rows[5]["channel_id"] is None and rows[1]["channel_id"] is not None
    assert await conn.fetchval("SELECT count(*) FROM realtime.messages") == 3
    # nothing of the callers' settings outlives the batch
    assert await conn.fetchval("SELECT current_user") == "postgres"


def test_message_ids_are_random_version_4_uuids() -> None:
    ids = new_message_ids(1000)
    assert len(set(ids)) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


async def test_publisher_keeps_order_and_answers_each_item(db_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    delivery = _Delivery()
    publisher = Publisher(pool, delivery, "origin", dsn=db_url)  # type: ignore[arg-type]
    try:
        await pool.execute("INSERT INTO realtime.channels (pattern) VALUES ('feed:*')")
        await publisher.start()
        alice = _caller()
        futures = [publisher.publish(alice, f"feed:{k % 5}", "e", {"k": k}) for k in range(200)]
        futures.append(publisher.publish(alice, "elsewhere", "e", {}))
        results = await asyncio.gather(*futures, return_exceptions=True)
        refused = results.pop()
        assert isinstance(refused, PublishRefused) and refused.status == "no_channel"
        assert all(isinstance(r, StoredMessage) for r in results)
        for channel in range(5):
            mine = [m for m in delivery.delivered if m.channel == f"feed:{channel}"]
            assert [orjson.loads(m.payload_json)["k"] for m in mine] == list(range(channel, 200, 5))
            assert [m.position for m in mine] == list(range(1, 41))
        stored = await pool.fetch("SELECT id FROM realtime.messages")
        assert sorted(m.id for m in delivery.delivered) == sorted(str(r["id"]) for r in stored)
    finally:
        await publisher.close()
        await pool.close()


async def test_a_lost_lane_connection_fails_its_batch_then_reconnects(db_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    publisher = Publisher(pool, _Delivery(), "origin", lanes=1, dsn=db_url)  # type: ignore[arg-type]
    try:
        await pool.execute("INSERT INTO realtime.channels (pattern) VALUES ('*')")
        alice = _caller()
        await publisher.publish(alice, "a", "e", {})
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'pgrealtime publisher'"
        )
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append((await publisher.publish(alice, "a", "e", {})).position)
            except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError) as exc:
                outcomes.append(type(exc).__name__)
        # at most the batch that met the dead connection fails; then it reconnects
        assert isinstance(outcomes[1], int) and isinstance(outcomes[2], int), outcomes
        stored = [o for o in outcomes if isinstance(o, int)]
        assert stored == list(range(2, 2 + len(stored)))
    finally:
        await publisher.close()
        await pool.close()
    with pytest.raises(DatabaseUnavailable):
        await publisher.publish(_caller(), "a", "e", {})
