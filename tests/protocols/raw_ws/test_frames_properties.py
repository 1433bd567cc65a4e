"""Property-based tests of the pure parts that see hostile input first: the frame
decoder (`protocols/raw_ws/frames.py`) and channel patterns (`engine/channels.py`).

The agreement of Python and SQL (`realtime.match_channel`) on generated patterns is
in tests/engine/test_channels_pure.py; the properties here are about Python alone.
"""

from __future__ import annotations

import json
import random
import string

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pgrealtime.engine.channels import (
    channel_name_error,
    matches,
    most_specific,
    normalize,
    pattern_error,
    specificity_key,
)
from pgrealtime.protocols.raw_ws import frames
from pgrealtime.protocols.raw_ws.frames import ErrorCode, FrameError, event_name_error, parse_frame

pytestmark = pytest.mark.pure

MAX = 64 * 1024
# What parse_frame may answer with: it knows nothing of sessions or the database.
PARSE_CODES = {
    ErrorCode.MALFORMED_FRAME,
    ErrorCode.UNKNOWN_TYPE,
    ErrorCode.FRAME_TOO_LARGE,
    ErrorCode.INVALID_PAYLOAD,
}
FRAME_CLASSES = (frames.Auth, frames.Subscribe, frames.Unsubscribe, frames.Publish, frames.Ping)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

# --- JSON values, from tame to hostile ----------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)  # fmt: skip
FIELD_NAMES = ["type", "id", "channel", "event", "payload", "token", "filter", "since"]
TYPES = [*frames.FRAME_TYPES, "PING", "", "pong", "message", "auth ", "\u0000"]


