"""`pgrealtime status`: one screen on a running server, from /health and /metrics.

Reads what an operator's tools read (the same two routes), so what it shows is what a
dashboard or an alert would see. Exit status: 0 healthy, 1 degraded, 2 unreachable.
The admin API key (needed for /health's details and for /metrics unless the server
runs with --metrics-public) comes from --api-key, PGREALTIME_API_KEY, or the data
directory's secrets.json, as `serve` generated it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pgrealtime.config.options import default
from pgrealtime.config.settings import SECRETS_FILE

TIMEOUT_SECONDS = 5.0

Samples = dict[str, list[tuple[dict[str, str], float]]]


def add_parser(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser(
        "status",
        help="one screen on a running server (health, connections, change feed, webhooks)",
        description="Show a running server's health and figures, from its /health and "
        "/metrics. Exit status 0: healthy, 1: degraded, 2: not reachable.",
    )
    host, port = os.environ.get("PGREALTIME_HOST") or "127.0.0.1", default("port")
    status.add_argument(
        "--url",
        default=os.environ.get("PGREALTIME_URL")
        or f"http://{host}:{os.environ.get('PGREALTIME_PORT') or port}",
        help="the server's base URL (PGREALTIME_URL; default %(default)s)",
    )
    status.add_argument(
        "--api-key",
        default=os.environ.get("PGREALTIME_API_KEY") or None,
        help="admin API key (PGREALTIME_API_KEY; default: the data directory's secrets.json)",
    )
    status.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("PGREALTIME_DATA_DIR") or default("data_dir")),
        help="where serve keeps secrets.json (PGREALTIME_DATA_DIR; default %(default)s)",
    )
    status.set_defaults(func=cmd_status)


def _stored_api_key(data_dir: Path) -> str | None:
    try:
        return json.loads((data_dir / SECRETS_FILE).read_text()).get("api_key")
    except (OSError, ValueError):
        return None


def _get(url: str, api_key: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 - the operator's own server URL
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def cmd_status(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    api_key = args.api_key or _stored_api_key(args.data_dir)
    try:
        health_status, health_body = _get(base + "/health", api_key)
        metrics_status, metrics_body = _get(base + "/metrics", api_key)
        channels_status, channels_body = _get(base + "/api/realtime/channels", api_key)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"pgrealtime at {base}: not reachable ({reason})")
        return 2
    health = _json(health_body)
    channels = _json(channels_body) if channels_status == 200 else None
    samples = _parse(metrics_body) if metrics_status == 200 else None
    print(render(base, health, samples, channels, metrics_status))
    return 0 if health_status == 200 else 1


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _parse(text: bytes) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def render(
    base: str,
    health: Any,
    samples: Samples | None,
    channels: Any,
    metrics_status: int,
) -> str:
    """The screen: one line per part, figures first, explanations short."""
    state = health.get("status", "?") if isinstance(health, dict) else "?"
    details = health.get("details", {}) if isinstance(health, dict) else {}
    lines = [f"pgrealtime at {base}: {state}"]
    if samples is None:
        why = "needs the admin API key (--api-key)" if metrics_status in (401, 403) else ""
        lines.append(f"  metrics      not available (HTTP {metrics_status}) {why}".rstrip())
        return "\n".join(lines)
    f = _Figures(samples)
    pool = (
        f"pool {f.one('pgrealtime_db_pool_connections', state='in_use'):.0f}"
        f"/{f.one('pgrealtime_db_pool_max_connections'):.0f} in use,"
        f" {f.one('pgrealtime_db_pool_waiting'):.0f} waiting"
    )
    lines.append(f"  database     {details.get('database', 'ok' if f.up else '?'):<12}{pool}")
    listener = "connected" if f.one("pgrealtime_listener_connected") else "reconnecting"
    reconnects = f.one("pgrealtime_listener_reconnects_total")
    lines.append(f"  listener     {listener:<12}reconnects {reconnects:.0f}")
    by_protocol = ", ".join(
        f"{labels['protocol']} {value:.0f}"
        f" ({f.one('pgrealtime_sessions', protocol=labels['protocol']):.0f} authenticated)"
        for labels, value in samples.get("pgrealtime_connections", [])
    )
    lines.append(f"  connections  {by_protocol or 'none'}")
    if isinstance(channels, list):
        enabled = sum(1 for c in channels if c.get("enabled"))
        configured = f"{len(channels)} configured ({enabled} enabled), "
    else:
        configured = ""
    lines.append(
        f"  channels     {configured}"
        f"{f.one('pgrealtime_channels_with_subscribers'):.0f} with subscribers here;"
        f" subscriptions {f.one('pgrealtime_subscriptions', kind='channel'):.0f}"
        f" + {f.one('pgrealtime_subscriptions', kind='table'):.0f} db:"
    )
    published = ", ".join(
        f"{labels['source']} {value:.0f}"
        for labels, value in samples.get("pgrealtime_messages_published_total", [])
        if value
    )
    lines.append(
        f"  messages     published {f.total('pgrealtime_messages_published_total'):.0f}"
        + (f" ({published})" if published else "")
        + f", refused {f.total('pgrealtime_messages_refused_total'):.0f},"
        f" deliveries {f.total('pgrealtime_deliveries_total'):.0f}"
    )
    lines.append(
        f"  latency      delivery p50 {f.quantile('pgrealtime_delivery_latency_seconds', 0.5)},"
        f" p99 {f.quantile('pgrealtime_delivery_latency_seconds', 0.99)}"
    )
    cuts = ", ".join(
        f"{labels['reason']} {value:.0f}"
        for labels, value in samples.get("pgrealtime_disconnects_total", [])
        if value
    )
    lines.append(f"  disconnects  {cuts or 'none'}")
    lines.append(f"  change feed  {_feed(details.get('changes'), f)}")
    lines.append(f"  webhooks     {_webhooks(f)}")
    cpu = f.one("process_cpu_seconds_total")
    memory = f.one("process_resident_memory_bytes") / 2**20
    lines.append(f"  process      CPU {cpu:.1f} s, memory {memory:.0f} MiB")
    return "\n".join(lines)


def _feed(changes: Any, f: _Figures) -> str:
    if isinstance(changes, dict) and not changes.get("enabled"):
        return f"off ({changes.get('reason')})"
    if not f.has("pgrealtime_change_feed_streaming"):
        return "off"
    state = "streaming" if f.one("pgrealtime_change_feed_streaming") else "not streaming"
    if isinstance(changes, dict) and changes.get("state"):
        state = changes["state"]
    text = f"{state}, {f.one('pgrealtime_changes_processed_total'):.0f} changes"
    if f.has("pgrealtime_change_feed_lag_bytes"):
        text += f", slot lag {_bytes(f.one('pgrealtime_change_feed_lag_bytes'))}"
    if f.has("pgrealtime_change_feed_lag_seconds"):
        text += f", last batch {f.one('pgrealtime_change_feed_lag_seconds') * 1000:.0f} ms"
    skipped = f.one("pgrealtime_changes_skipped_total")
    return text + (f", {skipped:.0f} SKIPPED" if skipped else "")


def _webhooks(f: _Figures) -> str:
    outcomes = ", ".join(
        f"{labels['outcome']} {value:.0f}"
        for labels, value in f.samples.get("pgrealtime_webhook_deliveries_total", [])
    )
    if not f.has("pgrealtime_webhook_queue_depth"):
        return outcomes or "?"
    return (
        f"queue {f.one('pgrealtime_webhook_queue_depth', state='due'):.0f} due,"
        f" {f.one('pgrealtime_webhook_queue_depth', state='waiting'):.0f} waiting"
        f" (oldest {f.one('pgrealtime_webhook_oldest_pending_seconds'):.0f} s); {outcomes}"
    )


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.0f} TB"


class _Figures:
    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    @property
    def up(self) -> bool:
        return bool(self.one("pgrealtime_database_up"))

    def has(self, name: str) -> bool:
        return name in self.samples

    def one(self, name: str, **labels: str) -> float:
        for sample_labels, value in self.samples.get(name, []):
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    def total(self, name: str) -> float:
        return sum(value for _, value in self.samples.get(name, []))

    def quantile(self, name: str, q: float) -> str:
        """From the histogram's buckets: the bound the q-quantile lies under."""
        buckets = sorted(
            (float(labels["le"]), value) for labels, value in self.samples.get(name + "_bucket", [])
        )
        total = buckets[-1][1] if buckets else 0
        if not total:
            return "-"
        below = 0.0
        for bound, count in buckets:
            if count >= q * total:
                return f"> {below * 1000:g} ms" if math.isinf(bound) else f"≤ {bound * 1000:g} ms"
            below = bound
        return "-"
