"""What every REST handler answers with: a JSON body, and the error body's schema.

One place for the response helper the handlers share and for the OpenAPI schema of
the error shape that `api/errors.error_response` writes, so the document
(`api/openapi`) and the fragments handler modules contribute (`api/webhooks`) need
no handler module to describe it.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "statusCode"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "statusCode": {"type": "integer"},
    },
}
"""OpenAPI schema of {"error": CODE, "message": text, "statusCode": n}."""


def json_content(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    """An OpenAPI response object whose body is JSON of `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}
