"""The pgoutput decoder, byte by byte, without a server."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from pgrealtime.changes.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    DecodeError,
    Decoder,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    TypeInfo,
    Update,
    lsn_from_str,
    lsn_to_str,
)

pytestmark = pytest.mark.pure

TS_2024 = int((datetime(2024, 1, 15, 10, 30, tzinfo=UTC) - datetime(2000, 1, 1, tzinfo=UTC))
              .total_seconds() * 1_000_000) + 123456  # fmt: skip


def s(text: str) -> bytes:
    return text.encode() + b"\0"


def relation_msg(relid: int = 16400, cols=(("id", 23, True), ("title", 25, False)),
                 identity: bytes = b"d") -> bytes:  # fmt: skip
    body = b"R" + struct.pack("!I", relid) + s("public") + s("posts") + identity
    body += struct.pack("!h", len(cols))
    for name, oid, key in cols:
        body += struct.pack("!B", 1 if key else 0) + s(name) + struct.pack("!Ii", oid, -1)
    return body


def tuple_data(*values: object) -> bytes:
    out = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(v, bytes):
            out += b"b" + struct.pack("!i", len(v)) + v
        else:
            raw = str(v).encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


@pytest.fixture
def decoder() -> Decoder:
    d = Decoder()
    d.decode(relation_msg())
    return d


def test_begin_and_commit() -> None:
    d = Decoder()
    begin = d.decode(b"B" + struct.pack("!QqI", 0x1_0000_0010, TS_2024, 777))
    assert begin == Begin(0x1_0000_0010, datetime(2024, 1, 15, 10, 30, 0, 123456, UTC), 777)
    commit = d.decode(b"C" + struct.pack("!BQQq", 0, 100, 120, TS_2024))
    assert isinstance(commit, Commit)
    assert (commit.commit_lsn, commit.end_lsn) == (100, 120)
    assert commit.commit_time.isoformat() == "2024-01-15T10:30:00.123456+00:00"


def test_relation_is_cached_and_replaced_on_schema_change() -> None:
    d = Decoder()
    rel = d.decode(relation_msg())
    assert isinstance(rel, Relation)
    assert (rel.schema, rel.name, rel.replica_identity) == ("public", "posts", "d")
    assert [(c.name, c.type_oid, c.is_key) for c in rel.columns] == [
        ("id", 23, True),
        ("title", 25, False),
    ]
    assert rel.key_columns == ("id",)
    assert d.relations[16400] is rel
    # a column added: a new Relation message replaces the cached one
    d.decode(relation_msg(cols=(("id", 23, True), ("title", 25, False), ("n", 20, False))))
    change = d.decode(b"I" + struct.pack("!I", 16400) + b"N" + tuple_data(1, "a", 5))
    assert isinstance(change, Insert)
    assert change.new == ("1", "a", "5")


def test_insert_with_null_and_binary(decoder: Decoder) -> None:
    msg = decoder.decode(b"I" + struct.pack("!I", 16400) + b"N" + tuple_data(7, None))
    assert msg == Insert(decoder.relations[16400], ("7", None))
    msg = decoder.decode(b"I" + struct.pack("!I", 16400) + b"N" + tuple_data(7, b"\x00\x01"))
    assert isinstance(msg, Insert) and msg.new == ("7", b"\x00\x01")


def test_update_variants(decoder: Decoder) -> None:
    head = b"U" + struct.pack("!I", 16400)
    plain = decoder.decode(head + b"N" + tuple_data(1, UNCHANGED_TOAST))
    assert isinstance(plain, Update)
    assert plain.old is None and plain.old_kind is None
    assert plain.new[1] is UNCHANGED_TOAST
    keyed = decoder.decode(head + b"K" + tuple_data(1, None) + b"N" + tuple_data(2, "t"))
    assert isinstance(keyed, Update) and keyed.old_kind == "K" and keyed.old == ("1", None)
    full = decoder.decode(head + b"O" + tuple_data(1, "old") + b"N" + tuple_data(1, "new"))
    assert isinstance(full, Update) and full.old_kind == "O" and full.old == ("1", "old")


def test_delete(decoder: Decoder) -> None:
    msg = decoder.decode(b"D" + struct.pack("!I", 16400) + b"K" + tuple_data(3, None))
    assert msg == Delete(decoder.relations[16400], ("3", None), "K")


def test_truncate(decoder: Decoder) -> None:
    msg = decoder.decode(b"T" + struct.pack("!iBI", 1, 3, 16400))
    assert isinstance(msg, Truncate)
    assert msg.cascade and msg.restart_identity
    assert msg.relations == (decoder.relations[16400],)


def test_type_origin_and_message() -> None:
    d = Decoder()
    t = d.decode(b"Y" + struct.pack("!I", 99999) + s("public") + s("mood"))
    assert t == TypeInfo(99999, "public", "mood") and d.types[99999] == t
    assert d.decode(b"O" + struct.pack("!Q", 5) + s("node1")) == Origin(5, "node1")
    m = d.decode(b"M" + struct.pack("!BQ", 1, 9) + s("pfx") + struct.pack("!i", 2) + b"hi")
    assert m == LogicalMessage(True, 9, "pfx", b"hi")


def test_utf8_text(decoder: Decoder) -> None:
    msg = decoder.decode(b"I" + struct.pack("!I", 16400) + b"N" + tuple_data(1, "héllo ✓"))
    assert isinstance(msg, Insert) and msg.new[1] == "héllo ✓"


def test_relid_peek(decoder: Decoder) -> None:
    data = b"I" + struct.pack("!I", 16400) + b"N" + tuple_data(1, "x")
    assert decoder.relid_of(data) == 16400
    assert decoder.relid_of(b"B" + struct.pack("!QqI", 0, 0, 1)) is None


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"Z", "unknown pgoutput message"),
        (b"B\x00\x01", "truncated"),
        (b"I" + struct.pack("!I", 1) + b"N" + tuple_data(1, 2), "before its Relation"),
        (b"I" + struct.pack("!I", 16400) + b"X", "expected 'N'"),
        (b"I" + struct.pack("!I", 16400) + b"N" + tuple_data(1), "has 1 columns"),
        (b"I" + struct.pack("!I", 16400) + b"N" + struct.pack("!h", 2) + b"tx", "truncated"),
        (b"I" + struct.pack("!I", 16400) + b"N" + struct.pack("!h", 2) + b"nz", "kind 'z'"),
        (b"D" + struct.pack("!I", 16400) + b"N" + tuple_data(1, 2), "expected 'K' or 'O'"),
        (b"C" + struct.pack("!BQQq", 0, 1, 2, 3) + b"!", "trailing"),
        (b"R" + struct.pack("!I", 1) + b"public", "unterminated"),
    ],
)
def test_malformed(decoder: Decoder, data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decoder.decode(data)


def test_lsn_text() -> None:
    assert lsn_to_str(0x16B3748) == "0/16B3748"
    assert lsn_to_str((3 << 32) | 0xA) == "3/A"
    assert lsn_from_str("3/A") == (3 << 32) | 0xA
