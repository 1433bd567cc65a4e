"""Range checks of the options, generated from the table: nonsense is caught at start
rather than at the first client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgrealtime.config.options import OPTIONS

if TYPE_CHECKING:
    from pgrealtime.config.settings import Settings


def limits_error(settings: Settings) -> str | None:
    """Why a value is out of its option's range (None when all are fine)."""
    for option in OPTIONS:
        value = getattr(settings, option.name)
        flag = option.flag_name
        if option.minimum is not None and value < option.minimum:
            if option.minimum == 0:
                meaning = f" ({option.zero})" if option.zero else ""
                return f"{flag} must be 0{meaning} or more"
            return f"{flag} must be at least {option.minimum:g}"
        if option.burst_of is not None and getattr(settings, option.burst_of) > 0 and value < 1:
            return f"{flag} must be at least 1"
    for pattern in settings.changes_tables:
        schema, dot, table = pattern.partition(".")
        if dot and not (schema and table):
            return f"--changes-tables: {pattern!r} is not schema.table or table"
    return None
