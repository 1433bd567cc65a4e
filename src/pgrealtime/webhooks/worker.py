"""The webhook delivery worker: claims due deliveries and sends them.

Every server process runs one. Deliveries are rows in PostgreSQL (see `store.py`), so
any number of workers can share a database: each row is claimed by one of them at a
time, and nothing is lost when a process stops or dies. A NOTIFY from the enqueue
trigger wakes the worker at once; a short poll is the fallback, and the time until the
next due retry bounds each sleep so retries go out on time.

Concurrency is capped overall and per target host, so a slow receiver holds at most
`per_host_concurrency` slots and cannot starve the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter

import asyncpg

from pgrealtime.config import Settings
from pgrealtime.webhooks import payload, store
from pgrealtime.webhooks.backoff import (
    DEFAULT_BASE_DELAY,
    DEFAULT_MAX_DELAY,
    Outcome,
    backoff_delay,
)
from pgrealtime.webhooks.payload import Delivery
from pgrealtime.webhooks.policy import UrlPolicy
from pgrealtime.webhooks.signing import signature_headers
from pgrealtime.webhooks.transport import AttemptResult, WebhookTransport

log = logging.getLogger(__name__)

MIN_SLEEP = 0.02
DB_ERROR_SLEEP = 1.0


class WebhookWorker:
    """Sends the webhook deliveries of one database; start() once, stop() at shutdown
    (before the pool is closed)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        poll_interval: float = 0.5,
        max_concurrency: int = 64,
        per_host_concurrency: int = 8,
        lease_seconds: float | None = None,
        max_response_bytes: int = 64 * 1024,
    ) -> None:
        self._pool = pool
        self._secret = settings.webhook_secret or None
        self._timeout = settings.webhook_timeout_seconds
        self._retry_seconds = settings.webhook_retry_hours * 3600.0
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._poll_interval = poll_interval
        self._max_concurrency = max(1, max_concurrency)
        self._per_host = max(1, per_host_concurrency)
        # a claim must outlive the attempt (timeout) and recording its outcome
        self._lease_seconds = lease_seconds or self._timeout + 30.0
        self._policy = UrlPolicy.create(
            settings.webhook_allow_private_networks, settings.webhook_allowed_hosts
        )
        self._transport = WebhookTransport(
            self._policy,
            timeout=self._timeout,
            max_connections=self._max_concurrency,
            max_response_bytes=max_response_bytes,
        )
        self._wake = asyncio.Event()
        self._stopping = False
        self._busy: Counter[str] = Counter()
        self._inflight: dict[asyncio.Task[None], tuple[uuid.UUID, uuid.UUID]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._loop_task is not None:
            return
        await self._transport.start()
        self._stopping = False
        self._listen_task = asyncio.create_task(self._listen(), name="webhook-listen")
        self._loop_task = asyncio.create_task(self._run(), name="webhook-claim")

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let attempts in flight finish for up to `grace` seconds
        (default: the attempt timeout), then abandon the rest and release their claims
        so another worker sends them right away."""
        if self._loop_task is None:
            return
        self._stopping = True
        self._wake.set()
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
        await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = list(self._inflight)
        if tasks:
            wait = self._timeout + 1.0 if grace is None else grace
            _, pending = await asyncio.wait(tasks, timeout=wait) if wait > 0 else ((), tasks)
            abandoned = [self._inflight[t] for t in pending if t in self._inflight]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            try:
                await store.release(self._pool, abandoned)
            except Exception:
                log.warning("could not release webhook claims; their leases will expire")
        await self._transport.close()
        self._loop_task = self._listen_task = None

    # -- wake-ups --------------------------------------------------------------

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        """LISTEN on a pooled connection while running; re-established after errors.
        Missed notifications only delay work until the next poll."""
        while not self._stopping:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook listener lost: %s", type(exc).__name__)
            await asyncio.sleep(DB_ERROR_SLEEP)

    async def _listen_once(self) -> None:
        """Listen until the connection is lost (or the task is cancelled)."""
        closed = asyncio.Event()

        def on_close(_conn: object) -> None:
            closed.set()

        async with self._pool.acquire() as conn:
            conn.add_termination_listener(on_close)
            await conn.add_listener(store.NOTIFY_CHANNEL, self._on_notify)
            try:
                self._wake.set()  # anything queued while we were not listening
                await closed.wait()
            finally:
                conn.remove_termination_listener(on_close)
                with contextlib.suppress(Exception):
                    await conn.remove_listener(store.NOTIFY_CHANNEL, self._on_notify)

    # -- claiming ----------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            sleep = self._poll_interval
            free = self._max_concurrency - len(self._inflight)
            if free > 0:
                try:
                    claim = await store.claim(
                        self._pool,
                        limit=free,
                        per_host=self._per_host,
                        busy=self._busy,
                        lease_seconds=self._lease_seconds,
                    )
                except Exception as exc:  # keep the loop alive: the database may come back
                    log.warning("webhook claim failed: %s", type(exc).__name__)
                    sleep = DB_ERROR_SLEEP
                else:
                    for delivery in claim.deliveries:
                        self._spawn(delivery, claim.token)
                    if claim.next_due is not None:
                        sleep = max(MIN_SLEEP, min(sleep, claim.next_due))
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)

    def _spawn(self, delivery: Delivery, token: uuid.UUID) -> None:
        self._busy[delivery.host] += 1
        task = asyncio.create_task(self._deliver(delivery, token))
        self._inflight[task] = (delivery.id, token)
        task.add_done_callback(lambda t, host=delivery.host: self._done(t, host))

    def _done(self, task: asyncio.Task[None], host: str) -> None:
        self._inflight.pop(task, None)
        self._busy[host] -= 1
        if self._busy[host] <= 0:
            del self._busy[host]
        self._wake.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed", exc_info=task.exception())

    # -- one delivery ----------------------------------------------------------

    async def _deliver(self, delivery: Delivery, token: uuid.UUID) -> None:
        try:
            result = await self._attempt(delivery)
        except Exception as exc:  # a bug must not leave the claim to its lease forever
            log.exception("webhook attempt crashed", extra={"delivery_id": str(delivery.id)})
            result = AttemptResult(Outcome.RETRY, error=f"internal error: {type(exc).__name__}")
        try:
            await self._record(delivery, token, result)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            # the lease runs out and the delivery is tried again: at least once
            log.warning(
                "could not record webhook outcome: %s",
                type(exc).__name__,
                extra={"delivery_id": str(delivery.id)},
            )

    async def _attempt(self, delivery: Delivery) -> AttemptResult:
        error = self._policy.check_url(delivery.url)
        if error is not None:
            return AttemptResult(Outcome.FAILED, error=error)
        body = payload.body(delivery)
        headers = payload.headers(delivery)
        if self._secret:
            headers.update(signature_headers(self._secret, body))
        return await self._transport.send(delivery.url, body, headers)

    async def _record(self, delivery: Delivery, token: uuid.UUID, result: AttemptResult) -> None:
        context = {
            "delivery_id": str(delivery.id),
            "message_id": str(delivery.message_id),
            "host": delivery.host,  # never the URL: it often embeds a secret token
            "attempt": delivery.attempts,
            "status_code": result.status_code,
        }
        if result.outcome is Outcome.DELIVERED:
            await store.mark_delivered(self._pool, delivery.id, token, result.status_code or 200)
            log.debug("webhook delivered", extra=context)
        elif result.outcome is Outcome.RETRY:
            strict = result.retry_after is not None
            delay = (
                result.retry_after
                if result.retry_after is not None
                else backoff_delay(delivery.attempts, self._base_delay, self._max_delay)
            )
            status = await store.schedule_retry(
                self._pool,
                delivery.id,
                token,
                delay=delay,
                strict=strict,
                retry_seconds=self._retry_seconds,
                error=result.error,
                status_code=result.status_code,
            )
            level = logging.WARNING if status == "dead" else logging.INFO
            log.log(level, "webhook attempt failed (%s)", status or "claim lost", extra=context)
        else:
            await store.mark_final(
                self._pool,
                delivery.id,
                token,
                status="failed",
                error=result.error,
                status_code=result.status_code,
            )
            log.warning("webhook failed permanently", extra=context)
