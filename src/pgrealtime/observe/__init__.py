"""What a running server shows of itself: Prometheus metrics (GET /metrics).

`metrics` declares every metric and builds one registry per server; `collector` reads
the server's parts at scrape time (the hot paths keep plain integer counters and do
nothing more); `database` asks PostgreSQL for the few figures only it knows (webhook
queue depth), once per scrape.
"""

from pgrealtime.observe.metrics import Metrics, snapshot

__all__ = ["Metrics", "snapshot"]
