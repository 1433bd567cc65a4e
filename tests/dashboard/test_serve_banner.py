"""`pgrealtime serve` names the dashboard's URL in its start-up banner, and the URL
answers with the page."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from tests.conftest import API_KEY, JWT_SECRET

from pgrealtime.cli.serve import _browsable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.pure
def test_a_listen_everywhere_address_is_shown_as_localhost() -> None:
    assert _browsable("0.0.0.0") == "localhost"  # noqa: S104
    assert _browsable("::") == "localhost"
    assert _browsable("127.0.0.1") == "127.0.0.1"
    assert _browsable("::1") == "[::1]"
    assert _browsable("rt.example.com") == "rt.example.com"


async def test_serve_banner_names_the_dashboard(db_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PGREALTIME_DATABASE_URL": db_url,
        "PGREALTIME_DATA_DIR": str(tmp_path),
        "PGREALTIME_JWT_SECRET": JWT_SECRET,
        "PGREALTIME_API_KEY": API_KEY,
        "PGREALTIME_CHANGES": "0",
    }
    args = [sys.executable, "-m", "pgrealtime.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    url = f"http://127.0.0.1:{port}/dashboard"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                assert proc.poll() is None, "server exited early"
                try:
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            assert "pgrealtime dashboard" in await resp.text()
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the dashboard never answered")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert f"  Dashboard:  {url}   (sign in with the API key)" in out, out
