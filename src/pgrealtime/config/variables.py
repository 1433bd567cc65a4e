"""Reading an option's PGREALTIME_* variable, and naming it in help and docs."""

from __future__ import annotations

import os

from pgrealtime.config.options import Option


def from_env(option: Option) -> str | None:
    """The first of the option's variables that is set and not empty."""
    for name in option.env_names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return value
    return None


def env_text(option: Option) -> str:
    """'env PGREALTIME_X' or 'env PGREALTIME_X, then X' for --help."""
    return "env " + ", then ".join(option.env_names)
