"""The pure statistics behind every figure the benchmark prints."""

from __future__ import annotations

import math

from bench.harness.stats import SequenceTracker, percentile, ratio, summarize_ns


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7], 99) == 7
    assert math.isnan(percentile([], 50))


def test_percentile_never_interpolates() -> None:
    assert percentile([1, 1000], 50) == 1
    assert percentile([1, 1000], 51) == 1000


def test_summarize_ns_reports_milliseconds() -> None:
    summary = summarize_ns([3_000_000, 1_000_000, 2_000_000])
    assert summary.count == 3
    assert summary.p50_ms == 2.0
    assert summary.max_ms == 3.0
    empty = summarize_ns([])
    assert empty.count == 0 and math.isnan(empty.p99_ms)


def _feed(seqs: list[int], key: object = "a") -> SequenceTracker:
    tracker = SequenceTracker()
    for s in seqs:
        tracker.observe(key, s)
    return tracker


def test_in_order_stream_is_clean() -> None:
    report = _feed([0, 1, 2, 3]).report({"a": 4})
    assert report.clean
    assert (report.expected, report.received) == (4, 4)


def test_gap_is_loss() -> None:
    report = _feed([0, 1, 3]).report({"a": 4})
    assert (report.lost, report.reordered, report.duplicated) == (1, 0, 0)


def test_tail_loss_counts_messages_never_seen() -> None:
    assert _feed([0, 1]).report({"a": 5}).lost == 3


def test_late_arrival_is_reorder_not_loss() -> None:
    report = _feed([0, 2, 1, 3]).report({"a": 4})
    assert (report.lost, report.reordered, report.duplicated) == (0, 1, 0)


def test_repeat_is_duplicate() -> None:
    report = _feed([0, 1, 1, 2, 0]).report({"a": 3})
    assert (report.lost, report.reordered, report.duplicated) == (0, 0, 2)
    assert report.received == 3


def test_repeat_of_a_late_arrival_is_duplicate() -> None:
    report = _feed([1, 0, 0]).report({"a": 2})
    assert (report.reordered, report.duplicated, report.lost) == (1, 1, 0)


def test_silent_receiver_loses_everything() -> None:
    tracker = _feed([0, 1], key="a")
    report = tracker.report({"a": 2, "b": 3})
    assert report.lost == 3 and report.expected == 5


def test_unexpected_stream_and_numbers_beyond_sent() -> None:
    tracker = _feed([0, 1, 2], key="a")
    tracker.observe("stray", 0)
    report = tracker.report({"a": 2})
    assert report.unexpected == 2  # seq 2 of "a" was never sent, "stray" never expected
    assert report.lost == 0
    assert not report.clean


def test_streams_are_independent() -> None:
    tracker = SequenceTracker()
    for s in range(3):
        tracker.observe(("r1", "p"), s)
        tracker.observe(("r2", "p"), s)
    assert tracker.report({("r1", "p"): 3, ("r2", "p"): 3}).clean
    assert tracker.received(("r1", "p")) == 3


def test_ratio() -> None:
    assert ratio(6.0, 3.0) == 2.0
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(math.nan, 1.0) is None
