"""The aiohttp side of `/socket.io/`: Engine.IO 4 over WebSocket, one Session each.

What the official `@insforge/sdk` (1.5.2) does, observed from its code: `io(baseUrl,
{transports: ["websocket"], auth: {token}})` on the default namespace, where the token
is a user JWT, the anon key, or (createAdminClient) the `ik_` API key; then
`realtime:subscribe` with an ack, `realtime:unsubscribe` and `realtime:publish`
without. Long-polling is refused with a clear HTTP error. Beyond the SDK, two events
reach the session's other requests: `realtime:auth {token}` (a token refresh in place,
as the raw protocol's second `auth`) and `realtime:presence {channel, state}` (the raw
protocol's `presence_set`), both best sent with an ack.

Everything past the handshake is the same Session as `/realtime`'s, with the same
limits, caps, timers and revocation; only the bytes differ (packets.py, replies.py).
Heartbeat: Engine.IO 4 clients expect the server's ping every `pingInterval` and give
up after `pingInterval + pingTimeout` without one, so here only a pong counts as
hearing from the peer (on the raw protocol any frame does): the process-wide sweep
(protocols/raw_ws/keepalive.py) then pings every connection once per period, and cuts
one whose pong has not come by the next sweep.
"""

from __future__ import annotations

import logging
import uuid

import msgspec
from aiohttp import WSMessage, WSMsgType, web

from pgrealtime import keys
from pgrealtime.api.errors import error_response
from pgrealtime.auth import AuthError
from pgrealtime.engine.hub import Outbox
from pgrealtime.protocols.raw_ws.endpoint import (
    CLOSE_GOING_AWAY,
    CLOSE_NOT_AUTHENTICATED,
    SHUTDOWN_REASON,
    Connection,
    Sessions,
)
from pgrealtime.protocols.raw_ws.keepalive import Keepalive
from pgrealtime.protocols.socketio import packets
from pgrealtime.protocols.socketio.packets import CODEC, Packet, PacketError
from pgrealtime.protocols.socketio.replies import SocketIOReplies
from pgrealtime.session import requests as rq
from pgrealtime.session.core import Session, SessionContext
from pgrealtime.session.errors import ErrorCode

log = logging.getLogger(__name__)

PONG = packets.websocket_text_frame(b"3")
# client event -> the request it is, and whether its data may carry more than the SDK's
EVENTS: dict[str, type[msgspec.Struct]] = {
    "realtime:subscribe": rq.Subscribe,
    "realtime:unsubscribe": rq.Unsubscribe,
    "realtime:publish": rq.Publish,
    "realtime:auth": rq.Auth,  # refresh in place (session/refresh.py)
    "realtime:presence": rq.PresenceSet,  # set this member's presence state
}


