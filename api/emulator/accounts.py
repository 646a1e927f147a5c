"""API keys: each belongs to one region; authentication as the service's gateway does it.

A key used in the other region, an unknown key, or a missing or non-Bearer Authorization:
401 InvalidApiKey. Authentication comes before routing, so an unknown API path with a valid
key is 404 NotFound and with a bad one 401.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

from . import rules
from .errors import ApiError


def key_id(header: str | None) -> str | None:
    """A short hash of the bearer token of an Authorization header (None without one)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hashlib.sha256(token.strip().encode()).hexdigest()[:8]


class Keyring:
    """The keys the emulator accepts, each bound to its region."""

    def __init__(self, keys: Mapping[str, str] | None) -> None:
        self._regions = dict(rules.DEFAULT_KEYS if keys is None else keys)
        unknown = set(self._regions.values()) - set(rules.REGIONS)
        if unknown:
            raise ValueError(f"unknown regions {sorted(unknown)}; known: {rules.REGIONS}")

    def keys_of(self, region: str) -> list[str]:
        return [key for key, where in self._regions.items() if where == region]

    def authenticate(self, header: str | None, region: str) -> str:
        """The key id of a valid Authorization header for *region*; else 401 InvalidApiKey."""
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError("InvalidApiKey", "No API-key provided." if not header else None)
        if self._regions.get(token.strip()) != region:  # each key belongs to one region
            raise ApiError("InvalidApiKey")
        return key_id(header)  # type: ignore[return-value]  # a Bearer token is present
