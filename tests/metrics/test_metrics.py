"""GET /metrics against a real server: admin-only by default, public with the flag, and
counters that move with real connections, publishes, deliveries, changes and webhooks."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import API_KEY, Server, eventually, make_settings
from tests.webhooks.helpers import Receiver

from pgrealtime import keys
from pgrealtime.api import metrics as metrics_route


async def scrape(server: Server, headers: dict[str, str] | None = None) -> dict[str, float]:
    """The exposition, parsed by the library's own parser: {'name{a="b"}': value}."""
    async with server.http.get(
        server.base + "/metrics", headers=server.admin if headers is None else headers
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers
        text = await resp.text()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


async def test_admin_only_by_default(server: Server) -> None:
    async with server.http.get(server.base + "/metrics") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "AUTH_UNAUTHORIZED"
    user = {"Authorization": f"Bearer {server.token()}"}
    async with server.http.get(server.base + "/metrics", headers=user) as resp:
        assert resp.status == 403
    async with server.http.get(
        server.base + "/metrics", headers={"Authorization": "Bearer ik_wrong"}
    ) as resp:
        assert resp.status == 401
    values = await scrape(server, {"Authorization": f"Bearer {API_KEY}"})
    assert values['pgrealtime_connections{protocol="websocket"}'] == 0
    assert values["pgrealtime_database_up"] == 1
    assert values["process_resident_memory_bytes"] > 0  # the library's process collector
    # in-process readers (the dashboard) get the same figures without HTTP
    current = await metrics_route.current(server.app)
    assert current['pgrealtime_connections{protocol="websocket"}'] == 0
    assert current['pgrealtime_webhook_queue_depth{state="due"}'] == 0


class TestPublic:
    @pytest.fixture
    def server_settings(self):
        return make_settings(metrics_public=True)

    async def test_public_with_the_flag(self, server: Server) -> None:
        values = await scrape(server, headers={})
        assert values['pgrealtime_connections{protocol="websocket"}'] == 0


async def test_counters_follow_publishes_and_deliveries(server: Server) -> None:
    await server.create_channel("room:*")
    alice = await server.connect(server.token())
    bob = await server.connect(server.token())
    anonymous = await server.connect()  # connected, never authenticated
    for client in (alice, bob):
        assert (await client.subscribe("room:1"))["type"] == "subscribed"
    before = await scrape(server)
    assert before['pgrealtime_connections{protocol="websocket"}'] == 3
    assert before['pgrealtime_sessions{protocol="websocket"}'] == 2
    assert before['pgrealtime_subscriptions{kind="channel"}'] == 2
    assert before["pgrealtime_channels_with_subscribers"] == 1

    for n in range(3):
        assert (await alice.publish("room:1", "said", {"n": n}))["type"] == "published"
    await server.db.execute("""SELECT realtime.publish('room:1', 'from_sql', '{}'::jsonb)""")
    for client in (alice, bob):
        for event in ("said", "said", "said", "from_sql"):
            await client.expect("message", event=event)
    refused = await bob.publish("room:2", "said", {})  # not subscribed there
    assert refused["code"] == "REALTIME_NOT_SUBSCRIBED"
    await anonymous.close()

    after = await scrape(server)

    def moved(name: str) -> float:
        return after[name] - before.get(name, 0)

    assert moved('pgrealtime_messages_published_total{source="websocket"}') == 3
    assert moved('pgrealtime_messages_published_total{source="sql"}') == 1
    assert moved('pgrealtime_deliveries_total{kind="message"}') == 8
    assert moved('pgrealtime_error_frames_total{code="REALTIME_NOT_SUBSCRIBED"}') == 1
    assert moved("pgrealtime_publish_batch_size_count") >= 1
    assert moved("pgrealtime_publish_batch_size_sum") == 3
    assert moved("pgrealtime_publish_store_seconds_count") >= 1
    assert moved("pgrealtime_delivery_latency_seconds_count") >= 1
    assert after['pgrealtime_connections_opened_total{protocol="websocket"}'] == 3
    assert after['pgrealtime_connections{protocol="websocket"}'] == 2

    # the channel is disabled: both subscriptions end, and are counted
    [channel] = (await server.api("GET", "/api/realtime/channels"))[1]
    status, _ = await server.api(
        "PUT", f"/api/realtime/channels/{channel['id']}", json={"enabled": False}
    )
    assert status == 200
    ended = await scrape(server)
    assert ended['pgrealtime_subscriptions_ended_total{reason="channel_changed"}'] == 2
    assert ended['pgrealtime_subscriptions{kind="channel"}'] == 0


async def test_refusals_by_the_database_are_counted_by_reason(server: Server) -> None:
    await server.create_channel("public:*")
    await server.db.execute(
        "CREATE POLICY anon_public ON realtime.channels FOR SELECT TO anon"
        " USING (pattern = 'public:*')"
    )
    anon = await server.connect(server.token(role="anon"))
    assert (await anon.subscribe("public:1"))["type"] == "subscribed"
    reply = await anon.publish("public:1", "e", {})  # no policy lets anon publish
    assert reply["code"] == "REALTIME_UNAUTHORIZED", reply
    values = await scrape(server)
    assert values['pgrealtime_messages_refused_total{reason="denied"}'] == 1
    assert values['pgrealtime_error_frames_total{code="REALTIME_UNAUTHORIZED"}'] == 1


async def test_token_expiry_is_a_counted_disconnect(server: Server) -> None:
    client = await server.connect(server.token(expires_in=1))
    error = await client.expect("error", timeout=5)
    assert error["code"] == "TOKEN_EXPIRED"
    values = await scrape(server)
    assert values['pgrealtime_disconnects_total{reason="token_expired"}'] == 1
    assert values['pgrealtime_disconnects_total{reason="slow_reader"}'] == 0


@pytest.mark.parametrize("server_settings", [make_settings(auth_timeout_seconds=0.3)])
async def test_auth_timeout_is_a_counted_disconnect(server: Server) -> None:
    client = await server.connect()  # never authenticates
    error = await client.expect("error", timeout=5)
    assert error["code"] == "NOT_AUTHENTICATED"
    await eventually(lambda: not server.app[keys.SESSIONS].live)
    values = await scrape(server)
    assert values['pgrealtime_disconnects_total{reason="auth_timeout"}'] == 1
    assert values['pgrealtime_connections{protocol="websocket"}'] == 0


async def test_pool_in_use_and_waiting(server: Server) -> None:
    pool = server.app[keys.POOL]
    held: list[Any] = []
    try:
        while True:  # take every connection the pool will give
            try:
                held.append(await asyncio.wait_for(pool.acquire(), 0.5))
            except TimeoutError:
                break
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.05)
        values = await scrape(server)  # its own query waits too, then gives up
        assert values['pgrealtime_db_pool_connections{state="in_use"}'] == pool.get_max_size()
        assert values["pgrealtime_db_pool_waiting"] == 1
        assert values["pgrealtime_database_up"] == 0
        waiter.cancel()
    finally:
        for conn in held:
            await pool.release(conn)
    assert (await scrape(server))["pgrealtime_db_pool_waiting"] == 0


async def test_listener_outage_is_counted_with_what_it_caught_up(server: Server) -> None:
    await server.create_channel("order:*")
    client = await server.connect(server.token())
    assert (await client.subscribe("order:1"))["type"] == "subscribed"
    listener = server.app[keys.LISTENER]
    await asyncio.wait_for(listener.connected.wait(), 5)
    before = await scrape(server)
    assert before["pgrealtime_listener_connected"] == 1
    await server.db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    )
    await eventually(lambda: not listener.connected.is_set(), timeout=5)
    await server.db.execute("SELECT realtime.publish('order:1', 'e', '{}'::jsonb)")
    await client.expect("message", timeout=15)  # read by the catch-up after the reconnect
    await eventually(listener.connected.is_set)
    after = await scrape(server)
    assert (
        after["pgrealtime_listener_reconnects_total"]
        == before["pgrealtime_listener_reconnects_total"] + 1
    )
    assert after["pgrealtime_listener_caught_up_messages_total"] == 1
    assert after["pgrealtime_listener_connected"] == 1


class TestChanges:
    @pytest.fixture
    def server_settings(self):
        return make_settings(changes=True)

    async def test_change_feed_and_rls_figures(self, server: Server) -> None:
        await server.db.execute(
            """
            CREATE TABLE public.memos (id int PRIMARY KEY, team text);
            GRANT SELECT ON public.memos TO authenticated;
            ALTER TABLE public.memos ENABLE ROW LEVEL SECURITY;
            CREATE POLICY team_memos ON public.memos FOR SELECT TO authenticated
              USING (team = auth.jwt() ->> 'email');
            """
        )
        await server.wait_streaming()
        client = await server.connect(server.token(sub=str(uuid.uuid4()), email="red"))
        assert (await client.subscribe("db:memos"))["type"] == "subscribed"
        values = await scrape(server)
        assert values['pgrealtime_subscriptions{kind="table"}'] == 1
        assert values["pgrealtime_change_feed_streaming"] == 1
        await server.db.execute("INSERT INTO memos VALUES (1, 'blue')")  # not for red
        await server.db.execute("INSERT INTO memos VALUES (2, 'red')")
        message = await client.expect("message", timeout=10)
        assert message["payload"]["new"]["id"] == 2

        async def settled() -> dict[str, float]:
            values = await scrape(server)
            assert values["pgrealtime_changes_processed_total"] >= 2
            return values

        await eventually(lambda: server.app[keys.CHANGES].delivered_changes >= 2)
        values = await settled()
        assert values["pgrealtime_changes_decoded_total"] >= 2
        assert values['pgrealtime_messages_published_total{source="changes"}'] == 1
        assert values['pgrealtime_deliveries_total{kind="change"}'] == 1
        assert values["pgrealtime_rls_checks_total"] == 2
        assert values["pgrealtime_rls_denied_total"] == 1
        assert values["pgrealtime_change_feed_lag_seconds"] >= 0


