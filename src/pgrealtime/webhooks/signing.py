"""Request signatures, so a receiver can tell our webhooks from forged or replayed ones.

Scheme `v1` (see docs/webhooks.md): HMAC-SHA256, keyed with the webhook secret, over

    b"v1\\n" + timestamp + b"\\n" + delivery id + b"\\n" + host + b"\\n" + raw body

sent as `X-InsForge-Signature: v1=<hex>` with the time in `X-InsForge-Timestamp`.
The time lets a receiver refuse an old request replayed later; the delivery id lets it
drop repeats and stops a captured request from being replayed as another delivery; the
host (the webhook URL's host, lower-case, no port) stops a request captured at one
receiver from being replayed to another that shares the secret. The raw bytes are
signed, so there is no disagreement about JSON formatting. The version prefix names
the scheme, so a later one can be sent next to it (comma-separated) during a change.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "v1"
SIGNATURE_PREFIX = SCHEME + "="
TIMESTAMP_HEADER = "X-InsForge-Timestamp"
SIGNATURE_HEADER = "X-InsForge-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def signed_message(timestamp: int | str, delivery_id: str, host: str, body: bytes) -> bytes:
    """The bytes the `v1` signature covers. None of the fields before the body can
    contain a newline, so the split between them is unambiguous."""
    head = f"{SCHEME}\n{timestamp}\n{delivery_id}\n{host}\n"
    return head.encode() + body


def sign(
    secret: str | bytes, timestamp: int | str, body: bytes, *, delivery_id: str, host: str
) -> str:
    """The signature header value for `body` of delivery `delivery_id` to `host`, sent
    at `timestamp` (unix seconds)."""
    message = signed_message(timestamp, str(delivery_id).lower(), host.lower(), body)
    return SIGNATURE_PREFIX + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def signature_headers(
    secret: str | bytes,
    body: bytes,
    *,
    delivery_id: str,
    host: str,
    now: float | None = None,
) -> dict[str, str]:
    """Both signing headers for a request sent now."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body, delivery_id=delivery_id, host=host),
    }


def verify(
    secret: str | bytes,
    timestamp: str | int | None,
    body: bytes,
    signature: str | None,
    *,
    delivery_id: str | None,
    host: str,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when one `v1=` entry of `signature` is ours for this body, delivery id, host
    and timestamp, and the timestamp is within `tolerance` seconds of now (older
    requests may be replays). `host` is the host of the receiver's own URL."""
    if timestamp is None or signature is None or not delivery_id:
        return False
    try:
        sent_at = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return False
    expected = sign(secret, sent_at, body, delivery_id=delivery_id, host=host)
    wanted = expected.encode()
    entries = (part.strip().encode() for part in signature.split(","))
    return any(hmac.compare_digest(wanted, entry) for entry in entries)
