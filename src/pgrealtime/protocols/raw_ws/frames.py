"""Client frames in, server frames out (pure: no sockets).

A client frame is decoded once, its `type` dispatched, and its fields validated
with a precise error code, so a bad frame gets an error and the connection lives on.
Server frames are JSON encoded once and wrapped in a WebSocket frame once, so a
broadcast writes the same bytes to every subscriber.
"""

from __future__ import annotations

import re
import struct
import uuid
from typing import Any

import msgspec
import orjson

from pgrealtime.engine.channels import MAX_CHANNEL_LENGTH

MAX_EVENT_LENGTH = 100
RESERVED_EVENT_PREFIXES = ("realtime:", "presence:", "system:", "phx_")
# Request ids are echoed back: integers must fit where JSON encoders put them, and
# strings are short (an id of a whole frame's size would be echoed whole, to anyone).
MIN_REQUEST_ID, MAX_REQUEST_ID = -(2**63), 2**63 - 1
MAX_REQUEST_ID_LENGTH = 128
# Payloads are stored as jsonb and encoded with orjson: no U+0000 (jsonb refuses it),
# integers that fit in 64 bits (orjson's range), and a nesting depth orjson accepts.
MIN_PAYLOAD_INT, MAX_PAYLOAD_INT = -(2**63), 2**64 - 1
MAX_PAYLOAD_DEPTH = 254  # orjson's limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


class ErrorCode:
    """Every error frame carries one of these."""

    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    INVALID_TOKEN = "INVALID_TOKEN"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    INVALID_API_KEY = "INVALID_API_KEY"
    MALFORMED_FRAME = "MALFORMED_FRAME"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    INVALID_CHANNEL = "INVALID_CHANNEL"
    CHANNEL_NOT_FOUND = "REALTIME_CHANNEL_NOT_FOUND"
    UNAUTHORIZED = "REALTIME_UNAUTHORIZED"
    NOT_SUBSCRIBED = "REALTIME_NOT_SUBSCRIBED"
    INVALID_EVENT = "INVALID_EVENT_NAME"
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    SUBSCRIPTION_ENDED = "REALTIME_SUBSCRIPTION_ENDED"
    CHANGES_UNAVAILABLE = "CHANGES_UNAVAILABLE"
    INVALID_SINCE = "INVALID_SINCE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    PUBLISH_FAILED = "PUBLISH_FAILED"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    INVALID_PRESENCE_STATE = "INVALID_PRESENCE_STATE"
    PRESENCE_DISABLED = "PRESENCE_DISABLED"


class Auth(msgspec.Struct, forbid_unknown_fields=False):
    token: str
    id: str | int | None = None


class Subscribe(msgspec.Struct, forbid_unknown_fields=False):
    channel: str
    filter: dict[str, Any] | None = None
    id: str | int | None = None
    # resume after this point: a channel position (int >= 0) or a message id (uuid)
    since: int | str | None = None


def since_error(since: int | str | None) -> str | None:
    """Why a `since` value is refused; None when it is usable (or absent)."""
    if since is None:
        return None
    if isinstance(since, bool) or (isinstance(since, int) and not 0 <= since < 2**63):
        return "since must be a position (an integer >= 0) or a message id (a UUID)"
    if isinstance(since, str):
        try:
            uuid.UUID(since)
        except ValueError:
            return "since must be a position (an integer >= 0) or a message id (a UUID)"
    return None


class Unsubscribe(msgspec.Struct, forbid_unknown_fields=False):
    channel: str
    id: str | int | None = None


class Publish(msgspec.Struct, forbid_unknown_fields=False):
    channel: str
    event: str
    payload: dict[str, Any]
    id: str | int | None = None


class Ping(msgspec.Struct, forbid_unknown_fields=False):
    id: str | int | None = None


class PresenceSet(msgspec.Struct, forbid_unknown_fields=False):
    channel: str
    state: dict[str, Any] | None  # null clears it
    id: str | int | None = None


FRAME_TYPES: dict[str, type[msgspec.Struct]] = {
    "auth": Auth,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "publish": Publish,
    "ping": Ping,
    "presence_set": PresenceSet,
}

Frame = Auth | Subscribe | Unsubscribe | Publish | Ping | PresenceSet


