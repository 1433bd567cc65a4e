"""The presence store's rules, without a server: one member per user across its
connections, anonymous members by connection, join order, snapshots and their limit,
state updates; and the fan-out: the joiner and the leaver get no frame of their own,
a subscriber still resuming history gets each change once, directly."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from pgrealtime.engine.hub import Hub, Outbox
from pgrealtime.engine.messages import ChannelEvent
from pgrealtime.engine.presence import (
    ANONYMOUS,
    USER,
    LocalPresenceStore,
    Presence,
    PresenceChange,
    PresenceStore,
    member_key,
)
from pgrealtime.protocols.raw_ws.encode import CODEC

pytestmark = pytest.mark.pure

T0, T1, T2 = "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z"

# Every PresenceStore must pass the store tests below: the cluster-wide store of issue
# 14 joins this list.
STORES = [LocalPresenceStore]


@pytest.fixture(params=STORES, ids=lambda cls: cls.__name__)
def store(request: pytest.FixtureRequest) -> PresenceStore:
    return request.param()


def test_member_keys() -> None:
    assert member_key("u1", "c1") == (USER, "u1")
    assert member_key(None, "c1") == (ANONYMOUS, "c1")


def test_a_user_is_one_member_across_connections(store: PresenceStore) -> None:
    change = store.join("room", (USER, "u1"), "c1", T0)
    assert isinstance(change, PresenceChange)
    assert (change.event, change.channel) == ("join", "room")
    assert change.member == {"type": "user", "presenceId": "u1", "joinedAt": T0}
    assert store.join("room", (USER, "u1"), "c2", T1) is None  # second connection: no join
    assert store.join("room", (USER, "u1"), "c1", T1) is None  # the same one again: no join
    assert store.snapshot("room", 0) == ([{"type": "user", "presenceId": "u1", "joinedAt": T0}],
                                         False)  # fmt: skip
    assert store.leave("room", "c1", T1) is None  # still here on c2
    assert store.member_count("room") == 1
    change = store.leave("room", "c2", T2)
    assert change is not None and change.event == "leave"
    assert change.member == {"type": "user", "presenceId": "u1", "joinedAt": T0}
    assert store.member_count("room") == 0
    assert store.snapshot("room", 0) == ([], False)
    assert store.leave("room", "c2", T2) is None  # nothing to leave twice


def test_anonymous_members_are_one_per_connection(store: PresenceStore) -> None:
    assert store.join("room", member_key(None, "c1"), "c1", T0) is not None
    assert store.join("room", member_key(None, "c2"), "c2", T0) is not None
    members, _ = store.snapshot("room", 0)
    assert [(m["type"], m["presenceId"]) for m in members] == [(ANONYMOUS, "c1"), (ANONYMOUS, "c2")]


def test_channels_are_apart(store: PresenceStore) -> None:
    store.join("a", (USER, "u1"), "c1", T0)
    assert store.snapshot("b", 0) == ([], False)
    assert store.leave("b", "c1") is None
    assert store.member_count("a") == 1


def test_snapshot_in_join_order_and_bounded(store: PresenceStore) -> None:
    for n in range(5):
        store.join("room", (USER, f"u{n}"), f"c{n}", T0)
    members, truncated = store.snapshot("room", 3)
    assert [m["presenceId"] for m in members] == ["u0", "u1", "u2"] and truncated
    assert store.snapshot("room", 5)[1] is False
    assert len(store.snapshot("room", 0)[0]) == 5  # 0: all


def test_state_updates_and_snapshots_carry_it(store: PresenceStore) -> None:
    store.join("room", (USER, "u1"), "c1", T0)
    store.join("room", (USER, "u1"), "c2", T0)
    change = store.update("room", "c2", {"typing": True}, T1)
    assert change is not None and change.event == "update"
    assert change.member == {"type": "user", "presenceId": "u1", "joinedAt": T0,
                             "state": {"typing": True}}  # fmt: skip
    assert store.update("room", "c1", {"typing": True}, T1) is None  # unchanged: nothing
    assert store.snapshot("room", 0)[0][0]["state"] == {"typing": True}
    assert store.update("room", "c9", {"x": 1}) is None  # not a member
    cleared = store.update("room", "c1", None, T2)
    assert cleared is not None and "state" not in cleared.member
    # a change already made keeps the member as it was then
    assert change.member["state"] == {"typing": True}


def test_raw_frame_is_the_documented_frame(store: PresenceStore) -> None:
    change = store.join("room", (USER, "u1"), "c1", T0)
    assert change is not None
    event = change.channel_event()
    frame = event.frame_for(CODEC)
    assert frame is event.frame_for(CODEC)  # encoded once per protocol
    assert orjson.loads(frame[frame.index(b"{") :]) == {  # after the WebSocket header
        "type": "presence",
        "event": "join",
        "channel": "room",
        "member": {"type": "user", "presenceId": "u1", "joinedAt": T0},
    }


# --- fan-out through a real hub, to fake transports ----------------------------------


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def frames(self) -> list[dict]:
        return [orjson.loads(f) for chunk in self.written for f in chunk.split(b"\n") if f]


class _Lines:
    """A codec writing each event as one JSON line: easy to split back."""

    def event(self, event: ChannelEvent) -> bytes:
        kind, _, name = event.name.partition(":")
        return orjson.dumps({"type": kind, "event": name, "channel": event.channel,
                             **event.data}) + b"\n"  # fmt: skip


_LINES = _Lines()


async def test_fan_out_skips_the_joiner_and_the_leaver_and_reaches_the_resuming() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    presence = Presence(hub, snapshot_limit=2)
    a, b, c = _Transport(), _Transport(), _Transport()
    box_a, box_b, box_c = (Outbox(hub, t, lambda: None, _LINES) for t in (a, b, c))

    snap = presence.join("room", (USER, "ua"), "ca", box_a, in_hub=True)
    hub.subscribe("room", box_a)
    assert [m["presenceId"] for m in snap["members"]] == ["ua"] and "truncated" not in snap
    snap = presence.join("room", (USER, "ub"), "cb", box_b, in_hub=True)
    hub.subscribe("room", box_b)
    assert [m["presenceId"] for m in snap["members"]] == ["ua", "ub"]
    # c resumes history: presence first, the hub later
    snap = presence.join("room", (ANONYMOUS, "cc"), "cc", box_c, in_hub=False)
    assert snap["truncated"] is True and len(snap["members"]) == 2
    presence.update("room", "ca", {"at": 1})
    hub.subscribe("room", box_c)  # caught up (Ordering.go_live)
    presence.update("room", "ca", {"at": 2})
    hub.unsubscribe("room", box_b)
    presence.leave("room", "cb", box_b)
    await asyncio.sleep(0)  # the hub's flush

    seen_a = [(f["event"], f["member"]["presenceId"]) for f in a.frames()]
    assert seen_a == [("join", "ub"), ("join", "cc"), ("update", "ua"), ("update", "ua"),
                      ("leave", "ub")]  # fmt: skip
    seen_b = [(f["event"], f["member"]["presenceId"]) for f in b.frames()]
    assert seen_b == [("join", "cc"), ("update", "ua"), ("update", "ua")]  # no own leave
    seen_c = [(f["event"], f["member"]["presenceId"]) for f in c.frames()]
    assert seen_c == [("update", "ua"), ("update", "ua"), ("leave", "ub")]  # each once
    assert presence.store.member_count("room") == 2


def test_session_refusal_codes_are_protocol_error_codes() -> None:
    from pgrealtime.protocols.raw_ws.frames import ErrorCode
    from pgrealtime.session import presence as session_presence

    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()}
    for name in ("NOT_SUBSCRIBED", "INVALID_CHANNEL", "INVALID_STATE", "RATE_LIMITED",
                 "PRESENCE_DISABLED"):  # fmt: skip
        assert getattr(session_presence, name) in codes


@pytest.mark.parametrize("seed", range(40))
async def test_every_view_stays_exact_under_random_joins_leaves_updates_and_resumes(
    seed: int,
) -> None:
    """Connections of a few users (and anonymous ones) subscribe live or by resuming,
    go live, set states and leave, in random order. Each connection's view (its
    snapshot, then the frames it got) must equal the channel's members after every
    step: no join twice, no leave or update of a member it does not have."""
    import random

    rng = random.Random(seed)
    hub = Hub(send_buffer_limit=1 << 20)
    presence = Presence(hub)
    users: list[str | None] = ["u0", "u1", "u2", None, None]
    transports = [_Transport() for _ in range(8)]
    boxes = [Outbox(hub, t, lambda: None, _LINES) for t in transports]
    owner = [rng.choice(users) for _ in boxes]  # None: anonymous
    views: dict[int, dict[str, dict]] = {}  # connection -> presenceId -> member
    resuming: set[int] = set()
    seen = [0] * len(boxes)

    def conn_id(i: int) -> str:
        return f"c{i}"

    def expected() -> dict[str, dict]:
        members, _ = presence.store.snapshot("room", 0)
        return {m["presenceId"]: m for m in members}

    def consume() -> None:
        for i, transport in enumerate(transports):
            frames = transport.frames()
            new, seen[i] = frames[seen[i] :], len(frames)
            view = views.get(i)
            for frame in new:
                assert view is not None, (i, frame)  # nothing after it left
                member = frame["member"]
                pid = member["presenceId"]
                if frame["event"] == "join":
                    assert pid not in view, ("join twice", i, pid)
                    view[pid] = member
                elif frame["event"] == "leave":
                    assert pid in view, ("leave without join", i, pid)
                    del view[pid]
                else:
                    assert pid in view, ("update without join", i, pid)
                    view[pid] = member

    for _ in range(60):
        i = rng.randrange(len(boxes))
        action = rng.random()
        if i not in views:
            live = action < 0.6
            key = member_key(owner[i], conn_id(i))
            snap = presence.join("room", key, conn_id(i), boxes[i], in_hub=live)
            if live:
                hub.subscribe("room", boxes[i])
            else:
                resuming.add(i)
            views[i] = {m["presenceId"]: m for m in snap["members"]}
        elif i in resuming and action < 0.5:
            resuming.discard(i)
            hub.subscribe("room", boxes[i])  # what Ordering.go_live does
        elif action < 0.75:
            presence.update("room", conn_id(i), rng.choice([None, {"n": rng.randrange(3)}]))
        else:
            hub.unsubscribe("room", boxes[i])
            presence.leave("room", conn_id(i), boxes[i])
            resuming.discard(i)
            await asyncio.sleep(0)
            consume()  # what reached it before it left
            del views[i]
        await asyncio.sleep(0)  # the hub's flush
        consume()
        for view in views.values():
            assert view == expected()
