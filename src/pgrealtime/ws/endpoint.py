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


class Sessions:
    """Every live session of this process (for revocation and shutdown)."""

    def __init__(self) -> None:
        self.live: set[Session] = set()


async def realtime_endpoint(request: web.Request) -> web.StreamResponse:
    ctx: SessionContext = request.app["session_context"]
    sessions: Sessions = request.app["sessions"]
    settings = request.app["settings"]
    ws = web.WebSocketResponse(
        compress=False,
        heartbeat=settings.heartbeat_seconds,
        # frames up to 4x the limit are read and refused with an error frame; beyond
        # that aiohttp closes the connection (1009) without reading it all
        max_msg_size=max(4 * settings.max_frame_bytes, 64 * 1024),
    )
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    tasks: set[asyncio.Task] = set()

    def close(code: int, reason: str) -> None:
        session.closed()
        task = asyncio.ensure_future(ws.close(code=code, message=reason.encode()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_overflow() -> None:
        log.info("disconnecting a slow subscriber: send buffer full")
        close(CLOSE_SLOW_CONSUMER, "slow consumer: send buffer full")

    outbox = Outbox(ctx.hub, transport, on_overflow)
    session = Session(ctx, outbox, close)
    sessions.live.add(session)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                try:
                    text = msg.data.decode()
                except UnicodeDecodeError:
                    session.send_error(ErrorCode.MALFORMED_FRAME, "Frame is not valid UTF-8")
                    continue
                await session.handle_text(text)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        sessions.live.discard(session)
        session.closed()
    return ws