@st.composite
def frame_like_objects(draw: st.DrawFn) -> object:
    """Mostly objects that look like frames, with fields of any type or missing."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    obj = draw(st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6))
    if draw(st.booleans()):
        obj["type"] = draw(st.sampled_from(TYPES) | json_values)
    return obj


def _check(data: str | bytes) -> frames.Frame | None:
    """parse_frame answers a frame or FrameError with one of its codes, nothing else."""
    try:
        frame = parse_frame(data, MAX)
    except FrameError as exc:
        assert exc.code in PARSE_CODES, exc.code
        assert exc.message
        assert exc.request_id is None or isinstance(exc.request_id, str | int)
        assert exc.channel is None or isinstance(exc.channel, str)
        # whatever is echoed can be sent back: the error frame always encodes
        frames.encode(frames.error_frame(exc.code, exc.message, exc.request_id, exc.channel))
        return None
    assert isinstance(frame, FRAME_CLASSES)
    # a frame the session acts on can be answered: its id and channel encode
    frames.encode({"id": frame.id, "channel": getattr(frame, "channel", None)})
    if isinstance(frame, frames.Publish):
        assert isinstance(frame.payload, dict)
        orjson.dumps(frame.payload)  # what the publisher stores; it must not raise
    return frame


# --- the decoder never fails with anything but FrameError ----------------------------


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
@example(b"")
@example(b"\xff")
@example(b'{"type":"ping","x":"\xff"}')
@example(b'{"\xc3":1}')
@example(b"\x00")
@example(b"\xef\xbb\xbf{}")
def test_any_bytes_parse_or_raise_frame_error(data: bytes) -> None:
    _check(data)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
@example("")
@example("\ud800")
@example('{"type": "ping", "id": "\udfff"}')
@example("\x00")
def test_any_text_parses_or_raises_frame_error(data: str) -> None:
    _check(data)


@given(frame_like_objects())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_frame_like_json_parses_or_raises_frame_error(obj: object) -> None:
    text = json.dumps(obj)
    frame = _check(text)
    assert _check(text.encode()) == frame  # bytes and text are the same frame


@given(st.sampled_from(["[", '{"a":']), st.integers(1, 5000))
@settings(max_examples=60, deadline=None)
@example("[", 100_000)
def test_deep_nesting_is_malformed_or_parsed_never_a_crash(opener: str, depth: int) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    for text in (
        nested,
        f'{{"type":"publish","channel":"a:1","event":"e","payload":{{"x":{nested}}}}}',
    ):
        _check(text)


@given(st.integers(min_value=2**63), st.booleans())
@settings(max_examples=50, deadline=None)
@example(2**64, False)
@example(10**400, True)
def test_ids_beyond_64_bits_are_malformed_and_not_echoed(magnitude: int, negative: bool) -> None:
    value = -magnitude - 1 if negative else magnitude  # just outside the signed 64-bit range
    text = json.dumps({"type": "ping", "id": value})
    with pytest.raises(FrameError) as info:
        parse_frame(text, MAX)
    assert info.value.code == ErrorCode.MALFORMED_FRAME
    assert info.value.request_id is None


@given(INT64)
def test_ids_within_64_bits_are_accepted(value: int) -> None:
    assert parse_frame(json.dumps({"type": "ping", "id": value}), MAX) == frames.Ping(id=value)


# --- payloads that cannot be stored are refused up front -----------------------------

HOSTILE_PAYLOADS = [
    {"n": 2**64},
    {"n": -(2**63) - 1},
    {"deep": {"n": [1, 2, {"m": 10**30}]}},
    {"s": "nul \u0000 inside"},
    {"key \u0000": 1},
    {"list": ["\u0000"]},
]


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS)
def test_payloads_postgres_or_orjson_cannot_take_are_invalid_payload(payload: dict) -> None:
    text = json.dumps({"type": "publish", "channel": "a:1", "event": "e", "payload": payload,
                       "id": 7})  # fmt: skip
    with pytest.raises(FrameError) as info:
        parse_frame(text, MAX)
    assert info.value.code == ErrorCode.INVALID_PAYLOAD
    assert (info.value.request_id, info.value.channel) == (7, "a:1")


@pytest.mark.parametrize("depth", [frames.MAX_PAYLOAD_DEPTH + 1, 300, 800])
def test_payloads_nested_too_deeply_are_invalid_payload(depth: int) -> None:
    payload = "{}"
    for _ in range(depth - 1):
        payload = '{"a":' + payload + "}"
    text = '{"type":"publish","channel":"a:1","event":"e","payload":' + payload + "}"
    with pytest.raises(FrameError) as info:
        parse_frame(text, MAX)
    assert info.value.code == ErrorCode.INVALID_PAYLOAD


def test_payload_at_the_depth_limit_and_edge_values_are_accepted() -> None:
    payload: dict = {}
    for _ in range(frames.MAX_PAYLOAD_DEPTH - 2):  # with `edge` around it: the limit exactly
        payload = {"a": payload}
    edge = {"max": 2**64 - 1, "min": -(2**63), "big": 1e308, "tiny": 5e-324,
            "escaped": "\\u0000 is text here", "digits": "12345678901234567890" * 3,
            "emoji": "\U0001f600", "nested": payload}  # fmt: skip
    text = json.dumps({"type": "publish", "channel": "a:1", "event": "e", "payload": edge})
    frame = parse_frame(text, MAX)
    assert isinstance(frame, frames.Publish) and frame.payload == edge


# --- valid frames round trip ---------------------------------------------------------

request_ids = st.none() | INT64 | st.text(max_size=20)
channel_names = st.text(alphabet=string.ascii_letters + string.digits + ":._-/@#=+", min_size=1,
                        max_size=40)  # fmt: skip
storable_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        max_size=20)  # fmt: skip
storable_payloads = st.dictionaries(
    storable_text,
    st.recursive(
        st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False)
        | storable_text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(storable_text, inner,
                                                                    max_size=3),
        max_leaves=10,
    ),
    max_size=5,
)  # fmt: skip
valid_frames = st.one_of(
    st.builds(frames.Auth, token=st.text(max_size=50), id=request_ids),
    st.builds(frames.Subscribe, channel=channel_names, id=request_ids,
              filter=st.none() | st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)),
    st.builds(frames.Unsubscribe, channel=st.text(max_size=30), id=request_ids),
    st.builds(frames.Publish, channel=channel_names, event=st.text(max_size=30),
              payload=storable_payloads, id=request_ids),
    st.builds(frames.Ping, id=request_ids),
)  # fmt: skip
TYPE_OF = {cls: name for name, cls in frames.FRAME_TYPES.items()}


@given(valid_frames, st.dictionaries(st.sampled_from(["extra", "ref", "topic"]), json_values,
                                     max_size=2), st.booleans(), st.booleans())  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_valid_frames_round_trip(
    frame: frames.Frame, extra: dict, drop_null_id: bool, ascii_only: bool
) -> None:
    obj = {**extra, **msgspec.to_builtins(frame), "type": TYPE_OF[type(frame)]}
    if obj.get("id") is None and drop_null_id:
        obj.pop("id", None)  # `id` absent and `id: null` are the same
    text = json.dumps(obj, ensure_ascii=ascii_only)
    assert parse_frame(text, MAX) == frame
    assert parse_frame(text.encode(), MAX) == frame


@given(valid_frames)
@settings(max_examples=50, deadline=None)
def test_frames_over_the_limit_are_too_large_whatever_they_hold(frame: frames.Frame) -> None:
    text = json.dumps({**msgspec.to_builtins(frame), "type": TYPE_OF[type(frame)]})
    limit = len(text.encode()) - 1
    assume(limit > 0)
    with pytest.raises(FrameError) as info:
        parse_frame(text, limit)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert parse_frame(text, limit + 1) == frame


# --- server frames -------------------------------------------------------------------


@given(st.binary(max_size=70_000))
@settings(max_examples=40, deadline=None)
@example(b"x" * 125)
@example(b"x" * 126)
@example(b"x" * 65535)
@example(b"x" * 65536)
def test_websocket_text_frame_header_encodes_the_length(payload: bytes) -> None:
    wire = frames.websocket_text_frame(payload)
    assert wire[0] == 0x81 and not wire[1] & 0x80  # final text frame, unmasked
    length = wire[1] & 0x7F
    if length == 126:
        length, header = int.from_bytes(wire[2:4]), 4
    elif length == 127:
        length, header = int.from_bytes(wire[2:10]), 10
    else:
        header = 2
    assert length == len(payload) and wire[header:] == payload


# --- event names ---------------------------------------------------------------------


@given(st.text(max_size=120))
@settings(max_examples=300, deadline=None)
@example("\x7f")
@example("ok\x85")
@example("phx_join")
def test_event_name_rules(event: str) -> None:
    problem = event_name_error(event)
    expected_ok = (
        bool(event.strip())
        and len(event) <= frames.MAX_EVENT_LENGTH
        and not event.startswith(frames.RESERVED_EVENT_PREFIXES)
        and not any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in event)
    )
    assert (problem is None) == expected_ok, (event, problem)


# --- channel patterns ----------------------------------------------------------------

LITERAL = string.ascii_letters + string.digits + ":._-/@#=+"
literal_text = st.text(alphabet=LITERAL, min_size=1, max_size=12)
names = st.text(alphabet=LITERAL, min_size=1, max_size=30)
wildcard = st.sampled_from("*%")


@st.composite
def patterns_with_a_name(draw: st.DrawFn) -> tuple[str, str]:
    """A valid pattern and a name built from it by filling each wildcard."""
    pieces = draw(st.lists(literal_text, min_size=1, max_size=4))
    leading, trailing = draw(st.booleans()), draw(st.booleans())
    cards = [draw(wildcard) for _ in range(len(pieces) + 1)]
    pattern = (cards[0] if leading else "") + "".join(
        p + (cards[i + 1] if i < len(pieces) - 1 or trailing else "") for i, p in enumerate(pieces)
    )
    assume(pattern_error(pattern) is None)
    fill = st.text(alphabet=LITERAL, max_size=6)
    name = "".join(draw(fill) if ch in "*%" else ch for ch in pattern)
    assume(channel_name_error(name) is None)
    return pattern, name


@given(literal_text)
def test_a_literal_name_matches_itself_and_only_itself(name: str) -> None:
    assume(pattern_error(name) is None)
    assert matches(name, name)
    assert not matches(name, name + "x") and not matches(name, "x" + name)
    assert most_specific([name], name) == name


@given(names)
def test_a_lone_wildcard_matches_everything(name: str) -> None:
    assert matches("*", name) and matches("%", name)
    assert matches(name[0] + "*", name) and matches("*" + name[-1], name)


@given(patterns_with_a_name())
@settings(max_examples=300)
def test_filling_the_wildcards_gives_a_matching_name(case: tuple[str, str]) -> None:
    pattern, name = case
    assert matches(pattern, name)
    assert matches(normalize(pattern), name) and matches(pattern.replace("*", "%"), name)
    assert most_specific([pattern], name) == pattern


@given(st.lists(st.one_of(literal_text, st.builds(lambda a, w, b: a + w + b, st.text(LITERAL,
       max_size=5), wildcard, st.text(LITERAL, max_size=5))), min_size=1, max_size=8,
       unique_by=normalize), names, st.randoms(use_true_random=False))  # fmt: skip
@settings(max_examples=300)
def test_the_most_specific_choice_does_not_depend_on_order(
    pats: list[str], name: str, rng: random.Random
) -> None:
    pats = [p for p in pats if pattern_error(p) is None]
    chosen = most_specific(pats, name)
    for _ in range(3):
        shuffled = pats[:]
        rng.shuffle(shuffled)
        assert most_specific(shuffled, name) == chosen
    matching = [p for p in pats if matches(p, name)]
    if chosen is None:
        assert matching == []
        return
    assert matches(chosen, name)
    assert all(specificity_key(chosen) <= specificity_key(p) for p in matching)
    if name in pats:  # an exact name always governs itself
        assert chosen == name


@given(st.text(max_size=300))
@settings(max_examples=300)
@example("order:*\n")
@example("order\n")
@example("a\r")
@example("*")
@example("db:x")
def test_pattern_and_name_validation_take_only_the_documented_characters(text: str) -> None:
    allowed_name = set(LITERAL)
    name_ok = 1 <= len(text) <= 255 and set(text) <= allowed_name
    assert (channel_name_error(text) is None) == name_ok, repr(text)
    problem = pattern_error(text)
    if problem is None:
        assert 1 <= len(text) <= 255 and set(text) <= allowed_name | {"*", "%"}, repr(text)
        assert "**" not in normalize(text) and normalize(text).strip("*")
        assert not text.startswith("db:")


@pytest.mark.parametrize("text", ["order:*\n", "room:1\n", "\nroom:1", "room:\n1", "room:1\r\n"])
def test_line_breaks_are_not_accepted_in_names_or_patterns(text: str) -> None:
    assert channel_name_error(text) is not None
    assert pattern_error(text) is not None
