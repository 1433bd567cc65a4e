"""Presence on the raw protocol, against a real server: the snapshot in `subscribed`,
join and leave frames in order to the other subscribers, one member per user across
connections, leaves on every way a subscription ends, presence_set updates, the limits,
and that presence is neither stored nor sent to webhooks."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from tests.conftest import Client, Server, make_settings

from pgrealtime import keys


def _ids(members: list[dict]) -> list[str]:
    return [m["presenceId"] for m in members]


async def _quiet(client: Client) -> list[dict]:
    """Frames that arrived before a ping's pong (the server handles frames in order,
    so a presence frame already queued for this client comes before it)."""
    await client.send({"type": "ping", "id": "q"})
    seen = []
    while (frame := await client.recv())["type"] != "pong":
        seen.append(frame)
    return seen


async def _sub(client: Client, channel: str) -> dict:
    reply = await client.subscribe(channel)
    assert reply["type"] == "subscribed", reply
    return reply


async def test_snapshot_then_joins_and_leaves_in_order(server: Server) -> None:
    await server.create_channel("room:*")
    ua, ub, uc = (str(uuid.uuid4()) for _ in range(3))
    a = await server.connect(server.token(sub=ua))
    b = await server.connect(server.token(sub=ub))
    c = await server.connect(server.token(sub=uc))

    first = await _sub(a, "room:1")
    assert first["presence"]["members"] == [
        {"type": "user", "presenceId": ua, "joinedAt": first["presence"]["members"][0]["joinedAt"]}
    ]
    assert "truncated" not in first["presence"]
    second = await _sub(b, "room:1")
    assert _ids(second["presence"]["members"]) == [ua, ub]  # join order
    joined = await a.expect("presence")
    assert joined == {"type": "presence", "event": "join", "channel": "room:1",
                      "member": second["presence"]["members"][1]}  # fmt: skip
    await _sub(c, "room:1")
    await b.close()  # a disconnect is a leave
    assert (await c.request({"type": "unsubscribe", "channel": "room:1"}))["type"] == (
        "unsubscribed"
    )
    events = [(f["event"], f["member"]["presenceId"]) for f in await _quiet(a)]
    assert events == [("join", uc), ("leave", ub), ("leave", uc)]
    seen_c = [(f["event"], f["member"]["presenceId"]) for f in await _quiet(c)]
    assert seen_c == [("leave", ub)]  # and not its own leave
    again = await _sub(a, "room:1")  # a repeated subscribe: a fresh snapshot
    assert _ids(again["presence"]["members"]) == [ua]


async def test_one_member_for_two_connections_of_one_user(server: Server) -> None:
    await server.create_channel("room:*")
    watcher = await server.connect(server.token())
    await _sub(watcher, "room:2")
    user = str(uuid.uuid4())
    tab1 = await server.connect(server.token(sub=user))
    tab2 = await server.connect(server.token(sub=user))
    await _sub(tab1, "room:2")
    reply = await _sub(tab2, "room:2")
    assert _ids(reply["presence"]["members"]).count(user) == 1
    assert [(f["event"], f["member"]["presenceId"]) for f in await _quiet(watcher)] == [
        ("join", user)
    ]
    await tab1.close()
    await asyncio.sleep(0.2)
    assert await _quiet(watcher) == []  # still here on tab2
    await tab2.close()
    leave = await watcher.expect("presence")
    assert (leave["event"], leave["member"]["presenceId"]) == ("leave", user)


async def test_anonymous_sessions_are_members_by_connection(server: Server) -> None:
    await server.create_channel("room:*")
    await server.db.execute(
        "CREATE POLICY anon_room ON realtime.channels FOR SELECT TO anon USING (true)"
    )
    one = await server.connect(server.token(role="anon"))
    two = await server.connect(server.token(role="anon"))
    await _sub(one, "room:3")
    reply = await _sub(two, "room:3")
    members = reply["presence"]["members"]
    assert [m["type"] for m in members] == ["anonymous", "anonymous"]
    assert members[0]["presenceId"] != members[1]["presenceId"]


async def test_signing_in_on_a_live_connection_changes_the_member(server: Server) -> None:
    await server.create_channel("room:*")
    await server.db.execute(
        "CREATE POLICY anon_room4 ON realtime.channels FOR SELECT TO anon USING (true)"
    )
    watcher = await server.connect(server.token())
    await _sub(watcher, "room:4")
    guest = await server.connect(server.token(role="anon"))
    anonymous = (await _sub(guest, "room:4"))["presence"]["members"][1]
    assert anonymous["type"] == "anonymous"
    user = str(uuid.uuid4())
    signed_in = await guest.request({"type": "auth", "token": server.token(sub=user)})
    assert signed_in["type"] == "auth_success"
    events = [(f["event"], f["member"]["type"], f["member"]["presenceId"])
              for f in await _quiet(watcher)]  # fmt: skip
    assert events == [
        ("join", "anonymous", anonymous["presenceId"]),
        ("leave", "anonymous", anonymous["presenceId"]),
        ("join", "user", user),
    ]
    again = await _sub(watcher, "room:4")
    assert [(m["type"], m["presenceId"]) for m in again["presence"]["members"]][1:] == [
        ("user", user)
    ]


async def test_db_channels_have_no_presence(server: Server) -> None:
    client = await server.connect(server.token())
    reply = await client.request(
        {"type": "presence_set", "channel": "db:things", "state": {"a": 1}}
    )
    assert reply["code"] == "INVALID_CHANNEL"


async def test_presence_set_updates_everyone_and_later_snapshots(server: Server) -> None:
    await server.create_channel("room:*")
    user = str(uuid.uuid4())
    setter = await server.connect(server.token(sub=user))
    other_tab = await server.connect(server.token(sub=user))
    watcher = await server.connect(server.token())
    await _sub(watcher, "room:4")
    await _sub(setter, "room:4")
    await _sub(other_tab, "room:4")
    await watcher.expect("presence", event="join")

    reply = await setter.request(
        {"type": "presence_set", "channel": "room:4", "state": {"status": "typing"}}
    )
    assert reply["type"] == "presence_updated" and reply["channel"] == "room:4"
    for client in (watcher, setter, other_tab):
        update = await client.expect("presence", event="update")
        assert update["member"]["presenceId"] == user
        assert update["member"]["state"] == {"status": "typing"}
    late = await server.connect(server.token())
    snapshot = (await _sub(late, "room:4"))["presence"]["members"]
    assert [m.get("state") for m in snapshot] == [None, {"status": "typing"}, None]
    # null clears it
    await setter.request({"type": "presence_set", "channel": "room:4", "state": None})
    cleared = await watcher.expect("presence", event="update")
    assert "state" not in cleared["member"]


@pytest.mark.parametrize(
    "server_settings",
    [make_settings(presence_rate=1, presence_burst=2, max_presence_state_bytes=64)],
)
async def test_presence_set_refusals(server: Server) -> None:
    await server.create_channel("room:*")
    client = await server.connect(server.token())
    frame = {"type": "presence_set", "channel": "room:5", "state": {"a": 1}}
    reply = await client.request(frame)
    assert reply["code"] == "REALTIME_NOT_SUBSCRIBED" and reply["channel"] == "room:5"
    await _sub(client, "room:5")
    for bad in ("busy", [1], 3):
        reply = await client.request({**frame, "state": bad})
        assert reply["code"] == "INVALID_PRESENCE_STATE", reply
        assert "JSON object" in reply["message"]
    reply = await client.request({**frame, "state": {"text": "x" * 100}})
    assert reply["code"] == "INVALID_PRESENCE_STATE" and "at most 64" in reply["message"]
    replies = [await client.request({**frame, "state": {"n": n}}) for n in range(4)]
    assert [r["type"] for r in replies] == ["presence_updated"] * 2 + ["error"] * 2
    assert replies[2]["code"] == "RATE_LIMITED" and "presence" in replies[2]["message"]
    members = (await _sub(client, "room:5"))["presence"]["members"]
    assert members[0]["state"] == {"n": 1}  # the refused ones changed nothing


@pytest.mark.parametrize("server_settings", [make_settings(presence_snapshot_limit=2)])
async def test_snapshot_is_bounded(server: Server) -> None:
    await server.create_channel("room:*")
    users = [str(uuid.uuid4()) for _ in range(3)]
    for user in users:
        client = await server.connect(server.token(sub=user))
        reply = await _sub(client, "room:6")
    assert reply["presence"] == {"members": reply["presence"]["members"], "truncated": True}
    assert _ids(reply["presence"]["members"]) == users[:2]  # the earliest joiners


@pytest.mark.parametrize("server_settings", [make_settings(presence=False)])
async def test_presence_can_be_turned_off(server: Server) -> None:
    await server.create_channel("room:*")
    a = await server.connect(server.token())
    b = await server.connect(server.token())
    assert "presence" not in await _sub(a, "room:7")
    await _sub(b, "room:7")
    assert await _quiet(a) == []
    reply = await a.request({"type": "presence_set", "channel": "room:7", "state": {}})
    assert reply["code"] == "PRESENCE_DISABLED"


async def test_token_expiry_is_a_leave(server: Server) -> None:
    await server.create_channel("room:*")
    watcher = await server.connect(server.token())
    await _sub(watcher, "room:8")
    user = str(uuid.uuid4())
    doomed = await server.connect(server.token(sub=user, expires_in=1))
    await _sub(doomed, "room:8")
    assert (await watcher.expect("presence"))["event"] == "join"
    leave = await watcher.expect("presence", timeout=10)
    assert (leave["event"], leave["member"]["presenceId"]) == ("leave", user)


async def test_an_ended_subscription_is_a_leave(server: Server) -> None:
    """A channel re-governed (a more specific pattern created) ends its subscriptions:
    their members leave, so a later snapshot no longer lists them."""
    await server.create_channel("room:*")
    watcher = await server.connect(server.token())
    member = await server.connect(server.token())
    await _sub(watcher, "room:9")
    await _sub(member, "room:9")
    await server.create_channel("room:9")  # governed by another row from now on
    for client in (watcher, member):
        ended = await client.expect("error", channel="room:9")
        assert ended["code"] == "REALTIME_SUBSCRIPTION_ENDED"
    presence = server.app[keys.SESSION_CONTEXT].presence
    assert presence.store.member_count("room:9") == 0
    reply = await _sub(watcher, "room:9")
    assert len(reply["presence"]["members"]) == 1  # itself only


async def test_a_resuming_subscriber_gets_the_snapshot_and_every_change(server: Server) -> None:
    await server.create_channel("feed")
    pub = await server.connect(server.token())
    await _sub(pub, "feed")
    for n in range(3):
        assert (await pub.publish("feed", "e", {"n": n}))["type"] == "published"
    late = await server.connect(server.token())
    reply = await late.request({"type": "subscribe", "channel": "feed", "since": 0})
    assert reply["type"] == "subscribed" and reply["missed"] == 3
    assert len(reply["presence"]["members"]) == 2
    newcomer = str(uuid.uuid4())
    third = await server.connect(server.token(sub=newcomer))
    await _sub(third, "feed")
    await third.close()
    seen = [(f["type"], f.get("event")) for f in await _quiet(late)]
    assert seen.count(("message", "e")) == 3
    assert [s for s in seen if s[0] == "presence"] == [("presence", "join"), ("presence", "leave")]


async def test_presence_is_not_stored_and_triggers_no_webhook(server: Server) -> None:
    await server.db.execute(
        "INSERT INTO realtime.channels (pattern, webhook_urls)"
        " VALUES ('hook:*', ARRAY['http://hook.example/in'])"
    )
    a = await server.connect(server.token())
    b = await server.connect(server.token())
    await _sub(a, "hook:1")
    await _sub(b, "hook:1")
    await a.request({"type": "presence_set", "channel": "hook:1", "state": {"x": 1}})
    await b.close()
    await a.expect("presence", event="leave")
    # one real message, so the counts below show the paths work
    assert (await a.publish("hook:1", "e", {}))["type"] == "published"
    assert await server.db.fetchval("SELECT count(*) FROM realtime.messages") == 1
    assert await server.db.fetchval("SELECT count(*) FROM realtime.webhook_deliveries") == 1
