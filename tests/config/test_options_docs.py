"""The options table is the one place a setting is declared: the docs' tables, the
flags, the variables and `Settings` must all agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pgrealtime.cli import build_parser
from pgrealtime.config import OPTIONS, Settings, settings_from_args
from pgrealtime.config.docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_tables_are_generated_from_the_options() -> None:
    text = DOC.read_text()
    assert "<!-- options:all -->" in text and "<!-- options:serve -->" in text
    assert render(text) == text, (
        "docs/configuration.md differs from the options table; run "
        "`python -m pgrealtime.config.docs docs/configuration.md`"
    )


def test_every_setting_is_an_option() -> None:
    assert {f.name for f in dataclasses.fields(Settings)} == {o.name for o in OPTIONS}


def test_code_built_settings_have_the_defaults_of_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for option in OPTIONS:
        for name in option.env_names:
            monkeypatch.delenv(name, raising=False)
    served = settings_from_args(build_parser().parse_args(["serve"]))
    assert served == Settings()


def test_every_option_has_a_flag_and_a_variable_in_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    for option in OPTIONS:
        assert option.flag_name in help_text
        assert option.env_names[0] in help_text
