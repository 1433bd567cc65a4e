"""One WebSocket connection's rules: authenticate, subscribe, unsubscribe, publish.

The session knows nothing of sockets: it receives text frames and sends encoded
frames through its Outbox, so each handler reads like the part of the
specification it implements.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

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
from pgrealtime.engine.ordering import Ordering, Recovery
from pgrealtime.engine.presence import Presence
from pgrealtime.engine.publisher import Publisher, PublishRefused
from pgrealtime.engine.resume import HistoryPlan, plan_history, read_page
from pgrealtime.protocols.raw_ws import frames
from pgrealtime.protocols.raw_ws.expiry import ExpiryClock
from pgrealtime.protocols.raw_ws.frames import ErrorCode, FrameError
from pgrealtime.session import presence, refresh

log = logging.getLogger(__name__)

RESUME_POLL_SECONDS = 0.02  # how often a paged resume looks whether its reader caught up


@dataclass(slots=True)
class Subscription:
    id: str
    channel: str
    channel_id: str | None  # the governing channel row; None for db: channels
    table: TableSubscriber | None = None  # set for db: channels
    recovery: Recovery | None = None  # set while a resume catches up with live messages


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
    # history reads in flight for the whole process (a resume holds it per page read)
    recoveries: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    limits: ConnectionLimits = UNLIMITED  # publish rate, subscriptions per connection
    user_budgets: UserBudgets = field(default_factory=UserBudgets)  # off unless rates set
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    presence: Presence | None = None  # None: presence is off (--no-presence)
    errors: Counter[str] = field(default_factory=Counter)  # error frames sent, by code


class Session:
    # slots: thousands of idle sessions each carried a __dict__
    __slots__ = ("_close", "_expires_at", "connection_id", "ctx", "frame_bucket", "outbox",
                 "presence_bucket", "principal", "publish_bucket", "subscribe_bucket",
                 "subscriptions")  # fmt: skip

    def __init__(
        self, ctx: SessionContext, outbox: Outbox, close: Callable[[int, str], None]
    ) -> None:
        self.ctx = ctx
        self.outbox = outbox
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
    def send(self, frame: dict) -> None:
        self.outbox.send(frames.websocket_text_frame(frames.encode(frame)))

    def send_error(
        self,
        code: str,
        message: str,
        request_id: str | int | None = None,
        channel: str | None = None,
    ) -> None:
        self.ctx.errors[code] += 1
        self.send(frames.error_frame(code, message, request_id, channel))

    def reply(self, frame: dict, request_id: str | int | None) -> None:
        if request_id is not None:
            frame["id"] = request_id
        self.send(frame)

    # -- input ----------------------------------------------------------------
    async def handle_text(self, data: str | bytes) -> None:
        # Every frame spends a token, a malformed one too; it is still parsed, so that
        # the refusal carries the frame's id.
        limited = self.frame_bucket is not None and not self.frame_bucket.take(time.monotonic())
        try:
            frame = frames.parse_frame(data, self.ctx.max_frame_bytes)
        except FrameError as exc:
            if limited:
                self._frame_rate_limited(exc.request_id, exc.channel)
            else:
                self.send_error(exc.code, exc.message, exc.request_id, exc.channel)
            return
        if limited:
            self._frame_rate_limited(frame.id, getattr(frame, "channel", None))
            return
        try:
            await self._dispatch(frame)
        except Exception:  # a bug must cost one frame, not the connection
            log.exception("handling a %s frame failed", type(frame).__name__.lower())
            self.send_error(
                ErrorCode.INTERNAL_ERROR,
                "Internal error while handling this frame",
                frame.id,
                getattr(frame, "channel", None),
            )

    def _frame_rate_limited(self, request_id: str | int | None, channel: str | None) -> None:
        message = self.ctx.limits.frame_rate_limited_message()
        self.send_error(ErrorCode.RATE_LIMITED, message, request_id, channel)

    async def _dispatch(self, frame: frames.Frame) -> None:
        if isinstance(frame, frames.Auth):
            await self.on_auth(frame)
        elif isinstance(frame, frames.Ping):
            self.reply({"type": "pong"}, frame.id)
        elif self.principal is None:
            self.send_error(
                ErrorCode.NOT_AUTHENTICATED,
                'Not authenticated: send {"type":"auth","token":...} first',
                frame.id,
                getattr(frame, "channel", None),
            )
        elif isinstance(frame, frames.Subscribe):
            await self.on_subscribe(frame)
        elif isinstance(frame, frames.Unsubscribe):
            self.on_unsubscribe(frame)
        elif isinstance(frame, frames.Publish):
            self.on_publish(frame)
        elif isinstance(frame, frames.PresenceSet):
            self.on_presence_set(frame)

    async def on_auth(self, frame: frames.Auth) -> None:
        try:
            principal = await self.ctx.authenticator.authenticate_async(frame.token)
            if self.principal is not None:  # a refresh in place (session/refresh.py)
                await refresh.refresh(self, principal)
        except (AuthError, refresh.RefreshRefused) as exc:
            self.send_error(exc.code, exc.message, frame.id)
            return
        if self.outbox.closed:  # closed while the keys were fetched: watch no expiry
            return
        self.principal = principal
        self._schedule_expiry(principal)
        self.reply(refresh.auth_success(principal), frame.id)

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
        self.send_error(
            ErrorCode.TOKEN_EXPIRED, "Token expired: send a fresh auth frame to stay connected"
        )
        self.drop_all_subscriptions()
        self.close(4001, "token expired")

    async def on_subscribe(self, frame: frames.Subscribe) -> None:
        channel = frame.channel
        if self.subscribe_bucket is not None and not self.subscribe_bucket.take(time.monotonic()):
            message = self.ctx.limits.subscribe_rate_limited_message()
            self.send_error(ErrorCode.RATE_LIMITED, message, frame.id, channel)
            return
        problem = channel_name_error(channel)
        if problem is not None:
            self.send_error(ErrorCode.INVALID_CHANNEL, problem, frame.id, channel)
            return
        problem = frames.since_error(frame.since)
        if problem is None and frame.since is not None and channel.startswith("db:"):
            problem = "since is not supported on db: channels (changes are not stored)"
        if problem is not None:
            self.send_error(ErrorCode.INVALID_SINCE, problem, frame.id, channel)
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
        try:
            check = await self.ctx.subscribe_checks.check(self.principal, channel)
        except db_errors.UNAVAILABLE as exc:
            self._subscribe_unavailable(exc, frame.id, channel)
            return
        if check.status == "no_channel":
            self.send_error(
                ErrorCode.CHANNEL_NOT_FOUND,
                f"No enabled channel matches {channel!r}",
                frame.id,
                channel,
            )
            return
        if check.status != "ok":
            self.send_error(
                ErrorCode.UNAUTHORIZED,
                "Not authorized to subscribe to this channel",
                frame.id,
                channel,
            )
            return
        assert check.channel_id is not None
        if frame.since is None:
            self.ctx.delivery.start_tracking(channel, check.position)
            self._start_live(frame, channel, check.channel_id, None)
            return
        await self._resume(frame, channel, check.channel_id, check.position)

    async def _resume(
        self, frame: frames.Subscribe, channel: str, channel_id: str, current: int
    ) -> None:
        """History past `since`, then what arrived while reading it, then live: the
        positions make the seam exact (no gap, no duplicate)."""
        delivery = self.ctx.delivery
        delivery.start_tracking(channel, current)
        recovery = delivery.begin_recovery(channel)
        try:
            await self._recover(frame, channel, channel_id, current, recovery)
        finally:
            # Whatever happened, a recovery that did not go live collects nothing more
            # (one that did belongs to its subscription until it catches up).
            if recovery.outbox is None:
                delivery.end_recovery(recovery)

    async def _recover(
        self,
        frame: frames.Subscribe,
        channel: str,
        channel_id: str,
        current: int,
        recovery: Recovery,
    ) -> None:
        ctx = self.ctx
        assert frame.since is not None
        try:
            async with ctx.recoveries:
                plan = await plan_history(ctx.pool, channel, frame.since, current,
                                          ctx.max_recover, ctx.max_recover_bytes,
                                          self._page_bytes())  # fmt: skip
        except db_errors.UNAVAILABLE as exc:
            self._subscribe_unavailable(exc, frame.id, channel)
            return
        subscription = self._start_live(frame, channel, channel_id, plan)
        if subscription is None:
            return
        subscription.recovery = recovery  # ended with the subscription from now on
        try:
            for first, last in plan.pages:
                if not await self._room_for_a_page(channel, subscription):
                    return  # unsubscribed, ended or cut meanwhile
                async with ctx.recoveries:
                    messages = await read_page(ctx.pool, channel, first, last)
                for message in messages:
                    self.outbox.send(message.frame_for(ctx.delivery.encode))
                self.outbox.flush()
        except BaseException as exc:
            if self.subscriptions.get(channel) is subscription:
                del self.subscriptions[channel]
                self._release(subscription)
            if isinstance(exc, db_errors.UNAVAILABLE):
                log.warning("resume failed: %s", exc)
                self.send_error(
                    ErrorCode.SERVICE_UNAVAILABLE,
                    "Resume failed: the database is unavailable; the subscription ended,"
                    " subscribe again",
                    None,
                    channel,
                )
                return
            raise
        # No await from the last page on: nothing slips in between history and live.
        if self.subscriptions.get(channel) is subscription and not self.outbox.closed:
            ctx.delivery.go_live(recovery, self.outbox, plan.position)

    def _page_bytes(self) -> int:
        """A page written on top of at most half the limit stays within it: no reader
        that keeps up is suspected, let alone cut, because of its own resume."""
        return max(1, self.ctx.hub.send_buffer_limit // 2)

    async def _room_for_a_page(self, channel: str, subscription: Subscription) -> bool:
        """Wait until the connection has taken all but half the limit of what it was
        sent; False if the subscription or the connection ended meanwhile."""
        outbox = self.outbox
        room = self._page_bytes()
        # polled: a transport has no awaitable for "below N bytes", only aiohttp's
        # private drain at its own low-water mark
        while not outbox.closed and outbox.backlog() > room:  # noqa: ASYNC110
            await asyncio.sleep(RESUME_POLL_SECONDS)
        return not outbox.closed and self.subscriptions.get(channel) is subscription

    def _start_live(
        self,
        frame: frames.Subscribe,
        channel: str,
        channel_id: str,
        history: HistoryPlan | None,
    ) -> Subscription | None:
        """Record the subscription and answer `subscribed`; without history, join the
        channel's live fan-out at once (a resume joins it through Ordering.go_live)."""
        if self.outbox.closed or channel in self.subscriptions:
            return None
        subscription = Subscription(uuid.uuid4().hex, channel, channel_id)
        self.subscriptions[channel] = subscription
        snapshot = presence.join(self, channel, in_hub=history is None)  # before the hub
        if history is None:
            self.ctx.hub.subscribe(channel, self.outbox)
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
        self, exc: BaseException, request_id: str | int | None, channel: str
    ) -> None:
        log.warning("subscribe check failed: %s", exc)
        self.send_error(
            ErrorCode.SERVICE_UNAVAILABLE,
            "Failed to subscribe to channel: the database is unavailable",
            request_id,
            channel,
        )

    async def on_subscribe_table(self, frame: frames.Subscribe) -> None:
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
            return
        if subscription.recovery is not None:
            self.ctx.delivery.end_recovery(subscription.recovery)
        self.ctx.hub.unsubscribe(subscription.channel, self.outbox)
        presence.leave(self, subscription)  # after the hub: the leaver gets no frame

    def on_unsubscribe(self, frame: frames.Unsubscribe) -> None:
        if len(frame.channel) > MAX_CHANNEL_LENGTH:  # never a subscription; not echoed
            problem = f"channel must be at most {MAX_CHANNEL_LENGTH} characters"
            self.send_error(ErrorCode.INVALID_CHANNEL, problem, frame.id)
            return
        subscription = self.subscriptions.pop(frame.channel, None)
        if subscription is not None:
            self._release(subscription)
        self.reply({"type": "unsubscribed", "channel": frame.channel}, frame.id)

    def on_publish(self, frame: frames.Publish) -> None:
        channel = frame.channel
        if channel not in self.subscriptions:
            self.send_error(
                ErrorCode.NOT_SUBSCRIBED,
                "Must subscribe to channel before publishing messages",
                frame.id,
                channel,
            )
            return
        if channel.startswith("db:"):
            self.send_error(
                ErrorCode.INVALID_CHANNEL,
                "db: channels carry database changes; they cannot be published to",
                frame.id,
                channel,
            )
            return
        problem = frames.event_name_error(frame.event)
        if problem is not None:
            self.send_error(ErrorCode.INVALID_EVENT, problem, frame.id, channel)
            return
        payload_json = frames.encode(frame.payload)  # the publisher needs it so anyway
        if len(payload_json) > self.ctx.max_payload_bytes:
            message = (
                f"payload is {len(payload_json)} bytes as JSON; at most"
                f" {self.ctx.max_payload_bytes} are accepted"
            )
            self.send_error(ErrorCode.INVALID_PAYLOAD, message, frame.id, channel)
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
        stored = self.ctx.publisher.publish_json(principal, channel, frame.event, payload_json)
        stored.add_done_callback(lambda f: self._on_published(f, frame))

    def on_presence_set(self, frame: frames.PresenceSet) -> None:
        refusal = presence.set_state(self, frame.channel, frame.state, time.monotonic())
        if refusal is not None:
            self.send_error(*refusal, frame.id, frame.channel)
            return
        self.reply({"type": "presence_updated", "channel": frame.channel}, frame.id)

    def _on_published(self, task: asyncio.Future, frame: frames.Publish) -> None:
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
        elif isinstance(exc, PublishRefused) and exc.status == "no_channel":
            self.send_error(
                ErrorCode.CHANNEL_NOT_FOUND,
                f"No enabled channel matches {frame.channel!r}",
                frame.id,
                frame.channel,
            )
        elif isinstance(exc, PublishRefused) and exc.status == "unavailable":
            log.warning("publish not stored, retryable: %s", exc.detail)
            self.send_error(
                ErrorCode.SERVICE_UNAVAILABLE,
                f"Failed to publish message: the database could not store it right now"
                f" (SQLSTATE {exc.sqlstate}); it was not stored, try again",
                frame.id,
                frame.channel,
            )
        elif isinstance(exc, PublishRefused) and exc.status == "failed":
            log.warning("publish not stored: %s", exc.detail)
            self.send_error(
                ErrorCode.PUBLISH_FAILED,
                f"Failed to publish message: the database refused it"
                f" (SQLSTATE {exc.sqlstate}); it was not stored",
                frame.id,
                frame.channel,
            )
        elif isinstance(exc, PublishRefused):
            self.send_error(
                ErrorCode.UNAUTHORIZED,
                "Not authorized to publish to this channel",
                frame.id,
                frame.channel,
            )
        elif isinstance(exc, db_errors.UNAVAILABLE):
            log.warning("publish failed: %s", exc)
            self.send_error(
                ErrorCode.SERVICE_UNAVAILABLE,
                "Failed to publish message: the database is unavailable",
                frame.id,
                frame.channel,
            )
        else:
            log.error("publish failed", exc_info=exc)
            self.send_error(
                ErrorCode.INTERNAL_ERROR, "Failed to publish message", frame.id, frame.channel
            )

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
