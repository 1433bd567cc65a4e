"""Which asyncpg exceptions mean what, written once for every caller.

Two questions come back all over the server: "is the database out of reach right
now?" (a client is told to try again, a connection is thrown away) and "did this
database call fail at all?" (a background loop logs and tries again later instead of
dying). Each answer is one tuple here, so the places that ask cannot drift apart.
A caller that deliberately catches another set keeps its own tuple and says why
(e.g. `changes/slot.CONNECTION_ERRORS` for psycopg2). `transient` answers a third:
"would the same statement likely succeed if tried again later?"
"""

from __future__ import annotations

import asyncio

import asyncpg

UNAVAILABLE: tuple[type[BaseException], ...] = (
    # the socket: refused, reset, unreachable host; TimeoutError is an OSError too
    OSError,
    # a connect or statement that ran out of time (the same class as TimeoutError
    # since Python 3.11; named so the intent reads here)
    asyncio.TimeoutError,
    # SQLSTATE class 08: the server closed or refused the connection
    asyncpg.PostgresConnectionError,
    # the client side of a connection that is closed, closing or broken
    # (also engine.publisher.DatabaseUnavailable: a lane with no connection)
    asyncpg.InterfaceError,
    # SQLSTATE 57P03: the server is starting up, shutting down or in recovery
    asyncpg.CannotConnectNowError,
)
"""The database cannot be reached right now, as opposed to refusing a statement:
worth trying again later; a connection that raised it cannot be trusted."""

FAILED: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.PostgresError)
"""A database call failed for any reason: unreachable (UNAVAILABLE) or the server
refused the statement (any PostgresError). For loops and probes that log, report
or retry later rather than stop."""


# SQLSTATE classes and codes that say "not now" rather than "not this": connection
# (08), transaction rollback such as deadlock or serialization (40), resources (53),
# operator intervention such as admin shutdown or a cancel (57), system error (58),
# lock not available (55P03), object in use (55006).
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_CODES = ("55P03", "55006")


def transient(exc: BaseException) -> bool:
    """True when `exc` says the database could not do it now (unreachable, restarting,
    shutting down, out of resources, a deadlock): the same work should be retried, and
    never be blamed on the data it carried."""
    if isinstance(exc, UNAVAILABLE):
        return True
    code = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return bool(code) and (code.startswith(_TRANSIENT_CLASSES) or code in _TRANSIENT_CODES)
