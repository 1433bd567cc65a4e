"""The order-tracking example (examples/orders) kept working: its run.py starts a real
`pgrealtime serve`, applies the app's SQL and serves the backend; the app's flow is then
driven with the Python client, as the page does it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from tests.conftest import eventually
from tests.test_cli import _free_port

from pgrealtime.client import Backoff, Client, ServerError, Subscription, connect

RUN = Path(__file__).resolve().parents[2] / "examples" / "orders" / "run.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("orders_example", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def demo(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator:
    database = urlsplit(db_url).path.lstrip("/")
    monkeypatch.setenv("PGREALTIME_REPLICATION_SLOT", f"s_{database}")  # slots are cluster-wide
    monkeypatch.setenv("PGREALTIME_PUBLICATION", f"p_{database}")
    run = _load_example()
    app = await run.start(
        data_dir=tmp_path,
        realtime_port=_free_port(),
        app_port=_free_port(),
        database_url=db_url,
        quiet=True,
    )
    try:
        yield app
    finally:
        await app.stop()


async def _subscribe_db(client: Client) -> Subscription:
    """db:orders, once the server's change feed is up (it starts with the server)."""
    for _ in range(100):
        try:
            return await client.subscribe("db:orders")
        except ServerError as exc:
            if exc.code != "CHANGES_UNAVAILABLE":
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("db:orders never became available")


async def test_order_tracking_flow(demo) -> None:
    http = aiohttp.ClientSession(demo.app_url)
    try:
        async with http.get("/") as page:
            assert page.status == 200 and "Order tracking" in await page.text()
        tokens = {}
        for user in ("alice", "bob"):
            async with http.post("/token", json={"user": user}) as resp:
                tokens[user] = (await resp.json())["token"]

        async def fresh_alice_token() -> str:  # what the page's token callback does
            async with http.post("/token", json={"user": "alice"}) as resp:
                return (await resp.json())["token"]

        fast = Backoff(initial=0.02, maximum=0.2)
        async with (
            connect(demo.realtime_url, token=fresh_alice_token, backoff=fast) as alice,
            connect(demo.realtime_url, token=tokens["bob"]) as bob,
        ):
            alice_rows = await _subscribe_db(alice)
            bob_rows = await _subscribe_db(bob)

            # alice places an order: the trigger publishes order.placed, db:orders
            # shows the row to alice only (RLS)
            async with http.post("/api/orders", json={"user": "alice", "item": "kettle"}) as r:
                order_id = (await r.json())["id"]
            insert = await alice_rows.get(timeout=15)
            assert insert.event == "INSERT" and insert.payload["new"]["id"] == order_id

            # history on load: the order's timeline so far, then live updates
            timeline = await alice.subscribe(f"order:{order_id}", since=0)
            placed = await timeline.get(timeout=5)
            assert (placed.event, placed.position, placed.sender_type) == (
                "order.placed",
                1,
                "system",
            )
            async with http.post(f"/api/orders/{order_id}/advance") as r:
                assert (await r.json())["status"] == "packed"
            packed = await timeline.get(timeout=5)
            assert (packed.event, packed.payload["status"]) == ("order.packed", "packed")

            # only the customer may follow an order, and nobody publishes order updates
            with pytest.raises(ServerError) as refused:
                await bob.subscribe(f"order:{order_id}")
            assert refused.value.code == "REALTIME_UNAUTHORIZED"
            with pytest.raises(ServerError) as refused:
                await alice.publish(f"order:{order_id}", "order.delivered", {})
            assert refused.value.code == "REALTIME_UNAUTHORIZED"

            # resume after a reconnect: the connection dies, the order moves on twice,
            # and the timeline continues without gap or duplicate
            alice._ws._writer.transport.abort()
            for _ in range(2):
                async with http.post(f"/api/orders/{order_id}/advance") as r:
                    assert r.status == 200
            moved = [await timeline.get(timeout=10) for _ in range(2)]
            assert [(m.position, m.event) for m in moved] == [
                (3, "order.shipped"),
                (4, "order.delivered"),
            ]
            assert alice.reconnects == 1

            # bob's db:orders saw none of alice's rows: his own order is the first
            async with http.post("/api/orders", json={"user": "bob", "item": "mug"}) as r:
                bobs_order = (await r.json())["id"]
            first = await bob_rows.get(timeout=15)
            assert first.payload["new"]["id"] == bobs_order
            async with http.get("/api/orders", params={"user": "bob"}) as r:
                assert [o["id"] for o in await r.json()] == [bobs_order]

            # pub/sub in the support chat, where users may publish as themselves
            alice_chat = await alice.subscribe("chat:support")
            bob_chat = await bob.subscribe("chat:support")
            await bob.publish("chat:support", "said", {"text": "hello"})
            said = await alice_chat.get(timeout=5)
            assert said.payload == {"text": "hello"} and said.sender_id == bob.user_id
            assert (await bob_chat.get(timeout=5)).message_id == said.message_id
            if bob_chat.presence:  # a server with presence: both are here
                assert alice.user_id in bob_chat.presence

        # the webhook receiver got every order message, signed
        def delivered() -> bool:
            events = [w["event"] for w in demo.webhooks if w["channelName"] == f"order:{order_id}"]
            return sorted(events) == sorted(
                ["order.placed", "order.packed", "order.shipped", "order.delivered"]
            )

        await eventually(delivered, timeout=30)
        assert all(w["verified"] for w in demo.webhooks)
        assert uuid.UUID(demo.webhooks[0]["deliveryId"])
    finally:
        await http.close()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.asynccontextmanager
