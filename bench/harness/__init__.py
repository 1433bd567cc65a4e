"""What every scenario stands on: the targets (pgrealtime and the aiohttp baseline, each
in its own process), the load generator and its clients, CPU and memory probes, the
statistics, and the shared measuring helpers. Nothing here knows a scenario."""
