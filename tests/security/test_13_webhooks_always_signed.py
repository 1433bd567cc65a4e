"""Finding 13: webhooks went out unsigned when no secret was configured, there was no
per-channel secret, and the signature covered neither the delivery id nor the host.

Now `serve` generates a webhook secret like the API key (kept in secrets.json), a
channel may carry its own write-only `webhookSecret`, and the `v1` signature binds
the delivery id and the target host."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import asyncpg
import pytest
from tests.conftest import make_settings
from tests.webhooks.helpers import FAST, Receiver, publish, wait_until

from pgrealtime.config import (
    WebhookSettings,
    add_connection_flags,
    add_server_flags,
    settings_from_args,
)
from pgrealtime.config import ensure_secrets as fill_secrets
from pgrealtime.webhooks import WebhookWorker
from pgrealtime.webhooks.signing import verify

CHANNEL_SECRET = "per-channel-secret-0123456789"
SERVER_SECRET = "server-wide-secret-9876543210"


def serve_settings(data_dir: Path, *flags: str):
    """Settings exactly as `pgrealtime serve` builds them, with no secret given."""
    parser = argparse.ArgumentParser()
    add_connection_flags(parser)
    add_server_flags(parser)
    args = parser.parse_args(["--data-dir", str(data_dir), "--webhook-allow-private-networks"])
    settings = settings_from_args(args)
    settings.webhook_secret = None  # even if the environment running the tests set one
    fill_secrets(settings, webhook=True)
    return settings


async def _send_one(pool: asyncpg.Pool, settings, receiver: Receiver, pattern: str) -> None:
    worker = WebhookWorker(pool, WebhookSettings.of(settings), **FAST)
    await worker.start()
    try:
        await publish(pool, pattern.replace("*", "1"))
        await wait_until(lambda: len(receiver.requests) == 1)
    finally:
        await worker.stop(grace=0)


async def test_signed_without_a_configured_secret(db_url: str, tmp_path: Path) -> None:
    settings = serve_settings(tmp_path)
    stored = json.loads((tmp_path / "secrets.json").read_text())
    assert stored["webhook_secret"] and settings.webhook_secret == stored["webhook_secret"]
    receiver = await Receiver().start()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    try:
        await pool.execute(
            "INSERT INTO realtime.channels (pattern, webhook_urls) VALUES ('nosecret:*', $1)",
            [receiver.url],
        )
        await _send_one(pool, settings, receiver, "nosecret:*")
    finally:
        await pool.close()
        await receiver.stop()
    request = receiver.requests[0]
    headers = request.headers
    signature = headers.get("X-InsForge-Signature")
    assert signature is not None and signature.startswith("v1=")
    timestamp = headers["X-InsForge-Timestamp"]
    delivery_id = headers["X-InsForge-Delivery-ID"]
    host = "127.0.0.1"
    secret = stored["webhook_secret"]
    assert verify(secret, timestamp, request.body, signature, delivery_id=delivery_id, host=host)
    # the delivery id and the host are signed: a request replayed as another delivery,
    # or to another receiver sharing the secret, does not verify
    other = str(uuid.uuid4())
    assert not verify(secret, timestamp, request.body, signature, delivery_id=other, host=host)
    assert not verify(
        secret, timestamp, request.body, signature, delivery_id=delivery_id, host="10.0.0.7"
    )
    # a second start keeps the same secret (receivers keep verifying)
    assert serve_settings(tmp_path).webhook_secret == secret


@pytest.fixture
def server_settings():
    return make_settings(webhook_allow_private_networks=True, webhook_secret=SERVER_SECRET)


def _signed(request) -> tuple[dict[str, str], str, str]:
    to = {"delivery_id": request.headers["X-InsForge-Delivery-ID"], "host": "127.0.0.1"}
    return to, request.headers["X-InsForge-Timestamp"], request.headers["X-InsForge-Signature"]


async def test_channel_secret_is_used_and_never_returned(server) -> None:
    """The server (its own worker, server secret set) signs with the channel's secret."""
    receiver = await Receiver().start()
    try:
        status, channel = await server.api(
            "POST",
            "/api/realtime/channels",
            json={
                "pattern": "signed:*",
                "webhookUrls": [receiver.url],
                "webhookSecret": CHANNEL_SECRET,
            },
        )
        assert status == 201, channel
        assert "webhookSecret" not in channel
        for path in ("/api/realtime/channels", f"/api/realtime/channels/{channel['id']}"):
            status, body = await server.api("GET", path)
            assert status == 200
            assert CHANNEL_SECRET not in as_text(body)
        # not readable by the roles clients act as
        async with server.db.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL ROLE authenticated")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM realtime.channel_webhook_secrets")

        await publish(server.db, "signed:1")
        await wait_until(lambda: len(receiver.requests) == 1)
        to, timestamp, signature = _signed(receiver.requests[0])
        assert verify(CHANNEL_SECRET, timestamp, receiver.requests[0].body, signature, **to)
        assert not verify(SERVER_SECRET, timestamp, receiver.requests[0].body, signature, **to)

        # a PUT with only the secret changes it; null removes it (the server's signs)
        status, changed = await server.api(
            "PUT", f"/api/realtime/channels/{channel['id']}", json={"webhookSecret": "x" * 20}
        )
        assert status == 200, changed
        assert "webhookSecret" not in changed
        await publish(server.db, "signed:2")
        await wait_until(lambda: len(receiver.requests) == 2)
        to, timestamp, signature = _signed(receiver.requests[1])
        assert verify("x" * 20, timestamp, receiver.requests[1].body, signature, **to)

        status, cleared = await server.api(
            "PUT", f"/api/realtime/channels/{channel['id']}", json={"webhookSecret": None}
        )
        assert status == 200, cleared
        await publish(server.db, "signed:3")
        await wait_until(lambda: len(receiver.requests) == 3)
        to, timestamp, signature = _signed(receiver.requests[2])
        assert verify(SERVER_SECRET, timestamp, receiver.requests[2].body, signature, **to)
    finally:
        await receiver.stop()


def as_text(value: object) -> str:
    return json.dumps(value)


async def test_short_channel_secret_refused(server) -> None:
    status, body = await server.api(
        "POST", "/api/realtime/channels", json={"pattern": "weak:*", "webhookSecret": "short"}
    )
    assert status == 400
    assert body["error"] == "REALTIME_INVALID_CHANNEL_REQUEST"


@pytest.mark.parametrize(
    "secret", ["x" * 257, "é" * 20, "tab\tinside-the-secret", 12345678901234567]
)
async def test_oversized_or_malformed_channel_secret_refused(server, secret) -> None:
    status, body = await server.api(
        "POST", "/api/realtime/channels", json={"pattern": "bad:*", "webhookSecret": secret}
    )
    assert status == 400, body
    assert body["error"] == "REALTIME_INVALID_CHANNEL_REQUEST"
    status, listed = await server.api("GET", "/api/realtime/channels")
    assert all(c["pattern"] != "bad:*" for c in listed)  # nothing half-created
