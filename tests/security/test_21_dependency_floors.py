"""Finding 21: pyproject.toml allowed aiohttp 3.10, but the webhook transport passes
`socket_factory=` to TCPConnector, which aiohttp has only since 3.12: an install at
the declared floor would fail at the first webhook. The declared floors must be at
least what the code needs (the table below says what needs what), and the installed
versions must satisfy them."""

from __future__ import annotations

import inspect
import tomllib
from importlib import metadata
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import orjson
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# distribution -> (lowest version with everything the code uses, what needs it)
NEEDED = {
    "aiohttp": ("3.12", "TCPConnector(socket_factory=) in webhooks/transport.py"),
    "aiohappyeyeballs": ("2.5", "AddrInfoType imported in webhooks/transport.py"),
    "asyncpg": ("0.30", "create_pool(reset=) in app.py"),
    "orjson": ("3.9", "orjson.Fragment (webhook bodies, message frames)"),
    "msgspec": ("0.15", "msgspec.UNSET / UnsetType / convert (REST bodies)"),
    "PyJWT": ("2.0", "jwt.decode(options={'require': []})"),
}


def _floors() -> dict[str, Version]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    floors = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        lower = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
        if lower:
            floors[requirement.name.lower()] = max(lower)
    return floors


def test_declared_floors_cover_what_the_code_uses() -> None:
    floors = _floors()
    for name, (needed, why) in NEEDED.items():
        declared = floors.get(name.lower())
        assert declared is not None, f"{name} is used ({why}) but has no floor"
        assert declared >= Version(needed), f"{name}>={declared} is below {needed}: {why}"


def test_installed_versions_satisfy_the_floors() -> None:
    for name, floor in _floors().items():
        installed = Version(metadata.version(name))
        assert installed >= floor, f"{name} {installed} installed, {floor} declared"


def test_the_features_are_there() -> None:
    """The table is right about the installed versions at least."""
    assert "socket_factory" in inspect.signature(aiohttp.TCPConnector).parameters
    assert "reset" in inspect.signature(asyncpg.create_pool).parameters
    assert hasattr(orjson, "Fragment")
    assert hasattr(msgspec, "UNSET") and hasattr(msgspec, "convert")
    from aiohappyeyeballs import AddrInfoType  # noqa: F401
