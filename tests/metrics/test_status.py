"""`pgrealtime status` against a running server: the one-screen summary and its exit
status."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.conftest import API_KEY, Server

PGREALTIME = [sys.executable, "-m", "pgrealtime.cli"]


async def status(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *PGREALTIME,
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_status_of_a_running_server(server: Server, tmp_path: Path) -> None:
    await server.create_channel("room:*")
    await server.create_channel("off:*", enabled=False)
    client = await server.connect(server.token())
    assert (await client.subscribe("room:1"))["type"] == "subscribed"
    assert (await client.publish("room:1", "said", {}))["type"] == "published"
    await client.expect("message")
    # the API key as `serve` keeps it in the data directory
    (tmp_path / "secrets.json").write_text(json.dumps({"api_key": API_KEY}))

    code, screen = await status("--url", server.base, "--data-dir", str(tmp_path))

    assert code == 0, screen
    lines = screen.splitlines()
    assert lines[0] == f"pgrealtime at {server.base}: ok"
    assert len(lines) <= 24  # one screen
    shown = {line.split()[0]: line for line in lines[1:]}
    assert "websocket 1 (1 authenticated)" in shown["connections"]
    assert "2 configured (1 enabled)" in shown["channels"]
    assert "subscriptions 1 + 0 db:" in shown["channels"]
    assert "published 1 (websocket 1)" in shown["messages"]
    assert "deliveries 1" in shown["messages"]
    assert "p99 ≤" in shown["latency"]
    assert shown["change"].strip() == "change feed  off"  # this server runs without it
    assert "queue 0 due, 0 waiting" in shown["webhooks"]
    assert "connected" in shown["listener"]


async def test_status_without_the_key_says_what_is_missing(server: Server, tmp_path: Path) -> None:
    code, screen = await status("--url", server.base, "--data-dir", str(tmp_path))
    assert code == 0
    assert "metrics      not available (HTTP 401) needs the admin API key" in screen


async def test_status_of_no_server() -> None:
    code, screen = await status("--url", "http://127.0.0.1:9", "--api-key", API_KEY)
    assert code == 2
    assert "not reachable" in screen
