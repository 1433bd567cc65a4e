"""The cluster side of the change feed, in one test process: two servers on one
database (one reads the slot, the other stands by and gets the relay). A standby that
does not hear the relay refuses a `db:` subscription instead of answering
`subscribed` and then delivering nothing; once it hears it again, changes arrive.
And the exactly-once rule itself: a change read twice is delivered once."""

from __future__ import annotations

import dataclasses
import uuid
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestServer
from tests.conftest import Server, eventually, make_settings

from pgrealtime import keys
from pgrealtime.app import create_app
from pgrealtime.changes.cluster import ClusterFeed
from pgrealtime.changes.feed import number_changes
from pgrealtime.changes.model import RowChange


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


def _cluster_feed(app) -> ClusterFeed:
    feed = app[keys.SESSION_CONTEXT].db_channels.feed
    assert isinstance(feed, ClusterFeed)
    return feed


async def test_a_standby_without_the_relay_refuses_db_subscriptions(
    server: Server, db_url: str
) -> None:
    await server.db.execute(
        "CREATE TABLE public.notes (id int PRIMARY KEY, body text);"
        "GRANT SELECT ON public.notes TO authenticated;"
    )
    await server.wait_streaming()
    database = urlsplit(db_url).path.lstrip("/")
    settings = dataclasses.replace(
        server.app[keys.SETTINGS], replication_slot=f"s_{database}", publication=f"p_{database}"
    )
    second = TestServer(create_app(settings, db_url), host="127.0.0.1")
    await second.start_server()
    try:
        standby = _cluster_feed(second.app)
        assert _cluster_feed(server.app).status()["role"] == "leader"
        await eventually(lambda: standby.status()["enabled"])
        assert standby.status()["role"] == "standby"
        other = Server(str(second.make_url("")).rstrip("/"), second.app, server.http, server.db)

        await standby.reader.stop()  # the relay is not heard
        client = await other.connect(other.token())
        refused = await client.request({"type": "subscribe", "channel": "db:notes"})
        assert refused["type"] == "error" and refused["code"] == "CHANGES_UNAVAILABLE", refused
        assert "relay" in refused["message"]

        standby.reader.start()
        await eventually(lambda: standby.status()["enabled"])
        reply = await client.request({"type": "subscribe", "channel": "db:notes"})
        assert reply["type"] == "subscribed", reply
        await server.db.execute("INSERT INTO public.notes VALUES (1, 'relayed')")
        message = await client.expect("message", timeout=10)
        assert message["payload"]["new"] == {"id": 1, "body": "relayed"}
        await client.close()
    finally:
        await second.close()


def _change(lsn: int) -> RowChange:
    return RowChange("public", "t", "INSERT", "", lsn, 1, {"id": str(uuid.uuid4())}, None)


async def test_a_change_read_twice_is_delivered_once(server: Server) -> None:
    feed = _cluster_feed(server.app)
    delivered: list[RowChange] = []

    async def deliver(changes: list[RowChange]) -> None:
        delivered.extend(changes)

    feed.on_batch(deliver, lambda: True)
    first = [_change(10), _change(10), _change(20)]
    number_changes(first)
    await feed._apply(first[:1])  # a change at a time (the fallback for a failing batch)
    await feed._apply(first[1:2])
    again = [_change(10), _change(10), _change(20), _change(30)]  # read again, and more
    number_changes(again)
    await feed._apply(again)
    await feed._apply(again[3:])  # a relay row written twice
    assert [(c.lsn, c.index) for c in delivered] == [(10, 0), (10, 1), (20, 0), (30, 0)]
