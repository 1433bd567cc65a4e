"""The shared database error tuples keep their meaning (src/pgrealtime/db/errors.py)."""

from __future__ import annotations

import asyncpg
import pytest

from pgrealtime.db import errors
from pgrealtime.engine.publisher import DatabaseUnavailable

pytestmark = pytest.mark.pure


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError(),
        asyncpg.CannotConnectNowError(),
        asyncpg.InterfaceError("closed"),
        DatabaseUnavailable("the publisher is closed"),
    ],
)
def test_unreachable_is_unavailable_and_failed(exc: BaseException) -> None:
    assert isinstance(exc, errors.UNAVAILABLE)
    assert isinstance(exc, errors.FAILED)


def test_a_refused_statement_failed_but_the_database_is_there() -> None:
    exc = asyncpg.InsufficientPrivilegeError()
    assert not isinstance(exc, errors.UNAVAILABLE)
    assert isinstance(exc, errors.FAILED)
    assert not isinstance(ValueError(), errors.FAILED)
