"""Bearer API keys: ``ECOBATCH_API_KEYS`` (comma-separated) is hashed at start-up and only the
hashes are kept; a key's hash also names its folder in the store."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pipeline.errors import EcobatchError


class AuthError(EcobatchError):
    """No API key, or one that is not configured (HTTP 401)."""


def key_hash(key: str) -> str:
    """The stored form of a key: SHA-256, hex (first 32 characters name the owner folder)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """The hashes of the configured keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._hashes = frozenset(key_hash(k.strip()) for k in keys if k.strip())

    def owner(self, authorization: str | None) -> str:
        """The owner (a folder name) of the bearer key in an ``Authorization`` header.

        Raises:
            AuthError: no bearer key, or an unknown one.
        """
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthError("no API key given: send 'Authorization: Bearer <key>'")
        digest = key_hash(key.strip())
        if not any(hmac.compare_digest(digest, h) for h in self._hashes):
            raise AuthError("incorrect API key provided")
        return digest[:32]
