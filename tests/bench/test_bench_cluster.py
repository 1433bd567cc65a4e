"""`pgrealtime bench cluster --quick`: one process, two workers, two workers over a
real nats-server, the same load, every delivery once and in order in each (timings
are never asserted: they belong in reports)."""

from __future__ import annotations

import pytest
from tests.bench.test_bench_quick import _server_available, run_quick

from bench.scenarios.cluster import CONFIGS, _nats_binary


def test_bench_cluster_quick_delivers_everything_in_every_configuration() -> None:
    if not _server_available() or _nats_binary() is None:
        pytest.skip("needs `pgrealtime serve` and nats-server")
    run = run_quick("cluster")
    assert not run["failed_targets"], run["failed_targets"]
    configs = run["results"]["server"]["configs"]
    assert set(configs) == set(CONFIGS)
    for name, config in configs.items():
        assert "failed" not in config, (name, config)
        seq = config["sequence"]
        assert seq["expected"] > 0 and seq["received"] == seq["expected"], (name, seq)
        for key in ("lost", "duplicated", "reordered", "unexpected"):
            assert seq[key] == 0, (name, key, seq)
