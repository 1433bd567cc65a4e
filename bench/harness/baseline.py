"""The baseline: the least a broadcast server can do with the same WebSocket library.

It speaks the same frames as pgrealtime (auth -> auth_success, subscribe ->
subscribed, publish -> published plus a `message` to every subscriber of the
channel, the sender included) with no token check, no permission check and no
storage. Each message is encoded once and sent with aiohttp's ordinary
`send_str`, the way a straightforward aiohttp application would. Comparing
pgrealtime against it shows what the real server's extra work costs.

Run it on its own (from the repository root): python -m bench.harness.baseline --port 7140
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import uuid
from datetime import UTC, datetime

from aiohttp import WSMsgType, web

_ids = itertools.count(1)


def _reply(frame: dict, body: dict) -> str:
    if "id" in frame:
        body["id"] = frame["id"]
    return json.dumps(body, separators=(",", ":"))


class Hub:
    """channel name -> the open sockets subscribed to it."""

    def __init__(self) -> None:
        self.channels: dict[str, set[web.WebSocketResponse]] = {}

    def subscribe(self, channel: str, ws: web.WebSocketResponse) -> None:
        self.channels.setdefault(channel, set()).add(ws)

    def unsubscribe(self, channel: str, ws: web.WebSocketResponse) -> None:
        subs = self.channels.get(channel)
        if subs is not None:
            subs.discard(ws)
            if not subs:
                del self.channels[channel]

    async def broadcast(self, channel: str, text: str) -> None:
        for ws in list(self.channels.get(channel, ())):
            if not ws.closed:
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    continue


async def realtime(request: web.Request) -> web.WebSocketResponse:
    hub: Hub = request.app["hub"]
    ws = web.WebSocketResponse(compress=False, max_msg_size=1024 * 1024)
    await ws.prepare(request)
    user_id: str | None = None
    mine: set[str] = set()
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
                kind = frame["type"]
            except (ValueError, KeyError, TypeError):
                await ws.send_str(json.dumps({"type": "error", "code": "bad_frame"}))
                continue
            if kind == "auth":
                user_id = str(uuid.uuid4())
                await ws.send_str(_reply(frame, {"type": "auth_success", "userId": user_id}))
            elif user_id is None:
                await ws.send_str(
                    _reply(frame, {"type": "error", "code": "unauthenticated", "message": "auth"})
                )
            elif kind == "subscribe":
                channel = frame["channel"]
                hub.subscribe(channel, ws)
                mine.add(channel)
                body = {"type": "subscribed", "channel": channel, "subscriptionId": channel}
                await ws.send_str(_reply(frame, body))
            elif kind == "unsubscribe":
                channel = frame["channel"]
                hub.unsubscribe(channel, ws)
                mine.discard(channel)
                await ws.send_str(_reply(frame, {"type": "unsubscribed", "channel": channel}))
            elif kind == "publish":
                channel, event = frame["channel"], frame.get("event")
                if channel not in mine:
                    body = {"type": "error", "code": "not_subscribed", "message": channel}
                    await ws.send_str(_reply(frame, body))
                    continue
                message_id = str(next(_ids))
                ack = {"type": "published", "messageId": message_id}
                await ws.send_str(_reply(frame, {**ack, "channel": channel, "event": event}))
                text = json.dumps(
                    {
                        "type": "message",
                        "messageId": message_id,
                        "channel": channel,
                        "event": event,
                        "payload": frame.get("payload"),
                        "senderId": user_id,
                        "senderType": "user",
                        "timestamp": datetime.now(UTC).isoformat(),
                    },
                    separators=(",", ":"),
                )
                await hub.broadcast(channel, text)
    finally:
        for channel in mine:
            hub.unsubscribe(channel, ws)
    return ws


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app["hub"] = Hub()
    app.router.add_get("/realtime", realtime)
    app.router.add_get("/health", health)
    return app


def raise_nofile_limit() -> int:
    """Lift the open-files limit to the hard limit (thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7140)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = asyncio.new_event_loop
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        print=None,
        loop=loop,
        backlog=1024,
        access_log=None,
    )


if __name__ == "__main__":
    main()
