"""The option tables of docs/configuration.md, generated from the options table.

The doc holds them between marker lines (`<!-- options:all -->` ... `<!-- /options -->`,
same for `serve`); tests/config/test_options_docs.py fails when they differ from what
this module generates. Regenerate after changing an option:

    python -m pgrealtime.config.docs docs/configuration.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pgrealtime.config.options import GROUPS, OPTIONS, Commands, Option

HEADER = "| flag | environment | default | |\n|---|---|---|---|\n"
BLOCK = re.compile(r"(<!-- options:(\w+) -->\n)(.*?)(<!-- /options -->)", re.S)


def _flag(option: Option) -> str:
    if option.kind == "both":
        return f"`{option.flag_name}` / `--no-{option.flag_name[2:]}`"
    return f"`{option.flag_name}`"


def _env(option: Option) -> str:
    names = ", then ".join(f"`{name}`" for name in option.env_names)
    return f"{names} {option.doc_env}".rstrip()


def _default(option: Option) -> str:
    if option.doc_default is not None:
        return option.doc_default
    value = option.default_value()
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def row(option: Option) -> str:
    cells = (_flag(option), _env(option), _default(option), option.doc)
    return "| " + " | ".join(cells) + " |\n"


def block(commands: Commands) -> str:
    """The Markdown between the markers of `commands`: one table, or for `serve` one
    table per group, under the group's name."""
    options = [option for option in OPTIONS if option.commands == commands]
    if commands == "all":
        return HEADER + "".join(row(option) for option in options)
    parts = []
    for group, what in GROUPS.items():
        rows = [row(option) for option in options if option.group == group]
        if rows:
            parts.append(f"**{group}**: {what}.\n\n" + HEADER + "".join(rows))
    return "\n".join(parts)


def render(text: str) -> str:
    """`text` (the doc) with every marked block regenerated."""
    return BLOCK.sub(lambda m: m[1] + block(m[2]) + m[4], text)  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pgrealtime.config.docs docs/configuration.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
