"""Where `pgrealtime listen` and `pgrealtime publish` connect, and with which token.

The defaults reach a `pgrealtime serve` started on this machine without flags: the URL
from PGREALTIME_HOST/PGREALTIME_PORT (as serve reads them), the token from
PGREALTIME_API_KEY or else the API key serve generated and kept in the data
directory's secrets.json (read, never generated here: a new key would match no
server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pgrealtime.config import SECRETS_FILE
from pgrealtime.db.embedded import default_data_dir


def default_url() -> str:
    host = os.environ.get("PGREALTIME_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # noqa: S104 - read to reach a server bound to all
        host = "127.0.0.1"
    port = os.environ.get("PGREALTIME_PORT") or "7130"
    return f"ws://{host}:{port}/realtime"


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server", "which server to reach, as whom")
    group.add_argument(
        "--url",
        default=os.environ.get("PGREALTIME_URL") or default_url(),
        help="the server's WebSocket (or base) URL (env PGREALTIME_URL; "
        "default %(default)s, from PGREALTIME_HOST and PGREALTIME_PORT)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("PGREALTIME_TOKEN"),
        help="a client JWT or the API key (env PGREALTIME_TOKEN; default "
        "PGREALTIME_API_KEY, else the API key `pgrealtime serve` keeps in "
        "the data directory)",
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("PGREALTIME_DATA_DIR") or default_data_dir()),
        help="where to find the API key of a local server (env "
        "PGREALTIME_DATA_DIR; default %(default)s)",
    )


def resolve_token(args: argparse.Namespace) -> str:
    """The token to use, or exit with a message saying how to give one."""
    if args.token:
        return args.token
    if os.environ.get("PGREALTIME_API_KEY"):
        return os.environ["PGREALTIME_API_KEY"]
    secrets = args.data_dir / SECRETS_FILE
    try:
        key = json.loads(secrets.read_text()).get("api_key")
    except (OSError, ValueError):
        key = None
    if not key:
        print(
            f"error: no token: pass --token (or PGREALTIME_TOKEN); no API key found in {secrets}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return key
