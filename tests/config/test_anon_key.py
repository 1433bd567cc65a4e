"""`--anon-key`: generated (anon_...) and kept in the data directory like the API key
when unset; a configured one is kept; one that looks like an API key is refused."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pgrealtime.config import (
    add_connection_flags,
    add_server_flags,
    ensure_secrets,
    settings_from_args,
)

pytestmark = pytest.mark.pure


def _settings(data_dir: Path, *flags: str):
    parser = argparse.ArgumentParser()
    add_connection_flags(parser)
    add_server_flags(parser)
    return settings_from_args(parser.parse_args(["--data-dir", str(data_dir), *flags]))


def test_generated_once_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGREALTIME_ANON_KEY", raising=False)
    first = _settings(tmp_path)
    assert "anon_key" in ensure_secrets(first, webhook=True)
    assert first.anon_key.startswith("anon_") and len(first.anon_key) > 30
    again = _settings(tmp_path)
    assert ensure_secrets(again, webhook=True) == []
    assert again.anon_key == first.anon_key


def test_configured_and_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGREALTIME_ANON_KEY", raising=False)
    settings = _settings(tmp_path, "--anon-key", "insforge-anon-key")
    ensure_secrets(settings, webhook=True)
    assert settings.anon_key == "insforge-anon-key"
    with pytest.raises(SystemExit, match="anon key must not start with 'ik_'"):
        _settings(tmp_path, "--anon-key", "ik_looks_like_an_api_key")
