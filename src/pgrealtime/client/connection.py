"""The connection: authenticate, send requests, read frames, reconnect and resume.

One reader task reads every frame of the current WebSocket in order: replies resolve
the request waiting for their `id`, messages go to their subscription. When the
connection drops, a supervisor task reconnects with backoff and jitter, authenticates
with a fresh token (from the token callable, if one was given) and subscribes again to
every channel with `since` = the last position each subscription accepted; requests
made meanwhile wait for the new connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from pgrealtime.client import frames
from pgrealtime.client.errors import (
    TRANSIENT_CODES,
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    ServerError,
    SubscriptionEnded,
)
from pgrealtime.client.frames import (
    AuthSuccess,
    Error,
    Message,
    Presence,
    Published,
    RequestId,
    ServerFrame,
    Subscribed,
)
from pgrealtime.client.reconnect import Backoff
from pgrealtime.client.subscription import (
    MessageCallback,
    PresenceCallback,
    Subscription,
    _call,
)

log = logging.getLogger("pgrealtime.client")

DEFAULT_URL = "ws://127.0.0.1:7130/realtime"
TokenSource = str | Callable[[], str | Awaitable[str]]
_Hook = Callable[[Any], None]


def normalize_url(url: str) -> str:
    """`http(s)://` becomes `ws(s)://`, and a URL without a path gets `/realtime`, so the
    server's base URL works as well as its WebSocket URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/realtime"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def token_lifetime(token: str) -> float | None:
    """Seconds until a JWT's `exp` (read without checking the signature: the server
    checks it; this only decides when to fetch a fresh one), None without one."""
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return float(claims["exp"]) - time.time()
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class Client:
    """A connection to a pgrealtime server that survives drops and restarts.

    Use `async with connect(url, token=...) as client:`. `token` is a JWT, the admin API
    key, or a callable (plain or async) returning one; a callable is called on every
    (re)connect and before the current token expires, so long-lived clients stay
    authenticated."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: TokenSource = "",
        *,
        backoff: Backoff | None = None,
        request_timeout: float = 10.0,
        heartbeat: float | None = 20.0,
        on_reconnect: Callable[[Client], Awaitable[None] | None] | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self._token_source = token
        self._backoff = backoff or Backoff()
        self._request_timeout = request_timeout
        self._heartbeat = heartbeat
        self._on_reconnect = on_reconnect
        #: the token's user id (None for anon and admins), set by each authentication
        self.user_id: str | None = None
        #: how many times the connection was re-established
        self.reconnects = 0
        self._subs: dict[str, Subscription] = {}
        self._pending: dict[RequestId, tuple[asyncio.Future[ServerFrame], _Hook | None]] = {}
        self._ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()  # also set when the client fails or closes
        self._closing = False
        self._failure: BaseException | None = None

    # --- life cycle -----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and authenticate. A failure here raises (a wrong URL or token is a
        mistake to report, not to retry); later drops are retried on their own."""
        self._http = aiohttp.ClientSession()
        try:
            await self._open()
        except BaseException:
            await self._http.close()
            raise
        self._supervisor = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        """Close the connection (without unsubscribing: the server forgets a closed
        connection's subscriptions) and end every subscription's iteration after the
        messages already received; callbacks get a second to handle theirs."""
        if self._closing:
            return
        self._closing = True
        self._connected.set()
        subs = list(self._subs.values())
        for sub in subs:
            sub._end(None)
        self._subs.clear()
        # callbacks finish what was already received (briefly), then stop
        dispatchers = [s._dispatcher for s in subs if s._dispatcher is not None]
        if dispatchers:
            _, late = await asyncio.wait(dispatchers, timeout=1.0)
            for task in late:
                task.cancel()
        for task in (self._refresh, self._supervisor):
            if task is not None:
                task.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for task in (self._refresh, self._supervisor):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._http is not None:
            await self._http.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and not self._closing and self._failure is None

    # --- requests -------------------------------------------------------------------

    async def subscribe(
        self,
        channel: str,
        *,
        since: int | str | None = None,
        filter: dict[str, Any] | None = None,
        on_message: MessageCallback | None = None,
        on_presence: PresenceCallback | None = None,
    ) -> Subscription:
        """Subscribe to `channel` (`since`: a position or message id to replay history
        from; `filter`: a db: channel's filter, docs/changes.md). Raises ServerError
        with the server's code when refused."""
        if channel in self._subs:
            raise ValueError(f"already subscribed to {channel!r}: use that subscription")
        sub = Subscription(
            self,
            channel,
            since=since,
            filter=filter,
            on_message=on_message,
            on_presence=on_presence,
        )
        while True:
            ws = await self._wait_connected()
            self._subs[channel] = sub
            try:
                await self._subscribe_on(ws, sub, resumed=False)
                return sub
            except ConnectionLost:
                if self._subs.get(channel) is sub:
                    del self._subs[channel]
                continue  # subscribe on the next connection
            except BaseException:
                if self._subs.get(channel) is sub:
                    del self._subs[channel]
                sub._end(None)  # the caller gets the error; a callback just stops
                raise

    async def publish(self, channel: str, event: str, payload: Any) -> Published:
        """Store and send a message; returns the `published` ack (message id, position).
        The connection must be subscribed to the channel. Raises ServerError with the
        server's code when refused, ConnectionLost when the connection broke before the
        ack (the message may have been stored)."""
        ws = await self._wait_connected()
        reply = await self._request_on(ws, frames.publish(channel, event, payload, self._id()))
        assert isinstance(reply, Published)
        return reply

    async def ping(self) -> None:
        """A round trip to the server (raises if it does not answer in time)."""
        ws = await self._wait_connected()
        await self._request_on(ws, frames.ping(self._id()))

    def subscription(self, channel: str) -> Subscription | None:
        """The live subscription to `channel`, if any."""
        return self._subs.get(channel)

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]
            if self.connected and self._ws is not None:
                with contextlib.suppress(ConnectionLost, ClientClosed, TimeoutError):
                    await self._request_on(self._ws, frames.unsubscribe(sub.channel, self._id()))
        sub._end(None)

    async def _presence_set(self, sub: Subscription, state: dict[str, Any] | None) -> None:
        ws = await self._wait_connected()
        await self._request_on(ws, frames.presence_set(sub.channel, state, self._id()))

    # --- plumbing -------------------------------------------------------------------

    def _id(self) -> int:
        return next(self._ids)

    async def _token(self) -> str:
        token = self._token_source
        if callable(token):
            token = token()
            if inspect.isawaitable(token):
                token = await token
        if not isinstance(token, str) or not token:
            raise ValueError("the token (or the token callable's result) must be a non-empty str")
        return token

    async def _wait_connected(self) -> aiohttp.ClientWebSocketResponse:
        """The current WebSocket, waiting up to the request timeout for a reconnection."""
        try:
            await asyncio.wait_for(self._connected.wait(), self._request_timeout)
        except TimeoutError:
            raise ConnectionLost(
                f"not connected within {self._request_timeout:g} s (still reconnecting)"
            ) from None
        if self._failure is not None:
            raise ClientClosed(f"the client gave up: {self._failure}") from self._failure
        if self._closing or self._ws is None:
            raise ClientClosed("the client is closed")
        return self._ws

    async def _request_on(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        frame: dict[str, Any],
        hook: _Hook | None = None,
    ) -> ServerFrame:
        """Send `frame` and wait for the reply echoing its id; `hook` runs on a success
        reply in the reader, before any later frame is handled."""
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        request_id = frame["id"]
        self._pending[request_id] = (future, hook)
        try:
            try:
                await ws.send_str(frames.encode(frame).decode())
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                raise ConnectionLost(f"could not send: {exc}") from exc
            reply = await asyncio.wait_for(future, self._request_timeout)
        finally:
            self._pending.pop(request_id, None)
        if isinstance(reply, Error):
            raise ServerError.from_frame(reply)
        return reply

    async def _subscribe_on(
        self, ws: aiohttp.ClientWebSocketResponse, sub: Subscription, *, resumed: bool
    ) -> None:
        since = sub.resume_since() if resumed else sub.since

        def on_reply(reply: Any) -> None:
            if isinstance(reply, Subscribed):
                sub._subscribed(reply, since, resumed)

        frame = frames.subscribe(sub.channel, self._id(), since, sub.filter)
        await self._request_on(ws, frame, on_reply)

    async def _resubscribe(self, ws: aiohttp.ClientWebSocketResponse, sub: Subscription) -> None:
        """Resume one subscription on a new connection; a refusal ends it (its iteration
        raises SubscriptionEnded with the code), "not now" is tried again."""
        delay = 0.1
        while True:
            try:
                await self._subscribe_on(ws, sub, resumed=True)
            except ServerError as exc:
                if exc.code == "RATE_LIMITED":  # --subscribe-burst: many subscriptions
                    await asyncio.sleep(delay)
                    delay = min(2.0, delay * 2)
                    continue
                if exc.code in TRANSIENT_CODES or isinstance(exc, AuthenticationError):
                    raise
                if self._subs.get(sub.channel) is sub:
                    del self._subs[sub.channel]
                sub._end(SubscriptionEnded(exc.code, exc.message, sub.channel))
                return
            if sub.presence_state is not None:  # this connection's state, set again
                frame = frames.presence_set(sub.channel, sub.presence_state, self._id())
                try:
                    await self._request_on(ws, frame)
                except ServerError as exc:
                    log.warning("presence state on %s not restored: %s", sub.channel, exc)
            return

    async def _open(self) -> None:
        assert self._http is not None
        token = await self._token()
        ws = await asyncio.wait_for(
            self._http.ws_connect(self.url, heartbeat=self._heartbeat, max_msg_size=0),
            self._request_timeout,
        )
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws))
        try:
            reply = await self._request_on(ws, frames.auth(token, self._id()))
            assert isinstance(reply, AuthSuccess)
            self.user_id = reply.user_id
            subs = list(self._subs.values())
            await asyncio.gather(*(self._resubscribe(ws, sub) for sub in subs))
        except BaseException:
            await ws.close()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._ws = None
            raise
        self._connected.set()
        self._schedule_refresh(ws, token)

    def _schedule_refresh(self, ws: aiohttp.ClientWebSocketResponse, token: str) -> None:
        """With a token callable, authenticate again with a fresh token at 80% of the
        current one's lifetime, so the server never cuts the connection for expiry."""
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        lifetime = token_lifetime(token)
        if callable(self._token_source) and lifetime is not None:
            self._refresh = asyncio.create_task(self._refresh_after(ws, max(1.0, lifetime * 0.8)))

    async def _refresh_after(self, ws: aiohttp.ClientWebSocketResponse, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            token = await self._token()
            await self._request_on(ws, frames.auth(token, self._id()))
        except (ServerError, ConnectionLost, TimeoutError, ValueError) as exc:
            log.warning("re-authentication failed (%s); the connection will be retried", exc)
            return
        self._refresh = None
        self._schedule_refresh(ws, token)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                frame = frames.decode(msg.data)
                if frame is not None:
                    try:
                        self._handle(ws, frame)
                    except Exception:
                        log.exception("could not handle %r", frame)
        finally:
            lost = ConnectionLost(f"connection closed (code {ws.close_code})")
            for future, _ in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            self._pending.clear()
            if not ws.closed:
                await ws.close()

    def _handle(self, ws: aiohttp.ClientWebSocketResponse, frame: ServerFrame) -> None:
        if isinstance(frame, Message):
            sub = self._subs.get(frame.channel)
            if sub is not None:
                sub._deliver(frame)
            return
        if isinstance(frame, Presence):
            sub = self._subs.get(frame.channel)
            if sub is not None:
                sub._presence_change(frame)
            return
        request_id = getattr(frame, "id", None)
        entry = self._pending.pop(request_id, None) if request_id is not None else None
        if entry is not None:
            future, hook = entry
            if hook is not None and not isinstance(frame, Error):
                hook(frame)
            if not future.done():
                future.set_result(frame)
        elif isinstance(frame, Error):
            self._unsolicited(ws, frame)

    def _unsolicited(self, ws: aiohttp.ClientWebSocketResponse, error: Error) -> None:
        sub = self._subs.get(error.channel) if error.channel else None
        if error.code == "REALTIME_SUBSCRIPTION_ENDED" and sub is not None:
            del self._subs[sub.channel]
            sub._end(SubscriptionEnded(error.code, error.message, sub.channel))
        elif error.code == "SERVICE_UNAVAILABLE" and sub is not None:
            # a resume failed between history pages: subscribe again from where we are
            task = asyncio.create_task(self._resubscribe(ws, sub))
            task.add_done_callback(_log_failure)
        else:
            log.warning("server error %s: %s", error.code, error.message)

    async def _supervise(self) -> None:
        """Wait for the connection to drop, then reconnect, until closed or given up."""
        while True:
            assert self._reader is not None
            with contextlib.suppress(Exception):
                await self._reader
            if self._closing:
                return
            self._connected.clear()
            log.info("connection lost; reconnecting to %s", self.url)
            for delay in self._backoff.delays():
                await asyncio.sleep(delay)
                try:
                    await self._open()
                    break
                except AuthenticationError as exc:
                    return await self._fail(exc)
                except Exception as exc:  # network, server, or the token callable: retry
                    log.info("reconnect failed: %r", exc)
            else:
                return await self._fail(ConnectionLost("gave up reconnecting"))
            self.reconnects += 1
            if self._on_reconnect is not None:
                _call(self._on_reconnect, self)

    async def _fail(self, exc: BaseException) -> None:
        log.error("pgrealtime client stopped: %s", exc)
        self._failure = exc
        self._connected.set()
        for sub in list(self._subs.values()):
            sub._end(exc)
        self._subs.clear()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("resubscribe failed: %s", task.exception())


def connect(url: str = DEFAULT_URL, *, token: TokenSource, **options: Any) -> Client:
    """`async with connect(url, token=...) as client:`: a Client, connected on entry
    and closed on exit. Options: see Client."""
    return Client(url, token, **options)
