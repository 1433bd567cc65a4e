"""What a client asks of its session, whatever the protocol it speaks.

Each protocol adapter decodes its wire format into these requests (the raw protocol
from JSON frames, Socket.IO from event packets), and the checks on their fields live
here once, so both protocols refuse the same inputs with the same words.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec
import orjson

MAX_EVENT_LENGTH = 100
RESERVED_EVENT_PREFIXES = ("realtime:", "presence:", "system:", "phx_")
# Payloads are stored as jsonb and encoded with orjson: no U+0000 (jsonb refuses it),
# integers that fit in 64 bits (orjson's range), and a nesting depth orjson accepts.
MIN_PAYLOAD_INT, MAX_PAYLOAD_INT = -(2**63), 2**64 - 1
MAX_PAYLOAD_DEPTH = 254  # orjson's limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
# Names Socket.IO reserves on the client (a message event so named would be taken for
# the library's own); refused on every protocol, as a client may be on either.
RESERVED_EVENT_NAMES = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)


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


def state_error(state: Any) -> str | None:
    """Why a presence state is refused (its size is the session's check)."""
    if state is None:
        return None
    if not isinstance(state, dict):
        return "state must be a JSON object (or null to clear it)"
    problem = payload_error(state)
    return problem.replace("payload", "state", 1) if problem is not None else None


def event_name_error(event: str) -> str | None:
    """Why an event name is refused: empty, too long, or one that would forge a system
    event (the server's own, or Socket.IO's) to the other subscribers."""
    if not event.strip():
        return "event must be a non-empty string"
    if len(event) > MAX_EVENT_LENGTH:
        return f"event must be at most {MAX_EVENT_LENGTH} characters"
    if event.startswith(RESERVED_EVENT_PREFIXES):
        return f"event names starting with {', '.join(RESERVED_EVENT_PREFIXES)} are reserved"
    if event in RESERVED_EVENT_NAMES:
        return f"event name {event!r} is reserved (Socket.IO uses it for its own events)"
    if _CONTROL.search(event):
        return "event must not contain control characters"
    return None


Request = Auth | Subscribe | Unsubscribe | Publish | Ping | PresenceSet
