"""The code stays as ruff wants it (lint and format), with the version the test extra
pins, so a new ruff release cannot fail a build on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")])
def test_ruff_is_satisfied(args: tuple[str, ...]) -> None:
    result = subprocess.run([str(RUFF), *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
