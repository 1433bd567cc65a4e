"""The database a command works on: the configured URL, or the embedded PostgreSQL of
the data directory for the duration of the command."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pgrealtime.config import Settings
from pgrealtime.db.embedded import EmbeddedPostgres
from pgrealtime.util.progress import step


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured PostgreSQL URL, or the embedded server of the data directory for
    the duration. An embedded server that was already running (a `pgrealtime serve`
    using it) is left running afterwards."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir, port=settings.embedded_port)
    was_running = (embedded.pgdata / "postmaster.pid").exists() and embedded.is_running()
    if was_running:
        url = embedded.start()
    else:
        first = not (embedded.pgdata / "PG_VERSION").exists()
        what = (
            f"Creating the embedded PostgreSQL in {embedded.pgdata} (first start: initdb)"
            if first
            else f"Starting embedded PostgreSQL in {embedded.pgdata}"
        )
        with step(what):
            url = embedded.start()
    try:
        yield url
    finally:
        if not was_running:
            embedded.stop()
