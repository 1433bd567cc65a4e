"""Engine.IO 4 / Socket.IO packet decoding (pure): what a client may send, and the
clear refusal of what this server does not take."""

from __future__ import annotations

import pytest

from pgrealtime.protocols.socketio.packets import Packet, PacketError, ack, parse

pytestmark = pytest.mark.pure


@pytest.mark.parametrize(
    ("text", "packet"),
    [
        ("3", Packet("pong")),
        ("2", Packet("ping")),
        ("1", Packet("close")),
        ("40", Packet("connect", {})),
        ('40{"token":"t"}', Packet("connect", {"token": "t"})),
        ("41", Packet("disconnect")),
        (
            '42["realtime:publish",{"channel":"c"}]',
            Packet("event", ["realtime:publish", {"channel": "c"}]),
        ),
        (
            '4217["realtime:subscribe",{"channel":"c"}]',
            Packet("event", ["realtime:subscribe", {"channel": "c"}], 17),
        ),
    ],
)
def test_client_packets(text: str, packet: Packet) -> None:
    assert parse(text) == packet


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("5", "unsupported Engine.IO"),
        ("4", "empty Socket.IO"),
        ('42/admin,["x"]', "namespace '/admin'"),
        ('451-["x",{"_placeholder":true,"num":0}]', "binary attachments"),
        ("42[", "not valid JSON"),
        ('42{"a":1}', "JSON array starting with its name"),
        ("42[1]", "JSON array starting with its name"),
        ('4299999999999999999["x"]', "ack id out of range"),
    ],
)
def test_refused_packets_say_why(text: str, why: str) -> None:
    with pytest.raises(PacketError, match=why):
        parse(text)


def test_ack_packet() -> None:
    frame = ack(3, {"ok": True})
    assert frame[2:] == b'433[{"ok":true}]'
