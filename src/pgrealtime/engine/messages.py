"""A stored message, and the frame subscribers receive for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pgrealtime.protocols.raw_ws.frames import websocket_text_frame
from pgrealtime.util.timefmt import rfc3339

# Columns every reader of stored messages needs, the payload as JSON text.
SELECT_MESSAGES = (
    "SELECT id, channel_id, channel_name, event_name, payload::text AS payload_text,"
    " sender_type, sender_id, created_at, seq, position FROM realtime.messages"
)


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

    def frame(self) -> bytes:
        """The `message` frame, encoded once and shared by every subscriber."""
        body = orjson.dumps(
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
        return websocket_text_frame(body)


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
