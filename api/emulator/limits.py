"""Rate limits: sliding windows, and 429 Throttling.RateQuota when one is full.

With ``rate_limits=True``: generation and task-creating POSTs rules.RPS per second per
(key, model), checked once the model is known and before the input is validated; task
queries rules.QUERY_QPS per key; upload policies rules.POLICY_QPS per (key, model).
Refused requests do not count in the window. The answer carries Retry-After: 1.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable

from . import rules
from .errors import ApiError
from .state import Shared


class RateLimiter:
    """Sliding 1 s windows per (kind, bucket)."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._windows: dict[tuple[str, Hashable], deque[float]] = {}

    def admit(self, kind: str, bucket: Hashable, limit: int) -> None:
        """Count one request in its window; 429 when rate limits are on and it is full."""
        now = time.monotonic()
        with self._shared.lock:
            window = self._windows.setdefault((kind, bucket), deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if self._shared.settings.rate_limits and len(window) >= limit:
                raise ApiError("Throttling.RateQuota", headers={"Retry-After": "1"})
            window.append(now)

    def admit_generation(self, key_id: str, model: str) -> None:
        """A generating or task-creating request: counted in the statistics, then admitted."""
        bucket = (key_id, model)
        with self._shared.lock:
            self._shared.stats.attempt(bucket)
        self.admit("generate", bucket, rules.RPS)
