"""Frozen settings per concern: built from `Settings` in one place, with the same
defaults, and read-only."""

from __future__ import annotations

import dataclasses

import pytest

from pgrealtime.config import FeedSettings, Settings, WebhookSettings

pytestmark = pytest.mark.pure

CONCERNS = (WebhookSettings, FeedSettings)


@pytest.mark.parametrize("concern", CONCERNS)
def test_a_concern_built_in_code_runs_like_serve(concern: type) -> None:
    """No trap: the concern's own defaults are those of `Settings` (the options table)."""
    assert concern() == concern.of(Settings())


@pytest.mark.parametrize("concern", CONCERNS)
def test_a_concern_is_frozen(concern: type) -> None:
    field = dataclasses.fields(concern)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(concern(), field, None)


def test_webhook_settings_carry_what_the_worker_uses() -> None:
    settings = Settings(
        webhook_secret="s3cret",
        webhook_timeout_seconds=2.5,
        webhook_retry_hours=0.5,
        webhook_per_host_concurrency=7,
        webhook_allow_private_networks=True,
        webhook_allowed_hosts=["a.example", "b.example"],
    )
    assert WebhookSettings.of(settings) == WebhookSettings(
        secret="s3cret",
        timeout_seconds=2.5,
        retry_hours=0.5,
        per_host_concurrency=7,
        allow_private_networks=True,
        allowed_hosts=("a.example", "b.example"),
    )
    assert "s3cret" not in repr(WebhookSettings.of(settings))
    # an empty secret signs nothing, as before; a string list as in the environment
    empty = WebhookSettings.of(Settings(webhook_secret="", webhook_allowed_hosts="a,b"))  # type: ignore[arg-type]
    assert (empty.secret, empty.allowed_hosts) == (None, ("a", "b"))


def test_feed_settings_carry_what_the_feed_and_routing_use() -> None:
    settings = Settings(
        changes=False,
        replication_slot="s",
        publication="p",
        changes_max_failures=0,
        changes_tables=["public.*"],
    )
    assert FeedSettings.of(settings) == FeedSettings(
        enabled=False, slot="s", publication="p", max_failures=0, tables=("public.*",)
    )
