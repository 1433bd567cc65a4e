"""Presence: who is in a channel now, kept in the live server's memory.

InsForge's model, which its SDK consumes: a member is `{type: "user", presenceId:
<user id>, joinedAt}` for an authenticated user, `{type: "anonymous", presenceId:
<connection id>, joinedAt}` otherwise, plus `state` once the member set one. A user
is one member however many of its connections are subscribed: it joins with the first
and leaves with the last, so a second tab does not show the user twice and closing it
does not make the user leave.

Two parts with one job each:

- `PresenceStore` (a Protocol) and `LocalPresenceStore`: pure bookkeeping, no I/O, no
  clock of its own (the caller may pass one). Each call says which change, if any, the
  channel's subscribers must see. The store is behind a Protocol because presence is
  cluster-wide (issue 14): the server's store is `presence_cluster.ClusterPresenceStore`,
  which keeps this local view of the process's own connections, sends its member-level
  changes to the other processes under a process lease, merges theirs (a member is
  present while any live process holds it; a process whose lease expires leaves all
  its members) and returns the same changes, so nothing above the store changes but
  one hook: it hands `Presence` the changes other processes cause (`attach`).
- `Presence`: the store plus fan-out. A change goes through the hub to the channel's
  subscribers as one frame per protocol (a ChannelEvent's `frame_for`, cached like a
  stored message's), and to subscribers still resuming history, who are not in the
  hub yet, directly: every subscriber sees each change once, after its snapshot.

Presence is never stored in realtime.messages and triggers no webhook: it is the
state of live connections, not a message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Protocol

from pgrealtime.engine.hub import Hub, Outbox
from pgrealtime.engine.messages import ChannelEvent
from pgrealtime.util.timefmt import rfc3339

USER = "user"
ANONYMOUS = "anonymous"
MemberKey = tuple[str, str]  # (type, presenceId): one member per key per channel
JOIN, LEAVE, UPDATE = "join", "leave", "update"

DEFAULT_SNAPSHOT_LIMIT = 1000  # members listed in a snapshot; more set `truncated`
DEFAULT_MAX_STATE_BYTES = 1024  # one member's state, encoded as JSON


def member_key(user_id: str | None, connection_id: str) -> MemberKey:
    """A user is the same member on all its connections; a session without a user
    (anon, or the API key) is a member of its own, named by its connection."""
    return (USER, user_id) if user_id is not None else (ANONYMOUS, connection_id)


def _now() -> str:
    timestamp = rfc3339(datetime.now(UTC))
    assert timestamp is not None
    return timestamp


class PresenceChange:
    """One join, leave or update on one channel, as the store decided it.

    `member` is the member as snapshots list it (a leave carries it as it was). It goes
    out as a ChannelEvent `presence:<event>` with data `{member}`, encoded once per
    protocol like a stored message (raw: `{type: "presence", event, channel, member}`;
    Socket.IO: `presence:join` with `meta`)."""

    __slots__ = ("channel", "event", "id", "member", "timestamp")

    def __init__(self, event: str, channel: str, member: dict[str, Any], timestamp: str) -> None:
        self.event = event
        self.channel = channel
        self.member = member
        self.timestamp = timestamp
        self.id = str(uuid.uuid4())

    def channel_event(self) -> ChannelEvent:
        return ChannelEvent(self.channel, f"presence:{self.event}", {"member": self.member},
                            id=self.id)  # fmt: skip

    def __repr__(self) -> str:
        return f"PresenceChange({self.event!r}, {self.channel!r}, {self.member!r})"


class PresenceStore(Protocol):
    """Members per channel. Every method is synchronous and returns the change the
    channel's subscribers must see, or None when they see nothing (a user's second
    connection joining, a state set to what it was)."""

    def join(
        self, channel: str, key: MemberKey, connection_id: str, now: str | None = None
    ) -> PresenceChange | None: ...

    def leave(
        self, channel: str, connection_id: str, now: str | None = None
    ) -> PresenceChange | None: ...

    def update(
        self, channel: str, connection_id: str, state: dict | None, now: str | None = None
    ) -> PresenceChange | None: ...

    def snapshot(self, channel: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """(up to `limit` members in join order, whether some were left out); 0 = all."""
        ...

    def member_count(self, channel: str) -> int: ...


class _Member:
    __slots__ = ("connections", "joined_at", "key", "state", "view")

    def __init__(self, key: MemberKey, joined_at: str) -> None:
        self.key = key
        self.joined_at = joined_at
        self.state: dict | None = None
        self.connections: set[str] = set()
        self.view = self._view()

    def _view(self) -> dict[str, Any]:
        # A new dict on every change: a snapshot or change already made keeps the old.
        view: dict[str, Any] = {"type": self.key[0], "presenceId": self.key[1]}
        view["joinedAt"] = self.joined_at
        if self.state is not None:
            view["state"] = self.state
        return view

    def set_state(self, state: dict | None) -> None:
        self.state = state
        self.view = self._view()


class _Channel:
    __slots__ = ("connections", "members")

    def __init__(self) -> None:
        self.members: dict[MemberKey, _Member] = {}  # insertion order: join order
        self.connections: dict[str, _Member] = {}  # connection id -> its member


class LocalPresenceStore:
    """This process's members, in memory: the one-process PresenceStore."""

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}

    def join(
        self, channel: str, key: MemberKey, connection_id: str, now: str | None = None
    ) -> PresenceChange | None:
        room = self._channels.get(channel)
        if room is None:
            room = self._channels[channel] = _Channel()
        if connection_id in room.connections:
            return None  # joined already (a second subscribe of the same connection)
        member = room.members.get(key)
        change = None
        if member is None:  # the first connection of this member
            now = now or _now()
            member = room.members[key] = _Member(key, now)
            change = PresenceChange(JOIN, channel, member.view, now)
        member.connections.add(connection_id)
        room.connections[connection_id] = member
        return change

    def leave(
        self, channel: str, connection_id: str, now: str | None = None
    ) -> PresenceChange | None:
        room = self._channels.get(channel)
        if room is None:
            return None
        member = room.connections.pop(connection_id, None)
        if member is None:
            return None
        member.connections.discard(connection_id)
        if member.connections:
            return None  # the user is still here on another connection
        del room.members[member.key]
        if not room.members:
            del self._channels[channel]
        return PresenceChange(LEAVE, channel, member.view, now or _now())

    def update(
        self, channel: str, connection_id: str, state: dict | None, now: str | None = None
    ) -> PresenceChange | None:
        """Set the state of the member `connection_id` is part of (the last set wins
        for a user with several connections); None if it is no member or the state
        is unchanged."""
        room = self._channels.get(channel)
        member = room.connections.get(connection_id) if room is not None else None
        if member is None or member.state == state:
            return None
        member.set_state(state)
        return PresenceChange(UPDATE, channel, member.view, now or _now())

    def snapshot(self, channel: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        room = self._channels.get(channel)
        if room is None:
            return [], False
        views: Iterator[dict[str, Any]] = (m.view for m in room.members.values())
        if 0 < limit < len(room.members):
            return list(islice(views, limit)), True
        return list(views), False

    def member_count(self, channel: str) -> int:
        room = self._channels.get(channel)
        return len(room.members) if room is not None else 0


class Presence:
    """The store and the fan-out of its changes; what sessions call."""

    def __init__(
        self,
        hub: Hub,
        store: PresenceStore | None = None,
        snapshot_limit: int = DEFAULT_SNAPSHOT_LIMIT,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    ) -> None:
        self.hub = hub
        self.store: PresenceStore = store if store is not None else LocalPresenceStore()
        self.snapshot_limit = snapshot_limit
        self.max_state_bytes = max_state_bytes
        # Subscribers that joined presence before the hub (resuming history): they get
        # changes straight to their outbox until the hub has them.
        self._direct: dict[str, set[Outbox]] = {}
        attach = getattr(self.store, "attach", None)
        if attach is not None:  # a cluster store: changes made by other processes
            attach(self._fan_out)

    def join(
        self, channel: str, key: MemberKey, connection_id: str, outbox: Outbox, in_hub: bool
    ) -> dict[str, Any]:
        """Add the connection to the channel's presence and return the snapshot for its
        `subscribed` reply. Call it before the outbox joins the hub: the change goes to
        the others, the joiner finds itself in the snapshot. `in_hub`: whether the
        outbox is about to join the hub now (False while it resumes history)."""
        change = self.store.join(channel, key, connection_id)
        if change is not None:
            self._fan_out(change)
        if not in_hub:
            self._direct.setdefault(channel, set()).add(outbox)
        return self.snapshot(channel)

    def leave(self, channel: str, connection_id: str, outbox: Outbox) -> None:
        """Call it after the outbox left the hub: the leaver gets no frame of its own."""
        direct = self._direct.get(channel)
        if direct is not None:
            direct.discard(outbox)
            if not direct:
                del self._direct[channel]
        change = self.store.leave(channel, connection_id)
        if change is not None:
            self._fan_out(change)

    def update(self, channel: str, connection_id: str, state: dict | None) -> None:
        """Everyone subscribed sees the update, the setter too (its own view, and its
        other connections, follow the member's state like everyone else's)."""
        change = self.store.update(channel, connection_id, state)
        if change is not None:
            self._fan_out(change)

    def snapshot(self, channel: str) -> dict[str, Any]:
        """`{members: [...]}`, with `truncated: true` when over the snapshot limit."""
        members, truncated = self.store.snapshot(channel, self.snapshot_limit)
        return {"members": members, "truncated": True} if truncated else {"members": members}

    def _fan_out(self, change: PresenceChange) -> None:
        event = change.channel_event()
        self.hub.broadcast(change.channel, event)
        direct = self._direct.get(change.channel)
        if direct:
            for outbox in list(direct):
                if self.hub.is_subscribed(change.channel, outbox):
                    direct.discard(outbox)  # caught up: the broadcast reached it
                else:
                    outbox.send(event.frame_for(outbox.codec))
