"""Text-format PostgreSQL values -> JSON-friendly Python values (pure).

pgoutput sends every column in its text output form. Clients get JSON, so numbers
become numbers where JSON can carry them exactly (integers, floats), and stay
strings where it cannot (numeric, NaN/Infinity); json/jsonb become objects; arrays
become lists; timestamptz becomes RFC 3339 in UTC ("...Z") whatever the session
time zone was. Anything unknown stays the string PostgreSQL printed, which is
never wrong, only less convenient.

The reader asks the server for `pg_type` rows of OIDs that are not built in
(domains, enums, arrays of those) and adds them to a TypeRegistry, so arrays of
any element type and domains over any base type convert like their base.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

Converter = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class PgType:
    """The parts of a pg_type row conversion needs."""

    oid: int
    name: str
    kind: str = "b"  # typtype: b base, d domain, e enum, c composite, r range, m multirange
    category: str = "U"  # typcategory: 'A' for arrays
    elem: int = 0  # typelem (element type of an array)
    base: int = 0  # typbasetype (base type of a domain)
    delim: str = ","  # typdelim of this type, used when it is an array element


# Built-in type OIDs (stable across PostgreSQL versions: see pg_type.dat).
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, XML, FLOAT4, FLOAT8, MONEY, BPCHAR, VARCHAR = 114, 142, 700, 701, 790, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, UUID, JSONB, INET, CIDR, MACADDR = 1700, 2950, 3802, 869, 650, 829

# array OID -> element OID for the built-in arrays
BUILTIN_ARRAYS: dict[int, int] = {
    1000: BOOL, 1001: BYTEA, 1002: CHAR, 1003: NAME, 1016: INT8, 1005: INT2, 1007: INT4,
    1009: TEXT, 1028: OID, 199: JSON, 143: XML, 1021: FLOAT4, 1022: FLOAT8, 791: MONEY,
    1014: BPCHAR, 1015: VARCHAR, 1182: DATE, 1183: TIME, 1115: TIMESTAMP, 1185: TIMESTAMPTZ,
    1187: INTERVAL, 1270: TIMETZ, 1231: NUMERIC, 2951: UUID, 3807: JSONB, 1041: INET,
    651: CIDR, 1040: MACADDR,
}  # fmt: skip


def _identity(text: str) -> str:
    return text


def _bool(text: str) -> bool:
    return text == "t"


_NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})


def _float(text: str) -> float | str:
    """JSON has no NaN or Infinity: those stay strings."""
    if text in _NON_FINITE:
        return text
    return float(text)


def _big_int(text: str) -> int | str:
    value = int(text)
    return value if -(2**63) <= value < 2**64 else text


def _finite_float(text: str) -> float | str:
    value = float(text)
    return value if value - value == 0 else text


# Deepest json/jsonb value delivered as JSON. orjson writes at most 255 levels and a
# change frame wraps a column value in 3 more (frame, payload, new/old); webhook
# bodies wrap it too. Deeper values (jsonb allows thousands of levels) are delivered
# as their JSON text instead: one such row must not make its whole batch unsendable.
MAX_JSON_DEPTH = 200


class ValueAsText(Exception):
    """A value was kept as the text PostgreSQL printed (see `_json`); raised only to
    be counted by the caller, which then uses `text`."""

    def __init__(self, text: str, why: str) -> None:
        super().__init__(why)
        self.text = text


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _json(text: str) -> Any:
    """orjson is fast but refuses numbers outside 64-bit/double range, which jsonb can
    hold: those fall back to the standard parser and stay strings. A value nested
    deeper than MAX_JSON_DEPTH (or too deep for either parser) stays its text: a
    nesting depth is at most the number of brackets, so counting them (in C) keeps
    the usual value on the fast path."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(text, parse_int=_big_int, parse_float=_finite_float)
        except RecursionError:
            raise ValueAsText(text, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(value):
        raise ValueAsText(text, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def format_utc(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC: '2024-01-15T10:30:00.123456Z' (the
    fraction only when there is one, without trailing zeros, as PostgreSQL prints)."""
    moment = moment.astimezone(UTC)
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S") + fraction + "Z"


def _timestamptz(text: str) -> str:
    """'2024-01-15 10:30:00.123456+00' -> '2024-01-15T10:30:00.123456Z'.

    The reader sets TimeZone=UTC on its sessions so the fast path is the usual one;
    any other offset is converted. BC dates, years past 9999 and +-infinity have no
    RFC 3339 form and stay as PostgreSQL printed them."""
    if text.endswith("+00") and len(text) > 13 and text[10] == " ":
        return f"{text[:10]}T{text[11:-3]}Z"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text
    return format_utc(moment)


def _timestamp(text: str) -> str:
    """'2024-01-15 10:30:00' -> '2024-01-15T10:30:00' (no zone: the value has none)."""
    if len(text) > 10 and text[10] == " " and not text.endswith(" BC"):
        return f"{text[:10]}T{text[11:]}"
    return text


SCALAR_CONVERTERS: dict[int, Converter] = {
    BOOL: _bool,
    INT2: int,
    INT4: int,
    INT8: int,
    OID: int,
    FLOAT4: _float,
    FLOAT8: _float,
    NUMERIC: _identity,
    JSON: _json,
    JSONB: _json,
    TIMESTAMPTZ: _timestamptz,
    TIMESTAMP: _timestamp,
    DATE: _identity,
    TIME: _identity,
    TIMETZ: _identity,
    UUID: _identity,
    TEXT: _identity,
    VARCHAR: _identity,
    BPCHAR: _identity,
    NAME: _identity,
    CHAR: _identity,
    BYTEA: _identity,  # hex output: '\x0102...' (the reader sets bytea_output=hex)
}


class ArraySyntaxError(ValueError):
    pass


def parse_array(text: str, convert: Converter = _identity, delim: str = ",") -> Any:
    """Parse PostgreSQL's array output ('{1,2,NULL}', '{{"a b","c"}}', '[0:1]={1,2}')
    into nested lists, converting each non-NULL element with `convert`."""
    pos = 0
    if text.startswith("["):  # explicit bounds: '[0:2]={...}'
        pos = text.index("=") + 1

    def element(i: int) -> tuple[Any, int]:
        if text[i] == "{":
            return items(i)
        if text[i] == '"':
            out = []
            i += 1
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                out.append(text[i])
                i += 1
            return convert("".join(out)), i + 1
        start = i
        while text[i] != delim and text[i] != "}":
            i += 1
        raw = text[start:i].strip()
        if raw.upper() == "NULL":
            return None, i
        return convert(raw), i

    def items(i: int) -> tuple[list[Any], int]:
        if text[i] != "{":
            raise ArraySyntaxError(f"expected '{{' at {i} in {text!r}")
        i += 1
        result: list[Any] = []
        if text[i] == "}":
            return result, i + 1
        while True:
            value, i = element(i)
            result.append(value)
            if text[i] == "}":
                return result, i + 1
            if text[i] != delim:
                raise ArraySyntaxError(f"expected {delim!r} at {i} in {text!r}")
            i += 1

    try:
        value, end = items(pos)
    except IndexError:
        raise ArraySyntaxError(f"unterminated array {text!r}") from None
    if end != len(text):
        raise ArraySyntaxError(f"trailing text in array {text!r}")
    return value


def _array_converter(convert: Converter, delim: str) -> Converter:
    def convert_array(text: str) -> Any:
        try:
            return parse_array(text, convert, delim)
        except (ArraySyntaxError, ValueError):
            return text  # e.g. int2vector ('1 2'): not brace syntax, keep the text

    return convert_array


class TypeRegistry:
    """OID -> PgType for the types seen so far, and a cached converter per OID."""

    def __init__(self, types: Iterable[PgType] = ()) -> None:
        self._types: dict[int, PgType] = {}
        self._converters: dict[int, Converter] = {}
        for array_oid, elem in BUILTIN_ARRAYS.items():
            self._types[array_oid] = PgType(array_oid, "_array", "b", "A", elem)
        for t in types:
            self.add(t)

    def add(self, pg_type: PgType) -> None:
        self._types[pg_type.oid] = pg_type
        self._converters.clear()  # a domain or array may now resolve differently

    def get(self, oid: int) -> PgType | None:
        return self._types.get(oid)

    def unknown(self, oids: Iterable[int]) -> set[int]:
        """OIDs (and the element/base types they point to) still to be looked up."""
        return {o for o in oids if o not in SCALAR_CONVERTERS and o not in self._types}

    def needs(self, oids: Iterable[int]) -> set[int]:
        """Like `unknown`, following already-known arrays and domains to what they name."""
        todo = set(oids)
        missing: set[int] = set()
        seen: set[int] = set()
        while todo:
            oid = todo.pop()
            if oid in seen or oid in SCALAR_CONVERTERS:
                continue
            seen.add(oid)
            t = self._types.get(oid)
            if t is None:
                missing.add(oid)
            elif t.category == "A" and t.elem:
                todo.add(t.elem)
            elif t.kind == "d" and t.base:
                todo.add(t.base)
        return missing

    def converter(self, oid: int) -> Converter:
        found = self._converters.get(oid)
        if found is None:
            found = self._converters[oid] = self._resolve(oid, depth=0)
        return found

    def _resolve(self, oid: int, depth: int) -> Converter:
        scalar = SCALAR_CONVERTERS.get(oid)
        if scalar is not None:
            return scalar
        t = self._types.get(oid)
        if t is None or depth > 16:
            return _identity
        if t.kind == "d" and t.base:
            return self._resolve(t.base, depth + 1)
        if t.category == "A" and t.elem:
            elem = self._types.get(t.elem)
            delim = elem.delim if elem is not None else ","
            return _array_converter(self._resolve(t.elem, depth + 1), delim)
        return _identity


_DEFAULT_REGISTRY = TypeRegistry()


def to_json_value(text: str | None, type_oid: int, registry: TypeRegistry | None = None) -> Any:
    """One column's text value as a JSON-friendly Python value (None for SQL NULL)."""
    if text is None:
        return None
    try:
        return (registry or _DEFAULT_REGISTRY).converter(type_oid)(text)
    except ValueAsText as kept:
        return kept.text
