"""The webhook delivery worker: claims due deliveries and sends them.

Every server process runs one. Deliveries are rows in PostgreSQL (see `store.py`), so
any number of workers can share a database: each row is claimed by one of them at a
time, and nothing is lost when a process stops or dies. A NOTIFY from the enqueue
trigger wakes the worker at once; a short poll is the fallback, and the time until the
next due retry bounds each sleep so retries go out on time.

Concurrency is capped overall and per target host, so a slow receiver holds at most
`per_host_concurrency` requests and cannot starve the others. Which claimed delivery
starts when, and when to claim more, is decided by the pure `scheduler.HostScheduler`;
this module is the loop that drives it (claims, tasks, outcomes).

Database round trips, not HTTP, limited throughput, so the worker keeps them off the
path of each request:

- It claims ahead: up to `prefetch_per_host` leased deliveries per host wait in a local
  queue, and a finished request starts the next one at once. A host's queue is
  refilled, in one claim of many rows, when it runs empty and the host had more due.
- A host's slot is free as soon as its response is read; the outcome is written
  afterwards, successes in batches (`recorder.py`).

A queued delivery is sent only while its lease leaves room for a whole attempt; one
that waited too long is given back instead, so two processes never send it at once.

When a host that was down answers again, its deliveries waiting out a backoff step are
made due at once (`recovery.py`), so the backlog drains at the worker's pace.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter
from collections.abc import Callable

import asyncpg

from pgrealtime.config import WebhookSettings
from pgrealtime.db import errors as db_errors
from pgrealtime.webhooks import payload, store
from pgrealtime.webhooks.backoff import (
    DEFAULT_BASE_DELAY,
    DEFAULT_MAX_DELAY,
    Outcome,
    backoff_delay,
)
from pgrealtime.webhooks.payload import WebhookDelivery
from pgrealtime.webhooks.policy import UrlPolicy, url_host
from pgrealtime.webhooks.recorder import DEFAULT_DELAY, DeliveredRecorder, KeptConnection
from pgrealtime.webhooks.recovery import DEFAULT_MIN_OUTAGE, HostRecovery
from pgrealtime.webhooks.scheduler import MIN_SLEEP, Dispatched, HostScheduler, Queued
from pgrealtime.webhooks.signing import signature_headers
from pgrealtime.webhooks.transport import AttemptResult, WebhookTransport

log = logging.getLogger(__name__)

DB_ERROR_SLEEP = 1.0
DEFAULT_MAX_CONCURRENCY = 128  # four hosts at their limit leave room for the others
# between two claims at least this long: completions that come together share one
CLAIM_INTERVAL = 0.005
# how often a short claim also asks when the next retry is due
NEXT_DUE_INTERVAL = 0.1
# a queued delivery must start with this much lease left beyond the attempt timeout
LEASE_MARGIN = 20.0


class WebhookWorker:
    """Sends the webhook deliveries of one database; start() once, stop() at shutdown
    (before the pool is closed)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: WebhookSettings,
        *,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        poll_interval: float = 0.5,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        per_host_concurrency: int | None = None,
        prefetch_per_host: int | None = None,
        lease_seconds: float | None = None,
        max_response_bytes: int = 64 * 1024,
        record_delay: float = DEFAULT_DELAY,
        recovery_min_outage: float = DEFAULT_MIN_OUTAGE,
    ) -> None:
        self._pool = pool
        self._secret = settings.secret or None
        self._timeout = settings.timeout_seconds
        self._retry_seconds = settings.retry_hours * 3600.0
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._poll_interval = poll_interval
        self._slots = HostScheduler(
            max_concurrency=max_concurrency,
            per_host=settings.per_host_concurrency
            if per_host_concurrency is None
            else per_host_concurrency,
            prefetch_per_host=prefetch_per_host,
            poll_interval=poll_interval,
        )
        # a claim must outlive waiting in the queue (about one attempt), the attempt
        # (timeout) and recording its outcome
        self._lease_seconds = lease_seconds or 2 * self._timeout + 30.0
        # (a quarter of the lease when it is too short for that: tests, odd settings)
        self._queue_seconds = max(
            self._lease_seconds - self._timeout - LEASE_MARGIN, self._lease_seconds / 4
        )
        self._policy = UrlPolicy.create(settings.allow_private_networks, settings.allowed_hosts)
        # pure for a given URL; most deliveries share a few URLs
        self._check_url = functools.lru_cache(maxsize=4096)(self._policy.check_url)
        self._url_host = functools.lru_cache(maxsize=4096)(url_host)
        self._transport = WebhookTransport(
            self._policy,
            timeout=self._timeout,
            max_connections=self._slots.max_concurrency,
            max_response_bytes=max_response_bytes,
        )
        self._recorder = DeliveredRecorder(pool, delay=record_delay)
        # a failure recorded after a recovery comes at the latest when its lease ends
        self._recovery = HostRecovery(recovery_min_outage, straggle=self._lease_seconds)
        # claims run on a kept connection that also LISTENs for new deliveries
        self._conn = KeptConnection(pool, self._listen_on, self._unlisten)
        self._wake = asyncio.Event()
        self._stopping = False
        self._unsent: set[asyncio.Task[None]] = set()
        # tasks sending or recording, with the claim each holds (released at stop)
        self._inflight: dict[asyncio.Task[None], tuple[uuid.UUID, uuid.UUID]] = {}
        self._hosts: dict[asyncio.Task[None], str] = {}
        self._give_back: list[tuple[uuid.UUID, uuid.UUID]] = []
        self._last_next_due = -1e9
        self.claims = 0  # claim statements so far, and rows they leased (for profiling)
        self.claimed = 0
        self._loop_task: asyncio.Task[None] | None = None
        # for metrics: attempts by outcome (delivered, retry, failed, dead) and a hook
        # told each attempt's duration
        self.outcomes: Counter[str] = Counter()
        self.observe_attempt: Callable[[float], None] | None = None

    @property
    def recorder(self) -> DeliveredRecorder:
        return self._recorder

    async def start(self) -> None:
        if self._loop_task is not None:
            return
        if not self._secret:  # `serve` always has one; Settings built in code may not
            log.warning(
                "no webhook secret: deliveries of channels without their own secret "
                "are sent unsigned"
            )
        await self._transport.start()
        self._stopping = self._slots.paused = False
        self._loop_task = asyncio.create_task(self._run(), name="webhook-claim")

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let attempts in flight finish for up to `grace` seconds
        (default: the attempt timeout), then abandon the rest and release their claims
        (and those still queued) so another worker sends them right away."""
        if self._loop_task is None:
            return
        self._stopping = self._slots.paused = True
        self._wake.set()
        await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._conn.drop()  # the pool's reset ends the LISTEN
        unsent = self._take_back()
        abandoned: list[tuple[uuid.UUID, uuid.UUID]] = []
        tasks = list(self._inflight)
        if tasks:
            wait = self._timeout + 1.0 if grace is None else grace
            _, pending = await asyncio.wait(tasks, timeout=wait) if wait > 0 else ((), tasks)
            abandoned += [self._inflight[t] for t in pending if t in self._inflight]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._recorder.close()  # outcomes already known are written, not re-sent
        try:
            await store.release(self._pool, unsent, unsent=True)
            await store.release(self._pool, abandoned)
        except Exception:
            log.warning("could not release webhook claims; their leases will expire")
        await self._transport.close()
        self._loop_task = None

    def _take_back(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Claims queued but not started (and those set aside), to be released."""
        claims = self._give_back
        self._give_back = []
        return claims + [(q.delivery.id, q.token) for q in self._slots.take_back()]

    # -- wake-ups --------------------------------------------------------------

    def _on_notify(self, *_: object) -> None:
        self._slots.new_work = True
        self._wake.set()

    def _on_lost(self, _conn: object) -> None:
        self._slots.new_work = True  # the next claim finds it closed and takes another one
        self._wake.set()

    async def _unlisten(self, conn: asyncpg.Connection) -> None:
        """Before the connection goes back to the pool."""
        conn.remove_termination_listener(self._on_lost)
        if not conn.is_closed():
            await conn.remove_listener(store.NOTIFY_CHANNEL, self._on_notify)

    async def _listen_on(self, conn: asyncpg.Connection) -> None:
        """Set up a newly kept connection: LISTEN on it. Notifications missed while
        there was none only delay work until the claim made right after."""
        conn.add_termination_listener(self._on_lost)
        await conn.add_listener(store.NOTIFY_CHANNEL, self._on_notify)
        self._slots.new_work = True  # anything queued while we were not listening

    # -- claiming ----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        slots = self._slots
        sleep = 0.0
        while not self._stopping:
            if sleep > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), sleep)
                except TimeoutError:
                    slots.new_work = True  # the poll, or a retry that came due
            self._wake.clear()
            if self._stopping:
                break
            if self._give_back:
                await self._release_set_aside()
            now = loop.time()
            sleep = slots.claim_wanted(now)
            if sleep > 0:
                continue
            gap = slots.last_claim + CLAIM_INTERVAL - now
            if gap > 0:  # let completions that come together share this claim
                await asyncio.sleep(gap)
                if self._stopping:
                    break
            now = loop.time()
            room, held = slots.claiming(now)
            want_next_due = now - self._last_next_due >= NEXT_DUE_INTERVAL
            try:
                conn = await self._conn.get()
                claim = await store.claim(
                    conn,
                    limit=room,
                    per_host=slots.hold_per_host,
                    busy=held,
                    lease_seconds=self._lease_seconds,
                    want_next_due=want_next_due or slots.held_total == 0,
                )
            except Exception as exc:  # keep the loop alive: the database may come back
                log.warning("webhook claim failed: %s", type(exc).__name__)
                await self._conn.drop()
                sleep = DB_ERROR_SLEEP
                continue
            self.claims += 1
            self.claimed += len(claim.deliveries)
            if self._stopping:  # stop() is waiting for us: hand these back with the rest
                self._give_back += [(d.id, claim.token) for d in claim.deliveries]
                break
            send_by = loop.time() + self._queue_seconds
            queued = [Queued(d, claim.token, send_by) for d in claim.deliveries]
            self._follow(slots.took(queued, held, loop.time()))
            sleep = self._poll_interval
            if claim.next_due is not None:
                self._last_next_due = now
                sleep = max(MIN_SLEEP, min(sleep, claim.next_due))

    async def _release_set_aside(self) -> None:
        claims, self._give_back = self._give_back, []
        try:
            await store.release(self._pool, claims, unsent=True)
        except Exception:
            log.warning("could not release webhook claims; their leases will expire")

    # -- starting and finishing ---------------------------------------------------

    def _follow(self, step: Dispatched) -> None:
        """Do what the scheduler decided: hand back expired claims, start the rest."""
        if step.expired:
            self._give_back += [(q.delivery.id, q.token) for q in step.expired]
        for item in step.start:
            self._start(item)
        if step.wake:
            self._wake.set()

    def _start(self, item: Queued) -> None:
        task = asyncio.create_task(self._deliver(item.delivery, item.token))
        self._inflight[task] = (item.delivery.id, item.token)
        self._hosts[task] = item.delivery.host
        self._unsent.add(task)
        task.add_done_callback(self._done)

    def _sent(self, task: asyncio.Task[None]) -> None:
        """The request of `task` is over: its host slot is free for the next one."""
        if task not in self._unsent:
            return
        self._unsent.discard(task)
        host = self._hosts.pop(task)
        self._follow(self._slots.sent(host, asyncio.get_running_loop().time()))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._sent(task)  # a task cancelled before it ran
        self._inflight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed", exc_info=task.exception())

    # -- one delivery ----------------------------------------------------------

    async def _deliver(self, delivery: WebhookDelivery, token: uuid.UUID) -> None:
        task = asyncio.current_task()
        started = asyncio.get_running_loop().time()
        try:
            result = await self._attempt(delivery)
        except Exception as exc:  # a bug must not leave the claim to its lease forever
            log.exception("webhook attempt crashed", extra={"delivery_id": str(delivery.id)})
            result = AttemptResult(Outcome.RETRY, error=f"internal error: {type(exc).__name__}")
        finally:
            if task is not None:
                self._sent(task)
        if self.observe_attempt is not None:
            self.observe_attempt(asyncio.get_running_loop().time() - started)
        try:
            await self._record(delivery, token, result, started)
        except db_errors.FAILED as exc:
            # the lease runs out and the delivery is tried again: at least once
            log.warning(
                "could not record webhook outcome: %s",
                type(exc).__name__,
                extra={"delivery_id": str(delivery.id)},
            )

    async def _attempt(self, delivery: WebhookDelivery) -> AttemptResult:
        error = self._check_url(delivery.url)
        if error is not None:
            return AttemptResult(Outcome.FAILED, error=error)
        body = payload.body(delivery)
        headers = payload.headers(delivery)
        secret = delivery.channel_secret or self._secret
        if secret:
            headers.update(
                signature_headers(
                    secret, body, delivery_id=str(delivery.id), host=self._url_host(delivery.url)
                )
            )
        return await self._transport.send(delivery.url, body, headers)

    async def _record(
        self, delivery: WebhookDelivery, token: uuid.UUID, result: AttemptResult, started: float
    ) -> None:
        if result.outcome is Outcome.DELIVERED:
            # noted before the write, so failures recorded meanwhile count as late ones
            recovered = self._recovery.succeeded(delivery.host, asyncio.get_running_loop().time())
            await self._recorder.delivered(delivery.id, token, result.status_code or 200)
            self.outcomes["delivered"] += 1
            if recovered:
                await self._pull_forward(delivery.host)
            return
        context = {
            "delivery_id": str(delivery.id),
            "message_id": str(delivery.message_id),
            "host": delivery.host,  # never the URL: it often embeds a secret token
            "attempt": delivery.attempts,
            "status_code": result.status_code,
        }
        if result.outcome is Outcome.RETRY:
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
            self.outcomes["dead" if status == "dead" else "retry"] += 1
            level = logging.WARNING if status == "dead" else logging.INFO
            log.log(level, "webhook attempt failed (%s)", status or "claim lost", extra=context)
            # noted once written, so a recovery seen later includes this row or knows it
            if status == "pending" and not strict:
                if self._recovery.failed(delivery.host, started):
                    await self._pull_forward(delivery.host, delivery.id)
        else:
            await store.mark_final(
                self._pool,
                delivery.id,
                token,
                status="failed",
                error=result.error,
                status_code=result.status_code,
            )
            self.outcomes["failed"] += 1
            log.warning("webhook failed permanently", extra=context)

    async def _pull_forward(self, host: str, delivery_id: uuid.UUID | None = None) -> None:
        """`host` answers again after an outage: make its deliveries in backoff (or just
        `delivery_id`, which failed with the outage) due now. On a database error they
        keep their backoff: slower, nothing lost."""
        try:
            if delivery_id is None:
                moved = await store.pull_forward(self._pool, host)
            else:
                moved = int(await store.pull_forward_one(self._pool, delivery_id))
        except db_errors.FAILED as exc:
            log.warning("could not make a recovered host's deliveries due: %s", type(exc).__name__)
            return
        if moved:
            log.info("webhook host answers again", extra={"host": host, "made_due": moved})
            self._slots.new_work = True
            self._wake.set()