class SocketIOConnection(Connection):
    """A raw-protocol Connection that pings, refuses and says goodbye in Socket.IO."""

    __slots__ = ("connected",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connected = False  # Socket.IO CONNECT accepted

    def ping(self) -> None:
        if self.session is not None:
            self.session.outbox.send(packets.PING)

    def close(self, code: int, reason: str) -> None:
        session = self.session
        if code == CLOSE_NOT_AUTHENTICATED and session is not None and not session.outbox.closed:
            # the server ends it (token expired, no handshake in time): "io server
            # disconnect", after which the client does not reconnect by itself
            session.outbox.send(packets.DISCONNECT if self.connected else packets.connect_error(
                reason, ErrorCode.NOT_AUTHENTICATED))  # fmt: skip
            session.outbox.flush()
        super().close(code, reason)

    def auth_deadline_passed(self, timeout: float) -> None:
        session = self.session
        if session is None or session.principal is not None or session.outbox.closed:
            return
        session.close(
            CLOSE_NOT_AUTHENTICATED,
            f"Not authenticated within {timeout:g} seconds of connecting: closing",
        )


async def socketio_endpoint(request: web.Request) -> web.StreamResponse:
    if request.query.get("transport") != "websocket" or request.query.get("EIO") != "4":
        return error_response(
            400,
            "TRANSPORT_UNSUPPORTED",
            "Only Engine.IO 4 over WebSocket is served here: connect with"
            " /socket.io/?EIO=4&transport=websocket (Socket.IO v4 client with"
            ' transports: ["websocket"]); long-polling is not supported',
        )
    admission = request.app[keys.ADMISSION]
    ip = request.remote or ""
    refused = admission.admit(ip)
    if refused is not None:
        return error_response(*refused)
    try:
        return await _serve(request)
    finally:
        admission.release(ip)


async def _serve(request: web.Request) -> web.StreamResponse:
    app = request.app
    ctx: SessionContext = app[keys.SESSION_CONTEXT]
    sessions: Sessions = app[keys.SESSIONS]
    keepalive: Keepalive = app[keys.SOCKETIO_KEEPALIVE]
    settings = app[keys.SETTINGS]
    ws = web.WebSocketResponse(
        compress=False, autoping=False, max_msg_size=max(4 * settings.max_frame_bytes, 64 * 1024)
    )
    try:
        await ws.prepare(request)
    except web.HTTPException:
        return error_response(400, "HTTP_ERROR", "Expected a WebSocket upgrade request")
    transport = request.transport
    assert transport is not None
    conn = SocketIOConnection(ws, transport, sessions)
    outbox = Outbox(ctx.hub, transport, conn.on_overflow, CODEC)
    replies = SocketIOReplies(outbox, getattr(ctx, "presence", None))
    session = conn.session = Session(ctx, outbox, conn.close, replies)
    sessions.live.add(session)
    sessions.opened[SocketIOReplies.protocol] += 1
    period_ms = int(keepalive.period * 1000)
    outbox.send(
        packets.open_packet(uuid.uuid4().hex, period_ms, period_ms, settings.max_frame_bytes)
    )
    keepalive.add(conn)
    conn.auth_ticket = app[keys.AUTH_DEADLINES].add(conn)
    if sessions.draining:
        session.close(CLOSE_GOING_AWAY, SHUTDOWN_REASON)
    max_bytes = settings.max_frame_bytes
    try:
        await conn.read_frames(
            lambda msg, now: _on_frame(conn, session, msg, max_bytes, now),
            any_frame_is_life=False,  # only the Socket.IO pong is (see _on_frame)
        )
    finally:
        keepalive.discard(conn)
        if conn.auth_ticket is not None:
            conn.auth_ticket.cancel()
        sessions.live.discard(session)
        session.closed()
    return ws


async def _on_frame(
    conn: SocketIOConnection, session: Session, msg: WSMessage, max_bytes: int, now: float
) -> None:
    """One text frame. Every frame but a pong spends a frame token, a malformed one
    too (as on the raw protocol); when none is left only the heartbeat and the
    handshake are acted on, and anything else gets RATE_LIMITED."""
    if msg.type == WSMsgType.TEXT and msg.data == "3":
        conn.last_heard = now  # the pong: the only proof of life a Socket.IO client gives
        return
    limited = not session.take_frame_token()
    if msg.type != WSMsgType.TEXT:
        problem = "binary frames (Socket.IO binary attachments) are not supported"
    elif len(msg.data) > max_bytes:
        problem = f"Packet of {len(msg.data)} characters exceeds the limit of {max_bytes}"
    else:
        try:
            packet = packets.parse(msg.data)
            problem = None
        except PacketError as exc:
            problem = f"Malformed packet: {exc}"
    if problem is not None:
        if limited:
            session.frame_rate_limited(None, None)
        else:
            code = ErrorCode.FRAME_TOO_LARGE if "exceeds" in problem else ErrorCode.MALFORMED_FRAME
            session.send_error(code, problem)
        return
    if packet.kind == "pong":
        conn.last_heard = now
    elif packet.kind == "ping":
        session.outbox.send(PONG)
    elif packet.kind in ("close", "disconnect"):
        conn.close_with = (1000, "client disconnected")
    elif packet.kind == "connect":
        await _connect(conn, session, packet.data)
    elif not conn.connected:
        session.send_error(
            ErrorCode.NOT_AUTHENTICATED,
            "Not connected: the handshake (CONNECT with auth {token}) comes first",
            packet.ack,
        )
    elif limited:
        data = packet.data[1] if len(packet.data) > 1 else None
        channel = data.get("channel") if isinstance(data, dict) else None
        session.frame_rate_limited(packet.ack, channel if isinstance(channel, str) else None)
    else:
        await _on_event(session, packet)


async def _connect(conn: SocketIOConnection, session: Session, auth: object) -> None:
    """The handshake's `auth`: `{token}` (user JWT, anon key or API key) or `{apiKey}`."""
    token = None
    if isinstance(auth, dict):
        token = auth.get("token") or auth.get("apiKey")
    if not isinstance(token, str) or not token:
        session.outbox.send(packets.connect_error(
            "Not authenticated: pass auth {token} (a user token, the anon key or an API key)",
            ErrorCode.NOT_AUTHENTICATED))  # fmt: skip
        return
    try:
        principal = await session.authenticate(token)
    except AuthError as exc:
        session.outbox.send(packets.connect_error(exc.message, exc.code))
        return
    if principal is None:  # closed while the keys were fetched
        return
    if conn.auth_ticket is not None:
        conn.auth_ticket.cancel()
    conn.connected = True
    session.outbox.send(packets.connected(uuid.uuid4().hex))


async def _on_event(session: Session, packet: Packet) -> None:
    name, *args = packet.data
    data = args[0] if args else None
    channel = data.get("channel") if isinstance(data, dict) else None
    channel = channel if isinstance(channel, str) else None
    kind = EVENTS.get(name)
    if kind is None:
        session.send_error(
            ErrorCode.UNKNOWN_TYPE,
            f"Unknown event {name[:100]!r}; expected one of {', '.join(EVENTS)}",
            packet.ack,
            channel,
        )
        return
    if not isinstance(data, dict):
        session.send_error(ErrorCode.MALFORMED_FRAME, f"{name} takes an object", packet.ack)
        return
    if kind is rq.Publish and "payload" in data:
        payload = data["payload"]
        problem = (
            rq.payload_error(payload)
            if isinstance(payload, dict)
            else "payload must be a JSON object"
        )
        if problem is not None:
            session.send_error(ErrorCode.INVALID_PAYLOAD, problem, packet.ack, channel)
            return
    if kind is rq.PresenceSet and (problem := rq.state_error(data.get("state"))) is not None:
        session.send_error(ErrorCode.INVALID_PRESENCE_STATE, problem, packet.ack, channel)
        return
    fields = {k: v for k, v in data.items() if k != "id"}
    try:
        request = msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        session.send_error(ErrorCode.MALFORMED_FRAME, f"Invalid {name}: {exc}", packet.ack, channel)
        return
    except RecursionError:
        session.send_error(ErrorCode.MALFORMED_FRAME, "Event is nested too deeply", packet.ack)
        return
    await session.handle_request(msgspec.structs.replace(request, id=packet.ack))
