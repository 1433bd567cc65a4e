"""Settings from command-line flags and PGREALTIME_* environment variables.

Every flag has an environment variable; a flag given on the command line wins.
Secrets that are not given are generated once and kept in the data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pgrealtime.db.embedded import default_data_dir

API_KEY_PREFIX = "ik_"
SECRETS_FILE = "secrets.json"
DEFAULT_PUBLISH_RATE = 100.0  # publishes per second per connection
DEFAULT_PUBLISH_BURST = 200.0
DEFAULT_MAX_SUBSCRIPTIONS = 100  # per connection
DEFAULT_USER_PUBLISH_RATE = 200.0  # publishes per second per user, all connections
DEFAULT_USER_PUBLISH_BYTES_RATE = 1024 * 1024  # payload bytes per second per user
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024  # one publish's payload, encoded as JSON
DEFAULT_PUBLISH_BATCH_BYTES = 8 * 1024 * 1024  # why: publisher.DEFAULT_MAX_BATCH_BYTES
# Every frame counts, publishes too: the rate stays above --publish-rate, or that one
# would never be reached.
DEFAULT_FRAME_RATE = 200.0  # frames per second per connection
DEFAULT_FRAME_BURST = 400.0
DEFAULT_SUBSCRIBE_RATE = 10.0  # subscribes per second per connection
DEFAULT_SUBSCRIBE_BURST = 50.0
DEFAULT_MAX_CONNECTIONS = 10_000  # per process
DEFAULT_MAX_CONNECTIONS_PER_IP = 100
DEFAULT_AUTH_TIMEOUT_SECONDS = 10.0


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 7130
    database_url: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    jwt_secret: str | None = None
    api_key: str | None = None
    # authenticated and project_admin tokens without `exp` are refused (see auth/tokens.py)
    jwt_require_exp: bool = True
    embedded_port: int = 54329
    max_frame_bytes: int = 1024 * 1024
    send_buffer_bytes: int = 4 * 1024 * 1024
    # 0: flush every event-loop tick; >0: join frames for up to this long (see engine/hub.py)
    flush_interval_ms: float = 0.0
    max_recover: int = 10_000
    max_recover_bytes: int = 16 * 1024 * 1024  # frames of one resume
    max_concurrent_recoveries: int = 8  # history reads in flight, per process
    heartbeat_seconds: float = 30.0
    # Per-connection limits, 0 = unlimited. Off when Settings is built in code (tests,
    # embedding); `serve` applies the DEFAULT_* values above unless told otherwise.
    publish_rate: float = 0.0  # publishes per second
    publish_burst: float = DEFAULT_PUBLISH_BURST
    max_subscriptions: int = 0
    # Per-user publish budgets (all of a user's connections to this process), 0 = off;
    # off in code like the limits above, on for `serve`.
    user_publish_rate: float = 0.0  # publishes per second
    user_publish_bytes_rate: float = 0.0  # payload bytes per second
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    publish_batch_bytes: int = DEFAULT_PUBLISH_BATCH_BYTES
    frame_rate: float = 0.0  # frames of any type per second
    frame_burst: float = DEFAULT_FRAME_BURST
    subscribe_rate: float = 0.0  # subscribes per second
    subscribe_burst: float = DEFAULT_SUBSCRIBE_BURST
    # Same pattern: in code, connections from one address are not capped (tests and
    # benchmarks open hundreds from loopback); `serve` caps them.
    max_connections_per_ip: int = 0
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # per process, 0 = unlimited
    auth_timeout_seconds: float = DEFAULT_AUTH_TIMEOUT_SECONDS  # 0 = never
    retention_interval_seconds: float = 3600.0
    db_pool_size: int = 10
    log_level: str = "info"
    log_format: str = "json"
    webhook_secret: str | None = None
    webhook_allow_private_networks: bool = False
    webhook_allowed_hosts: list[str] = field(default_factory=list)
    webhook_timeout_seconds: float = 10.0
    webhook_retry_hours: float = 24.0
    webhook_per_host_concurrency: int = 32
    changes: bool = True
    replication_slot: str = "pgrealtime"
    publication: str = "pgrealtime"
    # a change batch failing this often in a row at one WAL position is delivered
    # change by change, skipping what fails; 0: retried for ever
    changes_max_failures: int = 3
    # `schema.table` patterns (globs) of the tables db: channels may publish; empty:
    # any table the caller may SELECT
    changes_tables: list[str] = field(default_factory=list)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _env_bool(name: str) -> bool:
    return (_env(name) or "").lower() in ("1", "true", "yes", "on")


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every command needs to find the database and the secrets."""
    parser.add_argument(
        "--database-url",
        default=_env("PGREALTIME_DATABASE_URL") or _env("DATABASE_URL"),
        help="PostgreSQL URL (env PGREALTIME_DATABASE_URL, then DATABASE_URL). "
        "Without one, an embedded PostgreSQL is started in the data directory.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env("PGREALTIME_DATA_DIR") or default_data_dir()),
        help="where the embedded PostgreSQL and generated secrets live "
        "(env PGREALTIME_DATA_DIR, default %(default)s)",
    )
    parser.add_argument(
        "--jwt-secret",
        default=_env("PGREALTIME_JWT_SECRET"),
        help="HS256 secret for client tokens (env PGREALTIME_JWT_SECRET; generated if unset)",
    )
    parser.add_argument(
        "--api-key",
        default=_env("PGREALTIME_API_KEY"),
        help="admin API key, starts with ik_ (env PGREALTIME_API_KEY; generated if unset)",
    )
    parser.add_argument(
        "--embedded-port",
        type=int,
        default=int(_env("PGREALTIME_EMBEDDED_PORT") or 54329),
        help="port number of the embedded PostgreSQL's Unix socket "
        "(env PGREALTIME_EMBEDDED_PORT, default %(default)s)",
    )


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of `pgrealtime serve`."""
    parser.add_argument(
        "--host",
        default=_env("PGREALTIME_HOST") or "127.0.0.1",
        help="address to listen on (env PGREALTIME_HOST, default %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(_env("PGREALTIME_PORT") or 7130),
        help="port to listen on (env PGREALTIME_PORT, default %(default)s)",
    )
    parser.add_argument(
        "--jwt-require-exp",
        action=argparse.BooleanOptionalAction,
        default=(_env("PGREALTIME_JWT_REQUIRE_EXP") or "1").lower()
        not in ("0", "false", "no", "off"),
        help="refuse authenticated and project_admin tokens without an exp claim; anon "
        "tokens may omit it (env PGREALTIME_JWT_REQUIRE_EXP=0 turns it off, default on)",
    )
    parser.add_argument(
        "--max-frame-bytes",
        type=int,
        default=int(_env("PGREALTIME_MAX_FRAME_BYTES") or 1024 * 1024),
        help="largest client frame accepted (env PGREALTIME_MAX_FRAME_BYTES, default 1 MiB)",
    )
    parser.add_argument(
        "--send-buffer-bytes",
        type=int,
        default=int(_env("PGREALTIME_SEND_BUFFER_BYTES") or 4 * 1024 * 1024),
        help="unsent bytes a subscriber may fall behind before it is disconnected "
        "(env PGREALTIME_SEND_BUFFER_BYTES, default 4 MiB)",
    )
    parser.add_argument(
        "--flush-interval-ms",
        type=float,
        default=float(_env("PGREALTIME_FLUSH_INTERVAL_MS") or 0),
        help="write to each connection at most once per this many ms, joining the frames "
        "queued meanwhile: less CPU for busy channels, up to this much added latency; "
        "0 writes at the end of every event-loop tick "
        "(env PGREALTIME_FLUSH_INTERVAL_MS, default %(default)s)",
    )
    parser.add_argument(
        "--max-recover",
        type=int,
        default=int(_env("PGREALTIME_MAX_RECOVER") or 10_000),
        help="most messages sent from history to a client resuming with `since`; "
        "beyond it the client is told recovered=false (env PGREALTIME_MAX_RECOVER, "
        "default %(default)s)",
    )
    parser.add_argument(
        "--max-recover-bytes",
        type=int,
        default=int(_env("PGREALTIME_MAX_RECOVER_BYTES") or 16 * 1024 * 1024),
        help="most bytes of message frames sent from history to one resuming client "
        "(only the newest that fit); beyond it the client is told recovered=false "
        "(env PGREALTIME_MAX_RECOVER_BYTES, default 16 MiB)",
    )
    parser.add_argument(
        "--max-concurrent-recoveries",
        type=int,
        default=int(_env("PGREALTIME_MAX_CONCURRENT_RECOVERIES") or 8),
        help="history reads of resuming clients in flight at once in this process; "
        "more wait their turn (env PGREALTIME_MAX_CONCURRENT_RECOVERIES, "
        "default %(default)s)",
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=float(_env("PGREALTIME_HEARTBEAT_SECONDS") or 30),
        help="seconds of silence before a client is pinged; no answer within half of it "
        "drops the connection; 0 turns it off "
        "(env PGREALTIME_HEARTBEAT_SECONDS, default %(default)s)",
    )
    parser.add_argument(
        "--publish-rate",
        type=float,
        default=float(_env("PGREALTIME_PUBLISH_RATE") or DEFAULT_PUBLISH_RATE),
        help="publishes per second one connection may sustain; more get RATE_LIMITED; "
        "0 = unlimited (env PGREALTIME_PUBLISH_RATE, default %(default)s)",
    )
    parser.add_argument(
        "--publish-burst",
        type=float,
        default=float(_env("PGREALTIME_PUBLISH_BURST") or DEFAULT_PUBLISH_BURST),
        help="publishes one connection may send back to back after a quiet spell "
        "(env PGREALTIME_PUBLISH_BURST, default %(default)s)",
    )
    parser.add_argument(
        "--max-subscriptions",
        type=int,
        default=int(_env("PGREALTIME_MAX_SUBSCRIPTIONS") or DEFAULT_MAX_SUBSCRIPTIONS),
        help="channels one connection may be subscribed to at once; 0 = unlimited "
        "(env PGREALTIME_MAX_SUBSCRIPTIONS, default %(default)s)",
    )
    parser.add_argument(
        "--user-publish-rate",
        type=float,
        default=float(_env("PGREALTIME_USER_PUBLISH_RATE") or DEFAULT_USER_PUBLISH_RATE),
        help="publishes per second one user (token sub) may sustain over all their "
        "connections, burst twice that; more get RATE_LIMITED; admins are exempt; "
        "0 = unlimited (env PGREALTIME_USER_PUBLISH_RATE, default %(default)s)",
    )
    parser.add_argument(
        "--user-publish-bytes-rate",
        type=float,
        default=float(
            _env("PGREALTIME_USER_PUBLISH_BYTES_RATE") or DEFAULT_USER_PUBLISH_BYTES_RATE
        ),
        help="payload bytes per second one user may publish over all their connections, "
        "burst twice that; 0 = unlimited "
        "(env PGREALTIME_USER_PUBLISH_BYTES_RATE, default %(default)s: 1 MiB/s)",
    )
    parser.add_argument(
        "--max-payload-bytes",
        type=int,
        default=int(_env("PGREALTIME_MAX_PAYLOAD_BYTES") or DEFAULT_MAX_PAYLOAD_BYTES),
        help="largest publish payload (as JSON); larger ones get INVALID_PAYLOAD "
        "(env PGREALTIME_MAX_PAYLOAD_BYTES, default %(default)s: 64 KiB)",
    )
    parser.add_argument(
        "--publish-batch-bytes",
        type=int,
        default=int(_env("PGREALTIME_PUBLISH_BATCH_BYTES") or DEFAULT_PUBLISH_BATCH_BYTES),
        help="most bytes of publishes sent to PostgreSQL in one round trip; a larger "
        "publish goes alone (env PGREALTIME_PUBLISH_BATCH_BYTES, default %(default)s: 8 MiB)",
    )
    parser.add_argument(
        "--frame-rate",
        type=float,
        default=float(_env("PGREALTIME_FRAME_RATE") or DEFAULT_FRAME_RATE),
        help="frames of any type per second one connection may sustain; more get "
        "RATE_LIMITED and are not acted on; 0 = unlimited "
        "(env PGREALTIME_FRAME_RATE, default %(default)s)",
    )
    parser.add_argument(
        "--frame-burst",
        type=float,
        default=float(_env("PGREALTIME_FRAME_BURST") or DEFAULT_FRAME_BURST),
        help="frames one connection may send back to back after a quiet spell "
        "(env PGREALTIME_FRAME_BURST, default %(default)s)",
    )
    parser.add_argument(
        "--subscribe-rate",
        type=float,
        default=float(_env("PGREALTIME_SUBSCRIBE_RATE") or DEFAULT_SUBSCRIBE_RATE),
        help="subscribe frames per second one connection may sustain; more get "
        "RATE_LIMITED; 0 = unlimited (env PGREALTIME_SUBSCRIBE_RATE, default %(default)s)",
    )
    parser.add_argument(
        "--subscribe-burst",
        type=float,
        default=float(_env("PGREALTIME_SUBSCRIBE_BURST") or DEFAULT_SUBSCRIBE_BURST),
        help="subscribes one connection may send back to back after a quiet spell "
        "(env PGREALTIME_SUBSCRIBE_BURST, default %(default)s)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=int(_env("PGREALTIME_MAX_CONNECTIONS") or DEFAULT_MAX_CONNECTIONS),
        help="WebSocket connections this process accepts at once; more are refused with "
        "HTTP 503 before the upgrade; 0 = unlimited "
        "(env PGREALTIME_MAX_CONNECTIONS, default %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=int(_env("PGREALTIME_MAX_CONNECTIONS_PER_IP") or DEFAULT_MAX_CONNECTIONS_PER_IP),
        help="WebSocket connections from one client address at once; more are refused "
        "with HTTP 429 before the upgrade; 0 = unlimited "
        "(env PGREALTIME_MAX_CONNECTIONS_PER_IP, default %(default)s)",
    )
    parser.add_argument(
        "--auth-timeout",
        dest="auth_timeout_seconds",
        type=float,
        default=float(_env("PGREALTIME_AUTH_TIMEOUT") or DEFAULT_AUTH_TIMEOUT_SECONDS),
        help="seconds a connection may stay without a successful auth before it is "
        "closed (4001); 0 = never (env PGREALTIME_AUTH_TIMEOUT, default %(default)s)",
    )
    parser.add_argument(
        "--retention-interval-seconds",
        type=float,
        default=float(_env("PGREALTIME_RETENTION_INTERVAL_SECONDS") or 3600),
        help="how often old messages are deleted under the retention setting "
        "(env PGREALTIME_RETENTION_INTERVAL_SECONDS, default %(default)s)",
    )
    parser.add_argument(
        "--db-pool-size",
        type=int,
        default=int(_env("PGREALTIME_DB_POOL_SIZE") or 10),
        help="PostgreSQL connections in the pool "
        "(env PGREALTIME_DB_POOL_SIZE, default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=_env("PGREALTIME_LOG_LEVEL") or "info",
        choices=["debug", "info", "warning", "error"],
        help="(env PGREALTIME_LOG_LEVEL, default %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        default=_env("PGREALTIME_LOG_FORMAT") or "json",
        choices=["json", "text"],
        help="structured JSON lines or plain text (env PGREALTIME_LOG_FORMAT, default %(default)s)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=_env("PGREALTIME_WEBHOOK_SECRET"),
        help="HMAC-SHA256 key to sign webhook requests of channels without their own "
        "(env PGREALTIME_WEBHOOK_SECRET; generated and kept in the data directory if unset)",
    )
    parser.add_argument(
        "--webhook-allow-private-networks",
        action="store_true",
        default=_env_bool("PGREALTIME_WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
        help="let webhooks reach loopback and private addresses "
        "(env PGREALTIME_WEBHOOK_ALLOW_PRIVATE_NETWORKS=1)",
    )
    parser.add_argument(
        "--webhook-allowed-hosts",
        default=_env("PGREALTIME_WEBHOOK_ALLOWED_HOSTS") or "",
        help="comma-separated host names webhooks may reach even on private addresses "
        "(env PGREALTIME_WEBHOOK_ALLOWED_HOSTS)",
    )
    parser.add_argument(
        "--webhook-timeout-seconds",
        type=float,
        default=float(_env("PGREALTIME_WEBHOOK_TIMEOUT_SECONDS") or 10),
        help="timeout of one webhook attempt (env PGREALTIME_WEBHOOK_TIMEOUT_SECONDS, default 10)",
    )
    parser.add_argument(
        "--webhook-retry-hours",
        type=float,
        default=float(_env("PGREALTIME_WEBHOOK_RETRY_HOURS") or 24),
        help="how long failed webhooks are retried before marked dead "
        "(env PGREALTIME_WEBHOOK_RETRY_HOURS, default 24)",
    )
    parser.add_argument(
        "--webhook-per-host-concurrency",
        type=int,
        default=int(_env("PGREALTIME_WEBHOOK_PER_HOST_CONCURRENCY") or 32),
        help="webhook requests in flight to one host, at most 128 "
        "(env PGREALTIME_WEBHOOK_PER_HOST_CONCURRENCY, default 32)",
    )
    parser.add_argument(
        "--no-changes",
        dest="changes",
        action="store_false",
        default=(_env("PGREALTIME_CHANGES") or "1").lower() not in ("0", "false", "no", "off"),
        help="turn off database change notifications (db:<table> channels) "
        "(env PGREALTIME_CHANGES=0)",
    )
    parser.add_argument(
        "--replication-slot",
        default=_env("PGREALTIME_REPLICATION_SLOT") or "pgrealtime",
        help="logical replication slot for change notifications "
        "(env PGREALTIME_REPLICATION_SLOT, default %(default)s)",
    )
    parser.add_argument(
        "--publication",
        default=_env("PGREALTIME_PUBLICATION") or "pgrealtime",
        help="publication for change notifications "
        "(env PGREALTIME_PUBLICATION, default %(default)s)",
    )
    parser.add_argument(
        "--changes-max-failures",
        type=int,
        default=int(_env("PGREALTIME_CHANGES_MAX_FAILURES") or 3),
        help="a change that fails this many times in a row (a value that cannot be "
        "converted or sent, a failing lookup) is skipped, logged and counted, so one bad "
        "row cannot stop the feed; 0 = retry for ever "
        "(env PGREALTIME_CHANGES_MAX_FAILURES, default %(default)s)",
    )
    parser.add_argument(
        "--changes-tables",
        default=_env("PGREALTIME_CHANGES_TABLES") or "",
        help="comma-separated tables db:<table> channels may publish, as schema.table or "
        "table (= public.table), globs allowed (public.*, app.order_*); others are refused "
        "and never added to the publication; empty = any table the caller may SELECT "
        "(env PGREALTIME_CHANGES_TABLES)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build Settings from parsed flags (flags already default to the environment)."""
    values = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    if isinstance(values.get("webhook_allowed_hosts"), str):
        hosts = values["webhook_allowed_hosts"].split(",")
        values["webhook_allowed_hosts"] = [h.strip().lower() for h in hosts if h.strip()]
    if isinstance(values.get("changes_tables"), str):
        tables = values["changes_tables"].split(",")
        values["changes_tables"] = [t.strip() for t in tables if t.strip()]
    settings = Settings(**values)
    if settings.api_key is not None and not settings.api_key.startswith(API_KEY_PREFIX):
        raise SystemExit(f"error: the API key must start with {API_KEY_PREFIX!r}")
    problem = limits_error(settings)
    if problem is not None:
        raise SystemExit(f"error: {problem}")
    return settings


