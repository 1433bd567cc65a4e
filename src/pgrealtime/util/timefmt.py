"""Timestamps as the specification shows them: RFC 3339, UTC, with a Z."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso8601(text: str) -> datetime:
    """An ISO 8601 timestamp; a missing offset means UTC. Raises ValueError."""
    value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
