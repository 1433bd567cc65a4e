"""The aiohttp side of `/realtime`: accept, read frames, hand them to a Session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import WSMessage, WSMsgType, web

from pgrealtime import keys
from pgrealtime.api.errors import error_response
from pgrealtime.engine.hub import Outbox
from pgrealtime.protocols.raw_ws.admission import Admission
from pgrealtime.protocols.raw_ws.auth_deadline import AuthDeadlines, Ticket
from pgrealtime.protocols.raw_ws.encode import CODEC
from pgrealtime.protocols.raw_ws.frames import ErrorCode, websocket_close_frame
from pgrealtime.protocols.raw_ws.keepalive import PING_FRAME, Keepalive
from pgrealtime.protocols.raw_ws.replies import RawReplies, handle_text
from pgrealtime.session.core import Session, SessionContext

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4008
CLOSE_NOT_AUTHENTICATED = 4001  # token expired, or no auth within --auth-timeout
CLOSE_GOING_AWAY = 1001
SHUTDOWN_REASON = "server shutting down"
SLOW_CONSUMER_REASON = "slow consumer: send buffer full"
# A close handshake that has not ended by then (a peer that reads nothing, so the
# close frame never drains) is cut: aiohttp's own wait for the peer's close frame is
# 10 s, but nothing bounds its wait for the drain before it.
CLOSE_GRACE_SECONDS = 15.0
# Shutting down, after the drain: how long the close frame may take to go out and be
# answered before the connection is cut. A client that reads nothing (the Python
# `websockets` library, idle, never answers a close it has not read) would otherwise
# hold SIGTERM for aiohttp's 10 s close wait; what was queued for it is written by then.
SHUTDOWN_CLOSE_SECONDS = 1.0


async def _on_frame(session: Session, msg: WSMessage) -> None:
    """A text frame as it is; a binary one if it is UTF-8 text."""
    if msg.type == WSMsgType.TEXT:
        await handle_text(session, msg.data)
        return
    try:
        text = msg.data.decode()
    except UnicodeDecodeError:
        session.send_error(ErrorCode.MALFORMED_FRAME, "Frame is not valid UTF-8")
        return
    await handle_text(session, text)


class Sessions:
    """Every live session of this process (for revocation and shutdown)."""

    def __init__(self) -> None:
        self.live: set[Session] = set()
        # Shutting down: frames are no longer acted on, so the publishes in flight are
        # the last ones and can be waited for before the connections are closed.
        self.draining = False
        # for metrics (observe/collector.ProtocolSessions): connections accepted, and
        # those cut here by reason (slow readers are counted by the hub, expired
        # tokens by the expiry clock)
        self.opened: Counter[str] = Counter()  # by protocol ("websocket", "socketio")
        self.ended: Counter[str] = Counter()

    def protocol(self, replies: type) -> ProtocolView:
        """The sessions of one protocol (told apart by their Replies type, named by its
        `protocol`), for metrics."""
        return ProtocolView(self, replies.protocol, replies)

    def close_all(self, code: int, reason: str) -> None:
        """Close every connection after what is queued for it has been written."""
        for session in list(self.live):
            session.close(code, reason)


class ProtocolView:
    """One protocol's share of Sessions (observe/collector.ProtocolSessions). Cuts by
    reason are not per protocol: the first view ("websocket") carries them all."""

    def __init__(self, sessions: Sessions, name: str, replies: type) -> None:
        self.sessions = sessions
        self.name = name
        self.replies = replies
        self.ended = sessions.ended if name == "websocket" else Counter()

    @property
    def live(self) -> list[Session]:
        return [s for s in self.sessions.live if type(s.replies) is self.replies]

    @property
    def opened(self) -> int:
        return self.sessions.opened[self.name]


_END_OF_STREAM = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
# Close handshakes in flight, kept from the garbage collector: one set for the
# process, not one per connection (every idle connection would carry it).
_CLOSING: set[asyncio.Task] = set()


class Connection:
    """One accepted WebSocket: how its session closes it, how shutdown wakes its
    handler, and what the heartbeat needs. A slotted object rather than closures over
    the handler's locals: ~0.9 KB less per connection."""

    __slots__ = ("auth_ticket", "close_with", "handler", "last_heard", "parked", "pinged_at",
                 "session", "sessions", "transport", "waking", "ws")  # fmt: skip

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, sessions: Sessions
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.sessions = sessions
        handler = asyncio.current_task()
        assert handler is not None
        self.handler = handler
        self.session: Session | None = None
        self.close_with: tuple[int, str] | None = None  # (code, reason) once asked to close
        self.parked = False  # waiting in receive()
        self.waking = False  # we cancelled that wait (not aiohttp, not the loop)
        self.last_heard = asyncio.get_running_loop().time()
        self.pinged_at = 0.0
        self.auth_ticket: Ticket | None = None

    def close(self, code: int, reason: str) -> None:
        if self.session is not None:
            self.session.closed()
        if self.sessions.draining:
            # Shutting down: the handler closes with the closing handshake (below).
            if self.close_with is None:
                self.close_with = (code, reason)
                if self.parked:  # wake it from receive()
                    self.waking = True
                    self.handler.cancel()
            return
        task = asyncio.ensure_future(self._close_within(code, reason))
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def _close_within(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()), CLOSE_GRACE_SECONDS
            )
        except TimeoutError:
            self.transport.abort()

    def on_overflow(self) -> None:
        """A reader too far behind: drop the connection now. A closing handshake would
        wait for the peer to read what is buffered (it does not, or it would not be
        here), keeping the socket and its buffer for as long as the peer stays; the
        abort frees both at once. The close frame is queued first, for the rare case
        that it can still go out, but nothing waits for it."""
        log.info("disconnecting a slow subscriber: send buffer full")
        if self.session is not None:
            self.session.closed()
        transport = self.transport
        if not transport.is_closing():
            with contextlib.suppress(Exception):  # it is being dropped anyway
                transport.write(websocket_close_frame(CLOSE_SLOW_CONSUMER, SLOW_CONSUMER_REASON))
            transport.abort()

    def auth_deadline_passed(self, timeout: float) -> None:
        session = self.session
        if session is None or session.principal is not None or session.outbox.closed:
            return
        self.sessions.ended["auth_timeout"] += 1
        session.send_error(
            ErrorCode.NOT_AUTHENTICATED,
            f"Not authenticated within {timeout:g} seconds of connecting: closing",
        )
        session.close(CLOSE_NOT_AUTHENTICATED, "authentication timeout")

    def ping(self) -> None:
        if self.session is not None:
            self.session.outbox.send(PING_FRAME)

    def cut(self) -> None:
        """A peer that answers nothing: drop the connection without a handshake (it
        would not be read); the handler sees the end of the stream and cleans up."""
        log.info("disconnecting a peer that did not answer a ping")
        self.sessions.ended["no_pong"] += 1
        self.transport.abort()

    async def read_frames(
        self,
        on_frame: Callable[[WSMessage, float], Awaitable[None]],
        *,
        any_frame_is_life: bool,
    ) -> None:
        """Hand every text and binary frame to `on_frame` (with the loop's time) until
        the peer or the server ends the connection, then close it promptly. The one
        read loop of every protocol on a WebSocket: parked while it waits (shutdown and
        revocation wake it), WebSocket pings answered, nothing new acted on while
        draining. `any_frame_is_life`: every frame counts as the heartbeat's proof of
        life (raw protocol); otherwise `on_frame` says when (Socket.IO: its pong)."""
        ws, sessions = self.ws, self.sessions
        loop = asyncio.get_running_loop()
        while self.close_with is None:
            self.parked = True
            try:
                msg = await ws.receive()
            except asyncio.CancelledError:
                if not self.waking:
                    raise
                self.handler.uncancel()
                break
            finally:
                self.parked = False
            now = loop.time()
            if any_frame_is_life:
                self.last_heard = now
            if msg.type in _END_OF_STREAM:
                break
            if msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
                continue
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY) or sessions.draining:
                continue  # WebSocket pongs; draining: shutting down, nothing new is started
            await on_frame(msg, now)
        if self.close_with is not None and not ws.closed:
            # Send the close frame after what was written, then read (and drop) until
            # the client's close frame: closing the socket while a client is still
            # sending would reset the connection, and the client could lose the replies
            # and messages written just before.
            code, reason = self.close_with
            await _close_promptly(ws, self.transport, code, reason)


async def _close_promptly(
    ws: web.WebSocketResponse, transport: asyncio.Transport, code: int, reason: str
) -> None:
    """Shutdown's close: the close frame goes out after everything queued (a client
    still reading gets it all, for up to CLOSE_GRACE_SECONDS), then the peer has
    SHUTDOWN_CLOSE_SECONDS to answer before the connection is cut."""
    closing = asyncio.ensure_future(ws.close(code=code, message=reason.encode()))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_GRACE_SECONDS
    while not closing.done():
        await asyncio.wait({closing}, timeout=SHUTDOWN_CLOSE_SECONDS)
        if closing.done():
            break
        if transport.get_write_buffer_size() == 0 or loop.time() >= deadline:
            transport.abort()  # everything is out; only the reply is missing
            break
    with contextlib.suppress(Exception):
        await closing


async def realtime_endpoint(request: web.Request) -> web.StreamResponse:
    ctx: SessionContext = request.app[keys.SESSION_CONTEXT]
    sessions: Sessions = request.app[keys.SESSIONS]
    keepalive: Keepalive = request.app[keys.KEEPALIVE]
    admission: Admission = request.app[keys.ADMISSION]
    ip = request.remote or ""
    refused = admission.admit(ip)
    if refused is not None:
        return error_response(*refused)
    try:
        return await _serve(request, ctx, sessions, keepalive)
    finally:
        admission.release(ip)


async def _serve(
    request: web.Request, ctx: SessionContext, sessions: Sessions, keepalive: Keepalive
) -> web.StreamResponse:
    settings = request.app[keys.SETTINGS]
    ws = web.WebSocketResponse(
        compress=False,
        # pings and pongs come to this handler: the heartbeat is process-wide
        # (protocols/raw_ws/keepalive.py) instead of aiohttp's timer per connection
        autoping=False,
        # frames up to 4x the limit are read and refused with an error frame; beyond
        # that aiohttp closes the connection (1009) without reading it all
        max_msg_size=max(4 * settings.max_frame_bytes, 64 * 1024),
    )
    try:
        await ws.prepare(request)  # checks the upgrade headers, then answers 101
    except web.HTTPException as exc:  # not an upgrade request: nothing was written yet
        return error_response(exc.status, "HTTP_ERROR", "Expected a WebSocket upgrade request")
    transport = request.transport
    assert transport is not None
    conn = Connection(ws, transport, sessions)
    outbox = Outbox(ctx.hub, transport, conn.on_overflow, CODEC)
    session = conn.session = Session(ctx, outbox, conn.close, RawReplies(outbox))
    sessions.live.add(session)
    sessions.opened["websocket"] += 1
    keepalive.add(conn)
    deadlines: AuthDeadlines = request.app[keys.AUTH_DEADLINES]
    conn.auth_ticket = deadlines.add(conn)
    if sessions.draining:  # upgraded while the server was closing the others
        session.close(CLOSE_GOING_AWAY, SHUTDOWN_REASON)
    try:
        await conn.read_frames(lambda msg, _now: _on_frame(session, msg), any_frame_is_life=True)
    finally:
        keepalive.discard(conn)
        if conn.auth_ticket is not None:
            conn.auth_ticket.cancel()
        sessions.live.discard(session)
        session.closed()
    return ws