def limits_error(settings: Settings) -> str | None:
    """Why the connection limits make no sense, caught at start rather than at the
    first client (0 means off where that is allowed)."""
    if settings.max_frame_bytes < 1:
        return "--max-frame-bytes must be at least 1"
    if settings.max_recover < 0 or settings.max_recover_bytes < 0:
        return "--max-recover and --max-recover-bytes must be 0 or more"
    if settings.max_concurrent_recoveries < 1:
        return "--max-concurrent-recoveries must be at least 1"
    if settings.heartbeat_seconds < 0:
        return "--heartbeat-seconds must be 0 (off) or more"
    if settings.publish_rate < 0:
        return "--publish-rate must be 0 (unlimited) or more"
    if settings.publish_rate > 0 and settings.publish_burst < 1:
        return "--publish-burst must be at least 1"
    if settings.max_subscriptions < 0:
        return "--max-subscriptions must be 0 (unlimited) or more"
    if settings.user_publish_rate < 0:
        return "--user-publish-rate must be 0 (unlimited) or more"
    if settings.user_publish_bytes_rate < 0:
        return "--user-publish-bytes-rate must be 0 (unlimited) or more"
    if settings.max_payload_bytes < 2:
        return "--max-payload-bytes must be at least 2 (the payload {})"
    if settings.publish_batch_bytes < 1:
        return "--publish-batch-bytes must be at least 1"
    for name in ("frame", "subscribe"):
        if getattr(settings, f"{name}_rate") < 0:
            return f"--{name}-rate must be 0 (unlimited) or more"
        if getattr(settings, f"{name}_rate") > 0 and getattr(settings, f"{name}_burst") < 1:
            return f"--{name}-burst must be at least 1"
    if settings.max_connections < 0 or settings.max_connections_per_ip < 0:
        return "--max-connections and --max-connections-per-ip must be 0 (unlimited) or more"
    if settings.auth_timeout_seconds < 0:
        return "--auth-timeout must be 0 (never) or more"
    if settings.flush_interval_ms < 0:
        return "--flush-interval-ms must be 0 (every event-loop tick) or more"
    if settings.changes_max_failures < 0:
        return "--changes-max-failures must be 0 (retry for ever) or more"
    for pattern in settings.changes_tables:
        schema, dot, table = pattern.partition(".")
        if dot and not (schema and table):
            return f"--changes-tables: {pattern!r} is not schema.table or table"
    return None


def ensure_secrets(settings: Settings, *, webhook: bool = False) -> list[str]:
    """Fill in a missing JWT secret and API key (and, with `webhook`, webhook signing
    secret) from the data directory, generating and storing them on first use, so
    webhooks are signed even when nobody configured a secret. Returns the names of
    the generated ones."""
    wanted = {"jwt_secret": settings.jwt_secret, "api_key": settings.api_key}
    if webhook:
        wanted["webhook_secret"] = settings.webhook_secret
    if all(wanted.values()):
        return []
    path = settings.data_dir / SECRETS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    generated = []
    for name, given in wanted.items():
        if given or stored.get(name):
            continue
        if name == "api_key":
            stored[name] = API_KEY_PREFIX + secrets.token_urlsafe(32)
        else:
            stored[name] = secrets.token_urlsafe(48 if name == "jwt_secret" else 32)
        generated.append(name)
    if generated:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(stored, indent=2))
        tmp.replace(path)
    settings.jwt_secret = settings.jwt_secret or stored["jwt_secret"]
    settings.api_key = settings.api_key or stored["api_key"]
    if webhook:
        settings.webhook_secret = settings.webhook_secret or stored["webhook_secret"]
    return generated
