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

from pgrealtime.engine.channels import MAX_CHANNEL_LENGTH

# The requests and their checks are protocol-neutral (session/); re-exported here, the
# raw protocol's decoder, for the tests and tools that speak it.
from pgrealtime.session.errors import ErrorCode
from pgrealtime.session.requests import (
    MAX_EVENT_LENGTH,
    MAX_PAYLOAD_DEPTH,
    MAX_PAYLOAD_INT,
    MIN_PAYLOAD_INT,
    RESERVED_EVENT_NAMES,
    RESERVED_EVENT_PREFIXES,
    Auth,
    Ping,
    PresenceSet,
    Publish,
    Subscribe,
    Unsubscribe,
    event_name_error,
    payload_error,
    since_error,
    state_error,
)

__all__ = [
    "MAX_EVENT_LENGTH",
    "MAX_PAYLOAD_DEPTH",
    "MAX_PAYLOAD_INT",
    "MIN_PAYLOAD_INT",
    "RESERVED_EVENT_NAMES",
    "RESERVED_EVENT_PREFIXES",
    "Auth",
    "ErrorCode",
    "FrameError",
    "Ping",
    "PresenceSet",
    "Publish",
    "Subscribe",
    "Unsubscribe",
    "event_name_error",
    "parse_frame",
    "payload_error",
    "since_error",
]

# Request ids are echoed back: integers must fit where JSON encoders put them, and
# strings are short (an id of a whole frame's size would be echoed whole, to anyone).
MIN_REQUEST_ID, MAX_REQUEST_ID = -(2**63), 2**63 - 1
MAX_REQUEST_ID_LENGTH = 128

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
        problem = state_error(obj["state"])
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
