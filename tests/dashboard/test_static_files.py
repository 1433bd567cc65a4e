"""The dashboard's files hold together without a browser: every element the script
looks up exists in the page, and nothing needs what the Content-Security-Policy
forbids (inline script or style, another origin)."""

from __future__ import annotations

import re
from importlib import resources

import pytest

pytestmark = pytest.mark.pure

STATIC = resources.files("pgrealtime.dashboard").joinpath("static")
PAGE = STATIC.joinpath("index.html").read_text()
SCRIPT = STATIC.joinpath("dashboard.js").read_text()
STYLE = STATIC.joinpath("dashboard.css").read_text()


def test_every_element_the_script_uses_is_in_the_page() -> None:
    ids = set(re.findall(r'\bid="([^"]+)"', PAGE))
    looked_up = set(re.findall(r'\$\("([^"]+)"\)', SCRIPT))
    looked_up |= {f"s-{name}" for name in ("connections", "delivered", "published", "changes")}
    looked_up |= {f"f-{name}" for name in ("delivered", "published", "changes")}
    assert looked_up, "no lookups found: the pattern is out of date"
    assert looked_up <= ids, sorted(looked_up - ids)


def test_nothing_inline_and_nothing_from_elsewhere() -> None:
    assert "<style" not in PAGE and " style=" not in PAGE
    assert re.findall(r"<script[^>]*>", PAGE) == ['<script src="/dashboard/dashboard.js" defer>']
    assert not re.search(r"\son[a-z]+=", PAGE)  # no inline event handlers
    for text in (PAGE, SCRIPT, STYLE):
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
        assert "@import" not in text
    assert "innerHTML" not in SCRIPT and "eval(" not in SCRIPT  # values go in as text
