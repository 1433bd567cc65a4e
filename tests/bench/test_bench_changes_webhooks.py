"""`pgrealtime bench changes|webhooks --quick` end to end, checking correctness only:
every delivery counted, nothing lost, nothing leaked across users. Timings and the
performance targets are never asserted: they belong in reports.

Also the two checkers the scenarios rely on, fed real frames and real HTTP requests:
a leak must be counted as one, a repeated delivery id as a duplicate.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest

from bench.harness.targets import server_available
from bench.scenarios.changes import (
    DB_OWNED,
    PHASE_RLS,
    ChangeRecorder,
    ChangeSession,
)
from bench.scenarios.webhooks import HookReceiver
from pgrealtime.webhooks.payload import ATTEMPT_HEADER, DELIVERY_ID_HEADER

ROOT = Path(__file__).resolve().parents[2]  # `python -m bench` runs from the repository root


def run_quick(scenario: str, *extra: str) -> dict:
    """One `--quick --json` run in a subprocess (it pins cpus and runs its own loop)."""
    cmd = [sys.executable, "-m", "bench", scenario, "--quick", "--json", "--no-files"]
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@functools.cache
def _server_available() -> bool:
    return server_available()


@pytest.fixture
def need_server() -> None:
    if not _server_available():
        pytest.skip("`pgrealtime serve` is not available yet")


def clean_sequence(seq: dict) -> None:
    assert seq["expected"] > 0
    assert seq["received"] == seq["expected"], seq
    for key in ("lost", "duplicated", "reordered", "unexpected"):
        assert seq[key] == 0, (key, seq)


@pytest.mark.usefixtures("need_server")
def test_changes_quick(db_url: str) -> None:
    run = run_quick("changes", "--database-url", db_url)
    assert run["scenario"] == "changes" and run["quick"] is True
    assert not run["failed_targets"], run["failed_targets"]
    server, baseline = run["results"]["server"], run["results"]["baseline"]
    for result in (server, baseline):
        lat = result["latency"]
        clean_sequence(lat["sequence"])
        assert lat["rows"] > 0 and lat["missing_after_drain"] == 0
        assert lat["sequence"]["expected"] == lat["rows"] * lat["subscribers"]
        assert lat["writer_errors"] == 0, lat["writer_errors_sample"]
        assert {"p50_ms", "p90_ms", "p99_ms", "max_ms", "count"} <= set(lat["latency"])
        assert result["sessions_dropped"] == 0
        assert result["malformed"] == 0
        assert result["bad_payloads"] == 0, result["bad_samples"]
    assert server["latency"]["path"].startswith("db:bench_rows")
    assert baseline["latency"]["path"].startswith("bench:changes")
    rls = server["rls"]
    clean_sequence(rls["sequence"])
    assert rls["leaks"] == 0, rls["leak_samples"]
    assert rls["missing_after_drain"] == 0
    # each subscriber got exactly its own rows: all rows, each once
    assert rls["sequence"]["expected"] == rls["rows"] > 0
    assert rls["sessions_dropped"] == 0


@pytest.mark.usefixtures("need_server")
def test_webhooks_quick(db_url: str) -> None:
    run = run_quick("webhooks", "--database-url", db_url)
    assert run["scenario"] == "webhooks" and run["quick"] is True
    assert not run["failed_targets"], run["failed_targets"]
    server, baseline = run["results"]["server"], run["results"]["baseline"]
    rate, outage = server["rate"], server["outage"]
    for part in (rate, outage):
        assert part["messages"] > 0
        assert part["delivered"] == part["messages"]
        assert part["lost"] == 0
        assert part["writer_errors"] == 0, part["writer_errors_sample"]
        assert set(part["db_statuses"]) == {"delivered"}, part["db_statuses"]
    assert outage["outage_seconds"] > 0
    assert outage["drain_s_after_restart"] is not None
    assert server["bad_requests"] == 0, server["bad_samples"]
    assert server["requests"] >= rate["messages"] + outage["messages"]
    b = baseline["rate"]
    assert b["delivered"] == b["messages"] > 0 and b["lost"] == 0 and b["errors"] == 0


def change_frame(owner: str, seq: int) -> dict:
    row = {"id": seq + 1, "owner": owner, "seq": seq, "sent_ns": 0}
    payload = {
        "schema": "public",
        "table": DB_OWNED[3:],
        "commit_timestamp": "2024-01-01T00:00:00Z",
        "eventType": "INSERT",
        "new": row,
        "old": None,
    }
    return {"type": "message", "channel": DB_OWNED, "event": "INSERT", "payload": payload}


def test_leak_is_counted() -> None:
    rec = ChangeRecorder()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    session = ChangeSession(1, rec, owner=alice)
    rec.observe(session, 0, change_frame(alice, 0))
    rec.observe(session, 0, change_frame(bob, 0))
    rec.observe(session, 0, change_frame(alice, 1))
    assert rec.leaks == 1
    assert rec.leak_samples[0]["row_owner"] == bob
    assert rec.phase_tracker(PHASE_RLS).unique == 2
    bad = change_frame(alice, 2)
    bad["payload"]["eventType"] = "UPDATE"
    rec.observe(session, 0, bad)
    assert rec.bad_payloads == 1


def test_leak_is_counted_on_the_fast_path() -> None:
    """Frames as the server writes them (compact, fixed key order) take the byte-level
    path; one of another owner's rows is still a leak, a foreign table a bad payload."""
    rec = ChangeRecorder()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    session = ChangeSession(1, rec, owner=alice)
    session.on_text(orjson.dumps(change_frame(alice, 0)))
    session.on_text(orjson.dumps(change_frame(bob, 0)))
    other = change_frame(alice, 1)
    other["payload"]["table"] = "elsewhere"
    session.on_text(orjson.dumps(other))
    assert rec.phase_tracker(PHASE_RLS).unique == 1
    assert rec.leaks == 1
    assert rec.bad_payloads == 1
    assert rec.malformed == 0


async def test_receiver_counts_duplicates_by_delivery_id() -> None:
    receiver = HookReceiver()
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as http:
            body = b'{"payload": {"k": 0, "w": 0, "s": 0, "t": 0}}'
            for attempt in ("1", "2"):
                headers = {DELIVERY_ID_HEADER: "d1", ATTEMPT_HEADER: attempt}
                async with http.post(receiver.url, data=body, headers=headers) as resp:
                    assert resp.status == 200
            other = b'{"payload": {"k": 0, "w": 0, "s": 1, "t": 0}}'
            async with http.post(receiver.url, data=other, headers={DELIVERY_ID_HEADER: "d2"}):
                pass
    finally:
        await receiver.stop()
    assert receiver.requests == 3
    assert receiver.duplicates == 1
    assert receiver.retried == 1
    assert receiver.phase_unique[0] == 2
    assert receiver.lost(0, [3]) == 1  # seq 2 was never sent to it
