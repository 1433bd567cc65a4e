"""Command line: `pgrealtime serve | migrate | token | replica-identity | bench`, one
module per command; `main` is the console script."""

from pgrealtime.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
