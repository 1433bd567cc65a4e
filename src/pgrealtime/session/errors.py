"""Every refusal a session can answer, as (code, message), written once.

The session names a refusal; each protocol adapter encodes it (an `error` frame on the
raw protocol, an ack with `ok: false` or a `realtime:error` event on Socket.IO). The
codes are the same on every protocol, so a client's error handling does not depend on
how it connected.
"""

from __future__ import annotations

from typing import NamedTuple


class ErrorCode:
    """Every error carries one of these."""

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


class Refusal(NamedTuple):
    code: str
    message: str  # a str.format template over the refusal's fields


# The fixed refusals; limits, credentials and frame decoding bring their own messages.
NOT_AUTHENTICATED = Refusal(
    ErrorCode.NOT_AUTHENTICATED, 'Not authenticated: send {{"type":"auth","token":...}} first'
)
INTERNAL_ERROR = Refusal(ErrorCode.INTERNAL_ERROR, "Internal error while handling this frame")
TOKEN_EXPIRED = Refusal(
    ErrorCode.TOKEN_EXPIRED, "Token expired: send a fresh auth frame to stay connected"
)
CHANNEL_NOT_FOUND = Refusal(ErrorCode.CHANNEL_NOT_FOUND, "No enabled channel matches {name!r}")
SUBSCRIBE_UNAUTHORIZED = Refusal(
    ErrorCode.UNAUTHORIZED, "Not authorized to subscribe to this channel"
)
SUBSCRIBE_UNAVAILABLE = Refusal(
    ErrorCode.SERVICE_UNAVAILABLE, "Failed to subscribe to channel: the database is unavailable"
)
SINCE_ON_TABLE = Refusal(
    ErrorCode.INVALID_SINCE, "since is not supported on db: channels (changes are not stored)"
)
RESUME_UNAVAILABLE = Refusal(
    ErrorCode.SERVICE_UNAVAILABLE,
    "Resume failed: the database is unavailable; the subscription ended, subscribe again"
    " with since set to the last position received",
)
CHANNEL_TOO_LONG = Refusal(ErrorCode.INVALID_CHANNEL, "channel must be at most {limit} characters")
NOT_SUBSCRIBED = Refusal(
    ErrorCode.NOT_SUBSCRIBED, "Must subscribe to channel before publishing messages"
)
PUBLISH_TO_TABLE = Refusal(
    ErrorCode.INVALID_CHANNEL,
    "db: channels carry database changes; they cannot be published to",
)
PAYLOAD_TOO_LARGE = Refusal(
    ErrorCode.INVALID_PAYLOAD, "payload is {size} bytes as JSON; at most {limit} are accepted"
)
PUBLISH_UNAUTHORIZED = Refusal(ErrorCode.UNAUTHORIZED, "Not authorized to publish to this channel")
PUBLISH_UNAVAILABLE = Refusal(
    ErrorCode.SERVICE_UNAVAILABLE, "Failed to publish message: the database is unavailable"
)
PUBLISH_FAILED = Refusal(ErrorCode.INTERNAL_ERROR, "Failed to publish message")

# A refused publish, by PublishRefused.status (engine/publisher.py).
PUBLISH_REFUSED = {
    "no_channel": CHANNEL_NOT_FOUND,
    "unavailable": Refusal(
        ErrorCode.SERVICE_UNAVAILABLE,
        "Failed to publish message: the database could not store it right now"
        " (SQLSTATE {sqlstate}); it was not stored, try again",
    ),
    "failed": Refusal(
        ErrorCode.PUBLISH_FAILED,
        "Failed to publish message: the database refused it (SQLSTATE {sqlstate}); it was not"
        " stored",
    ),
}
PUBLISH_REFUSED_OTHERWISE = PUBLISH_UNAUTHORIZED  # the policy said no
