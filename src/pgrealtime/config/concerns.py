"""Frozen settings per concern: what one component uses of `Settings`, and nothing more.

A component takes its own small frozen dataclass instead of the whole `Settings`, so
its signature says which options it reads, it cannot change them under the others'
feet, and a test builds just that (each field defaults to the options table's default,
as `Settings` does, so `WebhookSettings()` runs like `pgrealtime serve`). Every one is
built from `Settings` here, by its `of`, and nowhere else: renaming an option touches
this module, not the component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgrealtime.config.options import default
from pgrealtime.config.settings import Settings


def _d(name: str, convert: Any = None) -> Any:
    """The table's default of option `name` (optionally converted), as a field."""
    if convert is None:
        return field(default_factory=lambda: default(name))
    return field(default_factory=lambda: convert(default(name)))


def _names(value: Any) -> tuple[str, ...]:
    """A list option as a tuple; a string (as in the environment) split at commas."""
    if isinstance(value, str):
        return tuple(value.split(","))
    return tuple(value or ())


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """What the webhook worker uses (webhooks/worker.py)."""

    # the server's signing secret (channels may have their own); None: unsigned
    secret: str | None = field(default_factory=lambda: default("webhook_secret"), repr=False)
    timeout_seconds: float = _d("webhook_timeout_seconds")
    retry_hours: float = _d("webhook_retry_hours")
    per_host_concurrency: int = _d("webhook_per_host_concurrency")
    allow_private_networks: bool = _d("webhook_allow_private_networks")
    allowed_hosts: tuple[str, ...] = _d("webhook_allowed_hosts", tuple)

    @classmethod
    def of(cls, settings: Settings) -> WebhookSettings:
        return cls(
            secret=settings.webhook_secret or None,
            timeout_seconds=settings.webhook_timeout_seconds,
            retry_hours=settings.webhook_retry_hours,
            per_host_concurrency=settings.webhook_per_host_concurrency,
            allow_private_networks=settings.webhook_allow_private_networks,
            allowed_hosts=_names(settings.webhook_allowed_hosts),
        )


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """What the change feed and the `db:` routing use (changes/feed.py, changes/route.py)."""

    enabled: bool = _d("changes")
    slot: str = _d("replication_slot")
    publication: str = _d("publication")
    max_failures: int = _d("changes_max_failures")
    tables: tuple[str, ...] = _d("changes_tables", tuple)  # the allow-list; empty: all

    @classmethod
    def of(cls, settings: Settings) -> FeedSettings:
        return cls(
            enabled=settings.changes,
            slot=settings.replication_slot,
            publication=settings.publication,
            max_failures=settings.changes_max_failures,
            tables=tuple(settings.changes_tables or ()),
        )
