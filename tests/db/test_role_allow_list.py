"""One role allow-list: the Python constant, the SQL function that every role check
calls, and the roles the baseline creates are the same list."""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

from pgrealtime.auth import ROLES
from pgrealtime.db.migrate import function_files


async def test_python_and_sql_allow_lists_are_equal(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT realtime.allowed_roles()") == list(ROLES)
        for role in ROLES:  # created by the baseline, and the server may switch to it
            assert await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", role)
    finally:
        await conn.close()


def test_baseline_creates_the_allowed_roles() -> None:
    baseline = (resources.files("pgrealtime.db") / "schema" / "001_baseline.sql").read_text()
    listed = re.search(r"FOREACH r IN ARRAY ARRAY\[([^\]]*)\]", baseline)
    assert listed is not None
    assert tuple(re.findall(r"'([a-z_]+)'", listed.group(1))) == ROLES


def test_no_function_spells_the_list_out() -> None:
    """Role checks call realtime.allowed_roles() instead of repeating the roles."""
    spelled = re.compile(r"'anon',\s*'authenticated'")
    for name, sql in function_files():
        assert not spelled.search(sql), name
