"""The load tools stay out of the product: nothing under src/pgrealtime imports
`bench`, building the CLI loads none of it, and the wheel does not ship it. Inside
bench/ no module reaches for another's private names (the former ring of scenario
files shared `_close_all`, `_sleep_until`, ...)."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ROOT / "src" / "pgrealtime"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in the file, relative ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((module, [alias.name for alias in node.names]))
    return found


def _is_bench(module: str) -> bool:
    return any(
        module == root or module.startswith(root + ".") for root in ("bench", "pgrealtime.bench")
    )


def test_product_never_imports_bench() -> None:
    offenders = []
    for path in sorted(PRODUCT.rglob("*.py")):
        for module, names in _imports(path):
            in_package = [f"{module}.{n}" for n in names if module == "pgrealtime"]
            if _is_bench(module) or any(_is_bench(m) for m in in_package):
                offenders.append(f"{path.relative_to(ROOT)}: {module} {names}")
    assert not offenders, offenders
    assert not (PRODUCT / "bench").exists()


def test_bench_modules_import_no_private_names() -> None:
    offenders = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for module, names in _imports(path):
            if _is_bench(module) or module.startswith("."):
                where = path.relative_to(ROOT)
                offenders += [f"{where}: {module}.{n}" for n in names if n.startswith("_")]
    assert not offenders, offenders


def test_building_the_cli_imports_nothing_of_bench() -> None:
    code = (
        "import pgrealtime.cli, sys; pgrealtime.cli.build_parser(); "
        "print([m for m in sys.modules if m == 'bench' or m.startswith('bench.')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bench_command_without_a_checkout_says_where_to_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pgrealtime import cli
    from pgrealtime.cli import bench

    installed = tmp_path / "site-packages" / "pgrealtime" / "cli" / "bench.py"
    monkeypatch.setattr(bench, "__file__", str(installed))
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["bench", "fanout", "--quick"])
    assert args.func(args) == 2
    assert "clone of the repository" in capsys.readouterr().err


def test_wheel_ships_no_bench(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("pgrealtime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("pgrealtime/") for n in names)
    leaked = [n for n in names if n.startswith("bench/") or "/bench/" in n]
    assert not leaked, leaked
