"""The REST error shape: {"error": CODE, "message": text, "statusCode": n}."""

from __future__ import annotations

import orjson
from aiohttp import web


class ApiError(Exception):
    """Raised by handlers; turned into the JSON error body by the middleware."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> web.Response:
    body = orjson.dumps({"error": code, "message": message, "statusCode": status})
    return web.Response(status=status, body=body, content_type="application/json")


def bad_request(message: str, code: str = "INVALID_INPUT") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str, code: str = "NOT_FOUND") -> ApiError:
    return ApiError(404, code, message)
