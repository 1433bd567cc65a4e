"""`pgrealtime bench`: the hook that registers the benchmark commands."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    from pgrealtime.bench import add_bench_parser

    add_bench_parser(commands)
