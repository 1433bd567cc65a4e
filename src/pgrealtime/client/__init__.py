"""pgrealtime.client: a Python client for pgrealtime's WebSocket protocol.

    async with connect("ws://127.0.0.1:7130/realtime", token=token) as client:
        sub = await client.subscribe("order:123")
        await client.publish("order:123", "order.updated", {"status": "shipped"})
        async for message in sub:
            print(message.event, message.payload)

It reconnects on its own and resumes every subscription without gap or duplicate
(docs/client.md). It imports nothing of the server, so it can ship on its own.
"""

from pgrealtime.client.connection import DEFAULT_URL, Client, connect
from pgrealtime.client.errors import (
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    RealtimeError,
    ServerError,
    SubscriptionEnded,
)
from pgrealtime.client.frames import Message, Presence, Published, Subscribed
from pgrealtime.client.reconnect import Backoff
from pgrealtime.client.subscription import Subscription

__all__ = [
    "DEFAULT_URL",
    "AuthenticationError",
    "Backoff",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "Message",
    "Presence",
    "Published",
    "RealtimeError",
    "ServerError",
    "Subscribed",
    "Subscription",
    "SubscriptionEnded",
    "connect",
]
