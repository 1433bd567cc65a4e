"""`pgrealtime token`: print a client token signed with the JWT secret."""

from __future__ import annotations

import argparse
import sys

from pgrealtime.auth.principal import ROLES
from pgrealtime.config import add_connection_flags, ensure_secrets, settings_from_args


def add_parser(commands: argparse._SubParsersAction) -> None:
    token = commands.add_parser(
        "token",
        help="print a client token signed with the JWT secret",
        description="Print a JWT (HS256) for a client. It must see the server's secret: "
        "the same --jwt-secret, or the same --data-dir. It does not contact the database.",
    )
    add_connection_flags(token)
    claims = token.add_argument_group("token", "the claims of the token")
    claims.add_argument("--role", default="authenticated",
                        choices=list(ROLES),
                        help="the token's role (default %(default)s)")  # fmt: skip
    claims.add_argument("--sub", help="the user's UUID (required for role authenticated)")
    claims.add_argument("--email", help="optional email claim")
    claims.add_argument("--expires-in", "--ttl", dest="expires_in", type=int, default=3600,
                        help="seconds until the token's exp (default 3600; the server "
                        "refuses user and admin tokens without exp)")  # fmt: skip
    token.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    from pgrealtime.auth import mint_token

    if args.expires_in <= 0:
        print("error: --expires-in (--ttl) must be a positive number of seconds", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    ensure_secrets(settings)
    assert settings.jwt_secret is not None
    try:
        token = mint_token(
            settings.jwt_secret,
            role=args.role,
            sub=args.sub,
            email=args.email,
            expires_in=args.expires_in,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
