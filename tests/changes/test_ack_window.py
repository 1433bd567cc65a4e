"""The reader's ack window: what the slot may confirm, in order, and when (pure)."""

from __future__ import annotations

import pytest

from pgrealtime.changes.ack_window import AckWindow

pytestmark = pytest.mark.pure


def window() -> AckWindow:
    return AckWindow(min_feedback_interval=0.1, status_interval=10.0)


def test_only_acknowledged_batches_in_order_are_confirmed() -> None:
    w = window()
    first, second = w.handed_over(100), w.handed_over(200)
    assert (first, second) == (0, 1)
    assert w.in_flight == 2
    assert not w.acknowledged(-1)  # nothing acknowledged yet
    assert w.confirmation_due(now=5.0) is None
    assert w.acknowledged(first)
    assert (w.acked_lsn, w.in_flight) == (100, 1)
    assert w.confirmation_due(now=5.0) == 100
    w.confirmed(100, now=5.0)
    assert not w.behind
    assert w.acknowledged(second)  # acknowledging the last releases everything before it
    assert w.acked_lsn == 200


def test_a_later_ack_releases_every_batch_before_it() -> None:
    w = window()
    for end in (100, 200, 300):
        w.handed_over(end)
    assert w.acknowledged(2)
    assert (w.acked_lsn, w.in_flight) == (300, 0)


def test_batches_with_nothing_for_us_wait_their_turn() -> None:
    w = window()
    seq = w.handed_over(100)
    w.nothing_to_hand(150)  # filtered out: needs no ack, but not before batch 0
    assert w.in_flight == 1
    assert not w.acknowledged(-1)
    assert w.acked_lsn == 0
    assert w.acknowledged(seq)
    assert w.acked_lsn == 150


def test_leading_batches_with_nothing_for_us_are_confirmable_at_once() -> None:
    w = window()
    w.nothing_to_hand(50)
    assert w.acknowledged(-1)
    assert w.confirmation_due(now=1.0) == 50


def test_an_ack_right_after_a_confirmation_stays_owed_until_the_interval() -> None:
    """Finding 23: paced, never forgotten."""
    w = window()
    w.acknowledged(w.handed_over(100))
    w.confirmed(w.confirmation_due(now=1.0) or 0, now=1.0)
    w.acknowledged(w.handed_over(200))
    assert w.behind
    assert w.confirmation_due(now=1.05) is None  # too soon
    assert w.confirmation_due(now=1.05, force=True) == 200  # stopping: sent anyway
    assert w.confirmation_due(now=1.1) == 200  # no further change needed
    w.confirmed(200, now=1.1)
    assert not w.behind
    assert w.confirmation_due(now=9.0) is None


def test_restart_forgets_the_batches_in_flight_not_the_positions() -> None:
    w = window()
    w.acknowledged(w.handed_over(100))
    w.confirmed(100, now=1.0)
    w.handed_over(200)  # lost with the session: read again from the slot
    w.restart()
    assert (w.in_flight, w.acked_lsn, w.confirmed_lsn) == (0, 100, 100)
    assert w.handed_over(300) == 0  # numbering starts again with the new generation
    assert not w.acknowledged(-1)
    assert w.acknowledged(0)
    assert w.acked_lsn == 300


def test_keepalive_every_half_status_interval() -> None:
    w = window()
    assert w.keepalive_due(now=5.0)
    w.kept_alive(now=5.0)
    assert not w.keepalive_due(now=9.9)
    assert w.keepalive_due(now=10.0)
