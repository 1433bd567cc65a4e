"""Cluster-wide presence: every process's members merged, over a bus (issue 14).

Each process keeps a `LocalPresenceStore` of its own connections, exactly as a lone
process does. `ClusterPresenceStore` wraps it behind the same `PresenceStore` Protocol:

- A member-level change here (the local store's join, leave or update) is sent to the
  other processes as an op carrying the member's view, batched per event-loop turn,
  numbered by a per-process sequence `seq`.
- The view of every other process (its `origin`) is kept here: channel -> member key ->
  view. A member is present in the cluster while any live process holds it, so a user
  on two processes is one member: it joins with its first holder anywhere and leaves
  with its last. Joins, leaves and updates are emitted on those cluster-level edges
  only, so each subscriber on each process sees a change once, and never a leave
  without its join. A state update wins in the order it arrives here.
- Leases, never goodbyes: a process heartbeats every `heartbeat_seconds` (with its
  seq). A process not heard from for `lease_seconds` (kill -9, a network cut, a bus
  outage) is dropped and its members leave. One that comes back is unknown again:
  its next heartbeat makes the others ask for its full view.
- Repair: a gap in a process's seq, a heartbeat whose seq is not the last one seen, or
  an unknown process makes the receiver ask that process for its full view (a `sync`
  request, at most once per heartbeat); the full view replaces what was kept for it and
  the differences are emitted. A process that starts or reconnects to the bus sends
  its own full view and asks every process for theirs.
- Alone (no other process heard), ops are not sent at all: only the heartbeat goes out
  and the seq moves on, so a process that turns up later sees the gap and asks.

The transport is two callables: `send(bytes)` (in order, at most once: NATS's stream
or PostgreSQL NOTIFY, engine/bus/pg_presence.py) and `receive(bytes)` here for
everything any process sent (its own included, skipped). Messages are JSON objects:
`{o: origin, k: kind, ...}` with kind `hb` (s), `ops` (s, ops: [[event, channel,
view]]), `full` (s, id, i, n, m: [[channel, view]]: part i of n), `sync` (to: an
origin, or "" for all) and `bye` (a clean stop). Anything malformed is dropped:
without a broker, any role of the database may NOTIFY the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from itertools import islice
from typing import Any

import orjson

from pgrealtime.engine.presence import (
    JOIN,
    LEAVE,
    UPDATE,
    LocalPresenceStore,
    MemberKey,
    PresenceChange,
    _now,
)

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 2.0
DEFAULT_LEASE_SECONDS = 10.0
_OPS = {JOIN: "j", LEAVE: "l", UPDATE: "u"}
_SELF = ""  # this process, as a holder of a member

View = dict[str, Any]


class _Merged:
    """One member of the cluster: who holds it, and the view snapshots list."""

    __slots__ = ("holders", "view")

    def __init__(self, view: View) -> None:
        self.view = view
        self.holders: set[str] = set()


class _Peer:
    """What is kept of another process."""

    __slots__ = ("asked_at", "channels", "complete", "expires", "parts", "seq")

    def __init__(self, expires: float) -> None:
        self.seq = -1
        self.expires = expires
        self.complete = False  # a full view has been applied
        self.asked_at = float("-inf")
        self.channels: dict[str, dict[MemberKey, View]] = {}
        self.parts: tuple[str, dict[int, list]] | None = None  # a full view arriving


def _key(view: Any) -> MemberKey | None:
    if not isinstance(view, dict):
        return None
    kind, pid = view.get("type"), view.get("presenceId")
    if not isinstance(kind, str) or not isinstance(pid, str):
        return None
    return (kind, pid)


def _clean(view: View) -> View | None:
    """A member view from another process, with only the fields a member has (it
    goes to clients as it is)."""
    if _key(view) is None or not isinstance(view.get("joinedAt"), str):
        return None
    clean = {"type": view["type"], "presenceId": view["presenceId"], "joinedAt": view["joinedAt"]}
    if isinstance(view.get("state"), dict):
        clean["state"] = view["state"]
    return clean


class ClusterPresenceStore:
    """The PresenceStore of a process in a cluster; see the module docstring.

    `on_change` (set by `Presence`) receives the changes that come from other
    processes; those from this process's own calls are returned, as the Protocol says."""

    def __init__(
        self,
        origin: str,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_message_bytes: int = 7000,
    ) -> None:
        self.origin = origin
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_seconds = lease_seconds
        self.max_message_bytes = max_message_bytes
        self.local = LocalPresenceStore()
        self.send: Callable[[bytes], None] | None = None
        self.on_change: Callable[[PresenceChange], None] | None = None
        self._merged: dict[str, dict[MemberKey, _Merged]] = {}
        self._peers: dict[str, _Peer] = {}
        self._seq = 0
        self._pending: list[list] = []
        self._flush_scheduled = False
        self._task: asyncio.Task | None = None
        # figures for /health
        self.sent = 0
        self.received = 0
        self.expired = 0  # processes dropped for a lease that ran out
        self.syncs_asked = 0
        self.states_left_out = 0  # states too large for the link (see _chunks)

    def attach(self, on_change: Callable[[PresenceChange], None]) -> None:
        self.on_change = on_change

    # -- the PresenceStore Protocol -----------------------------------------------
    def join(
        self, channel: str, key: MemberKey, connection_id: str, now: str | None = None
    ) -> PresenceChange | None:
        change = self.local.join(channel, key, connection_id, now)
        return self._local(change)

    def leave(
        self, channel: str, connection_id: str, now: str | None = None
    ) -> PresenceChange | None:
        return self._local(self.local.leave(channel, connection_id, now))

    def update(
        self, channel: str, connection_id: str, state: dict | None, now: str | None = None
    ) -> PresenceChange | None:
        return self._local(self.local.update(channel, connection_id, state, now))

    def snapshot(self, channel: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        room = self._merged.get(channel)
        if room is None:
            return [], False
        views = (m.view for m in room.values())
        if 0 < limit < len(room):
            return list(islice(views, limit)), True
        return list(views), False

    def member_count(self, channel: str) -> int:
        room = self._merged.get(channel)
        return len(room) if room is not None else 0

    def _local(self, change: PresenceChange | None) -> PresenceChange | None:
        if change is None:
            return None
        self._queue(change.event, change.channel, change.member)
        merged = self._apply(_SELF, change.event, change.channel, change.member)
        if merged is None:
            return None
        if merged == (change.event, change.member):
            return change  # what the local store said (made once: a uuid and a clock)
        return PresenceChange(merged[0], change.channel, merged[1], change.timestamp)

    # -- the merge ----------------------------------------------------------------
    def _apply(self, holder: str, event: str, channel: str, view: View) -> tuple[str, View] | None:
        """One holder's member-level change; the cluster-level change, if any, as
        (event, member view)."""
        key = _key(view)
        if key is None:
            return None
        room = self._merged.get(channel)
        if event == LEAVE:
            member = room.get(key) if room is not None else None
            if member is None or holder not in member.holders:
                return None
            member.holders.discard(holder)
            if member.holders:
                return None
            del room[key]  # type: ignore[union-attr]
            if not room:
                del self._merged[channel]
            return LEAVE, member.view
        if room is None:
            room = self._merged[channel] = {}
        member = room.get(key)
        if member is None:  # the first holder anywhere
            member = room[key] = _Merged(view)
            member.holders.add(holder)
            return JOIN, view
        member.holders.add(holder)
        state = view.get("state")
        # an update, or a holder that arrives with a state (a full view heard after
        # another holder's), sets the member's state: the last heard wins
        if (event == UPDATE or state is not None) and state != member.view.get("state"):
            merged = {k: v for k, v in member.view.items() if k != "state"}
            if state is not None:
                merged["state"] = state
            member.view = merged
            return UPDATE, merged
        return None

    def _emit(self, channel: str, change: tuple[str, View] | None) -> None:
        if change is not None and self.on_change is not None:
            self.on_change(PresenceChange(change[0], channel, change[1], _now()))

    def _replace(
        self, origin: str, peer: _Peer, channels: dict[str, dict[MemberKey, View]]
    ) -> None:
        """A process's full view: emit the differences from what was kept."""
        old = peer.channels
        peer.channels = channels
        for channel, members in old.items():
            now = channels.get(channel, {})
            for key, view in members.items():
                if key not in now:
                    self._emit(channel, self._apply(origin, LEAVE, channel, view))
        for channel, members in channels.items():
            before = old.get(channel, {})
            for key, view in members.items():
                was = before.get(key)
                if was is None:
                    self._emit(channel, self._apply(origin, JOIN, channel, view))
                elif was.get("state") != view.get("state"):
                    self._emit(channel, self._apply(origin, UPDATE, channel, view))

    def _drop(self, origin: str) -> None:
        peer = self._peers.pop(origin, None)
        if peer is not None:
            self._replace(origin, peer, {})

    # -- sending ------------------------------------------------------------------
    def _queue(self, event: str, channel: str, view: View) -> None:
        if not self._peers:  # alone: nobody to tell; the seq shows the gap to newcomers
            self._seq += 1
            return
        self._pending.append([_OPS[event], channel, view])
        if not self._flush_scheduled:
            self._flush_scheduled = True
            with contextlib.suppress(RuntimeError):  # no loop: flushed by the next timer
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        ops, self._pending = self._pending, []
        for chunk in self._chunks(ops):
            self._seq += 1
            self._send({"k": "ops", "s": self._seq, "ops": chunk})

    def _chunks(self, items: list) -> list[list]:
        """`items` (each ending with a member view) in lists whose encoding stays
        under max_message_bytes. An item too large alone (a state over NOTIFY's
        8000 bytes: --max-presence-state-bytes raised without a broker) goes without
        its state, which the other processes then do not show."""
        chunks: list[list] = [[]]
        size = 0
        room = self.max_message_bytes - 200
        for item in items:
            length = len(orjson.dumps(item)) + 1
            if length > room and "state" in item[-1]:
                self.states_left_out += 1
                log.warning("presence: a member's state of %d bytes is too large to share "
                            "with other processes; sent without it", length)  # fmt: skip
                item = [*item[:-1], {k: v for k, v in item[-1].items() if k != "state"}]
                length = len(orjson.dumps(item)) + 1
            if chunks[-1] and size + length > room:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += length
        return chunks if chunks[0] else []

    def _send(self, body: dict[str, Any]) -> None:
        if self.send is None:
            return
        body["o"] = self.origin
        self.send(orjson.dumps(body))
        self.sent += 1

    def _send_full(self) -> None:
        """Everything this process holds, in parts (after the ops queued so far)."""
        if self._pending:
            self._flush()
        members = [
            [channel, member.view]
            for channel, room in self.local._channels.items()
            for member in room.members.values()
        ]
        parts = self._chunks(members) or [[]]
        sync_id = uuid.uuid4().hex[:12]
        for index, part in enumerate(parts):
            self._send({"k": "full", "s": self._seq, "id": sync_id, "i": index,
                        "n": len(parts), "m": part})  # fmt: skip

    def _ask(self, origin: str, peer: _Peer) -> None:
        loop_now = asyncio.get_running_loop().time()
        if loop_now - peer.asked_at < self.heartbeat_seconds:
            return
        peer.asked_at = loop_now
        self.syncs_asked += 1
        self._send({"k": "sync", "to": origin})

    def connected(self) -> None:
        """The transport (re)connected: anything may have been missed both ways.
        Knowing no other process (at start, or after an outage longer than the lease):
        tell everyone what is here and ask everyone for theirs. Otherwise the heartbeat
        suffices: a process that missed messages sees the seq differ and asks (so a
        bus's cluster-wide catch-up does not make every process send everything)."""
        if self._peers:
            self._send({"k": "hb", "s": self._seq})
            return
        self._send_full()
        self._send({"k": "sync", "to": ""})

    # -- receiving ----------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        try:
            body = orjson.loads(data)
            origin = body["o"]
            kind = body["k"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if origin == self.origin or not isinstance(origin, str) or not origin:
            return
        try:
            self._receive(origin, kind, body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.debug("presence: dropped a malformed message from %.40s: %s", origin, exc)

    def _receive(self, origin: str, kind: str, body: dict[str, Any]) -> None:
        self.received += 1
        loop_now = asyncio.get_running_loop().time()
        peer = self._peers.get(origin)
        if peer is None:
            peer = self._peers[origin] = _Peer(loop_now + self.lease_seconds)
        peer.expires = loop_now + self.lease_seconds
        if kind == "sync":
            if body["to"] in ("", self.origin):
                self._send_full()
            if not peer.complete:
                self._ask(origin, peer)
        elif kind == "hb":
            if not peer.complete or body["s"] != peer.seq:
                self._ask(origin, peer)
        elif kind == "ops":
            seq = int(body["s"])
            if seq <= peer.seq:
                return  # in a full view already
            if seq != peer.seq + 1 or not peer.complete:
                self._ask(origin, peer)
            peer.seq = seq
            for op, channel, view in body["ops"]:
                self._peer_op(origin, peer, op, channel, view)
        elif kind == "full":
            self._full_part(origin, peer, body)
        elif kind == "bye":  # a clean stop: no need to wait for the lease
            self._drop(origin)

    def _peer_op(self, origin: str, peer: _Peer, op: str, channel: str, given: View) -> None:
        view = _clean(given)
        if view is None or not isinstance(channel, str):
            return
        key = (view["type"], view["presenceId"])
        members = peer.channels.setdefault(channel, {})
        if op == "l":
            if members.pop(key, None) is None:
                return
            if not members:
                del peer.channels[channel]
            self._emit(channel, self._apply(origin, LEAVE, channel, view))
        elif op in ("j", "u"):
            members[key] = view
            self._emit(channel, self._apply(origin, JOIN if op == "j" else UPDATE, channel, view))

    def _full_part(self, origin: str, peer: _Peer, body: dict[str, Any]) -> None:
        sync_id, index, total = str(body["id"]), int(body["i"]), int(body["n"])
        if peer.parts is None or peer.parts[0] != sync_id:
            peer.parts = (sync_id, {})
        peer.parts[1][index] = body["m"]
        if len(peer.parts[1]) < total:
            return
        channels: dict[str, dict[MemberKey, View]] = {}
        for part in peer.parts[1].values():
            for channel, given in part:
                view = _clean(given)
                if view is not None and isinstance(channel, str):
                    channels.setdefault(channel, {})[(view["type"], view["presenceId"])] = view
        peer.parts = None
        seq = int(body["s"])
        if peer.complete and seq < peer.seq:
            return  # older than ops applied already
        peer.seq = seq
        peer.complete = True
        self._replace(origin, peer, channels)

    # -- the clock ----------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="presence-heartbeat")

    async def stop(self) -> None:
        """Stop the heartbeat; send what is queued and a goodbye, so the others drop
        this process's members now rather than after the lease (which covers a
        goodbye that never comes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending:
            self._flush()
        self._send({"k": "bye", "s": self._seq})

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.beat(loop.time())
            await asyncio.sleep(self.heartbeat_seconds)

    def beat(self, loop_now: float) -> None:
        """One heartbeat: renew this process's lease at the others, drop the silent."""
        if self._pending:
            self._flush()
        self._send({"k": "hb", "s": self._seq})
        self.expire(loop_now)

    def expire(self, loop_now: float) -> None:
        """Drop every process whose lease ran out: its members leave."""
        for origin, peer in list(self._peers.items()):
            if peer.expires <= loop_now:
                log.info("presence: process %.8s silent for %gs: its members leave",
                         origin, self.lease_seconds)  # fmt: skip
                self.expired += 1
                self._drop(origin)

    def describe(self) -> dict[str, Any]:
        return {
            "processes": 1 + len(self._peers),
            "heartbeat_seconds": self.heartbeat_seconds,
            "lease_seconds": self.lease_seconds,
            "messages_sent": self.sent,
            "messages_received": self.received,
            "leases_expired": self.expired,
            "syncs_asked": self.syncs_asked,
            "states_left_out": self.states_left_out,
        }
