"""One client connection's rules: authenticate, subscribe, unsubscribe, publish.

The session knows nothing of sockets nor of wire formats: a protocol adapter decodes
its frames into requests (session/requests.py) and hands them to `handle_request`;
the session answers with neutral replies (dicts with a `type`) and refusals
(session/errors.py) through the adapter's `Replies`, which encodes them. So each
handler reads like the part of the specification it implements, once for every
protocol (protocols/raw_ws, protocols/socketio).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import orjson

from pgrealtime.auth import Authenticator, AuthError, Principal
from pgrealtime.changes.filters import FilterError
from pgrealtime.changes.route import ChangesUnavailable, DbChannels, TableSubscriber
from pgrealtime.changes.visibility import SubscriptionDenied
from pgrealtime.config import DEFAULT_MAX_PAYLOAD_BYTES
from pgrealtime.db import errors as db_errors
from pgrealtime.engine.authorize import SubscribeChecks
from pgrealtime.engine.channels import MAX_CHANNEL_LENGTH, channel_name_error
from pgrealtime.engine.hub import Hub, Outbox
from pgrealtime.engine.limits import UNLIMITED, ConnectionLimits, TokenBucket, UserBudgets
from pgrealtime.engine.ordering import Ordering
from pgrealtime.engine.presence import Presence
from pgrealtime.engine.publisher import Publisher, PublishRefused
from pgrealtime.engine.resume import HistoryPlan
from pgrealtime.engine.subscribe import Membership, Refused, Subscriptions
from pgrealtime.session import errors, presence, refresh
from pgrealtime.session import requests as rq
from pgrealtime.session.errors import ErrorCode, Refusal
from pgrealtime.session.expiry import ExpiryClock

log = logging.getLogger(__name__)


RequestId = str | int | None  # echoed in the reply (raw `id`, Socket.IO ack id)


class Replies(Protocol):
    """A protocol's encoder of one connection's replies, given by its adapter."""

    protocol: str  # its name: the metrics label of its publishes and connections

    def reply(self, reply: dict, request_id: RequestId) -> None:
        """`reply` is a raw-protocol-shaped dict ({"type": "subscribed", ...})."""

    def error(self, code: str, message: str, request_id: RequestId, channel: str | None) -> None:
        """A refusal (or a server-side end) with its code from session/errors.py."""


@dataclass(slots=True)
class Subscription:
    id: str
    channel: str
    channel_id: str | None  # the governing channel row; None for db: channels
    table: TableSubscriber | None = None  # set for db: channels
    membership: Membership | None = None  # its place in the channel's delivery (engine)


@dataclass
class SessionContext:
    """What every session shares: the server's parts."""

    hub: Hub
    authenticator: Authenticator
    publisher: Publisher
    pool: asyncpg.Pool
    max_frame_bytes: int
    db_channels: DbChannels
    delivery: Ordering
    subscribe_checks: SubscribeChecks
    expiry: ExpiryClock
    expiry_warnings: ExpiryClock | None = None  # token_expiring frames (None: off)
    token_expiry_warning: float = 0.0  # seconds before expiry they are sent
    max_recover: int = 10_000  # messages sent at most when resuming with `since`
    max_recover_bytes: int = 16 * 1024 * 1024  # and bytes of frames
    max_recover_live_bytes: int = 4 * 1024 * 1024  # live messages held during one
    recover_read_timeout: float = 10.0  # seconds a history read may take
    # history reads in flight for the whole process (a resume holds it per page read)
    recoveries: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    limits: ConnectionLimits = UNLIMITED  # publish rate, subscriptions per connection
    user_budgets: UserBudgets = field(default_factory=UserBudgets)  # off unless rates set
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    presence: Presence | None = None  # None: presence is off (--no-presence)
    errors: Counter[str] = field(default_factory=Counter)  # refusals sent, by code
    channels: Subscriptions = field(init=False)  # the engine's subscribe entry point

    def __post_init__(self) -> None:
        self.channels = Subscriptions(
            self.hub,
            self.delivery,
            self.pool,
            self.subscribe_checks,
            recoveries=self.recoveries,
            max_recover=self.max_recover,
            max_recover_bytes=self.max_recover_bytes,
            max_recover_live_bytes=self.max_recover_live_bytes,
            read_timeout=self.recover_read_timeout,
        )


