"""`pgrealtime bench`: load tests of pgrealtime against a minimal aiohttp baseline.

Hook into the CLI with `add_bench_parser(subparsers)`; the parsed arguments go to
`run_bench(args)`, which returns the exit status.
"""

from pgrealtime.bench.command import add_bench_parser, run_bench

__all__ = ["add_bench_parser", "run_bench"]