async def _chromium(url: str, profile: Path) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    """Headless Chromium on `url`; yields `evaluate(js)`, run in the page through the
    DevTools protocol (no driver library needed)."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            pages: list[dict] = []
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                        pages = [t for t in await resp.json() if t["type"] == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
            assert pages, "chromium's DevTools never came up"
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"]) as devtools:
                ids = itertools.count(1)

                async def evaluate(expression: str) -> Any:
                    request_id = next(ids)
                    params = {"expression": expression, "returnByValue": True}
                    await devtools.send_json(
                        {"id": request_id, "method": "Runtime.evaluate", "params": params}
                    )
                    while (reply := await devtools.receive_json(timeout=10))["id"] != request_id:
                        pass
                    return reply["result"]["result"].get("value")

                yield evaluate
    finally:
        proc.terminate()
        await proc.wait()


async def _until_text(evaluate: Callable[[str], Awaitable[Any]], wanted: str) -> str:
    """The page's visible text once it contains `wanted` (fails after 30 s)."""
    text = ""
    for _ in range(150):
        text = await evaluate("document.body ? document.body.innerText : ''") or ""
        if wanted in text:
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"{wanted!r} never showed; the page says:\n{text}")


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
async def test_the_page_in_chromium_history_on_load_and_resume(demo, tmp_path: Path) -> None:
    """The page itself, in headless Chromium: it lists alice's order with its timeline
    replayed (history on load); after "drop connection" it reconnects and shows what
    happened meanwhile, once."""
    http = aiohttp.ClientSession(demo.app_url)
    try:
        async with http.post("/api/orders", json={"user": "alice", "item": "kettle"}) as r:
            order_id = (await r.json())["id"]
        async with http.post(f"/api/orders/{order_id}/advance") as r:
            assert r.status == 200
        async with _chromium(demo.app_url, tmp_path / "chromium") as evaluate:
            text = await _until_text(evaluate, "#2 order.packed")
            assert "#1 order.placed" in text
            await evaluate("document.getElementById('drop').click()")
            async with http.post(f"/api/orders/{order_id}/advance") as r:
                assert r.status == 200
            text = await _until_text(evaluate, "#3 order.shipped")
            assert text.count("#3 order.shipped") == 1 and text.count("#1 order.placed") == 1
    finally:
        await http.close()
