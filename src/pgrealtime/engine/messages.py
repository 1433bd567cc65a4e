"""A stored message, its JSON body, and the wire frame each protocol makes of it.

The engine knows no protocol: fan-out asks a message for `frame_for(encoder)`, the
protocol's encoder (given at assembly, e.g. protocols/raw_ws/encode.py) runs once per
message and the bytes are kept on it, so every subscriber gets the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from pgrealtime.util.timefmt import rfc3339

# Columns every reader of stored messages needs, the payload as JSON text.
SELECT_MESSAGES = (
    "SELECT id, channel_id, channel_name, event_name, payload::text AS payload_text,"
    " sender_type, sender_id, created_at, seq, position FROM realtime.messages"
)


FrameEncoder = Callable[["StoredMessage"], bytes]  # a protocol's wire bytes for a message


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
    # encoder -> its bytes for this message, filled once per protocol by frame_for
    frames: dict[FrameEncoder, bytes] = field(default_factory=dict, compare=False, repr=False)

    def frame_for(self, encoder: FrameEncoder) -> bytes:
        """This message as `encoder`'s protocol sends it: encoded once, then shared."""
        frame = self.frames.get(encoder)
        if frame is None:
            frame = self.frames[encoder] = encoder(self)
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
