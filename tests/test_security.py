"""Hostile credentials, SQL in every text a client controls, and isolation between
users, against a live server.

Already covered elsewhere (not repeated here): `role: postgres`, a `project_admin`
token signed with a wrong secret, `alg: none` and a non-UUID `sub` over WebSocket
(test_ws_protocol.py::test_forged_roles_and_algorithms_are_refused); an expired token,
a wrong API key and garbage over WebSocket (test_ws_protocol.py::
test_every_refusal_has_its_own_code); no credential, garbage and a non-admin token on
one REST route (test_rest.py::test_admin_only); a user refused a channel another owns
(test_authorize_policies.py::test_users_subscribe_only_to_orders_they_own); rows of a `db:`
channel filtered by RLS per user (test_route.py::
test_changes_reach_subscribers_with_rls_per_user).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.conftest import API_KEY, JWT_SECRET, Server, make_settings

from pgrealtime.auth import ROLES, Authenticator, AuthError

SQL = "'; DROP TABLE realtime.messages; --"
NASTY = [SQL, "$$", "$$; DROP TABLE realtime.channels; $$", "\\", "\\'", "\\\\'; --", "%_*",
         "' OR '1'='1", "\\x27", "E'\\''", "\"quoted\"", "\u2028", "\U0001f600"]  # fmt: skip
WRONG_SECRET = "wrong-secret-" + "z" * 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims_text: str, header: dict | None = None, secret: str = JWT_SECRET) -> str:
    """A JWT over exactly this payload text (which json.dumps could not always write)."""
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(claims_text.encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


async def _ws_code(server: Server, token: str) -> str:
    client = await server.connect()
    reply = await client.auth(token)
    await client.close()
    return reply.get("code", reply["type"])


async def _rest(
    server: Server, token: str | None, method: str = "GET",
    path: str = "/api/realtime/channels", **headers: str,
) -> tuple[int, dict]:  # fmt: skip
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await server.api(method, path, headers=headers)


# --- the authenticator on its own ----------------------------------------------------

claim_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip
claim_sets = st.dictionaries(
    st.sampled_from(["role", "sub", "exp", "iat", "nbf", "aud", "iss", "email", "x", "\u0000"]),
    claim_values | st.sampled_from([*ROLES, "service_role", "postgres", str(uuid.uuid4())]),
    max_size=6,
)


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@settings(max_examples=300, deadline=None)
@example("ik_")
@example("a.b.c")
@example("..")
@example("eyJhbGciOiJIUzI1NiJ9..")
def test_any_credential_is_a_principal_or_an_auth_error(credential: str) -> None:
    authenticator = Authenticator(JWT_SECRET, API_KEY)
    try:
        authenticator.authenticate(credential)
    except AuthError as exc:
        assert exc.code in {"INVALID_TOKEN", "TOKEN_EXPIRED", "INVALID_API_KEY"}


@given(claim_sets, st.sampled_from(["HS256", "HS256", "none", "HS512", "hs256", None]))
@settings(max_examples=400, deadline=None)
@example({"role": "anon", "big": 2**64}, "HS256")
@example({"role": "anon", "s": "nul \u0000"}, "HS256")
@example({"sub": "{3F6C1D2E-0000-4000-8000-000000000001}"}, "HS256")
@example({"sub": "urn:uuid:3f6c1d2e-0000-4000-8000-000000000001"}, "HS256")
def test_signed_tokens_with_any_claims_give_a_usable_principal_or_an_auth_error(
    claims: dict, alg: str | None
) -> None:
    """Whatever a token issuer signs: the principal's claims can always be handed to
    PostgreSQL (encodable, no U+0000), its role is allowed, and an authenticated
    user id is the canonical UUID that `auth.uid()` will also see."""
    authenticator = Authenticator(JWT_SECRET, API_KEY)
    header = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
    try:
        principal = authenticator.authenticate(signed(json.dumps(claims), header))
    except AuthError as exc:
        assert exc.code in {"INVALID_TOKEN", "TOKEN_EXPIRED"}
        return
    assert alg == "HS256"
    assert principal.role in ROLES
    encoded = principal.claims_json
    assert orjson.loads(encoded) == principal.claims and "\\u0000" not in encoded
    assert principal.claims["role"] == principal.role
    if principal.role == "authenticated":
        assert principal.user_id == str(uuid.UUID(principal.user_id))
        assert principal.claims["sub"] == principal.user_id
    else:
        assert principal.user_id is None and "sub" not in principal.claims


# --- hostile credentials, live -------------------------------------------------------


async def test_roles_outside_the_allow_list_are_refused(server: Server) -> None:
    for role in ["service_role", "supabase_admin", "postgres", "pg_read_all_data",
                 "Project_Admin", "project_admin ", "authenticated\u0000", "", None,
                 ["project_admin"], 5]:  # fmt: skip
        token = jwt.encode({"sub": str(uuid.uuid4()), "role": role, "exp": int(time.time()) + 60},
                           JWT_SECRET, "HS256")  # fmt: skip
        assert await _ws_code(server, token) == "INVALID_TOKEN", role
        status, body = await _rest(server, token)
        assert (status, body["error"]) == (401, "AUTH_INVALID_TOKEN"), role
        assert "is not allowed" in body["message"]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_forged_admin_tokens_are_refused_on_rest(server: Server) -> None:
    admin = {"role": "project_admin", "exp": int(time.time()) + 60}
    anon_token = server.token(role="anon")
    head, _, sig = anon_token.split(".")
    forged = {
        "wrong secret": jwt.encode(admin, WRONG_SECRET, "HS256"),
        "signed with the API key": jwt.encode(admin, API_KEY, "HS256"),
        "alg none": jwt.encode(admin, None, "none"),
        "alg None, signature kept": signed(json.dumps(admin), {"alg": "None"}) ,
        "alg NONE, no signature": signed(json.dumps(admin), {"alg": "NONE"}).rsplit(".", 1)[0]
        + ".",
        "HS512 with the right secret": jwt.encode(admin, JWT_SECRET, "HS512"),
        "payload swapped under a valid signature":
            f"{head}.{_b64(json.dumps(admin).encode())}.{sig}",
        "no signature": jwt.encode(admin, JWT_SECRET, "HS256").rsplit(".", 1)[0] + ".",
    }  # fmt: skip
    for what, token in forged.items():
        status, body = await _rest(server, token)
        assert (status, body["error"]) == (401, "AUTH_INVALID_TOKEN"), what
        assert await _ws_code(server, token) == "INVALID_TOKEN", what
    for key in ("ik_test_admin_ke", API_KEY + "x", "ik_" + API_KEY[3:].upper(), "ik_\u00e9"):
        status, body = await _rest(server, key)
        assert (status, body["error"], body["message"]) == (
            401, "AUTH_INVALID_TOKEN", "Invalid API key"), key  # fmt: skip
    status, body = await _rest(server, None, Authorization=f"Basic {API_KEY}")
    assert (status, body["error"]) == (401, "AUTH_UNAUTHORIZED")  # only Bearer carries it
    status, _ = await _rest(server, server.token(role="project_admin"))
    assert status == 200  # the genuine article still works


async def test_expired_admin_tokens_are_refused_on_rest(server: Server) -> None:
    for expires_in in (-1, -3600):
        token = server.token(role="project_admin", expires_in=expires_in)
        status, body = await _rest(server, token)
        assert (status, body["error"], body["message"]) == (
            401, "AUTH_INVALID_TOKEN", "Invalid token: expired")  # fmt: skip
    expired_as_text = signed(json.dumps({"role": "project_admin", "exp": str(int(time.time()))}))
    status, body = await _rest(server, expired_as_text)
    assert (status, body["error"]) == (401, "AUTH_INVALID_TOKEN")


async def test_authenticated_tokens_need_a_uuid_sub(server: Server) -> None:
    for claims in [{}, {"sub": None}, {"sub": ""}, {"sub": 12345}, {"sub": SQL},
                   {"sub": str(uuid.uuid4()) + "\n"}, {"sub": [str(uuid.uuid4())]},
                   {"sub": "00000000-0000-0000-0000-00000000000g"},
                   {"role": "authenticated", "email": "a@b.c"}]:  # fmt: skip
        token = jwt.encode(claims, JWT_SECRET, "HS256")
        assert await _ws_code(server, token) == "INVALID_TOKEN", claims


async def test_a_non_canonical_sub_is_the_same_user_to_policies(server: Server) -> None:
    """`{UUID}` or bare hex are UUIDs to the server; policies must see the same user
    through auth.uid() (the claims carry the canonical form)."""
    user = uuid.uuid4()
    await server.db.execute("DROP POLICY allow_authenticated_subscribe ON realtime.channels")
    await server.db.execute(
        "CREATE POLICY only_this_user ON realtime.channels FOR SELECT TO authenticated"
        f" USING (auth.uid() = '{user}'::uuid)"
    )
    await server.create_channel("mine:*")
    for sub in ("{" + str(user).upper() + "}", user.hex, f"urn:uuid:{user}"):
        client = await server.connect()
        claims = {"sub": sub, "exp": int(time.time()) + 600}
        reply = await client.auth(jwt.encode(claims, JWT_SECRET, "HS256"))
        assert reply["userId"] == str(user), sub
        assert (await client.subscribe("mine:1"))["type"] == "subscribed", sub


async def test_claims_postgres_cannot_read_are_refused(server: Server) -> None:
    for extra in ('"big": 123456789012345678901234567890', '"nul": "a\\u0000b"',
                  '"\\u0000": 1', '"exp": 99999999999999999999999'):  # fmt: skip
        token = signed('{"role": "project_admin", ' + extra + "}")
        assert await _ws_code(server, token) == "INVALID_TOKEN", extra
        status, body = await _rest(server, token)
        assert (status, body["error"]) == (401, "AUTH_INVALID_TOKEN"), extra


# --- SQL in everything a client writes -----------------------------------------------


async def _tables_intact(server: Server) -> None:
    for table in ("realtime.messages", "realtime.channels", "realtime.config"):
        assert await server.db.fetchval("SELECT to_regclass($1) IS NOT NULL", table), table


async def test_sql_in_channel_names_and_patterns_is_refused_or_plain_text(server: Server) -> None:
    for pattern in [*NASTY, "a:\u0000", "a:*\n"]:
        if pattern == "%_*":  # a valid pattern: '_' is a literal, not LIKE's any-character
            continue
        status, body = await server.api("POST", "/api/realtime/channels",
                                        json={"pattern": pattern})  # fmt: skip
        assert (status, body["error"]) == (400, "REALTIME_INVALID_CHANNEL_PATTERN"), pattern
    for text in NASTY:
        channel = await server.create_channel(f"c{len(text)}:{uuid.uuid4().hex[:6]}:*",
                                              description=text)  # fmt: skip
        status, body = await server.api("GET", f"/api/realtime/channels/{channel['id']}")
        assert status == 200 and body["description"] == text
    client = await server.connect(server.token())
    for name in [*NASTY, "a:\u0000", "a:1\n", "a:1 ", "a:1;", "a:*", "a:%"]:
        error = await client.subscribe(name)
        assert (error["type"], error["code"], error["channel"]) == ("error", "INVALID_CHANNEL",
                                                                    name)  # fmt: skip
        reply = await client.request({"type": "unsubscribe", "channel": name})
        assert reply["type"] == "unsubscribed" and reply["channel"] == name
    for path in [f"/api/realtime/channels/{SQL}", "/api/realtime/channels/$$",
                 "/api/realtime/channels/%5C"]:  # fmt: skip
        status, body = await server.api("GET", path)
        assert (status, body["error"]) == (400, "INVALID_INPUT"), path
    await _tables_intact(server)


async def test_sql_in_event_names_and_payloads_is_stored_as_text(server: Server) -> None:
    await server.create_channel("talk:*")
    client = await server.connect(server.token())
    await client.subscribe("talk:1")
    sent = {}
    events = [text for text in NASTY if text.strip()]  # "\u2028" alone is blank
    for event in events:
        payload = {"text": event, event: [event, {"k": event}]}
        published = await client.publish("talk:1", event, payload)
        assert published["type"] == "published", (event, published)
        sent[published["messageId"]] = (event, payload)
    for event in ("\u0000", "a\u0000b", "\\\u0000", "x\x1b[2J", "bell\x07"):
        error = await client.publish("talk:1", event, {})
        assert error["code"] == "INVALID_EVENT_NAME", event
    rows = await server.db.fetch(
        "SELECT id, event_name, channel_name, payload::text AS p FROM realtime.messages"
    )
    assert {str(r["id"]): (r["event_name"], json.loads(r["p"])) for r in rows} == sent
    for text in events:  # history filters bind the text as a value
        status, history = await server.api("GET", "/api/realtime/messages",
                                           params={"eventName": text})  # fmt: skip
        assert status == 200 and [m["eventName"] for m in history] == [text], text
    await _tables_intact(server)


async def test_malformed_rest_filters_never_widen_a_delete(server: Server) -> None:
    await server.create_channel("keep:*")
    await server.db.execute("SELECT realtime.publish('keep:1', 'e', '{}'::jsonb)")
    for params in ({"channelId": SQL}, {"channelId": "$$"}, {"before": SQL},
                   {"before": "2024-01-01'; DELETE FROM realtime.messages; --"},
                   {"channelId": str(uuid.uuid4()) + "'"}):  # fmt: skip
        status, body = await server.api("DELETE", "/api/realtime/messages", params=params)
        assert (status, body["error"]) == (400, "INVALID_INPUT"), params
        stats_params = {"since" if k == "before" else k: v for k, v in params.items()}
        status, body = await server.api("GET", "/api/realtime/messages/stats",
                                        params=stats_params)  # fmt: skip
        assert (status, body["error"]) == (400, "INVALID_INPUT"), stats_params
    assert await server.db.fetchval("SELECT count(*) FROM realtime.messages") == 1
    status, body = await server.api("GET", "/api/realtime/messages", params={"limit": "1; --"})
    assert (status, body["error"]) == (400, "INVALID_INPUT")


async def test_claims_reach_policies_as_values_not_code(server: Server) -> None:
    """A policy compares a claim with a literal: the claim containing SQL is just a
    string that matches (or not); it is never spliced into a statement."""
    await server.db.execute("DROP POLICY allow_authenticated_subscribe ON realtime.channels")
    await server.db.execute(
        "CREATE POLICY by_email ON realtime.channels FOR SELECT TO authenticated"
        " USING (auth.jwt() ->> 'email' = $q$'; DROP TABLE realtime.messages; --$q$)"
    )
    await server.create_channel("mail:*")
    matching = await server.connect(server.token(email=SQL))
    assert (await matching.subscribe("mail:1"))["type"] == "subscribed"
    for email in ("$$", "\\", "' OR '1'='1", SQL + " ", "$q$ OR true $q$"):
        other = await server.connect(server.token(email=email))
        assert (await other.subscribe("mail:1"))["code"] == "REALTIME_UNAUTHORIZED", email
    published = await matching.publish("mail:1", SQL, {"claims": "fine"})
    assert published["type"] == "published"
    await _tables_intact(server)


@pytest.mark.parametrize("server_settings", [make_settings(changes=True)])
async def test_sql_in_db_channel_filters_is_refused_or_compared_as_text(server: Server) -> None:
    await server.db.execute(
        "CREATE TABLE public.notes (id int PRIMARY KEY, body text);"
        " GRANT SELECT ON public.notes TO authenticated;"
    )
    await server.wait_streaming()
    for table in (f"db:{SQL}", "db:notes;drop", "db:$$", "db:notes\n", "db:public.notes'"):
        client = await server.connect(server.token())
        error = await client.request({"type": "subscribe", "channel": table})
        assert (error["type"], error["code"]) == ("error", "INVALID_CHANNEL"), (table, error)
    text_filters = {  # names and values are compared with the row's, never run
        "value": {"column": "body", "op": "eq", "value": SQL},
        "column": {"column": SQL, "op": "eq", "value": 1},
        "in": {"column": "body", "op": "in", "value": ["$$", SQL, "\\"]},
    }
    clients = {}
    for what, flt in text_filters.items():
        clients[what] = await server.connect(server.token())
        reply = await clients[what].request(
            {"type": "subscribe", "channel": "db:notes", "filter": flt}
        )
        assert reply["type"] == "subscribed", (what, reply)
    for flt, code in [
        ({"schema": SQL}, "REALTIME_UNAUTHORIZED"),  # "Channel not found or not accessible"
        ({"column": "body", "op": SQL, "value": "x"}, "INVALID_FILTER"),
        ({"event": SQL}, "INVALID_FILTER"),
    ]:
        client = await server.connect(server.token())
        error = await client.request({"type": "subscribe", "channel": "db:notes", "filter": flt})
        assert (error["type"], error["code"]) == ("error", code), (flt, error)
    await server.db.execute("INSERT INTO notes VALUES (1, 'plain'), (2, $1)", SQL)
    for what in ("value", "in"):
        change = await clients[what].expect("message", timeout=10)
        assert change["payload"]["new"] == {"id": 2, "body": SQL}, what
    for client in clients.values():  # nothing else: not row 1, nothing for the SQL column
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        assert [f for f in client.inbox if f["type"] == "message"] == []
    await _tables_intact(server)
    assert await server.db.fetchval("SELECT count(*) FROM public.notes") == 2


# --- isolation between users ---------------------------------------------------------


async def test_user_b_receives_nothing_from_a_channel_only_a_may_join(server: Server) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await server.db.execute("DROP POLICY allow_authenticated_subscribe ON realtime.channels")
    await server.db.execute(
        "CREATE POLICY only_alice ON realtime.channels FOR SELECT TO authenticated"
        f" USING (pattern = 'private:*' AND auth.uid() = '{alice}'::uuid)"
    )
    await server.create_channel("private:*")
    a = await server.connect(server.token(sub=alice))
    b = await server.connect(server.token(sub=bob))
    assert (await a.subscribe("private:1"))["type"] == "subscribed"
    assert (await b.subscribe("private:1"))["code"] == "REALTIME_UNAUTHORIZED"
    # spellings that could alias the channel are not names at all, or other channels
    for name, code in [("private:1\n", "INVALID_CHANNEL"), ("private:*", "INVALID_CHANNEL"),
                       ("private:%", "INVALID_CHANNEL"), (" private:1", "INVALID_CHANNEL"),
                       ("PRIVATE:1", "REALTIME_CHANNEL_NOT_FOUND")]:  # fmt: skip
        assert (await b.subscribe(name))["code"] == code, name
    assert (await b.publish("private:1", "e", {}))["code"] == "REALTIME_NOT_SUBSCRIBED"
    # bob cannot become alice with a token he can make, nor read history without the key
    forged = jwt.encode({"sub": alice}, WRONG_SECRET, "HS256")
    assert (await b.auth(forged))["code"] == "INVALID_TOKEN"
    assert (await b.subscribe("private:1"))["code"] == "REALTIME_UNAUTHORIZED"
    status, _ = await _rest(server, server.token(sub=bob), path="/api/realtime/messages")
    assert status == 403
    published = await a.publish("private:1", "secret", {"pin": 1234})
    await server.db.execute("SELECT realtime.publish('private:1', 'sql', '{}'::jsonb)")
    assert (await a.expect("message", event="secret"))["messageId"] == published["messageId"]
    await a.expect("message", event="sql")
    assert (await b.request({"type": "ping"}))["type"] == "pong"
    assert b.inbox == []  # nothing of private:1 reached bob


# --- REST without the admin key ------------------------------------------------------


def _concrete(path: str) -> str:
    return path.replace("{id}", str(uuid.uuid4())).replace("{table}", "public.nothing")


async def test_every_rest_route_needs_the_admin_key(server: Server) -> None:
    await server.create_channel("kept:*")
    await server.db.execute("SELECT realtime.publish('kept:1', 'e', '{}'::jsonb)")
    status, document = await server.api("GET", "/api/realtime/openapi.json", headers={})
    assert status == 200
    operations = [(method.upper(), _concrete(path))
                  for path, item in document["paths"].items()
                  for method in item if method in {"get", "post", "put", "patch", "delete"}
                  and "security" not in item[method]]  # fmt: skip
    assert len(operations) >= 12
    outsiders: list[tuple[dict[str, str], int, str]] = [
        ({}, 401, "AUTH_UNAUTHORIZED"),
        ({"Authorization": "Bearer "}, 401, "AUTH_UNAUTHORIZED"),
        ({"x-api-key": ""}, 401, "AUTH_UNAUTHORIZED"),
        ({"x-api-key": "ik_wrong"}, 401, "AUTH_INVALID_TOKEN"),
        ({"Authorization": f"Bearer {server.token()}"}, 403, "AUTH_FORBIDDEN"),
        ({"Authorization": f"Bearer {server.token(role='anon')}"}, 403, "AUTH_FORBIDDEN"),
        ({"x-api-key": server.token(role="anon")}, 403, "AUTH_FORBIDDEN"),
    ]
    body: dict[str, Any] = {"pattern": "new:*", "retentionDays": 1, "replicaIdentity": "full"}
    for method, path in operations:
        for headers, want_status, want_error in outsiders:
            status, error = await server.api(method, path, headers=headers, json=body)
            assert (status, error["error"]) == (want_status, want_error), (method, path, headers)
    # nothing happened: the channel, the message and the setting are as they were
    assert await server.db.fetchval("SELECT count(*) FROM realtime.messages") == 1
    assert await server.db.fetchval("SELECT count(*) FROM realtime.channels") == 1
    assert await server.db.fetchval("SELECT retention_days FROM realtime.config") == 30  # unchanged
    for path in ("/api/realtime/nowhere", "/api/realtime/", "/api/realtime/channels/x/y"):
        status, error = await server.api("GET", path, headers={})
        assert (status, error["error"]) == (401, "AUTH_UNAUTHORIZED"), path
