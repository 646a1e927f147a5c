"""An account's own limits per model, read from Model Studio's quotas API.

``GET {base}/quotas?model=M`` ("List model quotas", Sep 2026) answers ``output.quotas[]``
items ``{model, workspace_id, model_limit, workspace_limit}``. Each limit holds
``request_limit`` per ``request_limit_period`` seconds (1: per second, 60: per minute) and
``async_user_concurrency_limit`` (tasks at once), null where nothing applies; a workspace
limit, when set, is the tighter one for calls in it.

``QuotaBook`` (in the process state) asks once per process, base URL, key and model, before
the model's first billed call, and again after ``REFRESH_AFTER`` (a day): an account with
more slots than the table's gets them, without a restart when they change. Figures the
answer leaves null, or states outside a plausible range (``bounds``), keep the table's
(``limiter.ModelLimits.from_spec``).

Where the key may not read it, the table's figures are used quietly (one INFO line): 401 or
403 (a key without the permission), or 404 (the page documents the API on workspace
domains only, and its path changed once: an older page named it ``/models/limits``). That
verdict is kept for a day per (base URL, key), so other models do not ask again. Any other
failure (network, 5xx, 429, an answer of another shape) keeps the last figures known, else
the table's, and the API is asked again after ``RETRY_AFTER``.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..bounds import bounded
from ..call.limiter import ModelLimits
from ..catalog.specs import ModelSpec
from ..config import key_fingerprint
from ..errors import ApiError, QwenImageError
from ..state import ProcessState
from .retry import RetryPolicy

if TYPE_CHECKING:  # the process state holds a QuotaBook; importing it must not load requests
    from .transport import Transport

log = logging.getLogger(__name__)

QUOTA_PATH = "/quotas"
REFRESH_AFTER = 86400.0  # seconds a reading (or a refusal) is trusted
RETRY_AFTER = 300.0  # seconds before asking again after a failure that may pass
# A model's first call waits for this reading: one attempt (a 429 is waited out for 3 s at
# most), as the table is a fine answer until it is asked again.
QUOTA_RETRY = RetryPolicy(attempts=1, base=0.2, cap=1.0, total=3.0)
_NOT_FOR_THIS_KEY = (401, 403, 404)  # the key or the host does not offer it


@dataclass(frozen=True)
class AccountLimits:
    """One model's limits as the quotas API states them; None where it states none."""

    requests: int | None = None  # per ``period`` seconds
    period: float | None = None
    concurrent: int | None = None  # asynchronous tasks at once

    @property
    def rate(self) -> float | None:
        if self.requests is None or self.period is None:
            return None
        return self.requests / self.period


class QuotasUnavailable(Exception):
    """The quotas API cannot be read with this key on this host (401/403/404)."""


# Plausible ranges of the quotas answer's figures; one outside them (1e400, a negative or
# fractional count) counts as not stated, so the table's figure holds.
MAX_REQUESTS = 100_000  # per period
MAX_PERIOD = 86400.0  # seconds
MAX_CONCURRENT = 10_000  # tasks at once


def _one(limit: dict) -> AccountLimits:
    requests = bounded(limit.get("request_limit"), 1, MAX_REQUESTS, "quotas request_limit",
                       whole=True)
    period = bounded(limit.get("request_limit_period"), 1, MAX_PERIOD,
                     "quotas request_limit_period")
    concurrent = bounded(limit.get("async_user_concurrency_limit"), 1, MAX_CONCURRENT,
                         "quotas async_user_concurrency_limit", whole=True)
    if requests is None or period is None:
        requests = period = None
    return AccountLimits(requests, period, concurrent)


def _tightest(limits: list[AccountLimits]) -> AccountLimits:
    rated = [limit for limit in limits if limit.rate is not None]
    slowest = min(rated, key=lambda limit: limit.rate) if rated else AccountLimits()
    concurrent = [limit.concurrent for limit in limits if limit.concurrent is not None]
    return AccountLimits(slowest.requests, slowest.period, min(concurrent, default=None))


