"""Finding 12: the defaults no longer let one account fill the disk.

A fresh database keeps messages 30 days (an existing setting is kept), a payload is at
most 64 KiB, and one user's publishes and payload bytes are budgeted over all of the
user's connections (on by default, in `serve` and in code; admins exempt).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from tests.conftest import API_KEY, JWT_SECRET, Server, make_settings
from tests.db.legacy import apply_legacy_migrations, empty_database

from pgrealtime.cli import build_parser
from pgrealtime.config import Settings, settings_from_args

RETENTION_MIGRATION = "012_publish_hardening"


def _settings(**limits: float) -> Settings:
    """Set as attributes, so that before the fix (no such settings) the tests fail on
    what the server does rather than on a constructor argument."""
    settings = make_settings()
    for name, value in limits.items():
        setattr(settings, name, value)
    return settings


async def test_payloads_over_64_kib_are_refused_by_default(server: Server) -> None:
    await server.create_channel("big:*")
    client = await server.connect(server.token())
    await client.subscribe("big:1")
    overhead = len('{"p":""}')
    fits = await client.publish("big:1", "e", {"p": "x" * (65536 - overhead)})
    assert fits["type"] == "published", fits
    refused = await client.publish("big:1", "e", {"p": "x" * (65537 - overhead)})
    assert refused["type"] == "error" and refused["code"] == "INVALID_PAYLOAD", refused
    assert "65537 bytes" in refused["message"] and "65536" in refused["message"]
    stored = await server.db.fetchval("SELECT count(*) FROM realtime.messages")
    assert stored == 1


@pytest.mark.parametrize("server_settings", [_settings(user_publish_rate=0.01)])
async def test_publish_budget_is_per_user_over_all_connections(server: Server) -> None:
    """Burst max(1, 2 x rate) = 1: a user's second publish, from another connection,
    is refused; another user and an admin publish on."""
    await server.create_channel("room:*")
    user = str(uuid.uuid4())
    first = await server.connect(server.token(sub=user))
    second = await server.connect(server.token(sub=user))
    other = await server.connect(server.token())
    admin = await server.connect(API_KEY)
    for client in (first, second, other, admin):
        await client.subscribe("room:1")
    assert (await first.publish("room:1", "e", {"n": 1}))["type"] == "published"
    refused = await second.publish("room:1", "e", {"n": 2})
    assert refused["code"] == "RATE_LIMITED", refused
    assert "per user" in refused["message"]
    assert (await first.publish("room:1", "e", {"n": 3}))["code"] == "RATE_LIMITED"
    assert (await other.publish("room:1", "e", {"n": 4}))["type"] == "published"
    for n in range(5):  # the API key is exempt
        assert (await admin.publish("room:1", "e", {"n": n}))["type"] == "published"


@pytest.mark.parametrize("server_settings", [_settings(user_publish_bytes_rate=50)])
async def test_payload_byte_budget_is_per_user(server: Server) -> None:
    """Burst 100 bytes at 50/s: 90 bytes pass, 90 more need about 1.6 s of refill."""
    await server.create_channel("room:*")
    user = str(uuid.uuid4())
    first = await server.connect(server.token(sub=user))
    second = await server.connect(server.token(sub=user))
    for client in (first, second):
        await client.subscribe("room:1")
    payload = {"p": "x" * (90 - len('{"p":""}'))}
    assert (await first.publish("room:1", "e", payload))["type"] == "published"
    refused = await second.publish("room:1", "e", payload)
    assert refused["code"] == "RATE_LIMITED" and "bytes" in refused["message"], refused
    # small publishes still fit in what is left
    assert (await second.publish("room:1", "e", {}))["type"] == "published"


def test_budgets_and_payload_cap_are_on_for_serve() -> None:
    args = build_parser().parse_args(["serve", "--jwt-secret", JWT_SECRET, "--api-key", API_KEY])
    settings = settings_from_args(args)
    assert settings.user_publish_rate == 200
    assert settings.user_publish_bytes_rate == 1024 * 1024
    assert settings.max_payload_bytes == 65536
    in_code = Settings()  # one default per option: code-built settings are served ones
    assert (in_code.user_publish_rate, in_code.user_publish_bytes_rate) == (200, 1024 * 1024)
    assert in_code.max_payload_bytes == 65536


async def test_fresh_database_keeps_30_days_and_existing_settings_are_kept(
    server: Server, pg_admin_url: str
) -> None:
    status, body = await server.api("GET", "/api/realtime/config")
    assert (status, body) == (200, {"retentionDays": 30})
    # The upgrade that set the default is legacy migration 012 (databases migrated before
    # the schema was squashed); today's migrate never touches an existing config row.
    async with empty_database(pg_admin_url, "retention_upgrade") as conn:
        await apply_legacy_migrations(conn, until=RETENTION_MIGRATION)

        async def upgrade(days: int | None, in_use: bool) -> int | None:
            """The retention after upgrading a database that had `days`."""
            await conn.execute("DELETE FROM realtime.channels")
            await conn.execute("UPDATE realtime.config SET retention_days = $1", days)
            if in_use:
                await conn.execute("INSERT INTO realtime.channels (pattern) VALUES ('x:*')")
            await conn.execute(
                "DELETE FROM realtime.schema_migrations WHERE version = $1", RETENTION_MIGRATION
            )
            applied = await apply_legacy_migrations(conn, until="013")
            assert applied == [RETENTION_MIGRATION]
            return await conn.fetchval("SELECT retention_days FROM realtime.config")

        assert await upgrade(7, in_use=True) == 7  # explicit: kept
        assert await upgrade(7, in_use=False) == 7
        assert await upgrade(None, in_use=True) == None  # noqa: E711 - in use: kept
        assert await upgrade(None, in_use=False) == 30  # never used: the default


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_banner_shows_the_retention(db_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PGREALTIME_DATABASE_URL": db_url,
        "PGREALTIME_DATA_DIR": str(tmp_path),
        "PGREALTIME_JWT_SECRET": JWT_SECRET,
        "PGREALTIME_API_KEY": API_KEY,
    }
    args = [sys.executable, "-m", "pgrealtime.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                assert proc.poll() is None, "server exited early"
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert "Retention:  30 days" in out, out
