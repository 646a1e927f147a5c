"""API keys and accounts: each key belongs to one region and one account.

``keys`` maps a key to its region, or to (region, account); a key given a bare region is an
account of its own. Several keys of one account (in one region or several) share what the
service shares per account: they see each other's tasks (query, cancel, the task list) in
the region of the task, and each other's temporary uploads. Rate limits stay per key.

A key used in the other region, an unknown key, or a missing or non-Bearer Authorization:
401 InvalidApiKey. Authentication comes before routing, so an unknown API path with a valid
key is 404 NotFound and with a bad one 401.

Ids the service shows instead of keys (never the key itself): ``key_id`` (sha256(key)[:8],
as in recorded requests), ``api_key_id`` (a decimal id from the key's hash), and the
account's ``caller_uid`` (16 digits from the account name's hash) and ``workspace_id``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from . import rules
from .errors import ApiError


@dataclass(frozen=True)
class Key:
    """What the service knows of an authenticated key."""

    key_id: str
    region: str
    account: str
    api_key_id: str
    caller_uid: str
    workspace_id: str


def key_id(header: str | None) -> str | None:
    """A short hash of the bearer token of an Authorization header (None without one)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return _digest(token.strip())[:8]


class Keyring:
    """The keys the emulator accepts, each bound to its region and account."""

    def __init__(self, keys: Mapping[str, str | tuple[str, str]] | None) -> None:
        self._keys: dict[str, Key] = {}
        for key, where in (rules.DEFAULT_KEYS if keys is None else keys).items():
            region, account = (where, "") if isinstance(where, str) else where
            if region not in rules.REGIONS:
                raise ValueError(f"unknown region {region!r} for a key; known: {rules.REGIONS}")
            self._keys[key] = _describe(key, region, account or f"account-of-{_digest(key)[:8]}")

    def keys_of(self, region: str) -> list[str]:
        return [key for key, info in self._keys.items() if info.region == region]

    def authenticate(self, header: str | None, region: str) -> Key:
        """The key of a valid Authorization header for *region*; else 401 InvalidApiKey."""
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError("InvalidApiKey", "No API-key provided." if not header else None)
        info = self._keys.get(token.strip())
        if info is None or info.region != region:  # each key belongs to one region
            raise ApiError("InvalidApiKey")
        return info


def _describe(key: str, region: str, account: str) -> Key:
    uid = str(int(_digest("uid:" + account), 16) % 10**16).zfill(16)
    return Key(key_id=_digest(key)[:8], region=region, account=account,
               api_key_id=str(int(_digest("api-key-id:" + key), 16) % 10**9),
               caller_uid=uid, workspace_id="llm-" + _digest("workspace:" + account)[:16])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
