"""The message payload of one change, exactly as the specification shows it."""

from __future__ import annotations

import dataclasses

import pytest

from pgrealtime.changes.model import RowChange
from pgrealtime.changes.payload import build_payload, revealed

pytestmark = pytest.mark.pure


def change(event: str, new: dict | None, old: dict | None) -> RowChange:
    return RowChange(
        schema="public",
        table="posts",
        event=event,  # type: ignore[arg-type]
        commit_timestamp="2024-01-15T10:30:00Z",
        lsn=1,
        xid=1,
        new=new,
        old=old,
        key={"id": "1"},
    )


def test_payload_shape_and_order() -> None:
    payload = build_payload(change("INSERT", {"id": 1, "title": "New Post"}, None))
    assert list(payload) == ["schema", "table", "commit_timestamp", "eventType", "new", "old"]
    assert payload == {
        "schema": "public",
        "table": "posts",
        "commit_timestamp": "2024-01-15T10:30:00Z",
        "eventType": "INSERT",
        "new": {"id": 1, "title": "New Post"},
        "old": None,
    }


def test_delete_key_only_old() -> None:
    c = change("DELETE", None, {"id": 1, "title": "Deleted Post", "owner": "a"})
    assert build_payload(c)["old"] == {"id": 1, "title": "Deleted Post", "owner": "a"}
    assert build_payload(revealed(dataclasses.replace(c, rls=True)))["old"] == {"id": 1}
    assert build_payload(c)["new"] is None


def test_revealed_cuts_old_under_rls_only() -> None:
    full = {"id": 1, "title": "t", "owner": "a"}
    for event in ("UPDATE", "DELETE"):
        c = dataclasses.replace(change(event, None, full), rls=True)
        assert revealed(c).old == {"id": 1}
        assert revealed(dataclasses.replace(c, key={})).old is None  # key unknown
        assert revealed(dataclasses.replace(c, rls=False)).old == full
        assert build_payload(revealed(dataclasses.replace(c, key={})))["old"] is None
    insert = dataclasses.replace(change("INSERT", full, None), rls=True)
    assert revealed(insert) is insert
