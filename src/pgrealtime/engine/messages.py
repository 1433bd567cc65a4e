"""A stored message, a system event, and the wire frame each protocol makes of them.

The engine knows no protocol: fan-out asks an item for `frame_for(codec)`, where
`codec` is the subscriber's protocol (its outbox carries it, e.g.
protocols/raw_ws/codec.py); the codec runs once per item and protocol and the bytes
are kept on the item, so every subscriber of that protocol gets the same bytes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from pgrealtime.util.timefmt import rfc3339

# Columns every reader of stored messages needs, the payload as JSON text.
SELECT_MESSAGES = (
    "SELECT id, channel_id, channel_name, event_name, payload::text AS payload_text,"
    " sender_type, sender_id, created_at, seq, position FROM realtime.messages"
)


class Codec(Protocol):
    """A protocol's wire bytes for what fan-out sends (one object per protocol)."""

    def message(self, message: StoredMessage) -> bytes: ...
    def event(self, event: ChannelEvent) -> bytes: ...
    def change(self, body: bytes) -> bytes:
        """A `db:` change, given as the raw protocol's `message` object in JSON."""
        ...


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    channel: str
    channel_id: str | None
    event: str
    payload_json: bytes  # the payload, JSON-encoded once
    sender_type: str
    sender_id: str | None
    created_at: datetime
    seq: int
    position: int  # 1, 2, 3, ... per channel name, in commit order
    # codec -> its bytes for this message, filled once per protocol by frame_for
    frames: dict[Codec, bytes] = field(default_factory=dict, compare=False, repr=False)

    def frame_for(self, codec: Codec) -> bytes:
        """This message as `codec`'s protocol sends it: encoded once, then shared."""
        frame = self.frames.get(codec)
        if frame is None:
            frame = self.frames[codec] = codec.message(self)
        return frame

    def body(self) -> bytes:
        """The `message` object as JSON (docs/protocol.md), payload spliced in as is."""
        return orjson.dumps(
            {
                "type": "message",
                "messageId": self.id,
                "channel": self.channel,
                "event": self.event,
                "payload": orjson.Fragment(self.payload_json),
                "senderId": self.sender_id,
                "senderType": self.sender_type,
                "timestamp": rfc3339(self.created_at),
                "position": self.position,
            }
        )


def stored_message_from_row(row: Any) -> StoredMessage:
    """From a realtime.messages row read with the payload as text."""
    return StoredMessage(
        id=str(row["id"]),
        channel=row["channel_name"],
        channel_id=str(row["channel_id"]) if row["channel_id"] else None,
        event=row["event_name"],
        payload_json=row["payload_text"].encode(),
        sender_type=row["sender_type"],
        sender_id=str(row["sender_id"]) if row["sender_id"] else None,
        created_at=row["created_at"],
        seq=row["seq"],
        position=row["position"],
    )


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """A system event on a channel that is not a stored message (presence join and
    leave, ...): `name` is "<kind>:<event>" ("presence:join"), `data` its fields
    ({"member": {...}}). Each protocol encodes it its own way (raw: a `{type: kind,
    event, channel, **data}` frame; Socket.IO: an event named `name` with `meta`)."""

    channel: str
    name: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: float = field(default_factory=time.time)  # epoch seconds
    frames: dict[Codec, bytes] = field(default_factory=dict, compare=False, repr=False)

    def frame_for(self, codec: Codec) -> bytes:
        frame = self.frames.get(codec)
        if frame is None:
            frame = self.frames[codec] = codec.event(self)
        return frame
