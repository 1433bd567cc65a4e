"""Engine.IO 4 / Socket.IO 5 packets over one WebSocket (pure: no sockets).

Only what a WebSocket-only client of the default namespace sends and needs: Engine.IO
`0` open (server), `1` close, `2` ping, `3` pong, `4` message; inside a message,
Socket.IO `0` connect (with the handshake's auth object), `1` disconnect, `2` event
(optionally with an ack id) and, from the server, `3` ack and `4` connect error.
Binary attachments (`5`, `6`) and other namespaces are refused: the SDK sends neither.

Server packets are text WebSocket frames built once; fan-out's frames come from
SocketIOCodec, cached on each message per protocol like the raw protocol's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pgrealtime.engine.messages import ChannelEvent, StoredMessage
from pgrealtime.protocols.raw_ws.frames import websocket_text_frame
from pgrealtime.util.timefmt import rfc3339

PING = websocket_text_frame(b"2")  # Engine.IO ping (server -> client)
DISCONNECT = websocket_text_frame(b"41")  # Socket.IO disconnect of the namespace
MAX_ACK_ID = 2**53  # JavaScript's safe integers: what the client can have sent


class PacketError(Exception):
    """A packet this server does not take; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class Packet:
    """A client packet: `kind` is "ping", "pong", "close", "connect", "disconnect" or
    "event"; `data` the connect auth object or the event's arguments; `ack` an id."""

    kind: str
    data: Any = None
    ack: int | None = None


def open_packet(sid: str, ping_interval_ms: int, ping_timeout_ms: int, max_payload: int) -> bytes:
    handshake = {
        "sid": sid,
        "upgrades": [],  # WebSocket from the start: nothing to upgrade to
        "pingInterval": ping_interval_ms,
        "pingTimeout": ping_timeout_ms,
        "maxPayload": max_payload,
    }
    return websocket_text_frame(b"0" + orjson.dumps(handshake))


def connected(sid: str) -> bytes:
    return websocket_text_frame(b"40" + orjson.dumps({"sid": sid}))


def connect_error(message: str, code: str) -> bytes:
    """What the client raises as `connect_error` (err.message, err.data.code)."""
    return websocket_text_frame(b"44" + orjson.dumps({"message": message, "data": {"code": code}}))


def event(name: str, data: Any) -> bytes:
    return websocket_text_frame(b"42" + orjson.dumps([name, data]))


def ack(ack_id: int, data: Any) -> bytes:
    return websocket_text_frame(b"43" + str(ack_id).encode() + orjson.dumps([data]))


def parse(text: str) -> Packet:
    """One client text frame -> Packet, or PacketError."""
    if not text:
        raise PacketError("empty packet")
    eio = text[0]
    if eio == "3":
        return Packet("pong")
    if eio == "2":
        return Packet("ping")
    if eio == "1":
        return Packet("close")
    if eio == "6":  # noop (sent by clients around an upgrade)
        return Packet("pong")
    if eio != "4":
        raise PacketError(f"unsupported Engine.IO packet type {eio!r}")
    if len(text) < 2:
        raise PacketError("empty Socket.IO packet")
    sio, rest = text[1], text[2:]
    if rest.startswith("/"):  # a namespace other than the default one
        namespace = rest.split(",", 1)[0]
        raise PacketError(f"namespace {namespace[:100]!r} does not exist; use the default /")
    if sio == "0":
        return Packet("connect", _json(rest) if rest else {})
    if sio == "1":
        return Packet("disconnect")
    if sio == "2":
        digits = 0
        while digits < len(rest) and rest[digits].isdigit() and digits < 16:
            digits += 1
        ack_id = int(rest[:digits]) if digits else None
        if ack_id is not None and ack_id > MAX_ACK_ID:
            raise PacketError("ack id out of range")
        args = _json(rest[digits:])
        if not isinstance(args, list) or not args or not isinstance(args[0], str):
            raise PacketError("an event must be a JSON array starting with its name")
        return Packet("event", args, ack_id)
    if sio in ("5", "6"):
        raise PacketError("binary attachments are not supported")
    raise PacketError(f"unsupported Socket.IO packet type {sio!r}")


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise PacketError(f"not valid JSON: {exc}") from exc


def _meta_merged(payload: Any, meta: dict) -> dict:
    """InsForge's `{...payload, meta}`: the payload's fields with `meta` beside (a
    payload that is not an object, only SQL can store, goes under `payload`)."""
    if isinstance(payload, dict):
        return {**payload, "meta": meta}
    return {"payload": payload, "meta": meta}


class SocketIOCodec:
    """What fan-out sends, as Socket.IO events (engine/messages.py Codec)."""

    __slots__ = ()

    def message(self, message: StoredMessage) -> bytes:
        meta = {
            # InsForge puts its room name here (presence events carry the bare name)
            "channel": "realtime:" + message.channel,
            "messageId": message.id,
            "senderType": message.sender_type,
            "senderId": message.sender_id,
            "timestamp": rfc3339(message.created_at),
            "position": message.position,
        }
        return event(message.event, _meta_merged(orjson.loads(message.payload_json), meta))

    def event(self, system_event: ChannelEvent) -> bytes:
        meta = {
            "channel": system_event.channel,
            "messageId": system_event.id,
            "senderType": "system",
            "timestamp": _iso(system_event.timestamp),
        }
        return event(system_event.name, {**system_event.data, "meta": meta})

    def change(self, body: bytes) -> bytes:
        frame = orjson.loads(body)  # {"type": "message", "channel", "event", "payload"}
        meta = {"channel": "realtime:" + frame["channel"], "senderType": "system"}
        return event(frame["event"], _meta_merged(frame["payload"], meta))


def _iso(epoch: float) -> str | None:
    return rfc3339(datetime.fromtimestamp(epoch, UTC))


CODEC = SocketIOCodec()
