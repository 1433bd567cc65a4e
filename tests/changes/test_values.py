"""Text values -> JSON-friendly values, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgrealtime.changes import values as v
from pgrealtime.changes.values import PgType, TypeRegistry, format_utc, parse_array, to_json_value

pytestmark = pytest.mark.pure


@pytest.mark.parametrize(
    "text, oid, expected",
    [
        ("42", v.INT4, 42),
        ("-9223372036854775808", v.INT8, -9223372036854775808),
        ("7", v.INT2, 7),
        ("1.5", v.FLOAT8, 1.5),
        ("NaN", v.FLOAT8, "NaN"),
        ("-Infinity", v.FLOAT4, "-Infinity"),
        ("123.4500", v.NUMERIC, "123.4500"),
        ("t", v.BOOL, True),
        ("f", v.BOOL, False),
        ('{"a": [1, 2.5, null]}', v.JSONB, {"a": [1, 2.5, None]}),
        ("[1e400]", v.JSON, ["1e400"]),
        ("2024-01-15 10:30:00.123456+00", v.TIMESTAMPTZ, "2024-01-15T10:30:00.123456Z"),
        ("2024-01-15 10:30:00+00", v.TIMESTAMPTZ, "2024-01-15T10:30:00Z"),
        ("2024-01-15 12:30:00.5+02", v.TIMESTAMPTZ, "2024-01-15T10:30:00.5Z"),
        ("2024-01-15 05:00:00-05:30", v.TIMESTAMPTZ, "2024-01-15T10:30:00Z"),
        ("infinity", v.TIMESTAMPTZ, "infinity"),
        ("0044-03-15 10:00:00+00 BC", v.TIMESTAMPTZ, "0044-03-15 10:00:00+00 BC"),
        ("2024-01-15 10:30:00", v.TIMESTAMP, "2024-01-15T10:30:00"),
        ("2024-01-15", v.DATE, "2024-01-15"),
        ("10:30:00", v.TIME, "10:30:00"),
        ("248373e1-0aea-45ce-8844-5ef259203749", v.UUID, "248373e1-0aea-45ce-8844-5ef259203749"),
        ("\\x0102ff", v.BYTEA, "\\x0102ff"),
        ("hello", v.TEXT, "hello"),
        ("abc", v.VARCHAR, "abc"),
        ("(1,2)", 600, "(1,2)"),  # point: unknown here -> text
        (None, v.INT4, None),
        ("{1,2,3}", 1007, [1, 2, 3]),
        ("{}", 1007, []),
        ("{{1,2},{3,NULL}}", 1007, [[1, 2], [3, None]]),
        ('{"a b","c\\"d",NULL,"NULL",x}', 1009, ["a b", 'c"d', None, "NULL", "x"]),
        ("[0:1]={5,6}", 1016, [5, 6]),
        ("{t,f}", 1000, [True, False]),
        ('{"2024-01-15 10:30:00+00"}', 1185, ["2024-01-15T10:30:00Z"]),
        ('{"{\\"a\\": 1}"}', 3807, [{"a": 1}]),
        ("{1.5,NaN}", 1022, [1.5, "NaN"]),
    ],
)
def test_conversions(text: str | None, oid: int, expected: object) -> None:
    assert to_json_value(text, oid) == expected


def test_domains_enums_and_their_arrays() -> None:
    registry = TypeRegistry(
        [
            PgType(90001, "positive", kind="d", category="N", base=v.INT4),
            PgType(90002, "_positive", category="A", elem=90001),
            PgType(90003, "mood", kind="e", category="E"),
            PgType(90004, "_mood", category="A", elem=90003),
            PgType(90005, "_box", category="A", elem=603),
            PgType(603, "box", category="G", delim=";"),
        ]
    )
    assert to_json_value("5", 90001, registry) == 5
    assert to_json_value("{1,2}", 90002, registry) == [1, 2]
    assert to_json_value("{happy,sad}", 90004, registry) == ["happy", "sad"]
    assert to_json_value("{(1,1),(0,0);(2,2),(1,1)}", 90005, registry) == [
        "(1,1),(0,0)",
        "(2,2),(1,1)",
    ]
    assert registry.needs([90002, 90001, v.INT4]) == set()
    assert TypeRegistry().needs([90002]) == {90002}
    chained = TypeRegistry([PgType(90002, "_positive", category="A", elem=90001)])
    assert chained.needs([90002]) == {90001}


def test_non_brace_array_stays_text() -> None:
    registry = TypeRegistry([PgType(22, "int2vector", category="A", elem=v.INT2)])
    assert to_json_value("1 2", 22, registry) == "1 2"


def test_format_utc() -> None:
    assert format_utc(datetime(2024, 1, 15, 10, 30, tzinfo=UTC)) == "2024-01-15T10:30:00Z"
    assert format_utc(datetime(5, 1, 1, 0, 0, 0, 120000, tzinfo=UTC)) == "0005-01-01T00:00:00.12Z"


def _pg_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.characters(exclude_categories=["Cs"])))))
def test_text_array_round_trip(items: list[str | None]) -> None:
    """Whatever PostgreSQL-quoted text array we print parses back to the same list."""
    text = "{" + ",".join("NULL" if i is None else _pg_quote(i) for i in items) + "}"
    assert parse_array(text) == items
