"""The outbound policy, end to end: blocked targets are refused before any request,
with the reason recorded, and redirects are never followed."""

from __future__ import annotations

import asyncio

import asyncpg

from .helpers import add_channel, all_final, deliveries, publish, wait_until


async def only_delivery(pool: asyncpg.Pool) -> asyncpg.Record:
    await wait_until(lambda: all_final(pool))
    [row] = await deliveries(pool)
    return row


async def test_loopback_literal_refused_without_opt_out(pool, receivers, workers) -> None:
    receiver = await receivers()
    await add_channel(pool, [receiver.url])
    await workers(webhook_allow_private_networks=False)
    message_id = await publish(pool)
    row = await only_delivery(pool)
    assert row["status"] == "failed"
    assert row["attempts"] == 1
    assert row["last_status_code"] is None
    assert "blocked address 127.0.0.1: loopback" in row["last_error"]
    assert receiver.requests == []
    assert (
        await pool.fetchval(
            "SELECT wh_delivered_count FROM realtime.messages WHERE id = $1", message_id
        )
        == 0
    )


async def test_cloud_metadata_refused(pool, workers) -> None:
    await add_channel(pool, ["http://169.254.169.254/latest/meta-data/"])
    await workers(webhook_allow_private_networks=False)
    await publish(pool)
    row = await only_delivery(pool)
    assert row["status"] == "failed"
    assert "169.254.169.254" in row["last_error"]
    assert "link-local" in row["last_error"]


async def test_host_name_checked_on_its_resolved_address(pool, receivers, workers) -> None:
    """'localhost' is a name, not an IP: it is refused on connect, by the address it
    resolved to (the same check stops DNS rebinding)."""
    receiver = await receivers()
    await add_channel(pool, [receiver.url.replace("127.0.0.1", "localhost")])
    await workers(webhook_allow_private_networks=False)
    await publish(pool)
    row = await only_delivery(pool)
    assert row["status"] == "failed"
    assert "blocked address" in row["last_error"]
    assert "loopback" in row["last_error"]
    assert receiver.requests == []


async def test_numeric_ipv4_forms_refused(pool, receivers, workers) -> None:
    receiver = await receivers()
    await add_channel(
        pool,
        [f"http://2130706433:{receiver.port}/a", f"http://127.1:{receiver.port}/b"],
    )
    await workers(webhook_allow_private_networks=False)
    await publish(pool)
    await wait_until(lambda: all_final(pool))
    rows = await deliveries(pool)
    assert {r["status"] for r in rows} == {"failed"}
    assert all(r["last_error"] for r in rows)
    assert receiver.requests == []


async def test_allowed_host_may_reach_private_address(pool, receivers, workers) -> None:
    receiver = await receivers()
    await add_channel(pool, [receiver.url.replace("127.0.0.1", "localhost")])
    await workers(webhook_allow_private_networks=False, webhook_allowed_hosts=["LocalHost"])
    await publish(pool)
    row = await only_delivery(pool)
    assert row["status"] == "delivered"
    assert len(receiver.requests) == 1


async def test_redirect_not_followed(pool, receivers, workers) -> None:
    target = await receivers()
    redirect = await receivers(default=(302, {"Location": target.url}))
    metadata = await receivers(default=(307, {"Location": "http://169.254.169.254/"}))
    await add_channel(pool, [redirect.url, metadata.url.replace("/hook", "/other")])
    await workers()  # private networks allowed: only the redirect rule is at work
    await publish(pool)
    await wait_until(lambda: all_final(pool))
    await asyncio.sleep(0.3)
    rows = {r["url"]: r for r in await deliveries(pool)}
    to_target = rows[redirect.url]
    assert (to_target["status"], to_target["last_status_code"]) == ("failed", 302)
    assert "redirect not followed" in to_target["last_error"]
    assert target.url in to_target["last_error"]
    to_metadata = rows[metadata.url.replace("/hook", "/other")]
    assert (to_metadata["status"], to_metadata["last_status_code"]) == ("failed", 307)
    assert target.requests == []
    assert len(redirect.requests) == len(metadata.requests) == 1


async def test_unusable_url_stored_by_sql_fails_cleanly(pool, workers) -> None:
    await add_channel(pool, ["ftp://example.com/x", "http://user:pw@example.com/"])
    await workers()
    await publish(pool)
    await wait_until(lambda: all_final(pool))
    errors = sorted(r["last_error"] for r in await deliveries(pool))
    assert errors == [
        "webhook URL must not contain credentials",
        "webhook URL must use http or https",
    ]
