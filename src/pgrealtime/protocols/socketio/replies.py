"""The session's neutral replies and refusals as Socket.IO acks and events.

A request that came with an ack id is answered through its ack: `subscribed` as
`{ok: true, channel, presence: {members}}` (the SDK reads `presence.members` unguarded,
so it is always there), `published` and `unsubscribed` as `{ok: true, ...}`, a refusal
as `{ok: false, channel?, error: {code, message}}`; `auth_success` (a refresh by
`realtime:auth`) as `{ok: true, userId, expiresAt}`. Without an ack id a refusal is a
`realtime:error` event `{channel?, code, message}` and an answer to a request says
nothing (the SDK asks for no ack on publish and unsubscribe); what the server says
unasked (`token_expiring`) is an event `realtime:<type>` with the reply's other fields.
"""

from __future__ import annotations

from typing import Any

from pgrealtime.engine.channels import MAX_CHANNEL_LENGTH
from pgrealtime.engine.hub import Outbox
from pgrealtime.protocols.socketio import packets
from pgrealtime.session.core import RequestId

# Replies the session sends unasked (request id None whatever the client did): each
# is an event `realtime:<type>`. Every other reply answers a request, so without an
# ack id nobody waits for it.
UNSOLICITED = frozenset({"token_expiring"})


class SocketIOReplies:
    __slots__ = ("outbox", "presence")
    protocol = "socketio"  # the metrics label (publishes by source, connections)

    def __init__(self, outbox: Outbox, presence: Any = None) -> None:
        self.outbox = outbox
        self.presence = presence  # the presence store, when the server has one

    def reply(self, reply: dict, request_id: RequestId) -> None:
        if not isinstance(request_id, int):
            kind = reply.get("type")
            if kind in UNSOLICITED:
                data = {k: v for k, v in reply.items() if k != "type"}
                self.outbox.send(packets.event("realtime:" + kind, data))
            return
        if reply.pop("type", None) == "subscribed" and "presence" not in reply:
            reply["presence"] = self._snapshot(reply["channel"])
        self.outbox.send(packets.ack(request_id, {"ok": True, **reply}))

    def error(self, code: str, message: str, request_id: RequestId, channel: str | None) -> None:
        if channel is not None and len(channel) > MAX_CHANNEL_LENGTH:
            channel = None  # not echoed, as on the raw protocol
        error = {"code": code, "message": message}
        if isinstance(request_id, int):
            answer = {"ok": False, "channel": channel, "error": error}
            if channel is None:
                del answer["channel"]
            self.outbox.send(packets.ack(request_id, answer))
            return
        data = {"channel": channel, **error} if channel is not None else error
        self.outbox.send(packets.event("realtime:error", data))

    def _snapshot(self, channel: str) -> dict:
        snapshot = getattr(self.presence, "snapshot", None)
        if snapshot is None:
            return {"members": []}
        members = snapshot(channel)
        return members if isinstance(members, dict) else {"members": list(members)}
