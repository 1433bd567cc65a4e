"""A server restart between messages: the client reconnects, re-authenticates and
resumes, and the application sees every message once, in order."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from tests.conftest import API_KEY, JWT_SECRET
from tests.test_cli import PGREALTIME, _env, _free_port, _wait_healthy

from pgrealtime.auth import mint_token
from pgrealtime.client import Backoff, connect

USER = "6f1c1a0e-3a0b-4c55-9e44-2d2b8c9d1a01"


def _serve(db_url: str, data_dir: Path, port: int) -> subprocess.Popen:
    args = [*PGREALTIME, "serve", "--port", str(port), "--log-format", "text", "--no-changes"]
    return subprocess.Popen(
        args, env=_env(db_url, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(proc: subprocess.Popen, how: signal.Signals = signal.SIGTERM) -> None:
    proc.send_signal(how)
    assert proc.wait(timeout=20) == (0 if how == signal.SIGTERM else -how)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
async def test_restart_between_messages_no_gap_no_duplicate(
    db_url: str, tmp_path: Path, how: signal.Signals
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    tokens_handed_out = []

    def fresh_token() -> str:
        token = mint_token(JWT_SECRET, role="authenticated", sub=USER, expires_in=600)
        tokens_handed_out.append(token)
        return token

    proc = _serve(db_url, tmp_path, port)
    db = await asyncpg.connect(db_url)
    try:
        await _wait_healthy(base, proc)
        async with aiohttp.ClientSession(headers={"x-api-key": API_KEY}) as http:
            async with http.post(base + "/api/realtime/channels", json={"pattern": "order:*"}) as r:
                assert r.status == 201
        fast = Backoff(initial=0.05, maximum=0.5)
        async with (
            connect(base, token=fresh_token, backoff=fast) as listener,
            connect(base, token=API_KEY, backoff=fast) as publisher,
        ):
            sub = await listener.subscribe("order:1")
            await publisher.subscribe("order:1")
            for i in range(1, 4):
                ack = await publisher.publish("order:1", "step", {"i": i})
                assert ack.position == i
            first = [await sub.get(timeout=5) for _ in range(3)]  # handed out before the stop

            _stop(proc, how)
            for i in range(4, 7):  # while no server runs: stored by SQL, replayed on resume
                await db.execute(
                    "SELECT realtime.publish('order:1', 'step', $1::jsonb)", json.dumps({"i": i})
                )
            proc = _serve(db_url, tmp_path, port)
            await _wait_healthy(base, proc)

            for i in range(7, 10):  # waits for the publisher's own reconnection
                await publisher.publish("order:1", "step", {"i": i})
            rest = [await sub.get(timeout=10) for _ in range(6)]
            with_positions = [(m.position, m.payload["i"]) for m in first + rest]
            assert with_positions == [(i, i) for i in range(1, 10)]
            await asyncio.sleep(0.3)
            assert sub._queue.empty()  # and nothing twice after the ninth
            assert listener.reconnects >= 1 and publisher.reconnects >= 1
            assert len(tokens_handed_out) >= 2  # a fresh token for the reconnection
            assert sub.recovered
    finally:
        await db.close()
        if proc.poll() is None:
            _stop(proc)
