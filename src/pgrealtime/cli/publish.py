"""`pgrealtime publish CHANNEL EVENT JSON`: publish one message and print its ack
(built on pgrealtime.client.sync)."""

from __future__ import annotations

import argparse
import json
import sys

from pgrealtime.cli.target import add_target_flags, resolve_token


def add_parser(commands: argparse._SubParsersAction) -> None:
    publish = commands.add_parser(
        "publish",
        help="publish one message and print its ack",
        description="Publish a message (PAYLOAD: a JSON object) to CHANNEL and print the "
        "server's `published` ack (messageId, position) as JSON. A refusal prints the "
        "server's error code and exits with 1.",
    )
    publish.add_argument("channel", metavar="CHANNEL")
    publish.add_argument("event", metavar="EVENT")
    publish.add_argument("payload", metavar="PAYLOAD", help="a JSON object, e.g. '{\"a\":1}'")
    add_target_flags(publish)
    publish.set_defaults(func=cmd_publish)


def cmd_publish(args: argparse.Namespace) -> int:
    import msgspec

    from pgrealtime.client import RealtimeError
    from pgrealtime.client.sync import connect

    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"error: PAYLOAD is not JSON: {exc}", file=sys.stderr)
        return 2
    token = resolve_token(args)
    try:
        with connect(args.url, token=token) as client:
            client.subscribe(args.channel)  # the server accepts publishes from subscribers
            ack = client.publish(args.channel, args.event, payload)
    except (RealtimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(ack).decode())
    return 0
