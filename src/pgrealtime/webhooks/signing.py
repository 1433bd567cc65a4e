"""Request signatures, so a receiver can tell our webhooks from forged ones.

The signed text is "<unix seconds>.<raw body>": binding the time into the signature
lets a receiver refuse an old request replayed later, and signing the raw bytes avoids
any disagreement about JSON formatting. The scheme is HMAC-SHA256, sent as
`X-InsForge-Signature: sha256=<hex>` with the time in `X-InsForge-Timestamp`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_PREFIX = "sha256="
TIMESTAMP_HEADER = "X-InsForge-Timestamp"
SIGNATURE_HEADER = "X-InsForge-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds)."""
    message = str(timestamp).encode() + b"." + body
    return SIGNATURE_PREFIX + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def signature_headers(secret: str | bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """Both signing headers for a request sent now."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(
    secret: str | bytes,
    timestamp: str | int | None,
    body: bytes,
    signature: str | None,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `signature` is ours for this body and timestamp, and the timestamp is
    within `tolerance` seconds of now (older requests may be replays)."""
    if timestamp is None or signature is None:
        return False
    try:
        sent_at = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent_at, body), signature.strip())
