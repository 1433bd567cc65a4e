"""What fan-out sends, as the raw WebSocket protocol sends it: JSON in one unmasked text
frame. The outboxes of raw connections carry CODEC; the engine caches its bytes on each
message, so each method runs once per item whatever the audience."""

from __future__ import annotations

import orjson

from pgrealtime.engine.messages import ChannelEvent, StoredMessage
from pgrealtime.protocols.raw_ws.frames import websocket_text_frame


class RawCodec:
    __slots__ = ()

    def message(self, message: StoredMessage) -> bytes:
        return websocket_text_frame(message.body())

    def event(self, event: ChannelEvent) -> bytes:
        """`presence:join` -> {"type": "presence", "event": "join", "channel", **data}."""
        kind, _, name = event.name.partition(":")
        frame = {"type": kind, "event": name, "channel": event.channel, **event.data}
        return websocket_text_frame(orjson.dumps(frame))

    def change(self, body: bytes) -> bytes:
        return websocket_text_frame(body)


CODEC = RawCodec()
