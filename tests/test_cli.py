"""The command line as a user runs it: serve, token, migrate; a restart keeps history."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import jwt
from tests.conftest import API_KEY, JWT_SECRET

from pgrealtime.client import connect

PGREALTIME = [sys.executable, "-m", "pgrealtime.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(db_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PGREALTIME_DATABASE_URL": db_url,
        "PGREALTIME_DATA_DIR": str(data_dir),
        "PGREALTIME_JWT_SECRET": JWT_SECRET,
        "PGREALTIME_API_KEY": API_KEY,
    }


async def _wait_healthy(base: str, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            assert proc.poll() is None, "server exited early"
            try:
                async with http.get(base + "/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("server did not become healthy")


async def _publish_over_ws(base: str, token: str, n: int) -> list[str]:
    async with connect(base, token=token) as client:
        await client.subscribe("log:1")
        return [(await client.publish("log:1", "line", {"i": i})).message_id for i in range(n)]


async def test_restart_keeps_history(db_url: str, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(db_url, tmp_path)
    args = [*PGREALTIME, "serve", "--port", str(port), "--log-format", "text"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await _wait_healthy(base, proc)
        async with aiohttp.ClientSession(headers={"x-api-key": API_KEY}) as http:
            async with http.post(base + "/api/realtime/channels", json={"pattern": "log:*"}) as r:
                assert r.status == 201
        token = jwt.encode({"sub": str(uuid.uuid4()), "exp": 2**31}, JWT_SECRET, "HS256")
        before = await _publish_over_ws(base, token, 5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await _wait_healthy(base, proc)
        async with aiohttp.ClientSession(headers={"x-api-key": API_KEY}) as http:
            async with http.get(base + "/api/realtime/messages") as r:
                history = await r.json()
        assert [m["id"] for m in history] == before[::-1]
        after = await _publish_over_ws(base, token, 1)
        assert after[0] not in before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_token_command_signs_with_the_configured_secret(tmp_path: Path) -> None:
    sub = str(uuid.uuid4())
    env = {**os.environ, "PGREALTIME_JWT_SECRET": JWT_SECRET, "PGREALTIME_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [*PGREALTIME, "token", "--sub", sub, "--email", "a@b.c", "--expires-in", "60"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    claims = jwt.decode(out.stdout.strip(), JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == sub and claims["role"] == "authenticated"
    assert claims["email"] == "a@b.c" and claims["exp"] - claims["iat"] == 60
    refused = subprocess.run([*PGREALTIME, "token", "--role", "authenticated"], env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and "--sub" in refused.stderr


def test_secrets_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGREALTIME_")}
    env["PGREALTIME_DATA_DIR"] = str(tmp_path)
    first = subprocess.run([*PGREALTIME, "token", "--role", "anon"], env=env,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    secrets_file = tmp_path / "secrets.json"
    stored = json.loads(secrets_file.read_text())
    assert stored["api_key"].startswith("ik_")
    assert secrets_file.stat().st_mode & 0o077 == 0
    jwt.decode(first.strip(), stored["jwt_secret"], algorithms=["HS256"])
    subprocess.run([*PGREALTIME, "token", "--role", "anon"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    assert json.loads(secrets_file.read_text()) == stored


def test_migrate_and_help(db_url: str, tmp_path: Path) -> None:
    out = subprocess.run([*PGREALTIME, "migrate"], env=_env(db_url, tmp_path),
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "up to date" in out.stdout
    bad = subprocess.run([*PGREALTIME, "serve", "--api-key", "nope"], env=_env(db_url, tmp_path),
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "ik_" in bad.stderr
    help_text = subprocess.run([*PGREALTIME, "serve", "--help"], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
    for flag in ("--host", "--port", "--database-url", "--data-dir", "--jwt-secret", "--api-key"):
        assert flag in help_text
    assert "PGREALTIME_DATABASE_URL" in help_text


def test_serve_refuses_token_settings_that_cannot_work(tmp_path: Path) -> None:
    """A key file, a JWKS URL or an algorithm that cannot work is an error at start,
    before any database is started (the URL points nowhere: never reached)."""
    env = _env("postgresql://nobody@127.0.0.1:1/none", tmp_path)
    for args, words in (
        (["--jwt-public-key", str(tmp_path / "missing.pem")], "No such file"),
        (["--jwks-url", "http://idp.example/jwks.json"], "plain http"),
        (["--jwt-algorithms", "none"], "none not supported"),
        (["--jwt-algorithms", "RS256"], "needs keys"),
    ):
        bad = subprocess.run([*PGREALTIME, "serve", *args], env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert bad.returncode == 1 and words in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr
