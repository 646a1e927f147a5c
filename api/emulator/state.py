"""What every part of the emulator shares: one lock, the settings and the statistics."""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

COUNTERS = ("requests", "tasks_created", "images_billed", "rate_limited", "task_queries",
            "uploads", "faults_fired", "prompts_truncated")
PEAKS = ("max_concurrent_tasks", "max_outstanding_tasks", "max_requests_per_second",
         "max_concurrent_calls")

Bucket = tuple[str, str]  # (key_id, model)


@dataclass
class Settings:
    """Constructor options that can change while the emulator runs."""

    latency: float  # seconds per generation and per task
    rate_limits: bool  # False: nothing is refused for rate (attempts are still counted)
    result_ttl: float  # seconds result URLs and finished tasks live
    body_limit: int  # bytes of a request body but on the upload host; 0: no limit
    upload_body_limit: int  # bytes of a request body on the upload host; 0: no limit
    clock_offset: float = 0.0  # seconds the service's clock is ahead of this machine's
    rgba: bool = False  # results as RGBA PNGs (images.rgba_alpha)


class Stats:
    """Counters and per-(key_id, model) peaks, read as Emulator.stats (call under the lock)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.errors: Counter[str] = Counter()
        self.peaks: dict[str, dict[Bucket, int]] = {name: {} for name in PEAKS}
        self._attempts: dict[Bucket, deque[float]] = {}

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def peak(self, name: str, bucket: Bucket, value: int) -> None:
        table = self.peaks[name]
        table[bucket] = max(table.get(bucket, 0), value)

    def attempt(self, bucket: Bucket) -> None:
        """Count one generating request in its sliding 1 s window, refused or not: the peak
        judges the client even when rate limits are off."""
        now, attempts = time.monotonic(), self._attempts.setdefault(bucket, deque())
        while attempts and now - attempts[0] >= 1.0:
            attempts.popleft()
        attempts.append(now)
        self.peak("max_requests_per_second", bucket, len(attempts))

    def snapshot(self) -> dict[str, Any]:
        return {**self.counts, "errors": dict(self.errors),
                **{name: dict(table) for name, table in self.peaks.items()}}


@dataclass
class Shared:
    """The lock guards every mutable structure of the emulator, the statistics included."""

    settings: Settings
    lock: threading.RLock = field(default_factory=threading.RLock)
    stopping: threading.Event = field(default_factory=threading.Event)  # wakes sleepers
    stats: Stats = field(default_factory=Stats)

    def now(self) -> float:
        """The service's clock (epoch seconds): task times, the task list, Date headers."""
        return time.time() + self.settings.clock_offset
