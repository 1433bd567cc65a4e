"""One rule for a webhook URL's host: `realtime.webhook_url_host` (SQL, the per-host key
of every delivery row) and `policy.url_host` (Python: the signed host, the allowed-hosts
match) agree on tricky URLs, and for every URL a channel may store the rule is
urlsplit's hostname."""

from __future__ import annotations

import random
from urllib.parse import urlsplit

import asyncpg
import pytest

from pgrealtime.webhooks.policy import url_host, validate_webhook_url

TRICKY = [
    "https://Example.COM.:8443/x",
    "HTTPS://EXAMPLE.com/",
    "http://example.com../a",
    "http://./",
    "http://example.com",
    "http://example.com?q=1",
    "http://example.com#frag",
    "http://example.com:/",
    "http://example.com:99999/",
    "http://user@example.com/",
    "http://user:pa:ss@Example.com:81/",
    "http://a@b@c.example/",
    "http://a@b/c@d/",
    "http://@example.com/",
    "http://[::1]:80/",
    "http://[::1]/",
    "http://[FE80::1%25eth0]:8080/",
    "http://[::ffff:10.0.0.1]/",
    "http://[v1.Future]/",
    "http://[::1/",
    "http://[]/",
    "http://[::1]junk:80/",
    "http://u@[::1]:8/",
    "http://a[b]c/",
    "http://ex%41mple.com/",
    "http://%5B::1%5D/",
    "http://ÉXAMPLE.com/",
    "http://bücher.DE./",
    "http://a.com\\b.com/",
    "http://a.com\\@b.com/",
    "http://exa mple.com/",
    "http://example.com\t/",
    "ftp://files.example/",
    "git+ssh://Repo.example/",
    "1http://example.com/",
    "//example.com/x",
    "http:/example.com/",
    "http:example.com",
    "mailto:a@example.com",
    "not a url",
    "",
    "http://",
    "http://:80/",
    "http://127.0.0.1:80/",
    "http://0x7f.1/",
    "https://hooks.example.com./path?x=y#z",
]


def _random_urls(count: int) -> list[str]:
    """URLs made of the characters that matter to the rule, in random places."""
    rng = random.Random(12)
    pieces = ["http://", "HTTPS://", "a", "B", ".", ":", "@", "[", "]", "/", "?", "#", "%", "1"]
    pieces += ["::1", "É", "\\", " ", "x.example", "user:pw@", "[::1]", ":8080", ".."]
    urls = []
    for _ in range(count):
        head = rng.choice(["http://", "https://", "HTTP://", "", "x://"])
        urls.append(head + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))))
    return urls


async def test_sql_and_python_give_the_same_host(db_url: str) -> None:
    urls = TRICKY + _random_urls(3000)
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT u, realtime.webhook_url_host(u) AS host FROM unnest($1::text[]) AS u", urls
        )
    finally:
        await conn.close()
    differ = [(r["u"], r["host"], url_host(r["u"])) for r in rows if r["host"] != url_host(r["u"])]
    assert differ == [], differ[:10]
    # the cases the two disagreed on before: brackets and trailing dots
    by_url = {r["u"]: r["host"] for r in rows}
    assert by_url["http://[::1]:80/"] == "::1"
    assert by_url["https://Example.COM.:8443/x"] == "example.com"


def _urlsplit_host(url: str) -> str:
    """What url_host was before: urlsplit's hostname, trailing dots dropped."""
    return (urlsplit(url).hostname or "").rstrip(".").lower()


@pytest.mark.pure
@pytest.mark.parametrize("url", [u for u in TRICKY if validate_webhook_url(u) is None])
def test_for_a_storable_url_the_rule_is_urlsplits_hostname(url: str) -> None:
    """What is signed and matched against allowed hosts did not change: for a URL a
    channel accepts, the rule gives urlsplit's hostname up to case (both signing and
    the allowed-hosts match lower-case the host themselves; urlsplit keeps the case
    after a `%`, a zone id's)."""
    assert url_host(url).lower() == _urlsplit_host(url)


@pytest.mark.pure
def test_storable_random_urls_too() -> None:
    urls = [u for u in _random_urls(3000) if validate_webhook_url(u) is None]
    assert len(urls) > 100
    for url in urls:
        assert url_host(url).lower() == _urlsplit_host(url), url


@pytest.mark.pure
def test_non_ascii_capitals_are_kept_as_written() -> None:
    """PostgreSQL's lower() beyond ASCII depends on the database's locale: the rule
    lower-cases ASCII only (signing lower-cases the host itself)."""
    assert url_host("http://ÉXAMPLE.com/") == "Éxample.com"
