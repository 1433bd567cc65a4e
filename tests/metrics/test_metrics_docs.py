"""docs/operating.md lists every metric the server exports (names read from the code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgrealtime.observe import Metrics
from pgrealtime.observe import metrics as declared

pytestmark = pytest.mark.pure

OPERATING = Path(__file__).resolve().parents[2] / "docs" / "operating.md"


def test_every_metric_is_documented() -> None:
    text = OPERATING.read_text()
    names = [
        spec.name + ("_total" if spec.kind == "counter" else "")
        for spec in vars(declared).values()
        if isinstance(spec, declared.Spec)
    ]
    names += [
        family.name
        for family in Metrics().registry.collect()
        if family.name.startswith("pgrealtime_")
    ]
    assert len(names) > 30
    missing = [name for name in names if f"`{name}`" not in text]
    assert missing == []
