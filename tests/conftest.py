"""Shared fixtures: one real PostgreSQL (the embedded server) for the whole session,
and a fresh database per test cloned from a migrated template."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from pgrealtime.db.embedded import EmbeddedPostgres
from pgrealtime.db.migrate import apply_migrations

TEMPLATE_DB = "pgrt_template"
_db_counter = itertools.count(1)


def _with_database(url: str, name: str) -> str:
    return url.replace("/postgres?", f"/{name}?", 1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres]:
    """The embedded PostgreSQL server (wal_level=logical), started once."""
    root = Path(tempfile.mkdtemp(prefix="pgrt-test-"))
    os.chmod(root, 0o755)
    port = 20000 + os.getpid() % 20000
    cluster = EmbeddedPostgres(root, port=port)
    cluster.start()
    yield cluster
    cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
async def pg_admin_url(pg_cluster: EmbeddedPostgres) -> str:
    """URL of the cluster's `postgres` database; also builds the migrated template."""
    url = pg_cluster.url
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    template = await asyncpg.connect(_with_database(url, TEMPLATE_DB))
    try:
        await apply_migrations(template)
    finally:
        await template.close()
    return url


@pytest.fixture
async def db_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await conn.close()
    yield _with_database(pg_admin_url, name)
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()
