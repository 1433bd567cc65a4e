"""The scenarios, one module each, and what the command needs to know of them.

Every scenario module has `DEFAULTS` and `QUICK` (its sizes, normal and `--quick`)
and `async run(target, sizes) -> dict`. Those in `OWN_BASELINE` measure their
baseline inside the server run, return {"server": ..., "baseline": ...} and print
their own report (`summary_rows(result)`, `correctness(result)`). A module is
imported only when its scenario runs or is reported.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bench.harness.sizes import Sizes

NAMES = ("fanout", "channels", "publish", "idle", "connect", "changes", "webhooks", "presence",
         "cluster")  # fmt: skip
# these measure their baseline inside the server run and return {"server", "baseline"}
# (presence has none: the baseline server has no presence; it returns {"server"} only;
# cluster: {"server"} holding its three configurations)
OWN_BASELINE = frozenset({"changes", "webhooks", "presence", "cluster"})
# extra `pgrealtime serve` flags: the webhook receiver is on loopback
SERVER_ARGS = {"webhooks": ["--webhook-allow-private-networks"]}


def load(name: str) -> ModuleType:
    """The module of scenario `name` (one of NAMES)."""
    if name not in NAMES:
        raise ValueError(f"unknown scenario {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def sizes_for(name: str, quick: bool, overrides: dict) -> Sizes:
    """The scenario's sizes (`--quick` or not), with every flag that was given on top."""
    scenario = load(name)
    values = dict(scenario.QUICK if quick else scenario.DEFAULTS)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Sizes(**values)
