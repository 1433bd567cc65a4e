"""A small identity provider for tests: real key pairs, signed tokens, and a real JWKS
HTTP server on loopback that can rotate its keys and be taken down."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


@dataclass
class KeyPair:
    """A private key (signs) and its public half (verifies), with its kid and alg."""

    private: Any
    kid: str
    alg: str

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWKS entry."""
        if self.alg.startswith(("RS", "PS")):
            jwk = RSAAlgorithm.to_jwk(self.public, as_dict=True)
        elif self.alg.startswith("ES"):
            jwk = ECAlgorithm.to_jwk(self.public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(self.public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def write_pem(self, folder: Path) -> Path:
        path = folder / f"{self.kid}.pem"
        path.write_bytes(self.public_pem())
        return path

    def sign(self, claims: dict[str, Any], *, kid: str | None = "default") -> str:
        """A token of these claims; the key's kid in the header unless told otherwise
        (kid=None: no kid at all)."""
        headers = {} if kid is None else {"kid": self.kid if kid == "default" else kid}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


def rsa_pair(kid: str = "rsa-1", alg: str = "RS256") -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid, alg)


def ec_pair(kid: str = "ec-1", alg: str = "ES256") -> KeyPair:
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[alg]
    return KeyPair(ec.generate_private_key(curve), kid, alg)


def ed25519_pair(kid: str = "ed-1") -> KeyPair:
    return KeyPair(ed25519.Ed25519PrivateKey.generate(), kid, "EdDSA")


def user_claims(sub: str | None = None, expires_in: float = 600, **more: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sub or str(uuid.uuid4()),
        "role": "authenticated",
        "iat": now,
        "exp": now + expires_in,
        **more,
    }


class JwksServer:
    """Serves {"keys": [...]} of its current key pairs at /.well-known/jwks.json and
    counts the requests; `down()` stops listening (connections are refused), `up()`
    listens again on the same port."""

    def __init__(self, *pairs: KeyPair, max_age: int | None = 600) -> None:
        self.pairs = list(pairs)
        self.max_age = max_age
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def rotate(self, *pairs: KeyPair) -> None:
        """Serve these keys from now on (and only these)."""
        self.pairs = list(pairs)

    async def _serve(self, request: web.Request) -> web.Response:
        self.requests += 1
        headers = {} if self.max_age is None else {"Cache-Control": f"max-age={self.max_age}"}
        return web.json_response({"keys": [p.jwk() for p in self.pairs]}, headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await self.up()

    async def up(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def down(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        await self.down()
        if self._runner is not None:
            await self._runner.cleanup()
