"""Client frames in, server frames out (pure: no sockets).

A client frame is decoded once, its `type` dispatched, and its fields validated
with a precise error code, so a bad frame gets an error and the connection lives on.
Server frames are JSON encoded once and wrapped in a WebSocket frame once, so a
broadcast writes the same bytes to every subscriber.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import orjson

MAX_EVENT_LENGTH = 100
RESERVED_EVENT_PREFIXES = ("realtime:", "presence:", "system:", "phx_")


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
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class Auth(msgspec.Struct, forbid_unknown_fields=False):
    token: str
    id: str | int | None = None


class Subscribe(msgspec.Struct, forbid_unknown_fields=False):
    channel: str
    filter: dict[str, Any] | None = None
    id: str | int | None = None


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


FRAME_TYPES: dict[str, type[msgspec.Struct]] = {
    "auth": Auth,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "publish": Publish,
    "ping": Ping,
}

Frame = Auth | Subscribe | Unsubscribe | Publish | Ping


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
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def parse_frame(data: str | bytes, max_bytes: int) -> Frame:
    """Decode and validate one client frame, or raise FrameError."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise FrameError(
            ErrorCode.FRAME_TOO_LARGE, f"Frame of {size} bytes exceeds the limit of {max_bytes}"
        )
    try:
        obj = _json_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise FrameError(ErrorCode.MALFORMED_FRAME, f"Frame is not valid JSON: {exc}") from exc
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
            f"Unknown frame type {frame_type!r}; expected one of {', '.join(FRAME_TYPES)}",
            request_id,
        )
    channel = obj.get("channel") if isinstance(obj.get("channel"), str) else None
    if struct_type is Publish and "payload" in obj and not isinstance(obj["payload"], dict):
        raise FrameError(
            ErrorCode.INVALID_PAYLOAD, "payload must be a JSON object", request_id, channel
        )
    try:
        return msgspec.convert(obj, struct_type)
    except msgspec.ValidationError as exc:
        raise FrameError(
            ErrorCode.MALFORMED_FRAME, f"Invalid {frame_type} frame: {exc}", request_id, channel
        ) from exc


def event_name_error(event: str) -> str | None:
    """Why an event name is refused: empty, too long, or reserved for the server."""
    if not event.strip():
        return "event must be a non-empty string"
    if len(event) > MAX_EVENT_LENGTH:
        return f"event must be at most {MAX_EVENT_LENGTH} characters"
    if event.startswith(RESERVED_EVENT_PREFIXES):
        return f"event names starting with {', '.join(RESERVED_EVENT_PREFIXES)} are reserved"
    if any(ord(ch) < 32 for ch in event):
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
    if channel is not None:
        frame["channel"] = channel
    if request_id is not None:
        frame["id"] = request_id
    return frame


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
