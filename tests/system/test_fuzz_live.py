"""Random and mutated frames against a live server over a real WebSocket.

Each generated frame is sent on one connection, followed by a `ping` probe. What the
server answers is compared with an oracle built from the documented protocol: the
pure decoder (`parse_frame`, property-tested in test_frames_properties.py) for frames
that cannot be acted on, then the session rules (auth, subscribe, unsubscribe,
publish) for the rest. The connection must answer every probe (it is never closed),
nothing may be logged as an error, and afterwards every stored message must be
exactly what was published and acknowledged.
"""

from __future__ import annotations

import json
import logging
import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from tests.conftest import API_KEY, JWT_SECRET, Client, Server

from pgrealtime.auth import Authenticator, AuthError
from pgrealtime.engine.channels import MAX_CHANNEL_LENGTH, channel_name_error, most_specific
from pgrealtime.protocols.raw_ws import frames
from pgrealtime.protocols.raw_ws.frames import ErrorCode, FrameError, event_name_error, parse_frame

MAX_FRAME = 1024 * 1024  # the fixture's default --max-frame-bytes
PATTERNS = ["fz:*", "fz:exact", "off:*"]  # off:* is created disabled
ENABLED = ["fz:*", "fz:exact"]
SQL = "'; DROP TABLE realtime.messages; --"
HOSTILE_TEXT = [
    "", " ", "\u0000", SQL, "$$", "$$ SELECT 1 $$", "\\", "\\\\", "\\u0000", "\\x00", "%", "_",
    "*", "\u202e\u0631", "e\u0301", "\U0001f600" * 30, "\ufeff", "\uffff", "\u2028", "\x7f",
    "a" * 5000, "fz:1", "fz:exact", "db:posts", "fz:1\n", "realtime:x", "phx_join", "ik_",
    "null", "NaN", "<script>", "${jndi:x}", "\x85",
]  # fmt: skip


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"n": value}
    return value


HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1,
    2**64, 10**30, -(10**40), 1e308, -1e308, 5e-324, -0.0, 0.1, 1e16, [], {}, [1, [2, [3]]],
    {"a": {"b": None}}, {"": ""}, _nested(20), _nested(300), _nested(800), [None] * 100,
]  # fmt: skip
EXTRA_KEYS = ["extra", "ref", "topic", "join_ref", "event", "payload", "token", "filter",
              "channel", "data", "type "]  # fmt: skip
FIELDS = ["type", "id", "channel", "event", "payload", "token", "filter"]


# --- the oracle ------------------------------------------------------------------------


@dataclass
class State:
    """What the server should believe about the fuzzed connection."""

    identity: tuple[str, str | None] | None  # (role, user id) once authenticated
    subscriptions: set[str] = field(default_factory=set)


@dataclass
class Expected:
    reply: dict | None  # the exact reply, or the fields it must have
    exact: bool = True
    publish: tuple[str, str, dict] | None = None  # (channel, event, payload) to be stored
    ended: list[str] = field(default_factory=list)  # subscriptions a refresh ends, sorted


def _error(code: str, request_id: Any, channel: Any) -> Expected:
    reply = {"type": "error", "code": code}
    if request_id is not None:
        reply["id"] = request_id
    if channel is not None and len(channel) <= MAX_CHANNEL_LENGTH:  # longer: not echoed
        reply["channel"] = channel
    return Expected(reply, exact=False)


def _reply(reply: dict, request_id: Any) -> dict:
    return reply if request_id is None else {**reply, "id": request_id}


