"""Sending one webhook attempt over HTTP, with the address policy enforced on connect.

The policy is checked in the connector's socket factory, which sees the address each
connection is really opened to, after DNS (and for literal IPs too, which aiohttp does
not resolve). A host name that resolves, or re-resolves, to a private address is
refused there, whatever it resolved to before. Redirects are never followed (the
Location could point anywhere), the response body read is capped, and cookies are
never kept, so one receiver cannot influence requests to another.
"""

from __future__ import annotations

import contextvars
import socket
from dataclasses import dataclass, field

import aiohttp
from aiohappyeyeballs import AddrInfoType

from pgrealtime.webhooks.backoff import Outcome, classify_status, parse_retry_after
from pgrealtime.webhooks.policy import UrlPolicy, url_host

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
ERROR_SNIPPET_CHARS = 200


class BlockedAddressError(OSError):
    """A connection refused by the outbound address policy."""


@dataclass
class _Guard:
    """Policy state of the attempt running in this task (a context variable carries
    it into the connector's socket factory)."""

    host: str
    blocked: list[str] = field(default_factory=list)
    tried: int = 0


_attempt: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar(
    "pgrealtime_webhook_attempt", default=None
)


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait


def _snippet(data: bytes) -> str:
    text = data[:ERROR_SNIPPET_CHARS].decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


class WebhookTransport:
    """One aiohttp session for all webhook requests of a process."""

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        timeout: float,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_seconds = timeout
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=10,
            socket_factory=self._socket_factory,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # no proxy from the environment: the policy sees the target
            auto_decompress=False,  # the body is only peeked at, never inflated
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """Called for every address a connection is attempted to: refuse blocked ones.
        Outside a webhook attempt nothing may connect (fail closed)."""
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        guard = _attempt.get()
        if guard is None:
            raise BlockedAddressError("blocked: connection outside a webhook attempt")
        guard.tried += 1
        reason = self._policy.check_address(guard.host, address)
        if reason is not None:
            guard.blocked.append(reason)
            raise BlockedAddressError(reason)
        return socket.socket(family=family, type=type_, proto=proto)

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        """POST once; the outcome says whether it was delivered, is worth a retry, or
        failed for good, with a short reason."""
        if self._session is None:
            raise RuntimeError("WebhookTransport.start() was not called")
        guard = _Guard(host=url_host(url))
        reset = _attempt.set(guard)
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                return await self._result(response)
        except TimeoutError:
            return AttemptResult(Outcome.RETRY, error=f"timed out after {self._timeout_seconds:g}s")
        except aiohttp.InvalidURL as exc:
            return AttemptResult(Outcome.FAILED, error=f"invalid URL: {exc}")
        except aiohttp.ClientConnectorError as exc:
            if guard.blocked and len(guard.blocked) >= guard.tried:
                return AttemptResult(Outcome.FAILED, error="; ".join(dict.fromkeys(guard.blocked)))
            return AttemptResult(Outcome.RETRY, error=str(exc))
        except (aiohttp.ClientError, OSError) as exc:
            return AttemptResult(Outcome.RETRY, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        finally:
            _attempt.reset(reset)

    async def _result(self, response: aiohttp.ClientResponse) -> AttemptResult:
        data = bytearray()
        while len(data) < self._max_response_bytes:
            chunk = await response.content.read(self._max_response_bytes - len(data))
            if not chunk:
                break
            data += chunk
        if not response.content.at_eof():
            response.close()  # too big to drain: drop the connection instead
        status = response.status
        outcome = classify_status(status)
        if outcome is Outcome.DELIVERED:
            return AttemptResult(outcome, status_code=status)
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            error = f"HTTP {status}: redirect not followed (Location: {location[:500]})"
            return AttemptResult(outcome, status_code=status, error=error)
        detail = _snippet(bytes(data))
        error = f"HTTP {status}" + (f": {detail}" if detail else "")
        retry_after = None
        if outcome is Outcome.RETRY:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return AttemptResult(outcome, status_code=status, error=error, retry_after=retry_after)
