"""Channel patterns: validation, matching and specificity (pure functions).

`*` (and InsForge's `%`) match any run of characters; everything else is literal.
The same rules exist in SQL (`realtime.match_channel`), and tests hold the two equal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

WILDCARDS = ("*", "%")
MAX_PATTERN_LENGTH = 255
MAX_CHANNEL_LENGTH = 255
# Letters, digits and the separators channel names use in practice.
_ALLOWED = re.compile(r"[A-Za-z0-9:._\-/@#=+*%]+")
_CHANNEL_ALLOWED = re.compile(r"[A-Za-z0-9:._\-/@#=+]+")


def pattern_error(pattern: object) -> str | None:
    """Why a channel pattern is unacceptable, or None when it is fine."""
    if not isinstance(pattern, str) or not pattern:
        return "pattern must be a non-empty string"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"pattern must be at most {MAX_PATTERN_LENGTH} characters"
    if not _ALLOWED.fullmatch(pattern):  # not match(): `$` accepts a final newline
        return (
            "pattern may contain only letters, digits, the separators : . _ - / @ # = + "
            "and the wildcard * (or %)"
        )
    normalized = normalize(pattern)
    if "**" in normalized:
        return "pattern must not contain adjacent wildcards"
    if normalized.replace("*", "") == "":
        return "pattern must contain at least one literal character"
    if pattern.startswith("db:"):
        return "the db: prefix is reserved for database change notifications"
    return None


def channel_name_error(name: object) -> str | None:
    """Why a concrete channel name (what clients subscribe to) is unacceptable."""
    if not isinstance(name, str) or not name:
        return "channel must be a non-empty string"
    if len(name) > MAX_CHANNEL_LENGTH:
        return f"channel must be at most {MAX_CHANNEL_LENGTH} characters"
    if not _CHANNEL_ALLOWED.fullmatch(name):
        return "channel may contain only letters, digits and the separators : . _ - / @ # = +"
    return None


def normalize(pattern: str) -> str:
    """`%` and `*` are the same wildcard."""
    return pattern.replace("%", "*")


def wildcard_count(pattern: str) -> int:
    return sum(pattern.count(w) for w in WILDCARDS)


def matches(pattern: str, name: str) -> bool:
    """Does `name` match `pattern`? A glob where `*` matches any run of characters."""
    parts = normalize(pattern).split("*")
    if len(parts) == 1:
        return pattern == name
    first, *middle, last = parts
    if not name.startswith(first) or len(name) < len(first) + len(last):
        return False
    if not name.endswith(last):
        return False
    position = len(first)
    end = len(name) - len(last)
    for part in middle:
        found = name.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def specificity_key(pattern: str) -> tuple[int, int, str]:
    """Sort key: exact names first, then fewer wildcards, then longer literal text,
    then the pattern itself (byte order), so ties are always broken the same way."""
    wildcards = wildcard_count(pattern)
    return (wildcards, -(len(pattern) - wildcards), pattern)


def most_specific(patterns: Iterable[str], name: str) -> str | None:
    """The pattern that governs `name` among `patterns`, or None."""
    candidates = [p for p in patterns if matches(p, name)]
    if not candidates:
        return None
    return min(candidates, key=specificity_key)
