"""Key pairs for the asymmetric tokens of `bench connect --token-alg`: made fresh for each
server the bench starts, the public halves handed to it with --jwt-public-key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# the key type that signs each algorithm (one key per type)
KEY_OF_ALG = {
    "RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa",
    "ES256": "p256", "EdDSA": "ed25519",
}  # fmt: skip


def make_keys(folder: Path) -> tuple[dict[str, Any], list[Path]]:
    """Private keys by key type, and the PEM files of their public keys."""
    private = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    files = []
    for name, key in private.items():
        path = folder / f"bench-{name}.pem"
        path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        files.append(path)
    return private, files
