"""A pure decoder of PostgreSQL's `pgoutput` logical replication protocol (version 1).

Pure so the wire format can be tested byte by byte without a server; the reader
feeds it the payload of each XLogData message. It keeps the relation cache the
protocol requires: row messages name a relation only by OID, and a Relation
message (re)describes it before its first row in a session and after every
schema change, so replacing the cache entry is how schema changes are handled.

Reference: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)

# Replica identity settings, as sent in the Relation message (pg_class.relreplident).
IDENTITY_DEFAULT: Final = "d"
IDENTITY_NOTHING: Final = "n"
IDENTITY_FULL: Final = "f"
IDENTITY_INDEX: Final = "i"


class DecodeError(ValueError):
    """The bytes are not a well-formed pgoutput message (or refer to an unknown relation)."""


class _Unchanged:
    """Marks an unchanged TOASTed value: pgoutput does not resend large values an UPDATE
    did not touch, so the reader has to fill them in from elsewhere."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __bool__(self) -> bool:
        return False


UNCHANGED_TOAST: Final = _Unchanged()

# One column of a tuple: None (SQL NULL), UNCHANGED_TOAST, str (text format) or
# bytes (binary format, only if the subscriber asked for it).
TupleValue = str | bytes | None | _Unchanged


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool  # part of the replica identity (primary key, identity index, or FULL)


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    schema: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_key)


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """A Type message: sent for non-built-in types (enums, domains, composites...)."""

    oid: int
    schema: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation: Relation
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Update:
    relation: Relation
    new: tuple[TupleValue, ...]
    old: tuple[TupleValue, ...] | None = None
    # 'K': old key columns only (the key changed); 'O': whole old row (REPLICA IDENTITY
    # FULL); None: no old tuple (the key did not change).
    old_kind: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relation: Relation
    old: tuple[TupleValue, ...]
    old_kind: str


@dataclass(frozen=True, slots=True)
class Truncate:
    relations: tuple[Relation, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate
    | LogicalMessage
)  # fmt: skip

_U8 = struct.Struct("!B")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_U64 = struct.Struct("!Q")


def pg_timestamp(micros: int) -> datetime:
    """A protocol timestamp (microseconds since 2000-01-01 UTC) as an aware datetime."""
    return PG_EPOCH + timedelta(microseconds=micros)


