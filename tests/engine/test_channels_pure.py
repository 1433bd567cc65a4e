"""Pattern validation, matching and specificity; Python and SQL agree."""

from __future__ import annotations

import random

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrealtime.engine.channels import matches, most_specific, pattern_error, specificity_key

ALPHABET = "ab:_.-"


def test_matching_examples() -> None:
    assert matches("order:*", "order:123")
    assert matches("order:%", "order:123")
    assert matches("chat:room:*", "chat:room:1")
    assert not matches("chat:room:*", "chat:lobby:1")
    assert matches("a*b*c", "a-x-b-y-c")
    assert not matches("a*b*c", "a-x-c")
    assert matches("exact", "exact") and not matches("exact", "exactly")
    assert not matches("a_c", "abc")  # '_' is literal, unlike in SQL LIKE


def test_specificity_order() -> None:
    patterns = ["*:1", "order:*", "order:1*", "order:1", "or*er:1"]
    assert most_specific(patterns, "order:1") == "order:1"
    assert most_specific([p for p in patterns if p != "order:1"], "order:1") == "order:1*"
    assert specificity_key("order:*") < specificity_key("o*:*")
    assert most_specific(["a*", "*a"], "aa") == "*a"  # equal rank: byte order decides
    assert most_specific(["x:*"], "y:1") is None


def test_pattern_validation() -> None:
    assert pattern_error("order:*") is None
    for bad in ("", "*", "%%", "a**", "a*%", "sp ace", "db:x", "x" * 256, 5, None):
        assert pattern_error(bad) is not None, bad


patterns = st.text(alphabet=ALPHABET + "*%", min_size=1, max_size=6).filter(
    lambda p: pattern_error(p) is None
)
names = st.text(alphabet=ALPHABET, min_size=1, max_size=8)


@given(st.lists(patterns, min_size=1, max_size=5, unique_by=lambda p: p.replace("%", "*")),
       names)  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_glob_agrees_with_regex(pats: list[str], name: str) -> None:
    import re

    for p in pats:
        regex = "^" + ".*".join(re.escape(part) for part in p.replace("%", "*").split("*")) + "$"
        assert matches(p, name) == bool(re.match(regex, name, re.DOTALL))


def _random_patterns(rng: random.Random) -> list[str]:
    chosen: dict[str, str] = {}
    while len(chosen) < rng.randint(1, 6):
        p = "".join(rng.choice(ALPHABET + "*%") for _ in range(rng.randint(1, 6)))
        if pattern_error(p) is None:
            chosen.setdefault(p.replace("%", "*"), p)
    return list(chosen.values())


async def test_python_and_sql_choose_the_same_channel(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        rng = random.Random(2026)
        for _ in range(150):
            pats = _random_patterns(rng)
            name = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 8)))
            async with conn.transaction():
                await conn.execute("DELETE FROM realtime.channels")
                await conn.executemany(
                    "INSERT INTO realtime.channels (pattern) VALUES ($1)", [(p,) for p in pats]
                )
                chosen = await conn.fetchval("SELECT pattern FROM realtime.match_channel($1)", name)
            assert chosen == most_specific(pats, name), (pats, name)
    finally:
        await conn.close()
