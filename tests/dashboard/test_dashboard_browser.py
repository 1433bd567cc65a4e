"""The dashboard end to end in a real browser: Debian's headless Chromium, driven by
Playwright (no browser download), against a real server on a fresh database.

Signs in with the API key, creates a channel, publishes from the page and sees the
message in the stream, watches a subscriber count change when a WebSocket client
joins, and saves screenshots at a laptop's width and a phone's (under pytest's
tmp_path: `--basetemp=DIR` keeps them somewhere known). The page must raise no
script error and break no Content-Security-Policy rule (both show in the console).
Run apart with `pytest -m browser`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect
from tests.conftest import API_KEY, Server, make_settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)")
    playwright = await async_playwright().start()
    try:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        await chromium.close()
    finally:
        await playwright.stop()


@pytest.fixture
def server_settings():
    return make_settings(webhook_allow_private_networks=True)


@pytest.fixture
async def page(browser: Browser, server: Server) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=LAPTOP)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    page.problems = problems  # type: ignore[attr-defined]
    yield page
    await context.close()
    assert problems == []


async def sign_in(page: Page, server: Server) -> None:
    await page.goto(server.base + "/dashboard")
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#api-key", API_KEY)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#live")).to_have_text("live")
    await expect(page.locator("#ws-state")).to_have_text("WebSocket: connected")


async def screenshot(page: Page, path: Path) -> None:
    await page.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-page
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


async def test_sign_in_create_publish_watch_subscribers(
    page: Page, server: Server, tmp_path: Path
) -> None:
    # a wrong key is refused and nothing is kept
    await page.goto(server.base + "/dashboard")
    await page.fill("#api-key", "ik_not_the_key")
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#login-error")).to_have_text("That is not the admin API key.")
    assert await page.evaluate("sessionStorage.length") == 0
    page.problems.clear()  # type: ignore[attr-defined]  # the browser logs the 401
    await sign_in(page, server)
    assert await page.evaluate("sessionStorage.getItem('pgrealtime.apiKey')") == API_KEY

    # create a channel from the page: the server has it, the list shows it
    await page.click("#channel-editor summary")
    await page.fill("#ch-pattern", "chat:*")
    await page.fill("#ch-description", "the chat rooms")
    await page.click("#ch-save")
    row = page.locator('#channels tr[data-pattern="chat:*"]')
    await expect(row).to_contain_text("the chat rooms")
    _, channels = await server.api("GET", "/api/realtime/channels")
    assert [c["pattern"] for c in channels] == ["chat:*"]

    # publish from the page: it arrives in the stream, and was stored
    await page.fill("#pub-channel", "chat:lobby")
    await page.fill("#pub-event", "greeting")
    await page.fill("#pub-payload", '{"text": "hello from the page"}')
    await page.click("#publish-form button[type=submit]")
    item = page.locator('#stream li[data-channel="chat:lobby"][data-event="greeting"]')
    await expect(item).to_contain_text("hello from the page")
    await expect(page.locator("#publish-status")).to_contain_text("Published to chat:lobby")
    _, messages = await server.api("GET", "/api/realtime/messages")
    assert [(m["channelName"], m["eventName"]) for m in messages] == [("chat:lobby", "greeting")]

    # the page itself is chat:lobby's one subscriber; a WebSocket client joins: two
    count = page.locator('#live-channels tr[data-channel="chat:lobby"] td:nth-child(2)')
    await expect(count).to_have_text("1")
    client = await server.connect(server.token())
    assert (await client.subscribe("chat:lobby"))["type"] == "subscribed"
    await expect(count).to_have_text("2")
    await expect(page.locator("#f-connections")).to_have_text("2")

    # a message from that client shows too; the event filter hides it, then not
    await client.publish("chat:lobby", "typing", {"who": "client"})
    typing = page.locator('#stream li[data-event="typing"]')
    await expect(typing).to_have_count(1)
    await page.fill("#filter-event", "greet")
    await expect(typing).to_have_count(0)
    await expect(item).to_have_count(1)
    await page.fill("#filter-event", "")
    await expect(typing).to_have_count(1)

    # disable the channel from the page: the server ends the subscriptions
    await row.locator("input[type=checkbox]").click()
    await expect(page.locator('#channels tr.disabled[data-pattern="chat:*"]')).to_have_count(1)
    ended = await client.expect("error", code="REALTIME_SUBSCRIPTION_ENDED")
    assert ended["channel"] == "chat:lobby"
    chip = page.locator('#watched .chip[data-channel="chat:lobby"]')
    await expect(chip).to_have_attribute("data-state", "error")
    await expect(count).to_have_count(0)  # nobody is subscribed any more
    # enabled again from the page: the page subscribes again by itself
    await row.locator("input[type=checkbox]").click()
    await expect(page.locator('#channels tr.disabled[data-pattern="chat:*"]')).to_have_count(0)
    await expect(chip).to_have_attribute("data-state", "ok")
    await expect(count).to_have_text("1")

    await screenshot(page, tmp_path / "dashboard-1280.png")
    await page.set_viewport_size(PHONE)
    await screenshot(page, tmp_path / "dashboard-390.png")
    # nothing is wider than a phone's screen (tables scroll inside their panels)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    # signing out forgets the key
    await page.click("#sign-out")
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('pgrealtime.apiKey')") is None


async def test_a_failed_webhook_delivery_is_shown_and_retried(
    page: Page, server: Server, tmp_path: Path
) -> None:
    answers = [503]
    received: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=answers[0])

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await server.create_channel("orders:*")
        await sign_in(page, server)
        # webhook URLs are set from the page's editor
        await page.locator('#channels tr[data-pattern="orders:*"] button', has_text="Edit").click()
        await page.fill("#ch-webhooks", f"http://127.0.0.1:{port}/hook")
        await page.click("#ch-save")
        await expect(page.locator('#channels tr[data-pattern="orders:*"]')).to_contain_text(
            f"127.0.0.1:{port}/hook"
        )
        # 503 is retried with backoff: make it final, then see it listed
        answers[0] = 410
        await page.fill("#pub-channel", "orders:1")
        await page.fill("#pub-event", "order.paid")
        await page.click("#publish-form button[type=submit]")
        await expect(page.locator("#publish-status")).to_contain_text("Published to orders:1")
        failed = page.locator("#deliveries tbody tr", has_text="orders:1")
        for _ in range(100):
            if await failed.count():
                break
            await page.click("#wh-refresh")
            await page.wait_for_timeout(100)
        await expect(failed).to_contain_text("failed 410")

        await screenshot(page, tmp_path / "dashboard-webhook-failed.png")
        answers[0] = 200
        await failed.get_by_role("button", name="Retry").click()
        await expect(page.locator("#wh-note")).to_have_text("Queued 1 again.")
        await expect(failed).to_have_count(0)  # pending again: no longer failed
        await page.select_option("#wh-status", "delivered")
        delivered = page.locator("#deliveries tbody tr", has_text="delivered 200")
        for _ in range(100):  # the list refreshes every 15 s; ask sooner
            if await delivered.count():
                break
            await page.click("#wh-refresh")
            await page.wait_for_timeout(100)
        await expect(delivered).to_contain_text("orders:1")
        assert len(received) == 2
    finally:
        await runner.cleanup()
