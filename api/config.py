"""Where the key, the region and the base URL come from.

The names are the official SDK's, so a machine already set up for DashScope works as is:

- key: ``DASHSCOPE_API_KEY``, else the file named by ``DASHSCOPE_API_KEY_FILE_PATH``, else
  ``~/.dashscope/api_key``. A region-specific ``DASHSCOPE_API_KEY_AP_SOUTHEAST_1`` /
  ``DASHSCOPE_API_KEY_CN_BEIJING`` comes first for its region, so one machine can hold a
  Singapore and a Beijing account (their keys are not interchangeable).
- region: ``DASHSCOPE_API_REGION`` (an id of ``regions.REGIONS`` or a common spelling such
  as ``singapore``/``intl``, ``beijing``/``cn``); Singapore by default, as in the
  reference's examples.
- base URL: ``DASHSCOPE_HTTP_BASE_URL_<REGION>``, else ``DASHSCOPE_HTTP_BASE_URL`` (a proxy,
  the emulator), else the region's workspace host when ``DASHSCOPE_WORKSPACE_ID`` is set,
  else its shared host (``regions.region_url``). Plain http is allowed only for loopback hosts,
  so a key never crosses a network unencrypted. The other region's URL is resolved the same
  way (``Config.other_base_url``), so a rejected key can be tried there.
- spend guard (``api.budget``): ``QWEN_IMAGE_BUDGET_IMAGES_PER_DAY`` and/or
  ``QWEN_IMAGE_BUDGET_USD_PER_DAY`` turn it on; the ledger is ``QWEN_IMAGE_BUDGET_FILE``,
  else ``~/.dashscope/qwen-image-budget.json``.
- journal of billed requests (``api.journal``): in ``QWEN_IMAGE_JOURNAL_DIR``, else the
  ledger's folder; ``QWEN_IMAGE_RECOVERY_GRACE``: seconds the task list is given to show a
  task whose creation answer was lost (``api.recovery``).
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from .catalog.regions import (
    DEFAULT_REGION,
    REGION_ENV,
    REGIONS,
    WORKSPACE_ENV,
    Region,
    normalize_region,
    other_region,
    region_env_suffix,
    region_url,
)
from .errors import ConfigurationError, MissingApiKeyError
from .state import PROCESS_STATE


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (localhost or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shown_url(url: str) -> str:
    """``url`` fit for messages: any ``user:password@`` replaced by ``***@``."""
    return _USERINFO.sub("//***@", url)


_USERINFO = re.compile(r"//[^/?#]*@")


def check_base_url(url: str, source: str) -> str:
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. an invalid port or IPv6 literal
        parts, hostname = None, None
    if parts is None or parts.scheme not in ("http", "https") or not hostname:
        raise ConfigurationError(f"{source} is not an http(s) URL: {shown_url(url)!r}.",
                                 hint="Example: https://dashscope-intl.aliyuncs.com/api/v1")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"{source} holds credentials (user:password@ before the host): "
            f"{shown_url(url)!r}.",
            hint="DashScope authenticates with the API key only; remove them from the URL.")
    if parts.scheme == "http" and not is_loopback(hostname):
        raise ConfigurationError(
            f"{source} uses plain http to {hostname}; the API key would travel unencrypted.",
            hint="Use https, or http only to 127.0.0.1/localhost (the bundled emulator).")
    return url.rstrip("/")


def configured_region(env: Mapping[str, str] | None = None) -> str:
    """The region of the environment: ``DASHSCOPE_API_REGION``, else Singapore. Reads no key.

    Raises ``ConfigurationError`` when the variable names no region."""
    value = (os.environ if env is None else env).get(REGION_ENV, "").strip()
    return normalize_region(value) if value else DEFAULT_REGION


def key_fingerprint(api_key: str) -> str:
    """A stable id of a key for registries and logs; the key itself is never kept."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]



def _key_problem(key: str) -> str | None:
    # The key travels in an HTTP header: one token of printable ASCII.
    if key and all("!" <= char <= "~" for char in key):
        return None
    return ("is empty or holds a space, a line break or a character that is not printable "
            "ASCII (a key is one line of letters, digits and dashes)")


@dataclass(frozen=True, init=False)
class KeySource:
    """Where a key came from (for ``doctor``), and the key by ``key``.

    The key itself is not a field: ``repr``, ``dataclasses.asdict`` and anything else that
    walks a ``Config``'s fields never carry it. Every resolved key is held by the process
    state's key registry (``ProcessState.keys``), which ``errors.redact`` removes from every
    message, whatever the key's shape.
    """

    origin: str
    fingerprint: str
    problem: str | None  # why the key cannot be sent (None: it can)

    def __init__(self, key: str, origin: str):
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "fingerprint", key_fingerprint(key))
        object.__setattr__(self, "problem", _key_problem(key))
        PROCESS_STATE.keys.remember(self.fingerprint, key)

    @property
    def key(self) -> str:
        return PROCESS_STATE.keys.key(self.fingerprint)

    @property
    def masked(self) -> str:
        return f"sk-…{self.key[-4:]}" if len(self.key) > 8 else "(short key)"


BUDGET_IMAGES_ENV = "QWEN_IMAGE_BUDGET_IMAGES_PER_DAY"
BUDGET_USD_ENV = "QWEN_IMAGE_BUDGET_USD_PER_DAY"
BUDGET_FILE_ENV = "QWEN_IMAGE_BUDGET_FILE"


@dataclass(frozen=True)
class BudgetSettings:
    """Daily limits of the spend guard; None means no limit of that kind."""

    images_per_day: int | None
    usd_per_day: float | None
    path: Path

    @property
    def enabled(self) -> bool:
        return self.images_per_day is not None or self.usd_per_day is not None


