"""The settings a server runs with, and its secrets.

`Settings` has one attribute per option of the options table (options.py), with the
table's default: a `Settings()` built in code runs with the same limits as `pgrealtime
serve`. Secrets that are not given are generated once and kept in the data directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgrealtime.config.options import ANON_KEY_PREFIX, API_KEY_PREFIX, default

SECRETS_FILE = "secrets.json"
SECRETS_LOCK = ".secrets.lock"  # held while secrets.json is read and filled in


def _d(name: str) -> Any:
    """The table's default of an option, as a dataclass field: a fresh value for each
    Settings (so ruff's RUF009, against shared mutable defaults, does not apply)."""
    return field(default_factory=lambda: default(name))


@dataclass
class Settings:
    """One attribute per option (see options.py for what each means and its default)."""

    host: str = _d("host")
    port: int = _d("port")
    workers: str = _d("workers")
    broker_url: str | None = _d("broker_url")
    database_url: str | None = _d("database_url")
    data_dir: Path = _d("data_dir")  # noqa: RUF009
    jwt_secret: str | None = _d("jwt_secret")
    api_key: str | None = _d("api_key")
    anon_key: str | None = _d("anon_key")
    jwt_require_exp: bool = _d("jwt_require_exp")
    jwt_public_key: list[str] = _d("jwt_public_key")  # noqa: RUF009
    jwks_url: str | None = _d("jwks_url")
    jwks_allow_http: bool = _d("jwks_allow_http")
    jwt_algorithms: list[str] = _d("jwt_algorithms")  # noqa: RUF009
    jwt_issuer: str | None = _d("jwt_issuer")
    jwt_audience: list[str] = _d("jwt_audience")  # noqa: RUF009
    jwt_leeway_seconds: float = _d("jwt_leeway_seconds")
    jwt_role_claim: str = _d("jwt_role_claim")
    jwt_user_claim: str = _d("jwt_user_claim")
    token_expiry_warning_seconds: float = _d("token_expiry_warning_seconds")
    embedded_port: int = _d("embedded_port")
    max_frame_bytes: int = _d("max_frame_bytes")
    send_buffer_bytes: int = _d("send_buffer_bytes")
    flush_interval_ms: float = _d("flush_interval_ms")
    max_recover: int = _d("max_recover")
    max_recover_bytes: int = _d("max_recover_bytes")
    max_recover_live_bytes: int = _d("max_recover_live_bytes")
    recover_read_timeout_seconds: float = _d("recover_read_timeout_seconds")
    max_concurrent_recoveries: int = _d("max_concurrent_recoveries")
    heartbeat_seconds: float = _d("heartbeat_seconds")
    publish_rate: float = _d("publish_rate")
    publish_burst: float = _d("publish_burst")
    max_subscriptions: int = _d("max_subscriptions")
    user_publish_rate: float = _d("user_publish_rate")
    user_publish_bytes_rate: float = _d("user_publish_bytes_rate")
    max_payload_bytes: int = _d("max_payload_bytes")
    publish_batch_bytes: int = _d("publish_batch_bytes")
    frame_rate: float = _d("frame_rate")
    frame_burst: float = _d("frame_burst")
    subscribe_rate: float = _d("subscribe_rate")
    subscribe_burst: float = _d("subscribe_burst")
    presence: bool = _d("presence")
    presence_snapshot_limit: int = _d("presence_snapshot_limit")
    max_presence_state_bytes: int = _d("max_presence_state_bytes")
    presence_rate: float = _d("presence_rate")
    presence_burst: float = _d("presence_burst")
    presence_heartbeat_seconds: float = _d("presence_heartbeat_seconds")
    presence_lease_seconds: float = _d("presence_lease_seconds")
    max_connections_per_ip: int = _d("max_connections_per_ip")
    max_connections: int = _d("max_connections")
    auth_timeout_seconds: float = _d("auth_timeout_seconds")
    retention_interval_seconds: float = _d("retention_interval_seconds")
    db_pool_size: int = _d("db_pool_size")
    log_level: str = _d("log_level")
    log_format: str = _d("log_format")
    metrics_public: bool = _d("metrics_public")
    webhook_secret: str | None = _d("webhook_secret")
    webhook_allow_private_networks: bool = _d("webhook_allow_private_networks")
    webhook_allowed_hosts: list[str] = _d("webhook_allowed_hosts")  # noqa: RUF009
    webhook_timeout_seconds: float = _d("webhook_timeout_seconds")
    webhook_retry_hours: float = _d("webhook_retry_hours")
    webhook_per_host_concurrency: int = _d("webhook_per_host_concurrency")
    changes: bool = _d("changes")
    replication_slot: str = _d("replication_slot")
    publication: str = _d("publication")
    changes_max_failures: int = _d("changes_max_failures")
    changes_relay_keep_seconds: float = _d("changes_relay_keep_seconds")
    changes_tables: list[str] = _d("changes_tables")  # noqa: RUF009


def ensure_secrets(settings: Settings, *, webhook: bool = False) -> list[str]:
    """Fill in a missing JWT secret and API key (and, with `webhook` (serve), the
    webhook signing secret and the anon key) from the data directory, generating and
    storing them on first use, so webhooks are signed even when nobody configured a
    secret. Returns the names of the generated ones."""
    wanted = {"jwt_secret": settings.jwt_secret, "api_key": settings.api_key}
    if webhook:
        wanted["webhook_secret"] = settings.webhook_secret
        wanted["anon_key"] = settings.anon_key
    if all(wanted.values()):
        return []
    path = settings.data_dir / SECRETS_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Processes started together on one data directory (workers, a cluster's tests)
    # read, fill in and write the file one at a time, so all of them end up with the
    # same secrets (two anon keys or webhook secrets would be two servers' worth).
    with open(settings.data_dir / SECRETS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored: dict[str, str] = {}
        if path.exists():
            stored = json.loads(path.read_text())
        generated = []
        for name, given in wanted.items():
            if given or stored.get(name):
                continue
            if name == "api_key":
                stored[name] = API_KEY_PREFIX + secrets.token_urlsafe(32)
            elif name == "anon_key":
                stored[name] = ANON_KEY_PREFIX + secrets.token_urlsafe(32)
            else:
                stored[name] = secrets.token_urlsafe(48 if name == "jwt_secret" else 32)
            generated.append(name)
        if generated:
            fd, tmp = tempfile.mkstemp(dir=settings.data_dir, prefix=".secrets.", suffix=".tmp")
            with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
                out.write(json.dumps(stored, indent=2))
            os.replace(tmp, path)
    settings.jwt_secret = settings.jwt_secret or stored["jwt_secret"]
    settings.api_key = settings.api_key or stored["api_key"]
    if webhook:
        settings.webhook_secret = settings.webhook_secret or stored["webhook_secret"]
        settings.anon_key = settings.anon_key or stored["anon_key"]
    return generated
