"""The blocking wrapper and the `listen` / `publish` commands built on it, against a
real server (the commands run as processes, as a user runs them)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.conftest import API_KEY, Server

from pgrealtime.client.sync import connect

PGREALTIME = [sys.executable, "-m", "pgrealtime.cli"]


async def test_sync_client_in_a_thread(server: Server) -> None:
    await server.create_channel("jobs")

    def script() -> list[tuple[int | None, dict]]:
        with connect(server.base, token=API_KEY) as client:
            sub = client.subscribe("jobs")
            acks = [client.publish("jobs", "job", {"n": n}).position for n in (1, 2)]
            assert acks == [1, 2]
            got = [sub.get(timeout=5) for _ in range(2)]
            sub.unsubscribe()
            assert list(sub) == []
            return [(m.position, m.payload) for m in got]

    assert await asyncio.to_thread(script) == [(1, {"n": 1}), (2, {"n": 2})]


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *PGREALTIME, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_listen_and_publish_commands(server: Server, tmp_path: Path) -> None:
    await server.create_channel("chat:*")
    # the API key is found where `pgrealtime serve` keeps it, as on a developer's machine
    (tmp_path / "secrets.json").write_text(json.dumps({"api_key": API_KEY}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGREALTIME_")}
    env |= {"PGREALTIME_URL": server.base, "PGREALTIME_DATA_DIR": str(tmp_path)}

    code, out, err = await _run("publish", "chat:1", "said", '{"text": "first"}', env=env)
    assert code == 0, err
    ack = json.loads(out)
    assert ack["type"] == "published" and ack["position"] == 1

    listener = asyncio.create_task(
        _run("listen", "chat:1", "--since", "0", "--count", "2", env=env)
    )
    await asyncio.sleep(0.5)
    code, out, err = await _run("publish", "chat:1", "said", '{"text": "second"}', env=env)
    assert code == 0, err
    code, out, err = await listener
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(m["position"], m["payload"]["text"]) for m in lines] == [(1, "first"), (2, "second")]

    code, out, err = await _run("publish", "nowhere", "said", "{}", env=env)
    assert code == 1 and "REALTIME_CHANNEL_NOT_FOUND" in err
    code, out, err = await _run("publish", "chat:1", "said", "{", env=env)
    assert code == 2 and "not JSON" in err
    env.pop("PGREALTIME_DATA_DIR")
    code, out, err = await _run(
        "publish", "chat:1", "said", "{}", "--data-dir", str(tmp_path / "none"), env=env
    )
    assert code == 2 and "no token" in err
