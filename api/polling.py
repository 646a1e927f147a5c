"""When to query an asynchronous task: notice its end quickly without hammering.

Schedule, with ``t`` the time since the task was created and ``E`` its expected duration:

- sparse phase, ``t`` before ``E - lead`` (``lead = max(1 s, 2 * deviation, E / 4)``): the
  gaps grow geometrically from 0.55 s (x1.5, at most 5 s) and never jump past the dense
  phase's start. Early polls still catch a task that fails or ends at once.
- dense phase, from ``E - lead`` until ``E + max(5 s, 4 * deviation, E)``: one poll every
  0.55 s (2 per second per task is the most allowed; the margin keeps network jitter from
  landing three polls in one second at the service), on a grid through ``E + 0.05 s`` so
  that a task ending as expected is seen almost at once, any other within 0.55 s.
- late phase: the gap grows by 0.1 s per second late, up to 3 s, for tasks stuck in a queue.

``E`` and the deviation are exponential moving averages per (endpoint, model) over the
tasks of the whole process (``state.ProcessState.durations``); the first observed task replaces the prior (15 s for the real
service), later ones weigh 1/2, so the schedule follows a model within a few tasks. The
duration learned is the service's own ``end_time - submit_time`` when both are readable,
which is free of the polling delay; otherwise the time until the end was seen.
"""
from __future__ import annotations

import datetime
import math
import threading

MIN_INTERVAL = 0.55  # under 2 polls per second per task, with room for network jitter
ALIGN = 0.05  # a dense poll is due this long after the expected end
SNAP_SLACK = 0.03  # a gap may shrink by this much to get back onto the grid
MAX_SPARSE_INTERVAL = 5.0
MAX_LATE_INTERVAL = 3.0
INITIAL_EXPECTED = 15.0  # seconds; a typical Qwen-Image task on the real service
_WEIGHT = 0.5


class DurationEstimator:
    """Thread-safe EMA of durations per key (e.g. ``(base_url, model, "async")``)."""

    def __init__(self, initial: float = INITIAL_EXPECTED):
        self.initial = initial
        self._stats: dict[tuple, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def expected(self, key: tuple) -> tuple[float, float]:
        """``(mean, deviation)`` in seconds."""
        with self._lock:
            return self._stats.get(key, (self.initial, self.initial / 4))

    def record(self, key: tuple, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            if key not in self._stats:
                self._stats[key] = (seconds, seconds / 4)
                return
            mean, deviation = self._stats[key]
            deviation = (1 - _WEIGHT) * deviation + _WEIGHT * abs(seconds - mean)
            mean = (1 - _WEIGHT) * mean + _WEIGHT * seconds
            self._stats[key] = (mean, deviation)



class PollSchedule:
    def __init__(self, expected: float, deviation: float):
        self.expected = expected
        lead = max(1.0, 2 * deviation, expected / 4)
        # Dense polls fall on a grid through ``expected + ALIGN``: one of them comes just
        # after the expected end, instead of anywhere up to MIN_INTERVAL after it.
        self._anchor = expected + ALIGN
        self.dense_from = max(0.0, self._grid_point(expected - lead))
        self.dense_until = expected + max(5.0, 4 * deviation, expected)
        self._gap = MIN_INTERVAL

    def _grid_point(self, at_least: float) -> float:
        steps = math.ceil((at_least - self._anchor) / MIN_INTERVAL - 1e-9)
        return self._anchor + steps * MIN_INTERVAL

    def next_delay(self, elapsed: float) -> float:
        """Seconds from the poll just made (at ``elapsed``) to the next one."""
        if elapsed + MIN_INTERVAL - SNAP_SLACK < self.dense_from:
            delay = min(self._gap, MAX_SPARSE_INTERVAL, self.dense_from - elapsed)
            self._gap *= 1.5
            return max(MIN_INTERVAL - SNAP_SLACK, delay)
        if elapsed <= self.dense_until:
            # Back onto the grid; SNAP_SLACK absorbs the thread's wake-up lateness.
            return self._grid_point(elapsed + MIN_INTERVAL - SNAP_SLACK) - elapsed
        late = elapsed - self.dense_until
        return min(MIN_INTERVAL + 0.1 * late, MAX_LATE_INTERVAL)

    def fraction(self, elapsed: float) -> float:
        """A rough progress estimate for display, never reaching 1 before the end."""
        return min(0.95, elapsed / self.expected) if self.expected > 0 else 0.0


def service_duration(output: dict) -> float | None:
    """``end_time - submit_time`` of a task answer, in seconds, when both parse."""
    try:
        start = _parse_time(output["submit_time"])
        end = _parse_time(output["end_time"])
    except (KeyError, TypeError, ValueError):
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds > 0 else None


def _parse_time(text: str) -> datetime.datetime:
    # The service writes "2025-09-09 13:39:45.233" (its local time; only differences matter).
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")
