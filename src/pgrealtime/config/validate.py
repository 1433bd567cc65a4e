"""Range checks of the options, generated from the table: nonsense is caught at start
rather than at the first client."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pgrealtime.config.options import OPTIONS

if TYPE_CHECKING:
    from pgrealtime.config.settings import Settings


def worker_count(value: str) -> int | None:
    """--workers as a number of processes: `auto` is one per CPU core (None: invalid)."""
    if value.strip().lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                   (os.cpu_count() or 1))  # fmt: skip
    try:
        count = int(value)
    except ValueError:
        return None
    return count if count >= 1 else None


EMBEDDED_BROKER = "embedded"  # the --workers parent starts a local nats-server


def broker_servers(value: str | None) -> list[str]:
    """--broker as a list of NATS URLs (empty: no broker)."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def limits_error(settings: Settings) -> str | None:
    """Why a value is out of its option's range (None when all are fine)."""
    for option in OPTIONS:
        value = getattr(settings, option.name)
        flag = option.flag_name
        if option.minimum is not None and value < option.minimum:
            if option.minimum == 0:
                meaning = f" ({option.zero})" if option.zero else ""
                return f"{flag} must be 0{meaning} or more"
            return f"{flag} must be at least {option.minimum:g}"
        if option.burst_of is not None and getattr(settings, option.burst_of) > 0 and value < 1:
            return f"{flag} must be at least 1"
    if worker_count(settings.workers) is None:
        return "--workers must be a number of processes (1 or more) or auto"
    if (settings.broker_url or "").strip() == EMBEDDED_BROKER:
        if (worker_count(settings.workers) or 1) < 2:
            return "--broker embedded needs --workers 2 or more (it joins the workers)"
    else:
        for server in broker_servers(settings.broker_url):
            if not server.startswith(("nats://", "tls://")):
                return f"--broker: {server!r} is not a nats:// or tls:// URL, nor embedded"
    if settings.presence_lease_seconds <= settings.presence_heartbeat_seconds:
        return "--presence-lease-seconds must be more than --presence-heartbeat-seconds"
    for pattern in settings.changes_tables:
        schema, dot, table = pattern.partition(".")
        if dot and not (schema and table):
            return f"--changes-tables: {pattern!r} is not schema.table or table"
    return None