class _Reader:
    """A cursor over one message's bytes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> int:
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise DecodeError(f"message truncated at byte {start} (needed {n} more)")
        self.pos = end
        return start

    def u8(self) -> int:
        return _U8.unpack_from(self.data, self._take(1))[0]

    def byte(self) -> str:
        return chr(self.u8())

    def i16(self) -> int:
        return _I16.unpack_from(self.data, self._take(2))[0]

    def i32(self) -> int:
        return _I32.unpack_from(self.data, self._take(4))[0]

    def u32(self) -> int:
        return _U32.unpack_from(self.data, self._take(4))[0]

    def i64(self) -> int:
        return _I64.unpack_from(self.data, self._take(8))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.data, self._take(8))[0]

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DecodeError(f"unterminated string at byte {self.pos}")
        value = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return value

    def raw(self, n: int) -> bytes:
        start = self._take(n)
        return self.data[start : start + n]


@dataclass
class Decoder:
    """Decodes messages one at a time, remembering relations (and type names) as it goes."""

    relations: dict[int, Relation] = field(default_factory=dict)
    types: dict[int, TypeInfo] = field(default_factory=dict)

    def decode(self, data: bytes) -> Message:
        if not data:
            raise DecodeError("empty message")
        r = _Reader(data)
        kind = r.byte()
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise DecodeError(f"unknown pgoutput message type {kind!r}")
        message = handler(self, r)
        if r.pos != len(data):
            raise DecodeError(f"{len(data) - r.pos} trailing bytes after a {kind!r} message")
        return message

    def relid_of(self, data: bytes) -> int | None:
        """The relation OID of an Insert/Update/Delete without decoding its tuples, so
        the reader can skip rows of tables nobody may subscribe to cheaply."""
        if len(data) >= 5 and data[0] in b"IUD":
            return _U32.unpack_from(data, 1)[0]
        return None

    # -- message bodies -------------------------------------------------------------

    def _begin(self, r: _Reader) -> Begin:
        return Begin(final_lsn=r.u64(), commit_time=pg_timestamp(r.i64()), xid=r.u32())

    def _commit(self, r: _Reader) -> Commit:
        return Commit(
            flags=r.u8(), commit_lsn=r.u64(), end_lsn=r.u64(), commit_time=pg_timestamp(r.i64())
        )

    def _origin(self, r: _Reader) -> Origin:
        return Origin(commit_lsn=r.u64(), name=r.string())

    def _relation(self, r: _Reader) -> Relation:
        relid = r.u32()
        schema = r.string()
        name = r.string()
        identity = r.byte()
        ncols = r.i16()
        columns = []
        for _ in range(ncols):
            flags = r.u8()
            col_name = r.string()
            columns.append(Column(col_name, r.u32(), r.i32(), bool(flags & 1)))
        relation = Relation(relid, schema, name, identity, tuple(columns))
        self.relations[relid] = relation
        return relation

    def _type(self, r: _Reader) -> TypeInfo:
        info = TypeInfo(oid=r.u32(), schema=r.string(), name=r.string())
        self.types[info.oid] = info
        return info

    def _relation_for(self, relid: int) -> Relation:
        try:
            return self.relations[relid]
        except KeyError:
            raise DecodeError(f"row for relation {relid} before its Relation message") from None

    def _tuple(self, r: _Reader, relation: Relation) -> tuple[TupleValue, ...]:
        ncols = r.i16()
        if ncols != len(relation.columns):
            raise DecodeError(
                f"tuple of {relation.schema}.{relation.name} has {ncols} columns, "
                f"its Relation message {len(relation.columns)}"
            )
        values: list[TupleValue] = []
        for _ in range(ncols):
            kind = r.byte()
            if kind == "t":
                values.append(r.raw(r.i32()).decode("utf-8"))
            elif kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED_TOAST)
            elif kind == "b":
                values.append(r.raw(r.i32()))
            else:
                raise DecodeError(f"unknown tuple data kind {kind!r}")
        return tuple(values)

    def _insert(self, r: _Reader) -> Insert:
        relation = self._relation_for(r.u32())
        marker = r.byte()
        if marker != "N":
            raise DecodeError(f"Insert: expected 'N', got {marker!r}")
        return Insert(relation, self._tuple(r, relation))

    def _update(self, r: _Reader) -> Update:
        relation = self._relation_for(r.u32())
        marker = r.byte()
        old = None
        old_kind = None
        if marker in ("K", "O"):
            old_kind = marker
            old = self._tuple(r, relation)
            marker = r.byte()
        if marker != "N":
            raise DecodeError(f"Update: expected 'N', got {marker!r}")
        return Update(relation, self._tuple(r, relation), old, old_kind)

    def _delete(self, r: _Reader) -> Delete:
        relation = self._relation_for(r.u32())
        marker = r.byte()
        if marker not in ("K", "O"):
            raise DecodeError(f"Delete: expected 'K' or 'O', got {marker!r}")
        return Delete(relation, self._tuple(r, relation), marker)

    def _truncate(self, r: _Reader) -> Truncate:
        count = r.i32()
        options = r.u8()
        relations = tuple(self._relation_for(r.u32()) for _ in range(count))
        return Truncate(relations, cascade=bool(options & 1), restart_identity=bool(options & 2))

    def _message(self, r: _Reader) -> LogicalMessage:
        flags = r.u8()
        lsn = r.u64()
        prefix = r.string()
        content = r.raw(r.i32())
        return LogicalMessage(bool(flags & 1), lsn, prefix, content)


_HANDLERS = {
    "B": Decoder._begin,
    "C": Decoder._commit,
    "O": Decoder._origin,
    "R": Decoder._relation,
    "Y": Decoder._type,
    "I": Decoder._insert,
    "U": Decoder._update,
    "D": Decoder._delete,
    "T": Decoder._truncate,
    "M": Decoder._message,
}


def lsn_to_str(lsn: int) -> str:
    """An LSN in PostgreSQL's text form, e.g. 0/16B3748."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_from_str(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
