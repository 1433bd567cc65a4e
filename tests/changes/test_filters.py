"""Subscribe filters: validation messages and matching."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgrealtime.changes.filters import ALL_EVENTS, ChangeFilter, FilterError, matches, parse_filter
from pgrealtime.changes.model import RowChange

pytestmark = pytest.mark.pure


def change(event: str = "INSERT", row: dict | None = None, schema: str = "public") -> RowChange:
    row = {"id": 1, "status": "open", "total": "12.50", "n": 3, "ok": True} if row is None else row
    return RowChange(
        schema=schema,
        table="orders",
        event=event,  # type: ignore[arg-type]
        commit_timestamp="2024-01-15T10:30:00Z",
        lsn=1,
        xid=1,
        new=None if event in ("DELETE", "TRUNCATE") else row,
        old=row if event not in ("INSERT", "TRUNCATE") else None,
    )


def test_defaults() -> None:
    assert parse_filter(None) == ChangeFilter(ALL_EVENTS, "public")
    assert parse_filter({}) == ChangeFilter(ALL_EVENTS, "public")
    f = parse_filter({"event": "insert", "schema": "shop"})
    assert f.events == frozenset({"INSERT"}) and f.schema == "shop" and f.event == "INSERT"
    assert parse_filter({"event": "*"}).event == "*"


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "filter must be an object"),
        ({"evnt": "INSERT"}, "unknown filter field 'evnt'"),
        ({"event": "UPSERT"}, "filter.event must be one of INSERT, UPDATE, DELETE, TRUNCATE, \\*"),
        ({"event": 1}, "filter.event must be one of"),
        ({"schema": ""}, "filter.schema must be a non-empty string"),
        ({"schema": "x" * 64}, "at most 63"),
        ({"op": "eq", "value": 1}, "need filter.column"),
        ({"column": 5, "value": 1}, "filter.column must be a non-empty string"),
        ({"column": "a", "op": "like", "value": 1}, "filter.op must be one of eq, neq"),
        ({"column": "a", "op": "eq"}, "filter.value is required"),
        ({"column": "a", "op": "in", "value": 1}, "must be a non-empty list"),
        ({"column": "a", "op": "in", "value": []}, "must be a non-empty list"),
        ({"column": "a", "op": "in", "value": list(range(101))}, "at most 100"),
        ({"column": "a", "op": "in", "value": [{"x": 1}]}, "items must be strings"),
        ({"column": "a", "op": "eq", "value": [1]}, "must be a string, number"),
        ({"column": "a", "op": "lt", "value": None}, "null only works with eq and neq"),
        ({"column": "a", "op": "lt", "value": float("inf")}, "finite"),
    ],
)
def test_invalid(raw: object, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(raw)  # type: ignore[arg-type]
    assert issubclass(FilterError, ValueError)


def test_event_and_schema() -> None:
    only_insert = parse_filter({"event": "INSERT"})
    assert matches(only_insert, change("INSERT"))
    assert not matches(only_insert, change("UPDATE"))
    assert matches(parse_filter({}), change("DELETE"))
    assert not matches(parse_filter({"schema": "shop"}), change("INSERT"))
    assert matches(parse_filter({"schema": "shop"}), change("INSERT", schema="shop"))


def test_truncate_matches_its_event_and_star_but_no_row_filter() -> None:
    truncate = change("TRUNCATE")
    assert parse_filter({"event": "truncate"}).event == "TRUNCATE"
    assert matches(parse_filter({"event": "TRUNCATE"}), truncate)
    assert matches(parse_filter({"event": "*"}), truncate)
    assert matches(parse_filter(None), truncate)
    assert not matches(parse_filter({"event": "DELETE"}), truncate)
    assert not matches(parse_filter({"event": "TRUNCATE"}), change("DELETE"))
    for op, value in (("eq", "open"), ("neq", "open"), ("eq", None), ("neq", None)):
        row_filter = parse_filter({"event": "*", "column": "status", "op": op, "value": value})
        assert not matches(row_filter, truncate), (op, value)


@pytest.mark.parametrize(
    "column, op, value, expected",
    [
        ("status", "eq", "open", True),
        ("status", "neq", "open", False),
        ("status", "in", ["closed", "open"], True),
        ("status", "in", ["closed"], False),
        ("total", "eq", 12.5, True),  # numeric arrives as a string: compared as a number
        ("total", "gt", 9, True),  # numerically, not "12.50" > "9" as text
        ("total", "lt", "9", True),  # two strings compare as text: send numbers as numbers
        ("n", "gte", 3, True),
        ("n", "gt", "10", False),  # a number column against a numeric string
        ("n", "eq", "3", True),
        ("n", "in", [1, "3"], True),
        ("n", "lt", 2.5, False),
        ("ok", "eq", True, True),
        ("ok", "eq", "true", True),
        ("ok", "neq", False, True),
        ("ok", "lt", True, False),
        ("id", "eq", True, False),  # booleans are not numbers
        ("missing", "eq", 1, False),
        ("status", "lt", "p", True),  # text compares as text
    ],
)
def test_row_filters(column: str, op: str, value: object, expected: bool) -> None:
    flt = parse_filter({"column": column, "op": op, "value": value})
    assert matches(flt, change()) is expected


def test_nulls() -> None:
    row = {"id": 1, "deleted_at": None}
    assert matches(parse_filter({"column": "deleted_at", "value": None}), change(row=row))
    assert not matches(
        parse_filter({"column": "deleted_at", "op": "neq", "value": None}), change(row=row)
    )
    assert not matches(
        parse_filter({"column": "deleted_at", "op": "gt", "value": 1}), change(row=row)
    )
    assert matches(parse_filter({"column": "deleted_at", "op": "neq", "value": 1}), change(row=row))


def test_delete_filters_look_at_old_row() -> None:
    flt = parse_filter({"event": "DELETE", "column": "status", "value": "open"})
    assert matches(flt, change("DELETE"))
    key_only = change("DELETE", row={"id": 1})
    assert not matches(flt, key_only)  # not REPLICA IDENTITY FULL: no status in old


numbers = st.one_of(
    st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False)
)
ORDER = {"lt": int.__lt__, "lte": int.__le__, "gt": int.__gt__, "gte": int.__ge__}


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(actual=numbers, wanted=numbers, as_text=st.booleans())
def test_numeric_comparisons_agree_with_python(actual: float, wanted: float, as_text: bool) -> None:
    """A number column (or numeric-as-text column) compares like the numbers do."""
    row = {"x": repr(actual) if as_text else actual}
    for op, expected in (
        ("eq", actual == wanted),
        ("neq", actual != wanted),
        ("lt", actual < wanted),
        ("lte", actual <= wanted),
        ("gt", actual > wanted),
        ("gte", actual >= wanted),
    ):
        flt = parse_filter({"column": "x", "op": op, "value": wanted})
        assert matches(flt, change(row=row)) is expected, (op, row, wanted)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["event", "schema", "column", "op", "value", "x"]),
        st.one_of(
            st.none(), st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=3)
        ),
    )
)
def test_parse_never_crashes(raw: dict) -> None:
    """Any object either parses or raises FilterError: never another exception."""
    try:
        flt = parse_filter(raw)
    except FilterError:
        return
    matches(flt, change())
