"""One subscription: its messages in order, exactly once, across reconnections.

The subscription remembers the position of the last message it accepted (queued for the
application or handed to its callback). After a reconnect the client subscribes again
with `since` = that position: the server replays what was missed, and anything at or
below it that arrives again is dropped here, so the application sees no gap and no
duplicate. `db:` channels have no history: changes made while disconnected are not
replayed (`recovered` is then False).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pgrealtime.client.frames import Message, Presence, Published, Subscribed

if TYPE_CHECKING:
    from pgrealtime.client.connection import Client

log = logging.getLogger("pgrealtime.client")

MessageCallback = Callable[[Message], Awaitable[None] | None]
PresenceCallback = Callable[[Presence], Awaitable[None] | None]


class _End:
    """Queued after the last message: the iterator stops (error None) or raises."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Subscription:
    """Messages of one channel. Iterate with `async for message in sub`, or pass
    `on_message=` to `Client.subscribe`. Ends with `unsubscribe()` (the iteration stops
    after the messages already received) or when the server ends it (the iteration
    raises `SubscriptionEnded`)."""

    def __init__(
        self,
        client: Client,
        channel: str,
        *,
        since: int | str | None,
        filter: dict[str, Any] | None,
        on_message: MessageCallback | None,
        on_presence: PresenceCallback | None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.filter = filter
        self.since = since  # what the first subscribe asked for
        #: position of the last message accepted; `since` of the next resume
        self.last_position: int | None = since if isinstance(since, int) else None
        self.subscription_id: str | None = None
        #: False when the last (re)subscribe could not replay every missed message
        self.recovered: bool = True
        #: presence members by presenceId (empty on servers without presence)
        self.presence: dict[str, dict[str, Any]] = {}
        #: whether the server sent a presence snapshot (it has presence, and it is on)
        self.has_presence = False
        self.presence_state: dict[str, Any] | None = None
        self.on_presence = on_presence
        self._queue: asyncio.Queue[Message | _End] = asyncio.Queue()
        self._ended = False
        self._dispatcher: asyncio.Task[None] | None = None
        if on_message is not None:
            self._dispatcher = asyncio.create_task(self._dispatch(on_message))

    @property
    def is_db(self) -> bool:
        return self.channel.startswith("db:")

    @property
    def active(self) -> bool:
        return not self._ended

    # --- the application's side -----------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later call ends the same way
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def get(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        """The next message (raises TimeoutError after `timeout` seconds, StopAsyncIteration
        after `unsubscribe()`)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def unsubscribe(self) -> None:
        """Stop the subscription; messages already received are still iterated."""
        await self.client._unsubscribe(self)

    async def set_presence(self, state: dict[str, Any] | None) -> None:
        """Set (None: clear) this connection's presence state on the channel; sent again
        after every reconnect. Raises ServerError (e.g. INVALID_PRESENCE_STATE, or
        UNKNOWN_TYPE on a server without presence)."""
        await self.client._presence_set(self, state)
        self.presence_state = state

    async def publish(self, event: str, payload: Any) -> Published:
        """`client.publish` on this subscription's channel."""
        return await self.client.publish(self.channel, event, payload)

    # --- the client's side ----------------------------------------------------------

    def resume_since(self) -> int | str | None:
        """`since` for the next subscribe: the last accepted position, else the `since`
        first asked for (a message id), else None (live only)."""
        if self.is_db:
            return None
        if self.last_position is not None:
            return self.last_position
        return self.since

    def _subscribed(self, reply: Subscribed, sent_since: int | str | None, resumed: bool) -> None:
        self.subscription_id = reply.subscription_id
        if self.is_db or reply.position is None:
            self.recovered = not resumed  # changes while away are not replayed
        elif sent_since is None:
            self.last_position = reply.position  # live messages follow it
            self.recovered = True
        else:
            self.recovered = reply.recovered is not False
            if not self.recovered or self.last_position is None:
                # history was cut (or the database reset, or `since` was a message id):
                # what follows starts after position - missed
                self.last_position = reply.position - (reply.missed or 0)
        if reply.presence is not None:
            self.has_presence = True
            members = reply.presence.get("members") or []
            self.presence = {str(m.get("presenceId")): m for m in members if isinstance(m, dict)}

    def _deliver(self, message: Message) -> None:
        if self._ended:
            return
        position = message.position
        if position is not None:
            if self.last_position is not None and position <= self.last_position:
                return  # already handed out before a reconnect
            self.last_position = position
        self._queue.put_nowait(message)

    def _presence_change(self, change: Presence) -> None:
        key = str(change.member.get("presenceId"))
        if change.event == "leave":
            self.presence.pop(key, None)
        else:
            self.presence[key] = change.member
        if self.on_presence is not None:
            _call(self.on_presence, change)

    def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_End(error))

    async def _dispatch(self, callback: MessageCallback) -> None:
        try:
            async for message in self:
                try:
                    result = callback(message)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("on_message callback of %s failed", self.channel)
        except Exception as exc:
            log.warning("subscription to %s ended: %s", self.channel, exc)


def _call(callback: Callable[[Any], Awaitable[None] | None], value: Any) -> None:
    """Run a sync callback now, an async one as a task (never blocks the reader)."""
    try:
        result = callback(value)
    except Exception:
        log.exception("callback failed")
        return
    if inspect.isawaitable(result):
        task = asyncio.ensure_future(result)
        _running.add(task)  # a reference until it ends (the loop keeps only weak ones)
        task.add_done_callback(_running.discard)


_running: set[asyncio.Future[Any]] = set()
