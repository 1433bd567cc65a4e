"""`pgrealtime bench`: a thin entry to the load tools in the repository's bench/, which
the wheel does not ship. Nothing of bench is imported until the command runs; bench's
own parser then takes every argument after `bench` (`--help` too)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="load-test pgrealtime against a minimal aiohttp baseline (source checkout)",
        description="Runs the repository's bench/ (python -m bench); "
        "`pgrealtime bench --help` lists its flags.",
        # every argument after `bench` (`--help` too) is left to bench's own parser, which
        # knows the flags: this one has no options and so reads nothing as an option
        add_help=False,
        prefix_chars="\0",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    bench.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Find a checkout's bench/ (above this package, else the current directory) and
    hand it the arguments; exit 2 where there is none (an installed wheel)."""
    for root in (*Path(__file__).resolve().parents, Path.cwd()):
        if (root / "bench" / "command.py").is_file() and (root / "src" / "pgrealtime").is_dir():
            break
    else:
        print(
            "pgrealtime bench: the load tools are not part of the installed package. "
            "Run them from a clone of the repository: `python -m bench <scenario>` "
            "(or `pgrealtime bench <scenario>`) at its root.",
            file=sys.stderr,
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    command = importlib.import_module("bench.command")
    return command.main(args.bench_args, prog="pgrealtime bench")