JOURNAL_DIR_ENV = "QWEN_IMAGE_JOURNAL_DIR"
RECOVERY_GRACE_ENV = "QWEN_IMAGE_RECOVERY_GRACE"
# Seconds the task list is given to show a task whose creation answer was lost (the delay
# is not documented; ``recovery`` explains the assumption).
DEFAULT_RECOVERY_GRACE = 120.0


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def _limit(env: Mapping[str, str], name: str, kind, unset: str = "no limit"):
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = -1
    if not 0 <= value < float("inf"):  # also refuses nan
        raise ConfigurationError(
            f"{name} is {text!r}, not a number of 0 or more.",
            hint=f"Example: {name}={'20' if kind is int else '1.50'}; unset it for {unset}.")
    return value


def budget_settings(env: Mapping[str, str] | None = None) -> BudgetSettings:
    """The spend guard's settings from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    path = env.get(BUDGET_FILE_ENV, "").strip()
    return BudgetSettings(
        _limit(env, BUDGET_IMAGES_ENV, int), _limit(env, BUDGET_USD_ENV, float),
        Path(path).expanduser() if path else _home(env) / ".dashscope" / "qwen-image-budget.json")


@dataclass(frozen=True)
class Config:
    region: str
    base_url: str
    base_url_origin: str
    key_source: KeySource | None = field(repr=False)
    timeout: float = 300.0  # seconds, as the SDK's default for a synchronous generation
    # The other region's endpoint for this environment; None when it is unknown (a base URL
    # given as an argument) or the same as this one (one proxy for both cannot tell them).
    other_base_url: str | None = None
    budget: BudgetSettings | None = None
    journal_dir: Path | None = None  # the journal of billed requests; None: none is kept
    recovery_grace: float = DEFAULT_RECOVERY_GRACE

    @property
    def region_info(self) -> Region:
        return REGIONS[self.region]

    def api_key(self) -> str:
        if self.key_source is None:
            raise MissingApiKeyError(
                f"No DashScope API key found for the {self.region_info.name} region.",
                hint="Set DASHSCOPE_API_KEY (or DASHSCOPE_API_KEY_"
                     f"{region_env_suffix(self.region)} for this region only) in the environment "
                     "that starts ComfyUI, or write the key to ~/.dashscope/api_key. Get a key in "
                     "the Model Studio console of the same region. Keys are never taken from a "
                     "node widget, so they stay out of workflows and saved PNGs.")
        if self.key_source.problem:
            raise ConfigurationError(
                f"The DashScope API key from {self.key_source.origin} {self.key_source.problem}; "
                "nothing was sent.",
                hint="Write the key alone on one line (the file may end with a line break).")
        return self.key_source.key

    @classmethod
    def resolve(cls, region: str | None = None, *, api_key: str | None = None,
                base_url: str | None = None, environ: Mapping[str, str] | None = None,
                timeout: float = 300.0) -> "Config":
        env = os.environ if environ is None else environ
        region_id = normalize_region(region) if region else configured_region(env)
        if base_url:
            url, origin = check_base_url(base_url, "base_url"), "argument"
            name = f"DASHSCOPE_HTTP_BASE_URL_{region_env_suffix(other_region(region_id))}"
            other_url = check_base_url(env[name], name) if env.get(name) else None
        else:
            url, origin = _base_url(region_id, env)
            other_url = _other_base_url(region_id, env)
        budget = budget_settings(env)
        journal = env.get(JOURNAL_DIR_ENV, "").strip()
        grace = _limit(env, RECOVERY_GRACE_ENV, float,
                       f"the default of {DEFAULT_RECOVERY_GRACE:g} seconds")
        return cls(region_id, url, origin, find_key(region_id, api_key, env), timeout,
                   other_base_url=None if other_url == url else other_url, budget=budget,
                   journal_dir=Path(journal).expanduser() if journal else budget.path.parent,
                   recovery_grace=DEFAULT_RECOVERY_GRACE if grace is None else grace)


def _base_url(region: str, env: Mapping[str, str]) -> tuple[str, str]:
    for name in (f"DASHSCOPE_HTTP_BASE_URL_{region_env_suffix(region)}", "DASHSCOPE_HTTP_BASE_URL"):
        if env.get(name):
            return check_base_url(env[name], name), name
    workspace = env.get(WORKSPACE_ENV, "").strip() or None
    return region_url(region, workspace), WORKSPACE_ENV if workspace else "default"


def _other_base_url(region: str, env: Mapping[str, str]) -> str | None:
    try:
        return _base_url(other_region(region), env)[0]
    except ConfigurationError:  # only a nicer message depends on it
        return None


def find_key(region: str, explicit: str | None, env: Mapping[str, str]) -> KeySource | None:
    if explicit:
        return KeySource(explicit.strip(), "argument")
    for name in (f"DASHSCOPE_API_KEY_{region_env_suffix(region)}", "DASHSCOPE_API_KEY"):
        if env.get(name, "").strip():
            return KeySource(env[name].strip(), name)
    candidates = []
    if env.get("DASHSCOPE_API_KEY_FILE_PATH"):
        candidates.append(Path(env["DASHSCOPE_API_KEY_FILE_PATH"]).expanduser())
    candidates.append(_home(env) / ".dashscope" / "api_key")
    for path in candidates:
        try:  # undecodable bytes make a malformed key (refused when used), not a crash
            text = path.read_bytes().decode("utf-8", "replace").strip()
        except OSError:
            continue
        if text:
            return KeySource(text, f"file {path}")
    return None