class TestWebhooks:
    @pytest.fixture
    def server_settings(self):
        # retries end after 0.36 s: a failing receiver gets one retry, then a dead letter
        return make_settings(webhook_allow_private_networks=True, webhook_retry_hours=0.0001)

    async def test_outcomes_and_queue(self, server: Server) -> None:
        ok, gone, broken = Receiver(default=200), Receiver(default=410), Receiver(default=500)
        for receiver in (ok, gone, broken):
            await receiver.start()
        try:
            await server.db.execute(
                "INSERT INTO realtime.channels (pattern, webhook_urls) VALUES ('order:%', $1)",
                [ok.url, gone.url, broken.url],
            )
            await server.db.execute("SELECT realtime.publish('order:1', 'paid', '{}'::jsonb)")
            worker = server.app[keys.WEBHOOKS]
            await eventually(lambda: sum(worker.outcomes.values()) >= 4)
            values = await scrape(server)
        finally:
            for receiver in (ok, gone, broken):
                await receiver.stop()
        assert values['pgrealtime_webhook_deliveries_total{outcome="delivered"}'] == 1
        assert values['pgrealtime_webhook_deliveries_total{outcome="failed"}'] == 1
        assert values['pgrealtime_webhook_deliveries_total{outcome="retry"}'] == 1
        assert values['pgrealtime_webhook_deliveries_total{outcome="dead"}'] == 1
        assert values["pgrealtime_webhook_attempt_seconds_count"] == 4
        assert values['pgrealtime_webhook_queue_depth{state="due"}'] == 0
        assert values["pgrealtime_webhook_oldest_pending_seconds"] == 0
