"""Command-line flags and PGREALTIME_* variables, generated from the options table.

A flag given on the command line wins over its variable; an empty variable counts as
unset. Variables are read when the parser is built, so `--help` shows what they set.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pgrealtime.config.options import API_KEY_PREFIX, GROUPS, OPTIONS, Commands, Option
from pgrealtime.config.settings import Settings
from pgrealtime.config.validate import limits_error
from pgrealtime.config.variables import env_text, from_env

FALSE_WORDS = ("0", "false", "no", "off")
TRUE_WORDS = ("1", "true", "yes", "on")


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every command needs to find the database and the secrets."""
    add_flags(parser, "all")


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of `pgrealtime serve` (besides the connection flags)."""
    add_flags(parser, "serve")


def add_flags(parser: argparse.ArgumentParser, commands: Commands) -> None:
    """Add the flags of the options of `commands`, in their --help groups (all groups
    are made in GROUPS order; argparse leaves empty ones out of --help)."""
    for name in GROUPS:
        _group(parser, name)
    for option in OPTIONS:
        if option.commands == commands:
            _add(_group(parser, option.group), option)


def _group(parser: argparse.ArgumentParser, name: str) -> argparse._ArgumentGroup:
    """The parser's --help group `name`, made on first use (connection and server
    flags share groups)."""
    for group in parser._action_groups:
        if group.title == name:
            return group
    return parser.add_argument_group(name, GROUPS[name])


def _add(group: argparse._ArgumentGroup, option: Option) -> None:
    shown = option.help_default if option.help_default is not None else "%(default)s"
    help_text = f"{option.help} ({env_text(option)}; default {shown})"
    flag = option.flag_name
    raw = from_env(option)
    if option.type is bool:
        on = option.default_value()
        if raw is None:
            value = on
        else:
            value = raw.lower() not in FALSE_WORDS if on else raw.lower() in TRUE_WORDS
        kwargs: dict[str, Any] = {
            "both": {"action": argparse.BooleanOptionalAction},
            "on": {"action": "store_true"},
            "off": {"action": "store_false"},
        }[option.kind]
        group.add_argument(flag, dest=option.name, default=value, help=help_text, **kwargs)
        return
    if option.type is list:  # comma-separated; split by settings_from_args
        default: Any = raw or ""
        kind: Any = str
    elif raw is not None:
        default, kind = option.type(raw), option.type
    else:
        default, kind = option.default_value(), option.type
    group.add_argument(
        flag,
        dest=option.name,
        type=kind,
        default=default,
        choices=option.choices or None,
        help=help_text,
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build Settings from parsed flags (flags already default to the environment);
    exits with an error on a value out of range."""
    values = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    for option in OPTIONS:
        if option.type is list and isinstance(values.get(option.name), str):
            items = (item.strip() for item in values[option.name].split(","))
            values[option.name] = [i.lower() if option.lowercase else i for i in items if i]
        if option.type is Path and isinstance(values.get(option.name), str):
            values[option.name] = Path(values[option.name])
    settings = Settings(**values)
    if settings.api_key is not None and not settings.api_key.startswith(API_KEY_PREFIX):
        raise SystemExit(f"error: the API key must start with {API_KEY_PREFIX!r}")
    if settings.anon_key is not None and settings.anon_key.startswith(API_KEY_PREFIX):
        raise SystemExit(f"error: the anon key must not start with {API_KEY_PREFIX!r}")
    problem = limits_error(settings)
    if problem is not None:
        raise SystemExit(f"error: {problem}")
    return settings
