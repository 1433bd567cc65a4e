"""Parse path, query and body values, each failure a 400 that names the field."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from aiohttp import web

from pgrealtime.api.errors import ApiError, bad_request
from pgrealtime.util.timefmt import parse_iso8601

T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


def parse_uuid(value: str | None, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value or "")
    except ValueError as exc:
        raise bad_request(f"{name} must be a UUID") from exc


def optional_uuid(request: web.Request, name: str) -> uuid.UUID | None:
    value = request.query.get(name)
    return None if value is None else parse_uuid(value, name)


def optional_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):  # int() also takes "1_000", " 5" and fullwidth digits
        raise bad_request(f"{name} must be an integer between {low} and {high}")
    value = int(raw)
    if not low <= value <= high:
        raise bad_request(f"{name} must be an integer between {low} and {high}")
    return value


def optional_text(request: web.Request, name: str, max_length: int = 255) -> str | None:
    value = request.query.get(name)
    if value is not None and (not value or len(value) > max_length or "\x00" in value):
        raise bad_request(f"{name} must be a non-empty string of at most {max_length} characters")
    return value


def optional_timestamp(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        # in UTC now: an offset can push a date at the edge out of the datetime range
        return parse_iso8601(value).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise bad_request(f"{name} must be an ISO 8601 timestamp") from exc


async def parse_body(request: web.Request, model: type[T], code: str = "INVALID_INPUT") -> T:
    """Decode a JSON body into `model`; unknown fields and wrong types are a 400."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"Body larger than {MAX_BODY_BYTES} bytes")
    body = await request.read()
    if not body:
        raise bad_request("Request body must be a JSON object", code)
    try:
        return msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as exc:
        raise bad_request(f"Invalid request body: {exc}", code) from exc
    except msgspec.DecodeError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}", code) from exc
    except UnicodeDecodeError as exc:
        raise bad_request("Request body is not valid UTF-8", code) from exc
    except RecursionError as exc:
        raise bad_request("Request body is nested too deeply", code) from exc
