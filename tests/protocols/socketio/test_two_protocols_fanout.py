"""Fan-out to a channel whose subscribers speak both protocols: each gets its own
protocol's bytes, and a message (or a system event such as presence) is encoded once
per protocol whatever the audience."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from pgrealtime.engine.hub import Hub, Outbox
from pgrealtime.engine.messages import ChannelEvent, StoredMessage
from pgrealtime.protocols.raw_ws.encode import CODEC as RAW
from pgrealtime.protocols.socketio.packets import CODEC as SIO

pytestmark = pytest.mark.pure


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class Counting:
    """A codec that counts its calls (delegating to a real one)."""

    def __init__(self, codec) -> None:
        self.codec = codec
        self.calls = 0

    def message(self, message: StoredMessage) -> bytes:
        self.calls += 1
        return self.codec.message(message)

    def event(self, event: ChannelEvent) -> bytes:
        self.calls += 1
        return self.codec.event(event)

    def change(self, body: bytes) -> bytes:
        return self.codec.change(body)


def _text(frame: bytes) -> str:
    """The payload of one unmasked server text frame."""
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4
    return frame[start:].decode()


def _message() -> StoredMessage:
    return StoredMessage(
        id="6f1c5c9e-0000-4000-8000-000000000001",
        channel="chat:1",
        channel_id=None,
        event="said",
        payload_json=b'{"text":"hi"}',
        sender_type="user",
        sender_id="u1",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        seq=1,
        position=7,
    )


async def test_each_protocol_gets_its_bytes_encoded_once() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    raw, sio = Counting(RAW), Counting(SIO)
    transports = {"raw": [Transport() for _ in range(3)], "sio": [Transport() for _ in range(3)]}
    for codec, name in ((raw, "raw"), (sio, "sio")):
        for transport in transports[name]:
            hub.subscribe("chat:1", Outbox(hub, transport, lambda: None, codec))
    assert hub.broadcast("chat:1", _message()) == 6
    await asyncio.sleep(0)
    assert raw.calls == 1 and sio.calls == 1
    for transport in transports["raw"]:
        frame = json.loads(_text(transport.writes[0]))
        assert frame["type"] == "message" and frame["payload"] == {"text": "hi"}
    for transport in transports["sio"]:
        text = _text(transport.writes[0])
        assert text.startswith("42")
        name, data = json.loads(text[2:])
        assert name == "said"
        assert data == {
            "text": "hi",
            "meta": {
                "channel": "realtime:chat:1",
                "messageId": "6f1c5c9e-0000-4000-8000-000000000001",
                "senderType": "user",
                "senderId": "u1",
                "timestamp": "2026-01-02T03:04:05.000Z",
                "position": 7,
            },
        }


async def test_a_system_event_goes_out_in_each_protocols_shape() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    raw_t, sio_t = Transport(), Transport()
    hub.subscribe("room", Outbox(hub, raw_t, lambda: None, RAW))
    hub.subscribe("room", Outbox(hub, sio_t, lambda: None, SIO))
    member = {"type": "user", "presenceId": "u1", "joinedAt": "2026-01-02T03:04:05.000Z"}
    event = ChannelEvent("room", "presence:join", {"member": member})
    assert hub.broadcast("room", event) == 2
    await asyncio.sleep(0)
    assert json.loads(_text(raw_t.writes[0])) == {
        "type": "presence",
        "event": "join",
        "channel": "room",
        "member": member,
    }
    name, data = json.loads(_text(sio_t.writes[0])[2:])
    assert name == "presence:join" and data["member"] == member
    assert data["meta"]["channel"] == "room" and data["meta"]["senderType"] == "system"
    assert data["meta"]["messageId"] == event.id and data["meta"]["timestamp"].endswith("Z")


def test_unsubscribing_the_last_of_a_protocol_keeps_the_other() -> None:
    hub = Hub(send_buffer_limit=1 << 20)
    a = Outbox(hub, Transport(), lambda: None, RAW)
    b = Outbox(hub, Transport(), lambda: None, SIO)
    hub.subscribe("room", a)
    hub.subscribe("room", b)
    assert hub.subscriber_count("room") == 2
    hub.unsubscribe("room", a)
    assert hub.subscriber_count("room") == 1 and hub.channel_names() == ["room"]
    hub.unsubscribe("room", b)
    assert hub.subscriber_count("room") == 0 and hub.channel_names() == []


def test_a_table_change_as_a_socketio_event() -> None:
    body = (
        b'{"type":"message","channel":"db:posts","event":"INSERT","payload":'
        b'{"schema":"public","table":"posts","eventType":"INSERT","new":{"id":1},"old":null}}'
    )
    name, data = json.loads(_text(SIO.change(body))[2:])
    assert name == "INSERT"
    assert data == {
        "schema": "public",
        "table": "posts",
        "eventType": "INSERT",
        "new": {"id": 1},
        "old": None,
        "meta": {"channel": "realtime:db:posts", "senderType": "system"},
    }
    assert _text(RAW.change(body)) == body.decode()