class Session:
    # slots: thousands of idle sessions each carried a __dict__
    __slots__ = ("_close", "_expires_at", "connection_id", "ctx", "frame_bucket", "outbox",
                 "presence_bucket", "principal", "publish_bucket", "replies",
                 "subscribe_bucket", "subscriptions")  # fmt: skip

    def __init__(
        self,
        ctx: SessionContext,
        outbox: Outbox,
        close: Callable[[int, str], None],
        replies: Replies,
    ) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.replies = replies
        self._close = close
        self.principal: Principal | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self._expires_at: float | None = None  # watched by ctx.expiry
        now = time.monotonic()
        self.publish_bucket = ctx.limits.publish_bucket(now)
        self.frame_bucket = ctx.limits.frame_bucket(now)
        self.subscribe_bucket = ctx.limits.subscribe_bucket(now)
        # made when first needed (session/presence.py): most connections never do
        self.presence_bucket: TokenBucket | None = None
        self.connection_id: str | None = None

    # -- output ---------------------------------------------------------------
    def send_error(
        self,
        code: str,
        message: str,
        request_id: RequestId = None,
        channel: str | None = None,
    ) -> None:
        self.ctx.errors[code] += 1
        self.replies.error(code, message, request_id, channel)

    def refuse(
        self, refusal: Refusal, request_id: RequestId, channel: str | None = None, **fields: object
    ) -> None:
        """Answer with one of the table's refusals (session/errors.py)."""
        self.send_error(refusal.code, refusal.message.format(**fields), request_id, channel)

    def reply(self, frame: dict, request_id: RequestId) -> None:
        self.replies.reply(frame, request_id)

    # -- input ----------------------------------------------------------------
    def take_frame_token(self) -> bool:
        """Every frame spends a token, a malformed one too: False when none is left
        (the adapter then answers `frame_rate_limited` instead of the frame)."""
        return self.frame_bucket is None or self.frame_bucket.take(time.monotonic())

    def frame_rate_limited(self, request_id: RequestId, channel: str | None) -> None:
        message = self.ctx.limits.frame_rate_limited_message()
        self.send_error(ErrorCode.RATE_LIMITED, message, request_id, channel)

    async def handle_request(self, request: rq.Request) -> None:
        """Act on one decoded request (its frame token already taken)."""
        try:
            await self._dispatch(request)
        except Exception:  # a bug must cost one frame, not the connection
            log.exception("handling a %s frame failed", type(request).__name__.lower())
            self.refuse(errors.INTERNAL_ERROR, request.id, getattr(request, "channel", None))

    async def _dispatch(self, frame: rq.Request) -> None:
        if isinstance(frame, rq.Auth):
            await self.on_auth(frame)
        elif isinstance(frame, rq.Ping):
            self.reply({"type": "pong"}, frame.id)
        elif self.principal is None:
            self.refuse(errors.NOT_AUTHENTICATED, frame.id, getattr(frame, "channel", None))
        elif isinstance(frame, rq.Subscribe):
            await self.on_subscribe(frame)
        elif isinstance(frame, rq.Unsubscribe):
            self.on_unsubscribe(frame)
        elif isinstance(frame, rq.Publish):
            self.on_publish(frame)
        elif isinstance(frame, rq.PresenceSet):
            self.on_presence_set(frame)

    async def on_auth(self, frame: rq.Auth) -> None:
        try:
            principal = await self.authenticate(frame.token)
        except (AuthError, refresh.RefreshRefused) as exc:
            self.send_error(exc.code, exc.message, frame.id)
            return
        if principal is not None:
            self.reply(refresh.auth_success(principal), frame.id)

    async def authenticate(self, token: str) -> Principal | None:
        """Take on the identity `token` proves (or raise AuthError or RefreshRefused):
        what an `auth` frame does, what Socket.IO's handshake does before any event,
        and a refresh on a live session (session/refresh.py). None when the
        connection closed while the keys were fetched."""
        principal = await self.ctx.authenticator.authenticate_async(token)
        if self.principal is not None:  # a refresh in place
            await refresh.refresh(self, principal)
        if self.outbox.closed:  # closed meanwhile: watch no expiry
            return None
        self.principal = principal
        self._schedule_expiry(principal)
        return principal

    @property
    def expires_at(self) -> float | None:
        """When the current token expires (epoch seconds), if it does."""
        return self._expires_at

    def _schedule_expiry(self, principal: Principal) -> None:
        self._unwatch_expiry()
        if principal.expires_at is not None:
            self._expires_at = principal.expires_at
            self.ctx.expiry.add(self, principal.expires_at)
            if self.ctx.expiry_warnings is not None:
                warn_at = principal.expires_at - self.ctx.token_expiry_warning
                self.ctx.expiry_warnings.add(self, warn_at)

    def _unwatch_expiry(self) -> None:
        if self._expires_at is not None:
            self.ctx.expiry.remove(self, self._expires_at)
            if self.ctx.expiry_warnings is not None:
                warn_at = self._expires_at - self.ctx.token_expiry_warning
                self.ctx.expiry_warnings.remove(self, warn_at)
            self._expires_at = None

    def on_token_expired(self) -> None:
        self._expires_at = None
        self.refuse(errors.TOKEN_EXPIRED, None)
        self.drop_all_subscriptions()
        self.close(4001, "token expired")

    async def on_subscribe(self, frame: rq.Subscribe) -> None:
        channel = frame.channel
        if self.subscribe_bucket is not None and not self.subscribe_bucket.take(time.monotonic()):
            message = self.ctx.limits.subscribe_rate_limited_message()
            self.send_error(ErrorCode.RATE_LIMITED, message, frame.id, channel)
            return
        problem = channel_name_error(channel)
        if problem is not None:
            self.send_error(ErrorCode.INVALID_CHANNEL, problem, frame.id, channel)
            return
        problem = rq.since_error(frame.since)
        if problem is not None:
            self.send_error(ErrorCode.INVALID_SINCE, problem, frame.id, channel)
            return
        if frame.since is not None and channel.startswith("db:"):
            self.refuse(errors.SINCE_ON_TABLE, frame.id, channel)
            return
        existing = self.subscriptions.get(channel)
        if existing is not None:
            reply: dict = {"type": "subscribed", "channel": channel, "subscriptionId": existing.id}
            if existing.table is None:
                reply["position"] = self.ctx.delivery.last_position(channel) or 0
                if (snapshot := presence.snapshot(self, channel)) is not None:
                    reply["presence"] = snapshot
            self.reply(reply, frame.id)
            return
        if self.ctx.limits.too_many_subscriptions(len(self.subscriptions)):
            message = self.ctx.limits.too_many_subscriptions_message()
            self.send_error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, message, frame.id, channel)
            return
        assert self.principal is not None
        if channel.startswith("db:"):
            await self.on_subscribe_table(frame)
            return
        sink = _SubscribeSink(self, frame)
        try:
            await self.ctx.channels.subscribe(self.principal, channel, frame.since, sink)
        except Refused as exc:
            if exc.status == "no_channel":
                self.refuse(errors.CHANNEL_NOT_FOUND, frame.id, channel, name=channel)
            else:
                self.refuse(errors.SUBSCRIBE_UNAUTHORIZED, frame.id, channel)
        except db_errors.UNAVAILABLE as exc:
            self._subscribe_unavailable(exc, frame.id, channel)

    def _accept(
        self,
        frame: rq.Subscribe,
        channel_id: str,
        membership: Membership,
        history: HistoryPlan | None,
    ) -> Subscription | None:
        """Record the subscription and answer `subscribed` (before any history)."""
        channel = frame.channel
        if self.outbox.closed or channel in self.subscriptions:
            return None
        subscription = Subscription(uuid.uuid4().hex, channel, channel_id, membership=membership)
        self.subscriptions[channel] = subscription
        snapshot = presence.join(self, channel, in_hub=history is None)  # before the hub
        reply: dict = {"type": "subscribed", "channel": channel, "subscriptionId": subscription.id}
        if history is None:
            reply["position"] = self.ctx.delivery.last_position(channel) or 0
        else:
            reply["position"] = history.position
            reply["recovered"] = history.recovered
            reply["missed"] = history.count
        if snapshot is not None:
            reply["presence"] = snapshot
        self.reply(reply, frame.id)
        return subscription

    def _subscribe_unavailable(
        self, exc: BaseException, request_id: RequestId, channel: str
    ) -> None:
        log.warning("subscribe check failed: %s", exc)
        self.refuse(errors.SUBSCRIBE_UNAVAILABLE, request_id, channel)

    async def on_subscribe_table(self, frame: rq.Subscribe) -> None:
        """`db:<table>`: committed changes of that table the caller may SELECT."""
        assert self.principal is not None
        channel = frame.channel
        try:
            table = await self.ctx.db_channels.subscribe(
                self.principal, channel, frame.filter, self.outbox
            )
        except ChangesUnavailable as exc:
            self.send_error(ErrorCode.CHANGES_UNAVAILABLE, str(exc), frame.id, channel)
            return
        except (FilterError, SubscriptionDenied) as exc:
            self.send_error(exc.code, str(exc), frame.id, channel)
            return
        except db_errors.UNAVAILABLE as exc:
            self._subscribe_unavailable(exc, frame.id, channel)
            return
        if self.outbox.closed or channel in self.subscriptions:
            self.ctx.db_channels.unsubscribe(table)
            return
        subscription = Subscription(uuid.uuid4().hex, channel, None, table)
        self.subscriptions[channel] = subscription
        self.reply(
            {"type": "subscribed", "channel": channel, "subscriptionId": subscription.id},
            frame.id,
        )

    def _release(self, subscription: Subscription) -> None:
        if subscription.table is not None:
            self.ctx.db_channels.unsubscribe(subscription.table)
        elif subscription.membership is not None:
            self.ctx.channels.leave(subscription.membership)
            presence.leave(self, subscription)  # after the hub: the leaver gets no frame

    def on_unsubscribe(self, frame: rq.Unsubscribe) -> None:
        if len(frame.channel) > MAX_CHANNEL_LENGTH:  # never a subscription; not echoed
            self.refuse(errors.CHANNEL_TOO_LONG, frame.id, limit=MAX_CHANNEL_LENGTH)
            return
        subscription = self.subscriptions.pop(frame.channel, None)
        if subscription is not None:
            self._release(subscription)
        self.reply({"type": "unsubscribed", "channel": frame.channel}, frame.id)

    def on_publish(self, frame: rq.Publish) -> None:
        channel = frame.channel
        if channel not in self.subscriptions:
            self.refuse(errors.NOT_SUBSCRIBED, frame.id, channel)
            return
        if channel.startswith("db:"):
            self.refuse(errors.PUBLISH_TO_TABLE, frame.id, channel)
            return
        problem = rq.event_name_error(frame.event)
        if problem is not None:
            self.send_error(ErrorCode.INVALID_EVENT, problem, frame.id, channel)
            return
        payload_json = orjson.dumps(frame.payload)  # the publisher needs it so anyway
        if len(payload_json) > self.ctx.max_payload_bytes:
            size, limit = len(payload_json), self.ctx.max_payload_bytes
            self.refuse(errors.PAYLOAD_TOO_LARGE, frame.id, channel, size=size, limit=limit)
            return
        now = time.monotonic()
        if self.publish_bucket is not None and not self.publish_bucket.take(now):
            message = self.ctx.limits.rate_limited_message()
            self.send_error(ErrorCode.RATE_LIMITED, message, frame.id, channel)
            return
        principal = self.principal
        assert principal is not None
        budgets = self.ctx.user_budgets
        if budgets.enabled and principal.user_id is not None and not principal.is_admin:
            refusal = budgets.refusal(principal.user_id, len(payload_json), now)
            if refusal is not None:
                self.send_error(ErrorCode.RATE_LIMITED, refusal, frame.id, channel)
                return
        stored = self.ctx.publisher.publish_json(
            principal, channel, frame.event, payload_json, self.replies.protocol
        )
        stored.add_done_callback(lambda f: self._on_published(f, frame))

    def on_presence_set(self, frame: rq.PresenceSet) -> None:
        refusal = presence.set_state(self, frame.channel, frame.state, time.monotonic())
        if refusal is not None:
            self.send_error(*refusal, frame.id, frame.channel)
            return
        self.reply({"type": "presence_updated", "channel": frame.channel}, frame.id)

    def _on_published(self, task: asyncio.Future, frame: rq.Publish) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            message = task.result()
            self.reply(
                {
                    "type": "published",
                    "messageId": message.id,
                    "channel": frame.channel,
                    "event": frame.event,
                    "position": message.position,
                },
                frame.id,
            )
            return
        channel = frame.channel
        if isinstance(exc, PublishRefused):
            if exc.status in ("unavailable", "failed"):
                log.warning("publish not stored (%s): %s", exc.status, exc.detail)
            refusal = errors.PUBLISH_REFUSED.get(exc.status, errors.PUBLISH_REFUSED_OTHERWISE)
            self.refuse(refusal, frame.id, channel, name=channel, sqlstate=exc.sqlstate)
        elif isinstance(exc, db_errors.UNAVAILABLE):
            log.warning("publish failed: %s", exc)
            self.refuse(errors.PUBLISH_UNAVAILABLE, frame.id, channel)
        else:
            log.error("publish failed", exc_info=exc)
            self.refuse(errors.PUBLISH_FAILED, frame.id, channel)

    # -- lifecycle ------------------------------------------------------------
    def end_subscription(self, channel: str, reason: str) -> None:
        """The server ends a subscription (channel deleted or disabled) and says why."""
        subscription = self.subscriptions.pop(channel, None)
        if subscription is None:
            return
        self._release(subscription)
        self.send_error(ErrorCode.SUBSCRIPTION_ENDED, reason, None, channel)

    def drop_all_subscriptions(self) -> None:
        for subscription in self.subscriptions.values():
            self._release(subscription)
        self.subscriptions.clear()

    def close(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code and reason, after
        writing what is already queued for it (such as the frame that says why)."""
        self.outbox.flush()
        self._close(code, reason)

    def closed(self) -> None:
        self._unwatch_expiry()
        self.outbox.closed = True
        self.drop_all_subscriptions()


class _SubscribeSink:
    """One subscribe request's side of engine/subscribe.Sink."""

    __slots__ = ("frame", "outbox", "session")

    def __init__(self, session: Session, frame: rq.Subscribe) -> None:
        self.session = session
        self.frame = frame
        self.outbox = session.outbox

    def accept(
        self, channel_id: str, membership: Membership, plan: HistoryPlan | None
    ) -> Subscription | None:
        return self.session._accept(self.frame, channel_id, membership, plan)

    def wanted(self, token: Subscription) -> bool:
        return self.session.subscriptions.get(self.frame.channel) is token

    def lost(self, token: Subscription, exc: BaseException) -> None:
        session = self.session
        if session.subscriptions.get(self.frame.channel) is token:
            del session.subscriptions[self.frame.channel]
            presence.leave(session, token)  # the engine has left the channel
        if db_errors.transient(exc):
            session.refuse(errors.RESUME_UNAVAILABLE, None, self.frame.channel)