def read_quotas(answer: dict, model: str) -> AccountLimits | None:
    """``model``'s limits from a quotas answer; None when the answer does not list it.
    ``ValueError`` when the answer is not of the documented shape."""
    output = answer.get("output")
    quotas = output.get("quotas") if isinstance(output, dict) else None
    if not isinstance(quotas, list):
        raise ValueError("the answer has no output.quotas list")
    limits = [_one(item[name]) for item in quotas
              if isinstance(item, dict) and item.get("model") == model
              for name in ("model_limit", "workspace_limit") if isinstance(item.get(name), dict)]
    return _tightest(limits) if limits else None


def limits_for(spec: ModelSpec, account: AccountLimits | None) -> ModelLimits:
    """The figures ``spec``'s calls are held to: the account's where it states them."""
    table = ModelLimits.from_spec(spec)
    changes: dict = {}
    if account is not None and account.rate is not None:
        changes.update(requests=account.requests, period=account.period)
    if account is not None and account.concurrent is not None:
        changes["concurrent"] = account.concurrent
    return dataclasses.replace(table, **changes, source="quotas API") if changes else table


def fetch_account_limits(transport: Transport, model: str,
                         cancel_event: threading.Event | None = None) -> AccountLimits | None:
    """Ask the quotas API about ``model``; ``QuotasUnavailable`` where the key may not."""
    try:
        answer = transport.get(QUOTA_PATH, params={"model": model, "page_no": 1,
                                                   "page_size": 20},
                               cancel_event=cancel_event, retry=QUOTA_RETRY)
    except ApiError as exc:
        if exc.status in _NOT_FOR_THIS_KEY:
            raise QuotasUnavailable(f"HTTP {exc.status} {exc.code}") from None
        raise
    return read_quotas(answer, model)


class QuotaBook:
    """What the quotas API told, per (base URL, key fingerprint, model); where it may not
    be read, per (base URL, key fingerprint). ``clock``: monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        # entry -> (account limits or None, monotonic time to ask again)
        self._known: dict[tuple[str, str, str], tuple[AccountLimits | None, float]] = {}
        self._closed: dict[tuple[str, str], float] = {}  # -> monotonic time to ask again
        self._asking: dict[tuple[str, str, str], threading.Lock] = {}

    def account_limits(self, base_url: str, fingerprint: str, model: str,
                       fetch: Callable[[], AccountLimits | None]) -> AccountLimits | None:
        """The account's limits for ``model`` (None: use the table's); ``fetch()`` asks the
        service when nothing fresh is known. Calls for one entry wait for one question."""
        entry = (base_url, fingerprint, model)
        with self._lock:
            asking = self._asking.setdefault(entry, threading.Lock())
        with asking:
            now = self._clock()
            with self._lock:
                if self._closed.get((base_url, fingerprint), 0.0) > now:
                    return None
                known = self._known.get(entry)
            if known is not None and known[1] > now:
                return known[0]
            try:
                found, again = fetch(), now + REFRESH_AFTER
                log.info("The quotas API gives %s: %s", model, found or "nothing (not listed)")
            except QuotasUnavailable as exc:
                log.info("The quotas API is not available to this key at %s (%s); using the "
                         "model table's rate limits", base_url, exc)
                with self._lock:
                    self._closed[(base_url, fingerprint)] = now + REFRESH_AFTER
                return None
            except (QwenImageError, ValueError) as exc:
                log.info("Could not read %s's limits from the quotas API (%s); using %s for "
                         "now", model, exc, "the last ones read" if known else "the table's")
                found, again = (known[0] if known else None), now + RETRY_AFTER
            with self._lock:
                self._known[entry] = (found, again)
            return found


def model_limits(book: QuotaBook, transport: Transport, spec: ModelSpec,
                 cancel_event: threading.Event | None = None) -> ModelLimits:
    """The limits ``spec``'s calls through ``transport`` are held to."""
    config = transport.config
    account = book.account_limits(
        config.base_url, key_fingerprint(config.api_key()), spec.id,
        lambda: fetch_account_limits(transport, spec.id, cancel_event))
    return limits_for(spec, account)


ProcessState.declare("quotas", QuotaBook)  # one per process state, made on first use
