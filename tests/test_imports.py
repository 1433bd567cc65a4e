"""The import graph keeps the shape of the flows (docs/architecture.md).

Read from the source with `ast`, so imports inside functions count too: an import
circle closed by a deferred import is still a circle (it only moves the failure to run
time); imports under `if TYPE_CHECKING:` never run and do not count. Fails on any
circle among pgrealtime modules, on the engine or session reaching up into aiohttp,
the REST api, the CLI or a wire protocol, and on the product importing the load
tools (bench) other than through the CLI's thin entry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "pgrealtime"
BENCH = ("pgrealtime.bench", "bench")

# Layer -> import prefixes it must not use.
FORBIDDEN = {
    "pgrealtime.engine": ("aiohttp", "pgrealtime.api", "pgrealtime.cli", "pgrealtime.protocols"),
    "pgrealtime.session": ("aiohttp", "pgrealtime.api", "pgrealtime.cli", "pgrealtime.protocols"),
}
# The client ships apart from the server one day: it may import only itself (and the
# package's empty __init__), never a server module.
CLIENT = "pgrealtime.client"
# Known exceptions, each with the reason it is still there (docs/architecture.md, "Left").
ALLOWED: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    # `if TYPE_CHECKING:` imports never run (annotations only): not part of the graph
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # under a module-level `if` or `try` is module level too
        if isinstance(node, ast.If | ast.Try):
            top_level.update(id(n) for n in ast.walk(node))
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, id(node) in top_level))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {m for m, _ in _imports(name, path, known) if m in known and m != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _is_bench(name: str) -> bool:
    return any(name == b or name.startswith(b + ".") for b in BENCH)


def test_no_import_circles() -> None:
    graph = _graph()
    # a package's __init__ re-exporting its submodules is not a circle with them
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    product = {n: {m for m in deps if not _is_bench(m)} for n, deps in graph.items()
               if not _is_bench(n)}  # fmt: skip
    assert _cycles(product) == []


def test_layers() -> None:
    modules = _modules()
    known = set(modules)
    wrong = []
    for name, path in modules.items():
        for layer, banned in FORBIDDEN.items():
            if name != layer and not name.startswith(layer + "."):
                continue
            for imported, _ in _imports(name, path, known):
                if (name, imported) in ALLOWED:
                    continue
                if any(imported == b or imported.startswith(b + ".") for b in banned):
                    wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_product_never_imports_bench() -> None:
    modules = _modules()
    known = set(modules)
    wrong = []
    for name, path in modules.items():
        if _is_bench(name):
            continue
        for imported, at_module_level in _imports(name, path, known):
            if not _is_bench(imported):
                continue
            # `pgrealtime bench` may stay as a thin CLI entry importing bench when run
            if name.startswith("pgrealtime.cli") and not at_module_level:
                continue
            wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_client_imports_nothing_of_the_server() -> None:
    modules = _modules()
    known = set(modules)
    wrong = []
    for name, path in modules.items():
        if name != CLIENT and not name.startswith(CLIENT + "."):
            continue
        for imported, _ in _imports(name, path, known):
            if imported.startswith(ROOT + ".") and not (
                imported == CLIENT or imported.startswith(CLIENT + ".")
            ):
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


# Pure modules decide without I/O (the stream and the claim loop do the I/O they ask
# for), so their tests need no database; nor may anything they import do I/O.
PURE = ("pgrealtime.changes.ack_window", "pgrealtime.webhooks.scheduler")
IO = ("asyncio", "asyncpg", "psycopg2", "aiohttp", "socket", "select", "threading", "time")


def test_pure_modules_do_no_io() -> None:
    modules = _modules()
    known = set(modules)
    seen: set[str] = set()
    todo = list(PURE)
    wrong = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported, _ in _imports(name, modules[name], known):
            if imported in known:
                todo.append(imported)
            elif any(imported == m or imported.startswith(m + ".") for m in IO):
                wrong.append(f"{name} imports {imported}")
    assert wrong == []
