"""The `pgrealtime` parser: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import sys

from pgrealtime import __version__
from pgrealtime.cli import bench, listen, migrate, publish, replica_identity, serve, status, token

DESCRIPTION = """\
pgrealtime: realtime channels, WebSocket pub/sub and PostgreSQL change notifications,
with permissions decided by your PostgreSQL row-level-security policies.

Quick start (no database needed; an embedded PostgreSQL is started for you):
  pgrealtime serve                      # prints the API key and where data lives
  pgrealtime token --sub $(python3 -c 'import uuid; print(uuid.uuid4())')
  pgrealtime listen CHANNEL             # in a second shell: messages as JSON lines
  pgrealtime publish CHANNEL EVENT '{"hello": "world"}'
Every flag can also be set with a PGREALTIME_* environment variable (see --help of each).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgrealtime",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pgrealtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (serve, migrate, token, replica_identity, status, listen, publish, bench):
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `serve --workers` repeats it
    return args.func(args)
