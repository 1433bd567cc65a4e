"""The frames of the raw WebSocket protocol (docs/protocol.md), as typed values.

Server frames decode into msgspec structs tagged by `type`, so an application gets
attributes with editor completion (`message.payload`, `published.position`) instead of
dictionaries. Unknown fields are ignored and unknown frame types decode to `None`, so a
newer server can add both without breaking an older client. Client frames are plain
dictionaries encoded here, the one place that knows their field names.
"""

from __future__ import annotations

from typing import Any

import msgspec

RequestId = int | str


class _Frame(msgspec.Struct, tag_field="type", rename="camel", forbid_unknown_fields=False):
    """Base of every server frame: `type` is the tag, fields are camelCase on the wire."""


class AuthSuccess(_Frame, tag="auth_success"):
    """Reply to `auth`: `user_id` is the token's `sub`, `None` for anon and admins."""

    user_id: str | None = None
    id: RequestId | None = None


class Subscribed(_Frame, tag="subscribed"):
    """Reply to `subscribe`. `position` is the channel's position when the subscription
    started; with `since`, `recovered` says whether every missed message follows and
    `missed` how many do. `presence` is the snapshot `{"members": [...]}` on servers
    with presence."""

    channel: str
    subscription_id: str | None = None
    position: int | None = None
    recovered: bool | None = None
    missed: int | None = None
    presence: dict[str, Any] | None = None
    id: RequestId | None = None


class Unsubscribed(_Frame, tag="unsubscribed"):
    """Reply to `unsubscribe`: no message of the channel arrives after it."""

    channel: str
    id: RequestId | None = None


class Published(_Frame, tag="published"):
    """Reply to `publish` once the message is stored: its id and channel position."""

    message_id: str
    channel: str
    event: str
    position: int | None = None
    id: RequestId | None = None


class Message(_Frame, tag="message"):
    """A message on a subscribed channel. Messages of `db:` channels carry only
    `channel`, `event` and `payload` (the change, see docs/changes.md)."""

    channel: str
    event: str
    payload: Any = None
    message_id: str | None = None
    sender_id: str | None = None
    sender_type: str | None = None
    timestamp: str | None = None
    position: int | None = None


class Presence(_Frame, tag="presence"):
    """A presence change on a subscribed channel: `event` is join, leave or update and
    `member` is `{"type", "presenceId", "joinedAt", "state"?}`."""

    event: str
    channel: str
    member: dict[str, Any]


class PresenceUpdated(_Frame, tag="presence_updated"):
    """Reply to `presence_set`."""

    channel: str
    id: RequestId | None = None


class Pong(_Frame, tag="pong"):
    """Reply to `ping`."""

    id: RequestId | None = None


class Error(_Frame, tag="error"):
    """A refusal (with the request's `id`) or an unsolicited error (without one)."""

    code: str
    message: str = ""
    channel: str | None = None
    id: RequestId | None = None


ServerFrame = (
    AuthSuccess
    | Subscribed
    | Unsubscribed
    | Published
    | Message
    | Presence
    | PresenceUpdated
    | Pong
    | Error
)
_decoder = msgspec.json.Decoder(ServerFrame)
_encoder = msgspec.json.Encoder()


def decode(data: str | bytes) -> ServerFrame | None:
    """One server frame, or `None` for a frame type this client does not know."""
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError:
        return None


def encode(frame: dict[str, Any]) -> bytes:
    """A client frame as JSON bytes (sent as a text frame)."""
    return _encoder.encode(frame)


def auth(token: str, request_id: RequestId) -> dict[str, Any]:
    return {"type": "auth", "token": token, "id": request_id}


def subscribe(
    channel: str,
    request_id: RequestId,
    since: int | str | None = None,
    filter: dict[str, Any] | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "channel": channel, "id": request_id}
    if since is not None:
        frame["since"] = since
    if filter is not None:
        frame["filter"] = filter
    return frame


def unsubscribe(channel: str, request_id: RequestId) -> dict[str, Any]:
    return {"type": "unsubscribe", "channel": channel, "id": request_id}


def publish(channel: str, event: str, payload: Any, request_id: RequestId) -> dict[str, Any]:
    return {
        "type": "publish",
        "channel": channel,
        "event": event,
        "payload": payload,
        "id": request_id,
    }


def presence_set(
    channel: str, state: dict[str, Any] | None, request_id: RequestId
) -> dict[str, Any]:
    return {"type": "presence_set", "channel": channel, "state": state, "id": request_id}


def ping(request_id: RequestId) -> dict[str, Any]:
    return {"type": "ping", "id": request_id}
