"""`pgrealtime listen CHANNEL`: print a channel's messages as JSON lines, for trying
the server from a shell (built on pgrealtime.client.sync)."""

from __future__ import annotations

import argparse
import json
import sys

from pgrealtime.cli.target import add_target_flags, resolve_token


def add_parser(commands: argparse._SubParsersAction) -> None:
    listen = commands.add_parser(
        "listen",
        help="print a channel's messages as JSON lines",
        description="Subscribe to CHANNEL and print every message as one JSON line on "
        "stdout, reconnecting and resuming on its own. Ctrl-C to stop.",
    )
    listen.add_argument(
        "channel", metavar="CHANNEL", help="a channel name, or db:<table> for row changes"
    )
    listen.add_argument(
        "--since",
        help="replay history after this position (an integer; 0 for all) or message id first",
    )
    listen.add_argument(
        "--filter",
        type=json.loads,
        help='a db: channel\'s filter as JSON, e.g. \'{"event":"INSERT"}\'',
    )
    listen.add_argument("--count", type=int, help="exit after this many messages (default: never)")
    add_target_flags(listen)
    listen.set_defaults(func=cmd_listen)


def cmd_listen(args: argparse.Namespace) -> int:
    import msgspec

    from pgrealtime.client import RealtimeError
    from pgrealtime.client.sync import connect

    since: int | str | None = args.since
    if since is not None and since.isdigit():
        since = int(since)
    token = resolve_token(args)
    try:
        with connect(args.url, token=token) as client:
            sub = client.subscribe(args.channel, since=since, filter=args.filter)
            where = f" after position {sub.last_position}" if sub.last_position else ""
            print(
                f"listening on {args.channel}{where}; Ctrl-C to stop", file=sys.stderr, flush=True
            )
            for seen, message in enumerate(sub, start=1):
                sys.stdout.write(msgspec.json.encode(message).decode() + "\n")
                sys.stdout.flush()
                if args.count is not None and seen >= args.count:
                    break
    except KeyboardInterrupt:
        return 0
    except (RealtimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
