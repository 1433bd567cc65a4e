"""Finding 18: tokens without `exp` lived forever, and an `exp` beyond a float's range
raised OverflowError (500 on REST, INTERNAL_ERROR on the WebSocket).

Now user and admin tokens must carry `exp` unless the server runs with
--no-jwt-require-exp (anon tokens may omit it), an out-of-range `exp` is an invalid
token, and `pgrealtime token` mints tokens with an `exp`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest
from tests.conftest import JWT_SECRET, Server, make_settings


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims_text: str) -> str:
    """A token over exactly this payload text (json.dumps cannot write 1e400)."""
    head = _b64(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64(claims_text.encode())
    mac = hmac.new(JWT_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


async def _ws(server: Server, token: str) -> dict:
    client = await server.connect()
    try:
        return await client.auth(token)
    finally:
        await client.close()


async def _rest(server: Server, token: str) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    return await server.api("GET", "/api/realtime/channels", headers=headers)


def _no_exp(role: str) -> str:
    claims: dict = {"role": role, "iat": int(time.time())}
    if role == "authenticated":
        claims["sub"] = str(uuid.uuid4())
    return jwt.encode(claims, JWT_SECRET, "HS256")


async def test_tokens_without_exp_are_refused_by_default(server: Server) -> None:
    reply = await _ws(server, _no_exp("authenticated"))
    assert (reply["type"], reply.get("code")) == ("error", "INVALID_TOKEN"), reply
    assert "exp" in reply["message"]
    assert (await _ws(server, _no_exp("project_admin"))).get("code") == "INVALID_TOKEN"
    status, body = await _rest(server, _no_exp("project_admin"))
    assert (status, body["error"]) == (401, "AUTH_INVALID_TOKEN")
    # anon tokens may omit it (a public anon key)
    assert (await _ws(server, _no_exp("anon")))["type"] == "auth_success"
    # with an exp, all is well
    assert (await _ws(server, server.token()))["type"] == "auth_success"
    assert (await _rest(server, server.token(role="project_admin")))[0] == 200


class TestRequireExpOff:
    @pytest.fixture
    def server_settings(self):
        return make_settings(jwt_require_exp=False)

    async def test_tokens_without_exp_are_accepted(self, server: Server) -> None:
        assert (await _ws(server, _no_exp("authenticated")))["type"] == "auth_success"
        assert (await _rest(server, _no_exp("project_admin")))[0] == 200


@pytest.mark.parametrize("exp", ["1e400", str(10**400)])
async def test_exp_beyond_a_float_is_an_invalid_token(server: Server, exp: str) -> None:
    for role in ("authenticated", "project_admin", "anon"):
        sub = f', "sub": "{uuid.uuid4()}"' if role == "authenticated" else ""
        token = signed(f'{{"role": "{role}", "exp": {exp}{sub}}}')
        reply = await _ws(server, token)
        assert reply.get("code") == "INVALID_TOKEN", (role, reply)
        status, body = await _rest(server, token)
        assert (status, body["error"]) == (401, "AUTH_INVALID_TOKEN"), (role, body)


def test_cli_token_has_an_exp(tmp_path: Path) -> None:
    def mint(*flags: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "pgrealtime.cli", "token", "--data-dir", str(tmp_path),
             "--jwt-secret", JWT_SECRET, "--sub", str(uuid.uuid4()), *flags],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        return jwt.decode(out, JWT_SECRET, algorithms=["HS256"])

    now = time.time()
    assert abs(mint()["exp"] - (now + 3600)) < 60
    assert abs(mint("--ttl", "120")["exp"] - (now + 120)) < 60
    refused = subprocess.run(
        [sys.executable, "-m", "pgrealtime.cli", "token", "--data-dir", str(tmp_path),
         "--jwt-secret", JWT_SECRET, "--sub", str(uuid.uuid4()), "--ttl", "0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "positive" in refused.stderr
