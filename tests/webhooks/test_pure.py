"""Signing, retry policy and request building, as pure functions."""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pgrealtime.webhooks.backoff import Outcome, backoff_delay, classify_status, parse_retry_after
from pgrealtime.webhooks.payload import WebhookDelivery, body, header_value, headers
from pgrealtime.webhooks.signing import sign, signature_headers, verify

pytestmark = pytest.mark.pure

SECRET = "s3cret"
BODY = b'{"messageId":"x","payload":{"a":1}}'


DELIVERY = "3f0a9c1e-0a52-4d0f-9a55-1d1b4a0c8f10"
HOST = "hooks.example.com"
TO = {"delivery_id": DELIVERY, "host": HOST}


def test_sign_is_v1_hmac_sha256_of_timestamp_delivery_host_body() -> None:
    signed = b"v1\n1700000000\n" + DELIVERY.encode() + b"\n" + HOST.encode() + b"\n" + BODY
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, BODY, **TO) == "v1=" + expected
    assert sign(SECRET.encode(), "1700000000", BODY, **TO) == "v1=" + expected


def test_verify_accepts_fresh_and_rejects_everything_else() -> None:
    now = 1_700_000_000.0
    sent = signature_headers(SECRET, BODY, now=now, **TO)
    ts, sig = sent["X-InsForge-Timestamp"], sent["X-InsForge-Signature"]
    assert ts == "1700000000"
    assert verify(SECRET, ts, BODY, sig, now=now + 10, **TO)
    assert verify(SECRET, int(ts), BODY, sig, tolerance=60, now=now - 59, **TO)
    assert verify(SECRET, ts, BODY, "v2=abc, " + sig, now=now, **TO)  # a later scheme too
    assert not verify("wrong", ts, BODY, sig, now=now, **TO)
    assert not verify(SECRET, ts, BODY + b" ", sig, now=now, **TO)
    assert not verify(SECRET, str(int(ts) + 1), BODY, sig, now=now, **TO)  # timestamp is signed
    other_delivery = {**TO, "delivery_id": str(uuid.uuid4())}
    assert not verify(SECRET, ts, BODY, sig, now=now, **other_delivery)  # so is the delivery
    assert not verify(SECRET, ts, BODY, sig, now=now, **{**TO, "host": "evil.example"})
    assert not verify(SECRET, ts, BODY, sig, tolerance=300, now=now + 301, **TO)  # replay
    assert not verify(SECRET, ts, BODY, sig, tolerance=300, now=now - 301, **TO)  # future
    assert not verify(SECRET, "abc", BODY, sig, now=now, **TO)
    assert not verify(SECRET, None, BODY, sig, now=now, **TO)
    assert not verify(SECRET, ts, BODY, None, now=now, **TO)
    assert not verify(SECRET, ts, BODY, sig, now=now, delivery_id=None, host=HOST)
    assert not verify(SECRET, ts, BODY, sig.removeprefix("v1="), now=now, **TO)
    assert not verify(SECRET, ts, BODY, "v1=\u00e9", now=now, **TO)  # non-ASCII: no crash


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (201, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (301, Outcome.FAILED),
        (302, Outcome.FAILED),
        (307, Outcome.FAILED),
        (400, Outcome.FAILED),
        (401, Outcome.FAILED),
        (404, Outcome.FAILED),
        (410, Outcome.FAILED),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (599, Outcome.RETRY),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (20, 60.0), (10_000, 60.0)]:
        for _ in range(50):
            delay = backoff_delay(attempt, base=1.0, cap=60.0, rng=rng)
            assert full / 2 <= delay <= full
    delays = {backoff_delay(5, base=1.0, cap=60.0, rng=rng) for _ in range(20)}
    assert len(delays) > 10  # jittered, not all the same


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    later = datetime.now(UTC) + timedelta(seconds=100)
    value = parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert value is not None and 95 <= value <= 100


def _delivery(**overrides: object) -> WebhookDelivery:
    values: dict[str, object] = {
        "id": uuid.UUID(int=1),
        "url": "https://example.com/hook",
        "host": "example.com",
        "attempts": 3,
        "message_id": uuid.UUID(int=2),
        "channel_id": uuid.UUID(int=3),
        "channel_name": "order:123",
        "event": "order.updated",
        "payload_json": '{"orderId": "123", "n": [1, 2.5, null]}',
        "sender_id": None,
        "sender_type": "system",
        "created_at": datetime(2024, 1, 15, 10, 30, 0, 123456, tzinfo=UTC),
    }
    values.update(overrides)
    return WebhookDelivery(**values)  # type: ignore[arg-type]


def test_body_is_the_insforge_payload() -> None:
    decoded = orjson.loads(body(_delivery()))
    assert decoded == {
        "messageId": str(uuid.UUID(int=2)),
        "channelId": str(uuid.UUID(int=3)),
        "channelName": "order:123",
        "event": "order.updated",
        "payload": {"orderId": "123", "n": [1, 2.5, None]},
        "senderId": None,
        "senderType": "system",
        "timestamp": "2024-01-15T10:30:00.123Z",
    }
    decoded = orjson.loads(body(_delivery(channel_id=None, sender_id=uuid.UUID(int=9))))
    assert decoded["channelId"] is None
    assert decoded["senderId"] == str(uuid.UUID(int=9))


def test_headers() -> None:
    sent = headers(_delivery(event="chat\r\nX-Evil: 1", channel_name="salle:été"))
    assert sent["X-InsForge-Event"] == "chat%0D%0AX-Evil: 1"
    assert sent["X-InsForge-Channel"] == "salle:%C3%A9t%C3%A9"
    assert sent["X-InsForge-Message-ID"] == str(uuid.UUID(int=2))
    assert sent["X-InsForge-Delivery-ID"] == str(uuid.UUID(int=1))
    assert sent["X-InsForge-Attempt"] == "3"
    assert sent["Content-Type"] == "application/json"
    assert header_value("order:123") == "order:123"