class FrameError(Exception):
    """A frame that cannot be acted on; `request_id` is echoed when we could read it."""

    def __init__(
        self,
        code: str,
        message: str,
        request_id: str | int | None = None,
        channel: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.channel = channel


_json_decoder = msgspec.json.Decoder()


def _request_id(obj: dict) -> str | int | None:
    value = obj.get("id")
    if isinstance(value, str):
        if len(value) > MAX_REQUEST_ID_LENGTH:
            raise FrameError(
                ErrorCode.MALFORMED_FRAME,
                f"id must be at most {MAX_REQUEST_ID_LENGTH} characters (not echoed)",
            )
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value if MIN_REQUEST_ID <= value <= MAX_REQUEST_ID else None
    return None


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            stack.extend(value)  # the keys
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def payload_error(payload: dict[str, Any], raw: bytes | None = None) -> str | None:
    """Why a publish payload (already a dict) cannot be stored, or None. `raw`, the
    frame it came from, spares the search for U+0000 when it holds no such escape."""
    try:
        orjson.dumps(payload)  # what the publisher does: a few percent of the decoding
    except orjson.JSONEncodeError as exc:
        if "Recursion" in str(exc):
            return f"payload must not be nested more than {MAX_PAYLOAD_DEPTH} levels deep"
        if "Integer" in str(exc):
            return "payload integers must be between -2^63 and 2^64-1"
        return f"payload cannot be encoded: {exc}"
    if (raw is None or b"\\u0000" in raw) and _has_nul(payload):
        return "payload must not contain the character U+0000"
    return None


def _state_error(state: Any) -> str | None:
    """Why a presence state is refused (its size is the session's check)."""
    if state is None:
        return None
    if not isinstance(state, dict):
        return "state must be a JSON object (or null to clear it)"
    problem = payload_error(state)
    return problem.replace("payload", "state", 1) if problem is not None else None


def parse_frame(data: str | bytes, max_bytes: int) -> Frame:
    """Decode and validate one client frame, or raise FrameError."""
    if isinstance(data, str):
        try:
            raw = data.encode()
        except UnicodeEncodeError as exc:  # lone surrogates: not text a peer can send
            raise FrameError(ErrorCode.MALFORMED_FRAME, "Frame is not valid UTF-8") from exc
    else:
        raw = data
    size = len(raw)
    if size > max_bytes:
        raise FrameError(
            ErrorCode.FRAME_TOO_LARGE, f"Frame of {size} bytes exceeds the limit of {max_bytes}"
        )
    try:
        obj = _json_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise FrameError(ErrorCode.MALFORMED_FRAME, f"Frame is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise FrameError(ErrorCode.MALFORMED_FRAME, "Frame is not valid UTF-8") from exc
    except RecursionError as exc:
        raise FrameError(ErrorCode.MALFORMED_FRAME, "Frame is nested too deeply") from exc
    if not isinstance(obj, dict):
        raise FrameError(ErrorCode.MALFORMED_FRAME, "Frame must be a JSON object")
    request_id = _request_id(obj)
    frame_type = obj.get("type")
    if not isinstance(frame_type, str):
        raise FrameError(
            ErrorCode.MALFORMED_FRAME, "Frame must have a string field 'type'", request_id
        )
    struct_type = FRAME_TYPES.get(frame_type)
    if struct_type is None:
        raise FrameError(
            ErrorCode.UNKNOWN_TYPE,
            f"Unknown frame type {frame_type[:100]!r}; expected one of {', '.join(FRAME_TYPES)}",
            request_id,
        )
    channel = obj.get("channel") if isinstance(obj.get("channel"), str) else None
    if struct_type is Publish and "payload" in obj:
        payload = obj["payload"]
        if not isinstance(payload, dict):
            raise FrameError(
                ErrorCode.INVALID_PAYLOAD, "payload must be a JSON object", request_id, channel
            )
        problem = payload_error(payload, raw)
        if problem is not None:
            raise FrameError(ErrorCode.INVALID_PAYLOAD, problem, request_id, channel)
    if struct_type is PresenceSet and "state" in obj:
        problem = _state_error(obj["state"])
        if problem is not None:
            raise FrameError(ErrorCode.INVALID_PRESENCE_STATE, problem, request_id, channel)
    try:
        frame = msgspec.convert(obj, struct_type)
    except msgspec.ValidationError as exc:
        raise FrameError(
            ErrorCode.MALFORMED_FRAME, f"Invalid {frame_type} frame: {exc}", request_id, channel
        ) from exc
    except RecursionError as exc:
        raise FrameError(
            ErrorCode.MALFORMED_FRAME, "Frame is nested too deeply", request_id, channel
        ) from exc
    if isinstance(frame.id, int) and not MIN_REQUEST_ID <= frame.id <= MAX_REQUEST_ID:
        raise FrameError(
            ErrorCode.MALFORMED_FRAME,
            f"id must be a string or an integer between {MIN_REQUEST_ID} and {MAX_REQUEST_ID}",
            None,
            channel,
        )
    return frame


def event_name_error(event: str) -> str | None:
    """Why an event name is refused: empty, too long, or reserved for the server."""
    if not event.strip():
        return "event must be a non-empty string"
    if len(event) > MAX_EVENT_LENGTH:
        return f"event must be at most {MAX_EVENT_LENGTH} characters"
    if event.startswith(RESERVED_EVENT_PREFIXES):
        return f"event names starting with {', '.join(RESERVED_EVENT_PREFIXES)} are reserved"
    if _CONTROL.search(event):
        return "event must not contain control characters"
    return None


def encode(obj: dict) -> bytes:
    """JSON once, with orjson (about 15x faster than the standard library)."""
    return orjson.dumps(obj)


def error_frame(
    code: str,
    message: str,
    request_id: str | int | None = None,
    channel: str | None = None,
) -> dict:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if channel is not None and len(channel) <= MAX_CHANNEL_LENGTH:  # no longer echo
        frame["channel"] = channel
    if request_id is not None:
        frame["id"] = request_id
    return frame


def websocket_close_frame(code: int, reason: str) -> bytes:
    """An unmasked close frame (RFC 6455 section 5.5.1), written straight to a
    transport that is about to be dropped; the reason is cut to fit 125 bytes."""
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return struct.pack("!BB", 0x88, len(payload)) + payload


def websocket_text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final text frame (RFC 6455 section 5.2): what a
    server sends. Identical for every receiver, so it is built once per message."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload
