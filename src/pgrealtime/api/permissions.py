"""The subscribe and publish policies, read live from PostgreSQL's catalog."""

from __future__ import annotations

from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.http import json_response

routes = web.RouteTableDef()

POLICIES_SQL = """
SELECT policyname, tablename, cmd, roles::text[] AS roles, qual, with_check
FROM pg_policies
WHERE schemaname = 'realtime' AND tablename = $1 AND cmd = ANY($2::text[])
ORDER BY policyname
"""


def unwrap(expression: str | None) -> str | None:
    """PostgreSQL prints `(enabled = true)`; the specification shows `enabled = true`."""
    if expression is None or not (expression.startswith("(") and expression.endswith(")")):
        return expression
    depth = 0
    for i, ch in enumerate(expression):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and i < len(expression) - 1:
            return expression  # the outer parentheses do not enclose everything
    return expression[1:-1]


async def _policies(request: web.Request, table: str, commands: list[str]) -> list[dict]:
    rows = await request.app[keys.POOL].fetch(POLICIES_SQL, table, commands)
    return [
        {
            "policyName": r["policyname"],
            "tableName": f"realtime_{r['tablename']}",
            "command": r["cmd"],
            "roles": list(r["roles"]),
            "using": unwrap(r["qual"]),
            "withCheck": unwrap(r["with_check"]),
        }
        for r in rows
    ]


@routes.get("/api/realtime/permissions")
async def get_permissions(request: web.Request) -> web.Response:
    return json_response(
        {
            "subscribe": {"policies": await _policies(request, "channels", ["SELECT", "ALL"])},
            "publish": {"policies": await _policies(request, "messages", ["INSERT", "ALL"])},
        }
    )
