"""`db.errors.transient` tells "not now" from "not this", on errors raised by a real
PostgreSQL. The change feed relies on it: a transient failure is retried for ever and
never counted toward skipping a change, so a database restart loses no change."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pgrealtime.db import errors


async def _raised(conn: asyncpg.Connection, sql: str) -> BaseException:
    try:
        await conn.execute(sql)
    except Exception as exc:  # the real exception is what is under test
        return exc
    raise AssertionError(f"{sql!r} did not fail")


async def test_shutdown_and_lock_timeout_are_transient(db_url: str) -> None:
    holder = await asyncpg.connect(db_url)
    victim = await asyncpg.connect(db_url)
    waiter = await asyncpg.connect(db_url)
    try:
        await holder.execute("CREATE TABLE t (id int)")
        # admin shutdown of the backend (SQLSTATE 57P01), as during a restart
        pid = await victim.fetchval("SELECT pg_backend_pid()")
        sleeping = asyncio.ensure_future(victim.execute("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.2)
        await holder.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(Exception) as shutdown:
            await sleeping
        assert errors.transient(shutdown.value), repr(shutdown.value)
        # a lock not granted in time (55P03)
        await holder.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        await waiter.execute("SET lock_timeout = '100ms'")
        locked = await _raised(waiter, "SELECT * FROM t")
        assert getattr(locked, "sqlstate", None) == "55P03"
        assert errors.transient(locked)
        await holder.execute("ROLLBACK")
    finally:
        for conn in (holder, victim, waiter):
            await conn.close()


async def test_errors_of_the_data_are_not_transient(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        for sql in (
            "SELECT 1 / 0",  # 22012
            "SELECT no_such_column FROM pg_class",  # 42703: a column dropped since
            "SELECT '{'::jsonb",  # 22P02
        ):
            exc = await _raised(conn, sql)
            assert not errors.transient(exc), (sql, repr(exc))
    finally:
        await conn.close()


@pytest.mark.pure
def test_unreachable_is_transient() -> None:
    assert errors.transient(ConnectionRefusedError())
    assert errors.transient(asyncpg.CannotConnectNowError())
    assert not errors.transient(ValueError("not a database error"))
