"""--workers, --broker and the presence lease: what is accepted, what is refused at
start."""

from __future__ import annotations

import os

import pytest

from pgrealtime.config import Settings
from pgrealtime.config.validate import broker_servers, limits_error, worker_count

pytestmark = pytest.mark.pure


def test_workers_is_a_count_or_auto() -> None:
    assert worker_count("1") == 1 and worker_count(" 3 ") == 3
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count("0") is None and worker_count("two") is None
    assert limits_error(Settings(workers="0")) == (
        "--workers must be a number of processes (1 or more) or auto"
    )


def test_broker_is_nats_urls_or_embedded_with_workers() -> None:
    assert broker_servers(None) == [] and broker_servers("") == []
    assert broker_servers("nats://a:4222, nats://b:4222") == ["nats://a:4222", "nats://b:4222"]
    assert limits_error(Settings(broker_url="nats://a:4222,tls://b:4222")) is None
    assert "not a nats://" in (limits_error(Settings(broker_url="redis://a")) or "")
    assert "needs --workers 2" in (limits_error(Settings(broker_url="embedded")) or "")
    assert limits_error(Settings(broker_url="embedded", workers="2")) is None


def test_presence_lease_outlasts_the_heartbeat() -> None:
    assert limits_error(Settings()) is None  # 2 s heartbeat, 10 s lease
    assert limits_error(Settings(presence_heartbeat_seconds=5, presence_lease_seconds=5)) == (
        "--presence-lease-seconds must be more than --presence-heartbeat-seconds"
    )
    assert "at least 0.1" in (limits_error(Settings(presence_heartbeat_seconds=0)) or "")
