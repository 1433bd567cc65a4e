"""A stored message as the raw WebSocket protocol sends it: its JSON body in one
unmasked text frame. Given to the engine at assembly (app.py), which caches the bytes on
the message, so this runs once per message whatever the audience."""

from __future__ import annotations

from pgrealtime.engine.messages import StoredMessage
from pgrealtime.protocols.raw_ws.frames import websocket_text_frame


def message_frame(message: StoredMessage) -> bytes:
    return websocket_text_frame(message.body())
