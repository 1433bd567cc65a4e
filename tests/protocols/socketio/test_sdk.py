"""The official InsForge SDK (`@insforge/sdk`, pinned in node/package.json) against a
real server: Node runs node/client.mjs per client, driven over stdin/stdout in JSON
lines, so these tests see what an InsForge app sees."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import API_KEY, Server, eventually, make_settings

from pgrealtime import keys
from pgrealtime.config import Settings

pytestmark = pytest.mark.sdk

NODE_DIR = Path(__file__).parent / "node"
ANON_KEY = "anon_sdk_test_key"


@pytest.fixture(scope="session")
def sdk() -> Path:
    """node_modules installed (by .ci/run, else here with `npm ci`)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run the InsForge SDK (Node 18+)")
    if not (NODE_DIR / "node_modules" / "@insforge" / "sdk").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       capture_output=True, timeout=300)  # fmt: skip
    return NODE_DIR


@pytest.fixture
def server_settings() -> Settings:
    return make_settings(anon_key=ANON_KEY)


class SdkClient:
    """One `createClient` in its own Node process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict] = []

    @classmethod
    async def start(cls, sdk: Path) -> SdkClient:
        proc = await asyncio.create_subprocess_exec(
            "node", "client.mjs", cwd=sdk, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def send(self, op: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        await self.proc.stdin.drain()

    async def wait(self, op: str, timeout: float = 15.0, **fields: Any) -> dict:
        """The next output line with this `op` (and fields); others are kept."""
        for i, line in enumerate(self.seen):
            if line["op"] == op and all(line.get(k) == v for k, v in fields.items()):
                return self.seen.pop(i)
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert raw, "the Node client exited"
            line = json.loads(raw)
            if line["op"] == op and all(line.get(k) == v for k, v in fields.items()):
                return line
            self.seen.append(line)

    async def call(self, op: str, answer: str, **fields: Any) -> dict:
        await self.send(op, **fields)
        return await self.wait(answer)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def clients(sdk: Path):
    started: list[SdkClient] = []

    async def start(server: Server, **auth: str) -> SdkClient:
        client = await SdkClient.start(sdk)
        started.append(client)
        reply = await client.call("connect", "connected", baseUrl=server.base, **auth)
        assert reply["socketId"], reply
        return client

    yield start
    for client in started:
        await client.close()


async def test_two_sdk_clients_subscribe_publish_and_receive_with_meta(
    server: Server, clients
) -> None:
    await server.create_channel("chat:*")
    alice_id = str(uuid.uuid4())
    alice = await clients(server, accessToken=server.token(sub=alice_id))
    bob = await clients(server, accessToken=server.token())
    for client in (alice, bob):
        await client.send("listen", event="said")
        reply = await client.call("subscribe", "subscribed", channel="chat:1")
        assert reply["response"]["ok"] is True, reply
        assert isinstance(reply["response"]["presence"]["members"], list)
    await alice.call("publish", "published", channel="chat:1", event="said",
                     payload={"text": "hello"})  # fmt: skip
    for client in (alice, bob):
        got = await client.wait("event", event="said")
        data = got["data"]
        assert data["text"] == "hello"
        meta = data["meta"]
        assert meta["channel"] == "realtime:chat:1"
        assert meta["senderType"] == "user" and meta["senderId"] == alice_id
        uuid.UUID(meta["messageId"])
        assert meta["timestamp"].endswith("Z")


async def test_denied_subscribe_is_ok_false_with_an_error(server: Server, clients) -> None:
    await server.create_channel("private:*")
    anon = await clients(server, anonKey=ANON_KEY)
    reply = await anon.call("subscribe", "subscribed", channel="private:1")
    response = reply["response"]
    assert response["ok"] is False and response["channel"] == "private:1"
    assert response["error"]["code"] == "REALTIME_UNAUTHORIZED" and response["error"]["message"]
    missing = await anon.call("subscribe", "subscribed", channel="nowhere")
    assert missing["response"]["error"]["code"] == "REALTIME_CHANNEL_NOT_FOUND"


async def test_unsubscribe_stops_delivery(server: Server, clients) -> None:
    await server.create_channel("chat:*")
    listener = await clients(server, accessToken=server.token())
    talker = await server.connect(server.token())
    await talker.subscribe("chat:1")
    await talker.subscribe("chat:2")
    await listener.send("listen", event="tick")
    await listener.send("listen", event="marker")
    await listener.call("subscribe", "subscribed", channel="chat:1")
    await talker.publish("chat:1", "tick", {"n": 1})
    assert (await listener.wait("event", event="tick"))["data"]["n"] == 1
    await listener.call("unsubscribe", "unsubscribed", channel="chat:1")
    # the subscribe ack that follows proves the server handled the unsubscribe first
    await listener.call("subscribe", "subscribed", channel="chat:2")
    await talker.publish("chat:1", "tick", {"n": 2})
    await talker.publish("chat:2", "marker", {})
    await listener.wait("event", event="marker")
    assert not [s for s in listener.seen if s["op"] == "event" and s["event"] == "tick"]


async def test_an_invalid_token_is_a_connect_error(server: Server, sdk: Path) -> None:
    client = await SdkClient.start(sdk)
    try:
        await client.send("connect", baseUrl=server.base, accessToken="not.a.token")
        reply = await client.wait("connect_error")
        assert "Invalid token" in reply["message"], reply
        assert reply["data"]["code"] == "INVALID_TOKEN"
    finally:
        await client.close()


async def test_raw_websocket_and_sdk_clients_exchange_both_ways(server: Server, clients) -> None:
    await server.create_channel("mix:*")
    sdk_client = await clients(server, accessToken=server.token())
    await sdk_client.send("listen", event="from_raw")
    await sdk_client.call("subscribe", "subscribed", channel="mix:1")
    raw = await server.connect(server.token())
    await raw.subscribe("mix:1")
    published = await raw.publish("mix:1", "from_raw", {"a": 1})
    got = await sdk_client.wait("event", event="from_raw")
    assert got["data"]["a"] == 1 and got["data"]["meta"]["messageId"] == published["messageId"]
    await sdk_client.call("publish", "published", channel="mix:1", event="from_sdk",
                          payload={"b": 2})  # fmt: skip
    message = await raw.expect("message", event="from_sdk")
    assert message["payload"] == {"b": 2}


async def test_admin_client_with_the_api_key(server: Server, clients) -> None:
    await server.create_channel("ops:*")
    admin = await clients(server, apiKey=API_KEY)
    reply = await admin.call("subscribe", "subscribed", channel="ops:1")
    assert reply["response"]["ok"] is True


async def _members(client: SdkClient, channel: str, expected: set[str]) -> list[dict]:
    """getPresenceState(channel) once it lists exactly the presenceIds `expected`."""
    members: list[dict] = []
    for _ in range(100):
        members = (await client.call("presence", "presence", channel=channel))["members"]
        if {m["presenceId"] for m in members} == expected:
            return members
        await asyncio.sleep(0.05)
    raise AssertionError(f"presence of {channel} is {members}, expected {expected}")


async def test_presence_through_the_sdk_joins_and_leaves(server: Server, clients) -> None:
    await server.create_channel("room:*")
    alice_id, bob_id = str(uuid.uuid4()), str(uuid.uuid4())
    alice = await clients(server, accessToken=server.token(sub=alice_id))
    await alice.send("listen", event="presence:join")
    await alice.send("listen", event="presence:leave")
    reply = await alice.call("subscribe", "subscribed", channel="room:1")
    assert [m["presenceId"] for m in reply["response"]["presence"]["members"]] == [alice_id]
    bob = await clients(server, accessToken=server.token(sub=bob_id))
    reply = await bob.call("subscribe", "subscribed", channel="room:1")
    snapshot = reply["response"]["presence"]["members"]
    assert [m["presenceId"] for m in snapshot] == [alice_id, bob_id]
    assert all(m["type"] == "user" and m["joinedAt"].endswith("Z") for m in snapshot)
    # the event as the SDK consumes it: {member, meta: {channel (bare), ...}}
    joined = (await alice.wait("event", event="presence:join"))["data"]
    assert joined["member"]["presenceId"] == bob_id and joined["member"]["type"] == "user"
    meta = joined["meta"]
    assert meta["channel"] == "room:1" and meta["senderType"] == "system"
    uuid.UUID(meta["messageId"])
    assert meta["timestamp"].endswith("Z")
    await _members(alice, "room:1", {alice_id, bob_id})
    await _members(bob, "room:1", {alice_id, bob_id})
    await bob.send("disconnect")
    left = (await alice.wait("event", event="presence:leave"))["data"]
    assert left["member"]["presenceId"] == bob_id and left["meta"]["channel"] == "room:1"
    await _members(alice, "room:1", {alice_id})


async def test_presence_between_raw_websocket_and_sdk(server: Server, clients) -> None:
    await server.create_channel("mix:*")
    sdk_id, raw_id = str(uuid.uuid4()), str(uuid.uuid4())
    sdk_client = await clients(server, accessToken=server.token(sub=sdk_id))
    await sdk_client.call("subscribe", "subscribed", channel="mix:1")
    raw = await server.connect(server.token(sub=raw_id))
    subscribed = await raw.subscribe("mix:1")
    assert [m["presenceId"] for m in subscribed["presence"]["members"]] == [sdk_id, raw_id]
    await _members(sdk_client, "mix:1", {sdk_id, raw_id})  # the raw client, in the SDK
    # a state set on the raw protocol: an update frame, and `state` in later snapshots
    updated = await raw.request({"type": "presence_set", "channel": "mix:1",
                                 "state": {"status": "away"}})  # fmt: skip
    assert updated["type"] == "presence_updated", updated
    own = await raw.expect("presence", event="update")  # the setter sees its own too
    assert own["member"]["presenceId"] == raw_id
    # ... and one set through the SDK's socket (realtime:presence), seen on raw
    answer = await sdk_client.call("presence_set", "presence_set", channel="mix:1",
                                   state={"typing": True})  # fmt: skip
    assert answer["response"] == {"ok": True, "channel": "mix:1"}, answer
    update = await raw.expect("presence", event="update")
    assert update["member"]["presenceId"] == sdk_id and update["member"]["state"] == {
        "typing": True
    }
    later_id = str(uuid.uuid4())
    later = await clients(server, accessToken=server.token(sub=later_id))
    reply = await later.call("subscribe", "subscribed", channel="mix:1")
    states = {m["presenceId"]: m.get("state") for m in reply["response"]["presence"]["members"]}
    assert states == {sdk_id: {"typing": True}, raw_id: {"status": "away"}, later_id: None}
    joined = await raw.expect("presence", event="join")
    assert joined["member"]["presenceId"] == later_id  # the SDK client, on the raw side
    await raw.close()
    await _members(sdk_client, "mix:1", {sdk_id, later_id})


async def _closed_on_server(server: Server, live: int) -> None:
    """Until the server holds `live` sessions (a disconnect has been handled)."""
    await eventually(lambda: len(server.app[keys.SESSIONS].live) == live)


async def test_a_user_on_two_sdk_connections_is_one_member(server: Server, clients) -> None:
    await server.create_channel("room:*")
    await server.db.execute(
        "CREATE POLICY anon_room ON realtime.channels FOR SELECT TO anon USING (true)"
    )
    user, watcher_id = str(uuid.uuid4()), str(uuid.uuid4())
    watcher = await clients(server, accessToken=server.token(sub=watcher_id))
    await watcher.send("listen", event="presence:join")
    await watcher.send("listen", event="presence:leave")
    await watcher.call("subscribe", "subscribed", channel="room:1")
    tab1 = await clients(server, accessToken=server.token(sub=user))
    tab2 = await clients(server, accessToken=server.token(sub=user))
    await tab1.call("subscribe", "subscribed", channel="room:1")
    reply = await tab2.call("subscribe", "subscribed", channel="room:1")
    members = reply["response"]["presence"]["members"]
    assert [m["presenceId"] for m in members] == [watcher_id, user]
    # an anon-key session is a member of its own, named by its connection
    anon = await clients(server, anonKey=ANON_KEY)
    reply = await anon.call("subscribe", "subscribed", channel="room:1")
    assert reply["response"]["ok"] is True, reply
    anon_member = reply["response"]["presence"]["members"][-1]
    assert anon_member["type"] == "anonymous" and anon_member["presenceId"] not in (user,)
    await _members(watcher, "room:1", {watcher_id, user, anon_member["presenceId"]})
    await tab1.send("disconnect")  # the user is still here on tab2
    await _closed_on_server(server, 3)
    await _members(watcher, "room:1", {watcher_id, user, anon_member["presenceId"]})
    await tab2.send("disconnect")
    await anon.send("disconnect")
    await _members(watcher, "room:1", {watcher_id})
    seen = [(s["event"], s["data"]["member"]["presenceId"]) for s in watcher.seen
            if s["op"] == "event"]  # fmt: skip
    assert sorted(seen) == sorted([("presence:join", user), ("presence:leave", user),
                                   ("presence:join", anon_member["presenceId"]),
                                   ("presence:leave", anon_member["presenceId"])])  # fmt: skip
    assert seen.index(("presence:join", user)) < seen.index(("presence:leave", user))
