"""SIGTERM with a client that never answers the close: the Python `websockets` library,
connected and idle (it reads nothing, so the server's close frame is never answered).
The server must not wait on it: once the drain is done the connection is cut within
a second, and the process exits long before aiohttp's 10 s close wait."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import jwt
import pytest
from tests.conftest import JWT_SECRET
from tests.test_cli import PGREALTIME, _env, _free_port, _wait_healthy

websockets = pytest.importorskip("websockets.asyncio.client")

# Generous for a loaded machine, and still far below the 10 s the close used to wait.
EXIT_WITHIN = 6.0


async def _raw_client(port: int, token: str):
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/realtime", max_queue=1)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv())["type"] == "auth_success"
    return ws


async def _socketio_client(port: int, token: str):
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", max_queue=1
    )
    assert (await ws.recv()).startswith("0{")  # Engine.IO open
    await ws.send("40" + json.dumps({"token": token}))
    assert (await ws.recv()).startswith("40{")  # Socket.IO connect accepted
    return ws


# Both protocols share one read loop and one close (protocols/raw_ws/endpoint.py).
@pytest.mark.parametrize("open_client", [_raw_client, _socketio_client], ids=["raw", "socketio"])
async def test_sigterm_does_not_wait_for_idle_websockets_clients(
    db_url: str, tmp_path: Path, open_client
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    args = [*PGREALTIME, "serve", "--port", str(port), "--log-format", "text"]
    proc = subprocess.Popen(
        args, env=_env(db_url, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        await _wait_healthy(base, proc)
        token = jwt.encode({"sub": str(uuid.uuid4()), "exp": 2**31}, JWT_SECRET, "HS256")
        clients = [await open_client(port, token) for _ in range(3)]  # then idle, unread
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        took = time.monotonic() - started
        assert code == 0
        assert took < EXIT_WITHIN, f"shutdown waited {took:.1f}s on idle clients"
        for ws in clients:
            await ws.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
