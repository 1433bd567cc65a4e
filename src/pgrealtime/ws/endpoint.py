"""The aiohttp side of `/realtime`: accept, read frames, hand them to a Session."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from pgrealtime.hub import Outbox
from pgrealtime.ws.frames import ErrorCode
from pgrealtime.ws.session import Session, SessionContext

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4008
CLOSE_GOING_AWAY = 1001
SHUTDOWN_REASON = "server shutting down"


class Sessions:
    """Every live session of this process (for revocation and shutdown)."""

    def __init__(self) -> None:
        self.live: set[Session] = set()
        # Shutting down: frames are no longer acted on, so the publishes in flight are
        # the last ones and can be waited for before the connections are closed.
        self.draining = False

    def close_all(self, code: int, reason: str) -> None:
        """Close every connection after what is queued for it has been written."""
        for session in list(self.live):
            session.close(code, reason)


_END_OF_STREAM = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
# Close handshakes in flight, kept from the garbage collector: one set for the
# process, not one per connection (every idle connection would carry it).
_CLOSING: set[asyncio.Task] = set()


class _HandlerState:
    """Where one connection's handler is, so shutdown can wake it to close."""

    __slots__ = ("close_with", "parked", "waking")

    def __init__(self) -> None:
        self.close_with: tuple[int, str] | None = None  # (code, reason) once asked to close
        self.parked = False  # waiting in receive()
        self.waking = False  # we cancelled that wait (not aiohttp, not the loop)


async def realtime_endpoint(request: web.Request) -> web.StreamResponse:
    ctx: SessionContext = request.app["session_context"]
    sessions: Sessions = request.app["sessions"]
    settings = request.app["settings"]
    ws = web.WebSocketResponse(
        compress=False,
        # aiohttp pings from its own writer between whole frames (the hub writes whole
        # frames too) and drops a peer whose pong is late; 0 turns it off
        heartbeat=settings.heartbeat_seconds or None,
        # frames up to 4x the limit are read and refused with an error frame; beyond
        # that aiohttp closes the connection (1009) without reading it all
        max_msg_size=max(4 * settings.max_frame_bytes, 64 * 1024),
    )
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    handler = asyncio.current_task()
    assert handler is not None
    state = _HandlerState()

    def close(code: int, reason: str) -> None:
        session.closed()
        if sessions.draining:
            # Shutting down: the handler closes with the closing handshake (below).
            if state.close_with is None:
                state.close_with = (code, reason)
                if state.parked:  # wake it from receive()
                    state.waking = True
                    handler.cancel()
            return
        task = asyncio.ensure_future(ws.close(code=code, message=reason.encode()))
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    def on_overflow() -> None:
        log.info("disconnecting a slow subscriber: send buffer full")
        close(CLOSE_SLOW_CONSUMER, "slow consumer: send buffer full")

    outbox = Outbox(ctx.hub, transport, on_overflow)
    session = Session(ctx, outbox, close)
    sessions.live.add(session)
    if sessions.draining:  # upgraded while the server was closing the others
        session.close(CLOSE_GOING_AWAY, SHUTDOWN_REASON)
    try:
        while state.close_with is None:
            state.parked = True
            try:
                msg = await ws.receive()
            except asyncio.CancelledError:
                if not state.waking:
                    raise
                handler.uncancel()
                break
            finally:
                state.parked = False
            if msg.type in _END_OF_STREAM:
                break
            if sessions.draining:
                continue  # shutting down: nothing new is started
            if msg.type == WSMsgType.TEXT:
                await session.handle_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                try:
                    text = msg.data.decode()
                except UnicodeDecodeError:
                    session.send_error(ErrorCode.MALFORMED_FRAME, "Frame is not valid UTF-8")
                    continue
                await session.handle_text(text)
        if state.close_with is not None and not ws.closed:
            # Send the close frame after what was written, then read (and drop) until
            # the client's close frame: closing the socket while a client is still
            # sending would reset the connection, and the client could lose the replies
            # and messages written just before.
            code, reason = state.close_with
            await ws.close(code=code, message=reason.encode())
    finally:
        sessions.live.discard(session)
        session.closed()
    return ws
