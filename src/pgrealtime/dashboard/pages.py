"""Serve the dashboard's three static files at /dashboard.

A fixed table of names, read from the package once: no directory is exposed, so no
path can reach anything else. The page is public (it holds no secret: it asks for
the admin API key and sends it only with its own requests), and locked down by its
headers: a Content-Security-Policy that allows only this origin's script, style and
connections (no inline script, no third party), no framing, no referrer.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

PATH = "/dashboard"
# name under /dashboard/ -> content type; "" is the page itself
FILES = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # small files: always asked again, so a new server version shows its own page
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _file(name: str) -> web.Response:
    return web.Response(
        body=_read(name), content_type=FILES[name], charset="utf-8", headers=HEADERS
    )


async def page(request: web.Request) -> web.Response:
    return _file("index.html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return _file(name)


async def to_page(request: web.Request) -> web.Response:
    raise web.HTTPFound(PATH)


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, page)
    app.router.add_get(PATH + "/", to_page)
    app.router.add_get(PATH + "/{name}", asset)
