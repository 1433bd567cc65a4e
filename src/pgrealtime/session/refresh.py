"""Token refresh on a live connection, and the warning that one is due.

A client sends a new token before its current one expires (raw protocol: `auth` again;
Socket.IO: `realtime:auth`). `refresh` is the one entry point for both: if the token
names the same user, the session takes its claims and expiry, every subscription is
checked again against the new claims (those now refused end with
REALTIME_SUBSCRIPTION_ENDED), and the new expiry is returned. A token of another user
is refused: a connection that was someone stays that someone (a new user opens a new
connection). `warn_expiring` is what the warning clock does to a session
`--token-expiry-warning` seconds before its token's end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from pgrealtime.auth import Principal
from pgrealtime.db import errors as db_errors
from pgrealtime.session import presence

if TYPE_CHECKING:
    from pgrealtime.session.core import Session

log = logging.getLogger(__name__)

ENDED_REASON = "Subscription ended: the refreshed token no longer allows it"


class RefreshRefused(Exception):
    """The new token cannot replace the session's: `code` and `message` for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def same_user(current: Principal, new: Principal) -> bool:
    """A session of a user stays that user's; one that names nobody (anon, the admin
    key) may take any verified identity, since every subscription is checked again."""
    return current.user_id is None or new.user_id == current.user_id


def auth_success(principal: Principal) -> dict[str, Any]:
    """The reply to a successful `auth`: who, and until when (epoch seconds; null for
    a token without exp and the API key)."""
    expires_at = principal.expires_at
    if expires_at is not None and expires_at.is_integer():
        expires_at = int(expires_at)  # as the token's exp: 1700000000, not 1700000000.0
    return {"type": "auth_success", "userId": principal.user_id, "expiresAt": expires_at}


async def refresh(session: Session, principal: Principal) -> list[str]:
    """Replace an authenticated session's principal with `principal`; returns the
    channels whose subscriptions ended. Raises RefreshRefused for another user."""
    current = session.principal
    assert current is not None, "refresh is for an authenticated session"
    if not same_user(current, principal):
        raise RefreshRefused(
            "INVALID_TOKEN",
            "Refresh refused: the token names another user; open a new connection to"
            " change user (the connection keeps its current token)",
        )
    session.principal = principal
    session._schedule_expiry(principal)  # the session's own clock entries
    if current.user_id != principal.user_id:  # signed in: another presence member
        presence.rekey(session)
    ctx = session.ctx
    if current.claims_json == principal.claims_json and current.role == principal.role:
        return []
    for subscription in session.subscriptions.values():
        if subscription.table is not None:  # db: RLS checks use the new claims
            ctx.db_channels.refresh_claims(subscription.table, principal)
    return await _recheck_channels(session, principal)


async def _recheck_channels(session: Session, principal: Principal) -> list[str]:
    """The subscribe check again for every channel subscription, in one batch (the
    checks batch themselves, engine/authorize.py). A check that cannot run (database
    unavailable) keeps the subscription: it was allowed, and nothing says otherwise."""
    checked = [(c, s) for c, s in session.subscriptions.items() if s.channel_id is not None]
    if not checked:
        return []
    results = await asyncio.gather(
        *(session.ctx.subscribe_checks.check(principal, channel) for channel, _ in checked),
        return_exceptions=True,
    )
    ended = []
    for (channel, subscription), result in zip(checked, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, db_errors.UNAVAILABLE):
                raise result
            log.warning("subscription to %s not re-checked after a refresh: %s", channel,
                        result)  # fmt: skip
            continue
        if session.principal is not principal or session.subscriptions.get(channel) is not (
            subscription
        ):
            continue  # refreshed again, unsubscribed or ended meanwhile
        if result.status != "ok" or result.channel_id != subscription.channel_id:
            session.end_subscription(channel, ENDED_REASON)
            ended.append(channel)
    return ended


def warn_expiring(session: Session) -> None:
    """`--token-expiry-warning` seconds before the token's end: tell the client, so it
    refreshes before the cut."""
    deadline = session.expires_at
    if deadline is None or session.outbox.closed:
        return
    expires_in = max(0, round(deadline - time.time()))
    session.reply({"type": "token_expiring", "expiresIn": expires_in}, None)
