"""Subscribe filters of `db:<table>` channels: parse, validate, evaluate (pure).

    {"event": "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE" | "*",   default "*"
     "schema": "public",                              default "public"
     "column": "status", "op": "eq", "value": "open"} optional row filter

Validation happens once at subscribe time, with a message precise enough to show to
the client; evaluation runs per change per subscriber, so it is kept cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pgrealtime.changes.model import EVENT_TYPES, RowChange

OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
ALLOWED_FIELDS = ("event", "schema", "column", "op", "value")
MAX_IN_VALUES = 100
MAX_NAME_LENGTH = 63  # PostgreSQL identifiers (NAMEDATALEN - 1)

Scalar = str | int | float | bool | None


class FilterError(ValueError):
    """The subscribe filter is invalid; the message says what to change. `code` is
    for the error frame."""

    code = "INVALID_FILTER"


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    events: frozenset[str]
    schema: str = "public"
    column: str | None = None
    op: str = "eq"
    value: Scalar | tuple[Scalar, ...] = None

    @property
    def event(self) -> str:
        return "*" if len(self.events) == len(EVENT_TYPES) else next(iter(self.events))


ALL_EVENTS = frozenset(EVENT_TYPES)
DEFAULT_FILTER = ChangeFilter(ALL_EVENTS)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def parse_filter(raw: Mapping[str, Any] | None) -> ChangeFilter:
    """Validate a client's filter object; raise FilterError saying precisely what is wrong."""
    if raw is None:
        return DEFAULT_FILTER
    if not isinstance(raw, Mapping):
        raise FilterError("filter must be an object")
    unknown = sorted(str(k) for k in raw if k not in ALLOWED_FIELDS)
    if unknown:
        raise FilterError(
            f"unknown filter field {unknown[0]!r}; allowed: {', '.join(ALLOWED_FIELDS)}"
        )

    event = raw.get("event", "*")
    if not isinstance(event, str) or (event.upper() not in EVENT_TYPES and event != "*"):
        raise FilterError(f"filter.event must be one of {', '.join(EVENT_TYPES)}, *; got {event!r}")
    events = ALL_EVENTS if event == "*" else frozenset({event.upper()})

    schema = raw.get("schema", "public")
    if not isinstance(schema, str) or not schema or len(schema) > MAX_NAME_LENGTH:
        raise FilterError("filter.schema must be a non-empty string of at most 63 characters")

    column = raw.get("column")
    if column is None:
        if "op" in raw or "value" in raw:
            raise FilterError("filter.op and filter.value need filter.column")
        return ChangeFilter(events, schema)
    if not isinstance(column, str) or not column or len(column) > MAX_NAME_LENGTH:
        raise FilterError("filter.column must be a non-empty string of at most 63 characters")

    op = raw.get("op", "eq")
    if op not in OPS:
        raise FilterError(f"filter.op must be one of {', '.join(OPS)}; got {op!r}")
    if "value" not in raw:
        raise FilterError("filter.value is required with filter.column")
    value = raw["value"]
    if op == "in":
        if not isinstance(value, list | tuple) or not value:
            raise FilterError("filter.value must be a non-empty list when filter.op is 'in'")
        if len(value) > MAX_IN_VALUES:
            raise FilterError(f"filter.value may list at most {MAX_IN_VALUES} values")
        if not all(_is_scalar(v) for v in value):
            raise FilterError("filter.value items must be strings, numbers, booleans or null")
        return ChangeFilter(events, schema, column, op, tuple(value))
    if not _is_scalar(value):
        raise FilterError(
            f"filter.value must be a string, number, boolean or null when filter.op is {op!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError("filter.value must be a finite number")
    if value is None and op not in ("eq", "neq"):
        raise FilterError(f"filter.value null only works with eq and neq, not {op!r}")
    return ChangeFilter(events, schema, column, op, value)


def _number(value: Any) -> Decimal | None:
    """A comparable number, or None: bools are not numbers, non-finite floats neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _normalise(actual: Any, wanted: Any) -> tuple[Any, Any] | None:
    """Bring the column's value and the filter's value to one comparable kind.

    Numbers compare numerically when either side is a number and both read as
    numbers (numeric columns arrive as strings: '12.50' equals 12.5). Booleans
    compare with booleans or 'true'/'false'. Everything else compares as text."""
    if actual is None or wanted is None:
        return None
    if isinstance(actual, bool) or isinstance(wanted, bool):
        a = actual if isinstance(actual, bool) else {"true": True, "false": False}.get(str(actual))
        w = wanted if isinstance(wanted, bool) else {"true": True, "false": False}.get(str(wanted))
        return None if a is None or w is None else (a, w)
    if isinstance(actual, int | float) or isinstance(wanted, int | float):
        a_num, w_num = _number(actual), _number(wanted)
        if a_num is not None and w_num is not None:
            return a_num, w_num
        if not isinstance(actual, str):
            return None
    if isinstance(actual, dict | list):
        return None
    return str(actual), str(wanted)


def _compare(op: str, actual: Any, wanted: Any) -> bool:
    if op == "eq" and (actual is None or wanted is None):
        return actual is None and wanted is None
    if op == "neq" and (actual is None or wanted is None):
        return (actual is None) != (wanted is None)
    pair = _normalise(actual, wanted)
    if pair is None:
        return op == "neq"
    a, w = pair
    if op == "eq":
        return a == w
    if op == "neq":
        return a != w
    if isinstance(a, bool):
        return False  # booleans have no order here
    if op == "lt":
        return a < w
    if op == "lte":
        return a <= w
    if op == "gt":
        return a > w
    return a >= w  # gte


def matches(flt: ChangeFilter, change: RowChange) -> bool:
    """Does this change pass the subscriber's filter?

    The row filter looks at the new row (INSERT, UPDATE) or the old row (DELETE).
    A DELETE's old row holds only the key columns unless the table has REPLICA
    IDENTITY FULL: a filter on another column then does not match. Routing hands
    over the change as it will be sent (`payload.revealed`): on a table with row
    level security that old row is the key only, so a filter cannot probe a column
    the subscriber is not sent. A TRUNCATE has no row, so a row filter never
    matches it."""
    if change.event not in flt.events or change.schema != flt.schema:
        return False
    if flt.column is None:
        return True
    row = change.row
    if row is None or flt.column not in row:
        return False
    actual = row[flt.column]
    if flt.op == "in":
        assert isinstance(flt.value, tuple)
        return any(_compare("eq", actual, v) for v in flt.value)
    return _compare(flt.op, actual, flt.value)
