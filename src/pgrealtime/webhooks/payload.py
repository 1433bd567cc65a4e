"""What a webhook request carries: the JSON body and headers of one delivery (pure).

The body is InsForge's webhook payload, so receivers written for InsForge work
unchanged; the delivery id header lets a receiver drop a retry it already processed.
The body is rebuilt identically for every attempt: only the signing headers change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote
from uuid import UUID

import orjson

from pgrealtime.util.timefmt import rfc3339

USER_AGENT = "pgrealtime-webhooks/1"
EVENT_HEADER = "X-InsForge-Event"
CHANNEL_HEADER = "X-InsForge-Channel"
MESSAGE_ID_HEADER = "X-InsForge-Message-ID"
DELIVERY_ID_HEADER = "X-InsForge-Delivery-ID"
ATTEMPT_HEADER = "X-InsForge-Attempt"

_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


@dataclass(frozen=True)
class WebhookDelivery:
    """One claimed delivery and the message it carries."""

    id: UUID
    url: str
    host: str
    attempts: int  # number of this attempt, 1-based (counted when claimed)
    message_id: UUID
    channel_id: UUID | None
    channel_name: str
    event: str
    payload_json: str  # the message's payload as JSON text, embedded as is
    sender_id: UUID | None
    sender_type: str
    created_at: datetime
    # the channel's own signing secret, if it has one (else the server's signs)
    channel_secret: str | None = field(default=None, repr=False)


def body(delivery: WebhookDelivery) -> bytes:
    """The JSON body, in the field order of the specification."""
    return orjson.dumps(
        {
            "messageId": str(delivery.message_id),
            "channelId": str(delivery.channel_id) if delivery.channel_id else None,
            "channelName": delivery.channel_name,
            "event": delivery.event,
            "payload": orjson.Fragment(delivery.payload_json),
            "senderId": str(delivery.sender_id) if delivery.sender_id else None,
            "senderType": delivery.sender_type,
            "timestamp": rfc3339(delivery.created_at),
        }
    )


def header_value(text: str) -> str:
    """Header-safe text: printable ASCII passes unchanged; otherwise the value is
    percent-encoded (UTF-8), since a header cannot carry it (and must not carry
    CR/LF, which would let a channel or event name inject headers)."""
    if all(0x20 <= ord(ch) < 0x7F for ch in text):
        return text
    return quote(text, safe=_HEADER_SAFE)


def headers(delivery: WebhookDelivery) -> dict[str, str]:
    """Headers of every attempt (signing headers are added per attempt)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: header_value(delivery.event),
        CHANNEL_HEADER: header_value(delivery.channel_name),
        MESSAGE_ID_HEADER: str(delivery.message_id),
        DELIVERY_ID_HEADER: str(delivery.id),
        ATTEMPT_HEADER: str(delivery.attempts),
    }
