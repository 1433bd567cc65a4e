"""A blocking wrapper for scripts and shells: the async client on its own event loop,
in a background thread.

    from pgrealtime.client.sync import connect

    with connect("ws://127.0.0.1:7130/realtime", token=token) as client:
        sub = client.subscribe("order:123")
        client.publish("order:123", "order.updated", {"status": "shipped"})
        for message in sub:
            print(message.payload)

Reconnection and resume work as in the async client (they run in the background
thread). Callbacks passed to `subscribe` run in that thread too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from pgrealtime.client.connection import DEFAULT_URL, Client, TokenSource
from pgrealtime.client.frames import Message, Published
from pgrealtime.client.subscription import MessageCallback, PresenceCallback, Subscription

T = TypeVar("T")


class SyncSubscription:
    """A subscription read by blocking: `for message in sub` or `sub.get(timeout)`."""

    def __init__(self, owner: SyncClient, sub: Subscription) -> None:
        self._owner = owner
        self._sub = sub

    @property
    def channel(self) -> str:
        return self._sub.channel

    @property
    def last_position(self) -> int | None:
        return self._sub.last_position

    @property
    def presence(self) -> dict[str, dict[str, Any]]:
        return self._sub.presence

    def get(self, timeout: float | None = None) -> Message:
        """The next message; TimeoutError after `timeout` seconds, StopIteration once
        unsubscribed."""
        try:
            return self._owner._run(self._sub.get(timeout))
        except StopAsyncIteration:
            raise StopIteration from None

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.get()
            except StopIteration:
                return

    def unsubscribe(self) -> None:
        self._owner._run(self._sub.unsubscribe())


class SyncClient:
    """Client with blocking methods; see pgrealtime.client.Client for the options."""

    def __init__(self, url: str = DEFAULT_URL, token: TokenSource = "", **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pgrealtime-client", daemon=True
        )
        self._thread.start()
        self._client = self._run(_make(url, token, options))
        try:
            self._run(self._client.connect())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def user_id(self) -> str | None:
        return self._client.user_id

    @property
    def reconnects(self) -> int:
        return self._client.reconnects

    def subscribe(
        self,
        channel: str,
        *,
        since: int | str | None = None,
        filter: dict[str, Any] | None = None,
        on_message: MessageCallback | None = None,
        on_presence: PresenceCallback | None = None,
    ) -> SyncSubscription:
        sub = self._run(
            self._client.subscribe(
                channel, since=since, filter=filter, on_message=on_message, on_presence=on_presence
            )
        )
        return SyncSubscription(self, sub)

    def publish(self, channel: str, event: str, payload: Any) -> Published:
        return self._run(self._client.publish(channel, event, payload))

    def ping(self) -> None:
        self._run(self._client.ping())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _make(url: str, token: TokenSource, options: dict[str, Any]) -> Client:
    return Client(url, token, **options)  # built on its loop's thread


def connect(url: str = DEFAULT_URL, *, token: TokenSource, **options: Any) -> SyncClient:
    """A connected SyncClient; use it in a `with` block so it closes."""
    return SyncClient(url, token, **options)
