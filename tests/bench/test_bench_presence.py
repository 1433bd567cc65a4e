"""`pgrealtime bench presence --quick` end to end, checking correctness only: every
session's view of the channel becomes complete after the join storm, and the rest's
shrink after the leave storm. Timings are never asserted: they belong in reports.

Also the view the scenario keeps, fed the server's real frame shapes."""

from __future__ import annotations

import orjson
import pytest
from tests.bench.test_bench_changes_webhooks import run_quick

from bench.harness.targets import server_available
from bench.scenarios.presence import View


def _member(user: str) -> dict:
    return {"type": "user", "presenceId": user, "joinedAt": "2026-01-01T00:00:00.000Z"}


def _change(event: str, user: str) -> bytes:
    return orjson.dumps({"type": "presence", "event": event, "channel": "c",
                         "member": _member(user)})  # fmt: skip


def test_view_follows_snapshot_joins_and_leaves() -> None:
    view = View()
    view.want = 3
    snapshot = {"members": [_member("a")]}
    view.on_frame(orjson.dumps({"type": "subscribed", "channel": "c", "presence": snapshot}))
    view.on_frame(_change("join", "b"))
    assert not view.complete_at
    view.on_frame(_change("join", "c"))
    assert view.complete_at and view.members == {"a", "b", "c"}
    view.on_frame(_change("leave", "b"))
    assert view.members == {"a", "c"} and view.frames == 4 and view.bytes > 0


def test_quick_presence_storm(db_url: str) -> None:
    if not server_available():
        pytest.skip("`pgrealtime serve` is not available")
    run = run_quick("presence", "--database-url", db_url)
    assert not run["failed_targets"], run["failed_targets"]
    result = run["results"]["server"]
    assert result["failed"] == 0, result["errors_sample"]
    n = result["sessions"]
    joined, left = result["join_storm"], result["leave_storm"]
    assert (joined["views"], joined["incomplete"]) == (n, 0)
    assert (left["views"], left["incomplete"]) == (n - n // 2, 0)
    # every member's join reached every member already there (and each its snapshot)
    assert joined["frames_received"] == n + n * (n - 1) // 2
    assert left["frames_received"] == (n - n // 2) * (n // 2)
