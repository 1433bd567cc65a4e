"""Load tools for pgrealtime: drive the server (and a minimal aiohttp baseline) over
real WebSocket connections and report latency, throughput, CPU and memory.

Kept at the repository root, apart from the product: the wheel does not ship it and
the `pgrealtime` command imports none of it unless `pgrealtime bench` is run from a
checkout. Run it with `python -m bench <scenario>` from the repository root.
Layout: `harness/` (targets, clients, probes, statistics), `scenarios/` (one module
per scenario), `report.py` (tables, JSON, plot), `command.py` (the flags).
"""