def oracle(data: str | bytes, state: State, authenticator: Authenticator) -> Expected:
    """The documented answer to one frame, and the state change it makes."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            return _error(ErrorCode.MALFORMED_FRAME, None, None)
    try:
        frame = parse_frame(data, MAX_FRAME)
    except FrameError as exc:
        return _error(exc.code, exc.request_id, exc.channel)
    rid = frame.id
    if isinstance(frame, frames.Ping):
        return Expected(_reply({"type": "pong"}, rid))
    if isinstance(frame, frames.Auth):
        try:
            principal = authenticator.authenticate(frame.token)
        except AuthError as exc:
            return _error(exc.code, rid, None)
        current = state.identity
        if current is not None and current[1] is not None and principal.user_id != current[1]:
            return _error(ErrorCode.INVALID_TOKEN, rid, None)  # a refresh as another user
        ended: list[str] = []
        if current is not None and principal.role == "anon":  # re-checked: anon may not
            ended = sorted(state.subscriptions)
            state.subscriptions.clear()
        state.identity = (principal.role, principal.user_id)
        reply = _reply({"type": "auth_success", "userId": principal.user_id}, rid)
        return Expected(reply, exact=False, ended=ended)
    channel = frame.channel
    if state.identity is None:
        return _error(ErrorCode.NOT_AUTHENTICATED, rid, channel)
    if isinstance(frame, frames.Unsubscribe):
        if len(channel) > MAX_CHANNEL_LENGTH:
            return _error(ErrorCode.INVALID_CHANNEL, rid, channel)
        state.subscriptions.discard(channel)
        return Expected(_reply({"type": "unsubscribed", "channel": channel}, rid))
    if isinstance(frame, frames.Subscribe):
        if channel_name_error(channel) is not None:
            return _error(ErrorCode.INVALID_CHANNEL, rid, channel)
        if channel in state.subscriptions:
            return Expected(_reply({"type": "subscribed", "channel": channel}, rid), exact=False)
        if channel.startswith("db:"):
            return _error(ErrorCode.CHANGES_UNAVAILABLE, rid, channel)
        if most_specific(ENABLED, channel) is None:
            return _error(ErrorCode.CHANNEL_NOT_FOUND, rid, channel)
        if state.identity[0] == "anon":  # no policy lets anon subscribe
            return _error(ErrorCode.UNAUTHORIZED, rid, channel)
        state.subscriptions.add(channel)
        return Expected(_reply({"type": "subscribed", "channel": channel}, rid), exact=False)
    assert isinstance(frame, frames.Publish)
    if channel not in state.subscriptions:
        return _error(ErrorCode.NOT_SUBSCRIBED, rid, channel)
    if event_name_error(frame.event) is not None:
        return _error(ErrorCode.INVALID_EVENT, rid, channel)
    reply = _reply({"type": "published", "channel": channel, "event": frame.event}, rid)
    return Expected(reply, exact=False, publish=(channel, frame.event, frame.payload))


# --- the generator ---------------------------------------------------------------------


@dataclass
class Tokens:
    user: str  # the fuzzed connection's own user: same identity, subscriptions kept
    other_user: str
    anon: str
    admin: str
    expired: str


def make_tokens(server: Server, user: str) -> Tokens:
    return Tokens(
        user=server.token(sub=user),
        other_user=server.token(),
        anon=server.token(role="anon"),
        admin=server.token(role="project_admin"),
        expired=server.token(sub=user, expires_in=-30),
    )


def _request_id(rng: random.Random) -> Any:
    if rng.random() < 0.6:
        return rng.choice([rng.randint(0, 10**6), uuid.uuid4().hex])
    return rng.choice([rng.randint(-(2**63), 2**63 - 1), rng.randint(0, 999), uuid.uuid4().hex,
                       "", "\U0001f600", SQL, 1.5, True, None, [], {"a": 1}, 2**64])  # fmt: skip


def _payload(rng: random.Random) -> Any:
    kind = rng.random()
    if kind < 0.7:
        tame = HOSTILE_VALUES[:8] + HOSTILE_VALUES[10:20]  # integers within 64 bits
        return {"n": rng.randint(-1000, 1000), "s": rng.choice(HOSTILE_TEXT[:20]),
                "v": rng.choice(tame), "sql": SQL}  # fmt: skip
    if kind < 0.85:
        return {rng.choice(HOSTILE_TEXT[:22]): rng.choice(HOSTILE_VALUES) for _ in range(3)}
    return rng.choice(HOSTILE_VALUES)


def template(rng: random.Random, tokens: Tokens, allow_identity_change: bool) -> dict:
    kind = rng.choices(["ping", "auth", "subscribe", "unsubscribe", "publish"],
                       weights=[1, 2, 3, 1, 10])[0]  # fmt: skip
    channels = ["fz:1", "fz:2", "fz:exact", "fz:" + "9" * 252, "off:1", "nope:1", "db:posts",
                "fz", "fz:a b", "fz:1*", "fz:%", rng.choice(HOSTILE_TEXT)]  # fmt: skip
    frame: dict[str, Any] = {"type": kind}
    if kind == "auth":
        choices = [tokens.user, tokens.expired, "", "garbage", "a.b.c", "ik_wrong", "ik_",
                   tokens.user + "x", tokens.user.replace(".", "", 1), SQL, "\u0000"]  # fmt: skip
        if allow_identity_change:
            choices += [tokens.other_user, tokens.anon, tokens.admin, API_KEY]
        frame["token"] = rng.choice(choices)
    elif kind in ("subscribe", "unsubscribe"):
        frame["channel"] = rng.choice(channels[:3]) if rng.random() < 0.5 else rng.choice(channels)
        if kind == "subscribe" and rng.random() < 0.2:
            frame["filter"] = rng.choice([None, {}, {"event": "INSERT"}, [], "x", 5])
    elif kind == "publish":
        frame["channel"] = rng.choice(["fz:1", "fz:1", "fz:2", "fz:exact", *channels[3:5]])
        frame["event"] = rng.choice(["e", "e", "e", "e", "order.updated", SQL, "$$", "\\",
                                     "\U0001f600", "x" * 100, "x" * 101, "a\nb", "ok\x7f",
                                     "presence:x", rng.choice(HOSTILE_TEXT)])  # fmt: skip
        frame["payload"] = _payload(rng)
    if rng.random() < 0.7:
        frame["id"] = _request_id(rng)
    return frame


def mutate(frame: dict, rng: random.Random) -> dict:
    frame = dict(frame)
    for _ in range(rng.choice([0, 0, 0, 0, 1, 1, 2, 3])):
        op = rng.randrange(5)
        if op == 0 and frame:
            frame.pop(rng.choice(list(frame)))
        elif op == 1:
            frame[rng.choice(FIELDS)] = rng.choice(HOSTILE_VALUES + HOSTILE_TEXT)
        elif op == 2:
            frame["type"] = rng.choice(["PING", "Publish", "", "dance", "auth\u0000", "phx_join",
                                        "message", 5, None, ["ping"], {"t": "ping"}])  # fmt: skip
        elif op == 3:
            frame[rng.choice(EXTRA_KEYS)] = rng.choice(HOSTILE_VALUES + HOSTILE_TEXT)
        else:
            frame["id"] = _request_id(rng)
    return frame


def encode(frame: Any, rng: random.Random) -> str | bytes:
    """Serialize, sometimes with the text or the bytes damaged, sometimes as binary."""
    text = json.dumps(frame, ensure_ascii=rng.random() < 0.5)
    roll = rng.random()
    if roll < 0.04:
        text = text[: rng.randrange(len(text) + 1)]  # truncated
    elif roll < 0.07:
        at = rng.randrange(len(text) + 1)
        text = text[:at] + rng.choice(['"', "{", "}", ",", "\\", "\u0000", " ", "]"]) + text[at:]
    elif roll < 0.09 and text.startswith("{") and len(text) > 2:
        text = '{"type": "ping", ' + text[1:]  # a duplicate key: the last one wins
    elif roll < 0.10:
        text = rng.choice(["", " ", "null", "[]", "1", '"ping"', "\ufeff{}", "{}", "[{}]",
                           "[" * 5000 + "]" * 5000, '{"type":"ping"}' * 2])  # fmt: skip
    if rng.random() < 0.15:
        data = text.encode()
        if rng.random() < 0.3:  # not UTF-8
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + data[at:]
        return data
    return text


# --- running it ------------------------------------------------------------------------


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality where jsonb may have rewritten a number (1e308 -> 1000...0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or math.isclose(float(a), float(b), rel_tol=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


async def _send(client: Client, data: str | bytes) -> None:
    if isinstance(data, bytes):
        await client.ws.send_bytes(data)
    else:
        await client.ws.send_str(data)


@dataclass
class Run:
    published: list[tuple[str, str, str, dict]] = field(default_factory=list)  # id, ch, ev, pl
    messages: list[dict] = field(default_factory=list)  # message frames seen by the fuzzed one


async def _exchange(client: Client, data: str | bytes, expected: Expected, n: int,
                    run: Run) -> None:  # fmt: skip
    """Send one fuzzed frame and a probe; check what comes back before the probe's pong
    (and the publish acknowledgement, which may come after it)."""
    await _send(client, data)
    probe = f"probe-{n}"
    await client.send({"type": "ping", "id": probe})
    replies: list[dict] = []
    got_pong = False
    want_async = expected.publish is not None
    while not got_pong or (want_async and not replies):
        frame = await client._read(10)
        if frame["type"] == "message":
            run.messages.append(frame)
        elif frame == {"type": "pong", "id": probe}:
            got_pong = True
        else:
            replies.append(frame)
    context = f"frame {n}: {data[:300]!r}"
    ended = [f for f in replies if f.get("code") == "REALTIME_SUBSCRIPTION_ENDED"]
    assert sorted(f["channel"] for f in ended) == expected.ended, (context, ended)
    replies = [f for f in replies if f not in ended]
    if expected.reply is None:
        assert replies == [], context
        return
    assert len(replies) == 1, (context, replies)
    reply = replies[0]
    if expected.exact:
        assert reply == expected.reply, (context, reply)
    else:
        assert {k: reply.get(k) for k in expected.reply} == expected.reply, (context, reply)
        if reply["type"] == "error":
            assert set(reply) <= {"type", "code", "message", "id", "channel"}, (context, reply)
            assert isinstance(reply["message"], str) and reply["message"], (context, reply)
            assert ("id" in reply) == ("id" in expected.reply), (context, reply)
            assert ("channel" in reply) == ("channel" in expected.reply), (context, reply)
    if expected.publish is not None:
        channel, event, payload = expected.publish
        run.published.append((reply["messageId"], channel, event, payload))


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [f"{r.name}: {r.getMessage()}" for r in bad]


async def _setup(server: Server) -> None:
    for pattern in PATTERNS:
        await server.create_channel(pattern, enabled=pattern in ENABLED)


async def _check_storage(server: Server, run: Run, observer: Client) -> None:
    """Every acknowledged publish is stored exactly once, as sent; nothing else is."""
    rows = await server.db.fetch(
        "SELECT id, channel_name, event_name, payload::text AS payload, sender_id, sender_type"
        " FROM realtime.messages ORDER BY seq"
    )
    assert [str(r["id"]) for r in rows] == [p[0] for p in run.published]
    for row, (_, channel, event, payload) in zip(rows, run.published, strict=True):
        assert (row["channel_name"], row["event_name"]) == (channel, event)
        assert _same_json(json.loads(row["payload"]), payload), (row["payload"], payload)
        assert row["sender_type"] == "user"
    # what subscribers received is what was stored: the observer got fz:1 and fz:2
    observed = [p for p in run.published if p[1] in ("fz:1", "fz:2")]
    received = [await observer.expect("message", timeout=10) for _ in observed]
    assert [m["messageId"] for m in received] == [p[0] for p in observed]
    for message, (_, channel, event, payload) in zip(received, observed, strict=True):
        assert (message["channel"], message["event"]) == (channel, event)
        assert _same_json(message["payload"], payload)
        assert message["senderType"] == "user"
    # and the history over REST serves them all
    status, history = await server.api("GET", "/api/realtime/messages?limit=1000")
    assert status == 200, history
    assert sorted(m["id"] for m in history) == sorted(p[0] for p in run.published)


async def _still_works(server: Server, client: Client) -> None:
    """A valid subscribe and publish on the fuzzed connection after all that."""
    await client.request({"type": "auth", "token": server.token(sub=str(uuid.uuid4()))})
    sub = await client.subscribe("fz:final")
    assert sub["type"] == "subscribed" and sub["channel"] == "fz:final", sub
    published = await client.publish("fz:final", "done", {"ok": True})
    assert published["type"] == "published", published
    message = await client.expect("message", channel="fz:final")
    assert message["payload"] == {"ok": True} and message["messageId"] == published["messageId"]
    assert await server.db.fetchval("SELECT to_regclass('realtime.messages') IS NOT NULL")


async def _fuzz(server: Server, client: Client, state: State, seed: int, count: int,
                allow_identity_change: bool, user: str) -> Run:  # fmt: skip
    rng = random.Random(seed)
    tokens = make_tokens(server, user)
    authenticator = Authenticator(JWT_SECRET, API_KEY)
    run = Run()
    for n in range(count):
        if rng.random() < 0.2:  # well-formed frames with hostile content, to be stored
            channel = rng.choice(["fz:1", "fz:2"])
            if state.identity is None or (allow_identity_change and rng.random() < 0.2):
                frame = {"type": "auth", "token": tokens.user, "id": n}
            elif channel not in state.subscriptions:
                frame = {"type": "subscribe", "channel": channel, "id": n}
            else:
                value = rng.choice(HOSTILE_VALUES[:20] + HOSTILE_TEXT)
                frame = {"type": "publish", "channel": channel, "id": n, "payload": {"v": value},
                         "event": rng.choice([SQL, "$$", "\\", "\U0001f600", "e"])}  # fmt: skip
            data = json.dumps(frame, ensure_ascii=rng.random() < 0.5)
        else:
            frame = mutate(template(rng, tokens, allow_identity_change), rng)
            data = encode(frame, rng)
        expected = oracle(data, state, authenticator)
        await _exchange(client, data, expected, n, run)
    return run


async def test_mutated_frames_on_an_authenticated_connection(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await _setup(server)
    user = str(uuid.uuid4())
    client = await server.connect(server.token(sub=user))
    observer = await server.connect(server.token())
    for channel in ("fz:1", "fz:2"):
        assert (await observer.subscribe(channel))["type"] == "subscribed"
    for channel in ("fz:1", "fz:2"):
        assert (await client.subscribe(channel))["type"] == "subscribed"
    state = State(identity=("authenticated", user), subscriptions={"fz:1", "fz:2"})
    run = await _fuzz(server, client, state, seed=20260, count=400,
                      allow_identity_change=False, user=user)  # fmt: skip
    assert len(run.published) >= 40  # the generator does reach the database
    assert not client.ws.closed
    await _check_storage(server, run, observer)
    # the fuzzed connection got its own copy of every message on channels it had joined
    assert {m["messageId"] for m in run.messages} <= {p[0] for p in run.published}
    await _still_works(server, client)
    _no_errors_logged(caplog)


async def test_mutated_frames_across_identities_and_before_auth(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Unauthenticated at first, then tokens of other users, anon and admin come by."""
    caplog.set_level(logging.WARNING)
    await _setup(server)
    client = await server.connect()
    observer = await server.connect(server.token())
    for channel in ("fz:1", "fz:2"):
        assert (await observer.subscribe(channel))["type"] == "subscribed"
    state = State(identity=None)
    run = await _fuzz(server, client, state, seed=7, count=250, allow_identity_change=True,
                      user=str(uuid.uuid4()))  # fmt: skip
    assert len(run.published) >= 20
    assert not client.ws.closed
    await _check_storage(server, run, observer)
    await _still_works(server, client)
    _no_errors_logged(caplog)


