"""Errors the client raises: the server's refusals carry its error code."""

from __future__ import annotations

from pgrealtime.client.frames import Error

# Codes after which trying again with the same token cannot succeed.
AUTH_CODES = frozenset({"INVALID_TOKEN", "TOKEN_EXPIRED", "INVALID_API_KEY", "NOT_AUTHENTICATED"})
# Codes that say "not now": a resubscribe after a reconnect is tried again later.
TRANSIENT_CODES = frozenset({"SERVICE_UNAVAILABLE", "RATE_LIMITED", "INTERNAL_ERROR"})


class RealtimeError(Exception):
    """Base of every error of pgrealtime.client."""


class ServerError(RealtimeError):
    """The server refused a request: `code` is its error code (docs/protocol.md,
    "Error codes"), `message` its explanation, `channel` the channel it named."""

    def __init__(self, code: str, message: str = "", channel: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.channel = channel

    @classmethod
    def from_frame(cls, frame: Error) -> ServerError:
        """The most specific error class for the frame's code."""
        kind = AuthenticationError if frame.code in AUTH_CODES else cls
        if frame.code == "REALTIME_SUBSCRIPTION_ENDED":
            kind = SubscriptionEnded
        return kind(frame.code, frame.message, frame.channel)


class AuthenticationError(ServerError):
    """The token was refused (INVALID_TOKEN, TOKEN_EXPIRED, INVALID_API_KEY). On a
    reconnect this ends the client: retrying the same token cannot succeed."""


class SubscriptionEnded(ServerError):
    """The server ended a subscription: its channel was deleted, disabled or changed
    (REALTIME_SUBSCRIPTION_ENDED), or it could not be resumed after a reconnect (the
    code says why). Raised by the subscription's iterator."""


class ConnectionLost(RealtimeError):
    """The connection broke before the reply arrived. For a publish the outcome is
    unknown: the message may have been stored (and delivered) all the same."""


class ClientClosed(RealtimeError):
    """The client was closed (or gave up reconnecting) before the request could be sent."""
