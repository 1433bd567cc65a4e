"""An identity provider's signing keys (JWKS), fetched, cached and kept current.

Fetched at start-up, then again in the background when the document's `Cache-Control:
max-age` says (bounded to MIN..MAX_REFRESH_SECONDS), so keys a provider publishes
ahead of a rotation arrive without a restart. A token naming a `kid` the set lacks asks
for a fetch at once (`refetch_for_unknown_kid`), but at most one per UNKNOWN_KID_SECONDS
for the whole process, shared by every connect that asks meanwhile: a stream of tokens
with made-up kids costs the provider one request per 30 s, and no connect ever waits
on the event loop for I/O (the fetch is aiohttp's, awaited by the connects that need it).

A fetch that fails keeps the last good keys (logged, and shown in /health); before the
first good fetch there are no keys, and the authenticator refuses asymmetric tokens
with a clear error rather than accepting any.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from pgrealtime.auth.keys import VerifyKey, key_from_jwk

log = logging.getLogger(__name__)

MIN_REFRESH_SECONDS = 300.0  # a max-age below this is read as this
MAX_REFRESH_SECONDS = 86_400.0  # and above this as this (also without any max-age)
DEFAULT_REFRESH_SECONDS = 3600.0  # no max-age at all
RETRY_SECONDS = 30.0  # after a failed fetch, the next try (background or unknown kid)
UNKNOWN_KID_SECONDS = 30.0  # unknown kids start at most one fetch per this
FETCH_TIMEOUT_SECONDS = 10.0
MAX_DOCUMENT_BYTES = 1024 * 1024  # a key set is a few KB; anything larger is not one

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def url_problem(url: str, *, allow_http: bool) -> str | None:
    """Why a JWKS URL is refused at start (None when fine). Keys fetched over plain
    HTTP could be replaced by anyone on the path, and then sign any token: https only,
    except on loopback or when the operator says so (--jwks-allow-http)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"--jwks-url {url!r}: not an http(s) URL"
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        return (
            f"--jwks-url {url!r}: plain http lets anyone on the path replace the keys;"
            " use https (or --jwks-allow-http on a trusted network)"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def max_age(cache_control: str | None) -> float:
    """How long to keep the set: its max-age, bounded."""
    match = _MAX_AGE.search(cache_control or "")
    if match is None:
        return DEFAULT_REFRESH_SECONDS
    return min(MAX_REFRESH_SECONDS, max(MIN_REFRESH_SECONDS, float(match.group(1))))


def parse_key_set(body: bytes, url: str) -> list[VerifyKey]:
    """The usable keys of a JWKS document; ValueError when it is not one or has none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS document (no "keys" list)')
    keys = [k for k in (key_from_jwk(jwk, url) for jwk in document["keys"]) if k is not None]
    if not keys:
        raise ValueError("no usable signing key (RSA, EC P-256/384/521 or Ed25519)")
    return keys


class JwksCache:
    """The key set of one JWKS URL; `keys` is always the last good set."""

    def __init__(self, url: str, *, timeout: float = FETCH_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout = timeout
        self.keys: list[VerifyKey] = []
        self.fetches = 0  # attempts, for tests and /health
        self._last_attempt = -float("inf")  # monotonic
        self._last_success: float | None = None  # wall clock, for /health
        self._last_attempt_at: float | None = None  # wall clock, for /health
        self._last_error: str | None = None
        self._next_refresh = 0.0  # monotonic
        self._inflight: asyncio.Task | None = None
        self._loop_task: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def loaded(self) -> bool:
        return self._last_success is not None

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def start(self) -> None:
        """First fetch (a failure is logged, not fatal: tokens signed with these keys
        are refused until a fetch succeeds), then refresh in the background."""
        self._http = aiohttp.ClientSession(
            # a fetch every few minutes at most: no idle connection kept in between
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"Accept": "application/json"},
        )
        await self._fetch_shared()
        self._loop_task = asyncio.create_task(self._refresh_loop(), name="jwks-refresh")

    async def running(self) -> AsyncIterator[None]:
        """start() ... stop(), as an aiohttp cleanup context."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def stop(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._http is not None:
            await self._http.close()

    async def refetch_for_unknown_kid(self) -> None:
        """A token named a kid the set lacks: fetch now, unless a fetch started less
        than UNKNOWN_KID_SECONDS ago (then the set is as current as it gets; a fetch
        still in flight is waited for)."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.shield(self._inflight)
            return
        if time.monotonic() - self._last_attempt < UNKNOWN_KID_SECONDS:
            return
        await self._fetch_shared()

    def status(self) -> dict[str, Any]:
        """For /health (admin details)."""
        if not self.loaded:
            state = "not_loaded"  # tokens of the provider are refused
        else:
            state = "ok" if self._last_error is None else "stale"  # last good keys in use
        return {
            "url": self.url,
            "state": state,
            "keys": len(self.keys),
            "kids": [k.kid for k in self.keys],
            "lastFetch": self._last_attempt_at,
            "lastSuccess": self._last_success,
            "lastError": self._last_error,
        }

    async def _fetch_shared(self) -> None:
        """One fetch, shared by every caller that arrives while it runs."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        self._last_attempt = time.monotonic()
        self._last_attempt_at = time.time()
        self.fetches += 1
        try:
            body, cache_control = await self._get()
            keys = parse_key_set(body, self.url)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self._last_error != message:
                log.warning(
                    "JWKS %s: fetch failed, %s: %s",
                    self.url,
                    f"keeping the {len(self.keys)} last good keys" if self.loaded
                    else "no keys yet, tokens signed by the provider are refused",
                    message,
                )  # fmt: skip
            self._last_error = message
            self._next_refresh = time.monotonic() + RETRY_SECONDS
            return
        before = {k.kid for k in self.keys}
        self.keys = keys
        self._last_success = time.time()
        if self._last_error is not None or before != {k.kid for k in keys}:
            log.info("JWKS %s: %d keys (kids %s)", self.url, len(keys), [k.kid for k in keys])
        self._last_error = None
        self._next_refresh = time.monotonic() + max_age(cache_control)

    async def _get(self) -> tuple[bytes, str | None]:
        assert self._http is not None, "start() first"
        async with self._http.get(self.url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
            return body, resp.headers.get("Cache-Control")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self._next_refresh - time.monotonic()))
            if time.monotonic() < self._next_refresh:
                continue  # a fetch for an unknown kid moved the next one
            try:
                await self._fetch_shared()
            except Exception:  # a bug must not end the refreshes for good
                log.exception("JWKS %s: refresh failed", self.url)
                self._next_refresh = time.monotonic() + RETRY_SECONDS
