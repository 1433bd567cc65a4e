"""The session's neutral replies and refusals as raw-protocol frames.

Replies are already shaped like the raw protocol's frames (docs/protocol.md), so this
adds the request's `id` and writes them; refusals become `error` frames.
"""

from __future__ import annotations

from pgrealtime.engine.hub import Outbox
from pgrealtime.protocols.raw_ws.frames import (
    FrameError,
    encode,
    error_frame,
    parse_frame,
    websocket_text_frame,
)
from pgrealtime.session.core import RequestId, Session


class RawReplies:
    __slots__ = ("outbox",)
    protocol = "websocket"  # the metrics label (publishes by source, connections)

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def reply(self, reply: dict, request_id: RequestId) -> None:
        if request_id is not None:
            reply["id"] = request_id
        self.outbox.send(websocket_text_frame(encode(reply)))

    def error(self, code: str, message: str, request_id: RequestId, channel: str | None) -> None:
        frame = error_frame(code, message, request_id, channel)
        self.outbox.send(websocket_text_frame(encode(frame)))


async def handle_text(session: Session, data: str | bytes) -> None:
    """One text frame: decode it and hand the request to the session. Every frame
    spends a token, a malformed one too; it is still parsed, so that the refusal
    carries the frame's id."""
    limited = not session.take_frame_token()
    try:
        frame = parse_frame(data, session.ctx.max_frame_bytes)
    except FrameError as exc:
        if limited:
            session.frame_rate_limited(exc.request_id, exc.channel)
        else:
            session.send_error(exc.code, exc.message, exc.request_id, exc.channel)
        return
    if limited:
        session.frame_rate_limited(frame.id, getattr(frame, "channel", None))
        return
    await session.handle_request(frame)
