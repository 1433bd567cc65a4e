"""Tokens over a long connection: a token callable is asked again before expiry (the
server never cuts the connection), and a static token that expired ends the client
with an AuthenticationError instead of reconnecting for ever."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import Server

from pgrealtime.client import AuthenticationError, Backoff, ClientClosed, connect


async def test_token_callable_refreshes_before_expiry(server: Server) -> None:
    await server.create_channel("clock")
    user = "4a3c1a0e-3a0b-4c55-9e44-2d2b8c9d1a07"
    calls = 0

    def short_lived() -> str:
        nonlocal calls
        calls += 1
        return server.token(sub=user, expires_in=3)

    async with connect(server.base, token=short_lived) as client:
        sub = await client.subscribe("clock")
        await asyncio.sleep(4.5)  # past the first token's exp
        await client.publish("clock", "tick", {})
        assert (await sub.get(timeout=5)).event == "tick"
        assert client.reconnects == 0 and calls >= 2


async def test_an_expired_static_token_stops_the_client(server: Server) -> None:
    await server.create_channel("clock")
    token = server.token(expires_in=2)
    async with connect(server.base, token=token, backoff=Backoff(initial=0.05)) as client:
        sub = await client.subscribe("clock")
        with pytest.raises(AuthenticationError) as stopped:
            await sub.get(timeout=10)  # the server cuts at exp; the retry is refused
        assert stopped.value.code == "TOKEN_EXPIRED"
        with pytest.raises(ClientClosed):
            await client.publish("clock", "tick", {})