async def test_huge_and_binary_frames_keep_the_connection(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames just over the limit, binary frames and invalid UTF-8: an error each."""
    caplog.set_level(logging.WARNING)
    client = await server.connect(server.token())
    big = json.dumps({"type": "ping", "id": 1, "pad": "x" * MAX_FRAME})
    cases: list[tuple[str | bytes, str]] = [
        (big, ErrorCode.FRAME_TOO_LARGE),
        (big.encode(), ErrorCode.FRAME_TOO_LARGE),
        (b"\xff\xfe\x00", ErrorCode.MALFORMED_FRAME),
        (b"", ErrorCode.MALFORMED_FRAME),
        ("", ErrorCode.MALFORMED_FRAME),
        ("[" * 100_000 + "]" * 100_000, ErrorCode.MALFORMED_FRAME),
        ('{"type":"ping","id":' + "9" * 5000 + "}", ErrorCode.MALFORMED_FRAME),
    ]
    for data, code in cases:
        await _send(client, data)
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == code, (data[:50], error)
        assert "id" not in error
        assert (await client.request({"type": "ping"}))["type"] == "pong"
    pong = await client.request({"type": "ping", "id": 2**63 - 1})
    assert pong == {"type": "pong", "id": 2**63 - 1}
    await client.ws.send_bytes(b'{"type":"ping","id":"bin"}')
    assert await client.recv() == {"type": "pong", "id": "bin"}
    _no_errors_logged(caplog)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ('{"n": 18446744073709551616}', "integers"),
        ('{"n": -9223372036854775809}', "integers"),
        ('{"s": "a\\u0000b"}', "U+0000"),
        ('{"a\\u0000": 1}', "U+0000"),
        ('{"deep": ' + "[" * 300 + "]" * 300 + "}", "nested"),
    ],
)
async def test_unstorable_payloads_are_refused_alone_and_others_in_the_batch_pass(
    server: Server, caplog: pytest.LogCaptureFixture, payload: str, problem: str
) -> None:
    """A payload PostgreSQL or the encoder cannot take gets INVALID_PAYLOAD before it
    reaches the publish batch, so it cannot fail the batch of the other publishes."""
    caplog.set_level(logging.WARNING)
    await server.create_channel("fz:*")
    bad, good = await server.connect(server.token()), await server.connect(server.token())
    for client in (bad, good):
        await client.subscribe("fz:1")
    frame = '{"type":"publish","channel":"fz:1","event":"e","id":"bad","payload":' + payload + "}"
    await bad.send(frame)
    await good.send({"type": "publish", "channel": "fz:1", "event": "e", "payload": {"ok": 1},
                     "id": "good"})  # fmt: skip
    refused = await bad.expect("error", id="bad")
    assert refused["code"] == "INVALID_PAYLOAD" and refused["channel"] == "fz:1"
    assert problem in refused["message"]
    accepted = await good.expect("published", id="good")
    stored = await server.db.fetch("SELECT id, payload::text AS p FROM realtime.messages")
    assert [(str(r["id"]), json.loads(r["p"])) for r in stored] == [
        (accepted["messageId"], {"ok": 1})
    ]
    assert (await bad.request({"type": "ping"}))["type"] == "pong"
    _no_errors_logged(caplog)


async def test_history_serves_every_payload_sql_can_store(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Payloads written from SQL are not limited like WebSocket ones: numbers beyond a
    double, beyond 64 bits, deep nesting. History over REST and live delivery carry
    them verbatim (they are never re-decoded)."""
    caplog.set_level(logging.WARNING)
    await server.create_channel("sql:*")
    client = await server.connect(server.token())
    await client.subscribe("sql:1")
    deep = "[" * 300 + "1" + "]" * 300
    payloads = ['{"n": 1e400}', '{"n": -1e400}', '{"n": 1e-400}',
                '{"n": 123456789012345678901234567890}',
                '{"n": 0.1000000000000000055511151231257827}', '{"deep": ' + deep + "}",
                '{"s": "\\\\u0000 and \\"quotes\\" and \\\\"}']  # fmt: skip
    ids = []
    for text in payloads:
        ids.append(str(await server.db.fetchval(
            "SELECT realtime.publish('sql:1', 'e', $1::jsonb)", text)))  # fmt: skip
    stored = {
        str(r["id"]): r["p"]
        for r in await server.db.fetch("SELECT id, payload::text AS p FROM realtime.messages")
    }
    for message_id in ids:
        message = await client.expect("message", timeout=10, messageId=message_id)
        assert json.loads(json.dumps(message["payload"])) == json.loads(stored[message_id])
    status, history = await server.api("GET", "/api/realtime/messages?limit=100")
    assert status == 200, history
    by_id = {m["id"]: m["payload"] for m in history}
    for message_id in ids:
        assert by_id[message_id] == json.loads(stored[message_id])
    _no_errors_logged(caplog)


async def test_the_fuzzed_connection_is_closed_only_by_the_client(server: Server) -> None:
    """After garbage, a close from the client is answered normally (1000), not 1011."""
    client = await server.connect(server.token())
    for data in ("{", "\u0000", '{"type":"publish"}', "[" * 2000):
        await client.send(data)
        assert (await client.recv())["type"] == "error"
    await client.ws.close()
    assert client.ws.close_code == aiohttp.WSCloseCode.OK


async def test_a_crash_inside_a_websocket_handler_is_not_answered_with_http() -> None:
    """If a WebSocket handler ever fails after the upgrade, the error middleware must
    not write an HTTP 500 response into the WebSocket stream (the client would read
    it as a corrupt frame); the connection is dropped instead."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from pgrealtime.api.middleware import error_middleware

    async def crashing(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        await ws.receive()
        raise RuntimeError("a bug after the upgrade")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/ws", crashing)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
            assert (await ws.receive(timeout=5)).data == "hello"
            await ws.send_str("go")
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    finally:
        await server.close()
