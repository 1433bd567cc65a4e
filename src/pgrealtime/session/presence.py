"""A session's side of presence (engine/presence.py): who it is as a member, when it
joins and leaves, and the checks of a state it sets.

Session/core.py calls these at the few points where a subscription starts or ends,
so every way a subscription ends (unsubscribe, close, a dead peer cut by the
heartbeat, token expiry, a revoked or disabled channel, a different identity) is a
leave, and a user joins with its first connection's subscription only.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson

from pgrealtime.engine.presence import member_key

if TYPE_CHECKING:
    from pgrealtime.session.core import Session, Subscription

# Error codes of the refusals below (the same strings as the raw protocol's ErrorCode).
NOT_SUBSCRIBED = "REALTIME_NOT_SUBSCRIBED"
INVALID_CHANNEL = "INVALID_CHANNEL"
INVALID_STATE = "INVALID_PRESENCE_STATE"
RATE_LIMITED = "RATE_LIMITED"
PRESENCE_DISABLED = "PRESENCE_DISABLED"

Refusal = tuple[str, str]  # (error code, message)


def connection_id(session: Session) -> str:
    """The session's id as a presence connection (an anonymous member's presenceId),
    made on first use: an idle connection carries none."""
    if session.connection_id is None:
        session.connection_id = uuid.uuid4().hex
    return session.connection_id


def join(session: Session, channel: str, in_hub: bool) -> dict[str, Any] | None:
    """Join `channel`'s presence; the snapshot for `subscribed`, None if presence is
    off. Call before the outbox joins the hub (see Presence.join)."""
    presence = session.ctx.presence
    if presence is None or channel.startswith("db:"):
        return None
    assert session.principal is not None
    conn = connection_id(session)
    key = member_key(session.principal.user_id, conn)
    return presence.join(channel, key, conn, session.outbox, in_hub)


def snapshot(session: Session, channel: str) -> dict[str, Any] | None:
    """The snapshot for a repeated `subscribe` of a channel the session already has."""
    presence = session.ctx.presence
    if presence is None or channel.startswith("db:"):
        return None
    return presence.snapshot(channel)


def leave(session: Session, subscription: Subscription) -> None:
    """After the subscription left the hub."""
    presence = session.ctx.presence
    if presence is not None and subscription.table is None:
        presence.leave(subscription.channel, connection_id(session), session.outbox)


def rekey(session: Session) -> None:
    """The session's identity changed on a live connection (anon or the API key signed
    in as a user): each channel's member becomes the new one. Others see the old
    member leave and the new one join; this connection, already in the hub, sees both
    too, so its own view follows who it now is."""
    presence = session.ctx.presence
    if presence is None:
        return
    for subscription in list(session.subscriptions.values()):
        if subscription.table is not None:
            continue
        leave(session, subscription)
        in_hub = session.ctx.hub.is_subscribed(subscription.channel, session.outbox)
        join(session, subscription.channel, in_hub=in_hub)


def set_state(session: Session, channel: str, state: dict | None, now: float) -> Refusal | None:
    """A `presence_set`: checked, rate-limited, then sent to the channel as an update;
    why not, if refused. `state` is already known to be a JSON object or null."""
    presence = session.ctx.presence
    if presence is None:
        return PRESENCE_DISABLED, "Presence is turned off on this server"
    if channel.startswith("db:"):
        return INVALID_CHANNEL, "db: channels carry database changes; they have no presence"
    if channel not in session.subscriptions:
        return NOT_SUBSCRIBED, "Must subscribe to channel before setting presence state"
    size = len(orjson.dumps(state))
    if size > presence.max_state_bytes:
        return INVALID_STATE, (
            f"state is {size} bytes as JSON; at most {presence.max_state_bytes} are accepted"
        )
    limits = session.ctx.limits
    if session.presence_bucket is None:  # made full on first use, like at connect
        session.presence_bucket = limits.presence_bucket(now)  # still None: unlimited
    bucket = session.presence_bucket
    if bucket is not None and not bucket.take(now):
        return RATE_LIMITED, limits.presence_rate_limited_message()
    presence.update(channel, connection_id(session), state)
    return None
