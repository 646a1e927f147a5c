"""Account limits: per-model quotas, the rate limits that obey them, sync concurrency.

Quotas (``GET {base}/quotas``; ``quotas={model: {field: value}}`` overrides the defaults):
request_limit requests per request_limit_period seconds (1: per second, 60: per minute;
tests may scale a minute down);
async_user_concurrency_limit tasks running at once and async_user_queue_limit tasks waiting
(None: no limit); usage_limit, usage_limit_field and usage_limit_period are shown, not
enforced. Defaults: qwen-image and qwen-image-plus 2 per second and 2 tasks at once (the
reference); qwen-image-max and its snapshot 2 per minute (the quotas page's example); every
other model (the edit models per their reference) 2 per second.

With ``rate_limits=True`` (429 Throttling.RateQuota "Requests rate limit exceeded, please
try again later.", Retry-After in seconds): generation and task-creating POSTs per (key,
model) by the model's quota, checked once the model is known and before the input is
validated; task queries and task lists rules.QUERY_QPS per key; upload policies
rules.POLICY_QPS per (key, model). Refused requests do not count in the window. Windows
slide. Task concurrency is always enforced (queueing, not an error); a full queue answers
429 Throttling. ``sync_concurrency`` (None: unlimited) caps synchronous calls in flight per
(key, model), whatever rate_limits says: the next one gets 429 Throttling "Request
concurrency limit exceeded, please try again later." — a service stricter than documented.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from . import rules
from .catalog import MODELS
from .errors import ApiError
from .state import Bucket, Shared

QUOTA_FIELDS = ("request_limit", "request_limit_period", "usage_limit", "usage_limit_field",
                "usage_limit_period", "async_user_queue_limit", "async_user_concurrency_limit")
_DEFAULT = {"request_limit": rules.RPS, "request_limit_period": 1, "usage_limit": 1000000,
            "usage_limit_field": "total_tokens", "usage_limit_period": 60,
            "async_user_queue_limit": None, "async_user_concurrency_limit": rules.CONCURRENT}
_PER_MINUTE = {"request_limit": 2, "request_limit_period": 60}
_DEFAULTS = {"qwen-image-max": _PER_MINUTE, "qwen-image-max-2025-12-30": _PER_MINUTE}


def quota_table(overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Every model's quota: the defaults with *overrides* laid over them."""
    overrides = overrides or {}
    unknown = set(overrides) - set(MODELS)
    if unknown:
        raise ValueError(f"quotas for unknown models {sorted(unknown)}")
    table = {}
    for model in MODELS:
        quota = {**_DEFAULT, **_DEFAULTS.get(model, {}), **overrides.get(model, {})}
        wrong = set(quota) - set(QUOTA_FIELDS)
        if wrong:
            raise ValueError(f"unknown quota fields {sorted(wrong)}; known: {QUOTA_FIELDS}")
        period = quota["request_limit_period"]
        if not isinstance(period, (int, float)) or not 0 < period <= 86400:
            # The service answers 1 (per second) or 60 (per minute); tests scale a minute down.
            raise ValueError("request_limit_period must be a number of seconds, 0 < period "
                             "<= 86400")
        table[model] = quota
    return table


class RateLimiter:
    """Sliding windows per (kind, bucket), and the sync calls in flight per (key, model)."""

    def __init__(self, shared: Shared, table: dict[str, dict[str, Any]],
                 sync_concurrency: int | None) -> None:
        self._shared, self._table, self._sync_concurrency = shared, table, sync_concurrency
        self._windows: dict[tuple[str, Hashable], deque[float]] = {}
        self._in_flight: dict[Bucket, int] = {}

    def admit(self, kind: str, bucket: Hashable, limit: int, period: float = 1.0) -> None:
        """Count one request in its window; 429 when rate limits are on and it is full."""
        now = time.monotonic()
        with self._shared.lock:
            window = self._windows.setdefault((kind, bucket), deque())
            while window and now - window[0] >= period:
                window.popleft()
            if self._shared.settings.rate_limits and len(window) >= limit:
                wait = max(1, math.ceil(window[0] + period - now))
                raise ApiError("Throttling.RateQuota", headers={"Retry-After": str(wait)})
            window.append(now)

    def admit_generation(self, key_id: str, model: str) -> None:
        """A generating or task-creating request: counted in the statistics, then admitted
        under the model's quota."""
        bucket = (key_id, model)
        with self._shared.lock:
            self._shared.stats.attempt(bucket)
        quota = self._table[model]
        self.admit("generate", bucket, quota["request_limit"], quota["request_limit_period"])

    @contextmanager
    def sync_call(self, bucket: Bucket) -> Iterator[None]:
        """Hold one of the synchronous slots of (key_id, model) while a call runs."""
        with self._shared.lock:
            running = self._in_flight.get(bucket, 0)
            if self._sync_concurrency is not None and running >= self._sync_concurrency:
                raise ApiError("Throttling", rules.CONCURRENCY_EXCEEDED,
                               headers={"Retry-After": "1"})
            self._in_flight[bucket] = running + 1
            self._shared.stats.peak("max_concurrent_calls", bucket, running + 1)
        try:
            yield
        finally:
            with self._shared.lock:
                self._in_flight[bucket] -= 1
