"""`Sizes`: every knob of every scenario in one record, filled from a scenario's
defaults (or its `--quick` sizes) and the command line's flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sizes:
    """Every knob of every scenario; `bench.scenarios.sizes_for` fills the rest."""

    subscribers: int = 0
    publishers: int = 0
    channels: int = 0
    subs_per_channel: int = 3
    clients: int = 0
    connections: int = 0
    sessions: int = 0
    rates: tuple[float, ...] = ()
    warmup: float = 1.0
    duration: float = 4.0
    drain: float = 5.0
    p99_limit_ms: float = 50.0
    concurrency: int = 100
    rest_seconds: float = 10.0
    payload_bytes: int = 64
    client: str = "fast"  # "fast" (lean protocol) or "aiohttp"
    protocol: str = "raw"  # "raw" (/realtime) or "socketio" (/socket.io/, lean client only)
    rls_subscribers: int = 0  # changes: distinct users on the RLS table
    messages: int = 0  # webhooks: messages of the throughput phase (0: rate x time)
    outage_seconds: float = 60.0  # webhooks: how long the receiver is down
    token_algs: tuple[str, ...] = ("HS256",)  # connect: each measured in turn, same run
    database_url: str | None = None  # changes/webhooks: where to write (else the embedded one)
