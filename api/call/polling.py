"""When to query an asynchronous task: notice its end quickly without hammering.

Schedule, with ``t`` the time since the task was created and ``E`` its expected duration:

- sparse phase, ``t`` before ``E - lead`` (``lead = max(1 s, 2 * deviation, E / 4)``): the
  gaps grow geometrically from 0.55 s (x1.5, at most 5 s) and never jump past the dense
  phase's start. Early polls still catch a task that fails or ends at once.
- dense phase, from ``E - lead`` until ``E + max(5 s, 4 * deviation, E)``: one poll every
  0.55 s (2 per second per task is the most allowed; the margin keeps network jitter from
  landing three polls in one second at the service), on a grid through ``E + 0.05 s`` so
  that a task ending as expected is seen almost at once, any other within 0.55 s. The pace
  is kept pairwise (a poll at least 1.1 s after the one before the last, 0.3 s after the
  last), so a schedule that learns ``E`` late (see below) polls at once when ``E`` is past
  instead of waiting for the next grid step.
- late phase: the gap grows by 0.1 s per second late, up to 3 s, for tasks stuck in a queue.

``E`` and the deviation are exponential moving averages per (endpoint, model, interface)
over the tasks of the whole process (``state.ProcessState.durations``), seeded from the
durations earlier processes learned (``durations_store``); later tasks weigh 1/2, so the
schedule follows a model within a few tasks. The duration learned is the service's own
``end_time - submit_time`` when both are readable, which is free of the polling delay;
otherwise the time until the end was seen.

Nothing is guessed for a model never seen (no prior): its first tasks are polled densely
from the start for ``UNKNOWN_DENSE`` seconds, and switch to the learned schedule as soon as
any task of the model has taught its duration. So the first batch of a process is noticed
as quickly as the later ones, at the cost of a few more queries for one task's time.
"""
from __future__ import annotations

import datetime
import math
import threading
from typing import Callable

from ..bounds import bounded
from ..state import ProcessState

MIN_INTERVAL = 0.55  # under 2 polls per second per task, with room for network jitter
PAIR_WINDOW = 2 * MIN_INTERVAL  # a poll comes at least this long after the one before last
MIN_GAP = 0.3  # and never closer than this to the last
ALIGN = 0.05  # a dense poll is due this long after the expected end
SNAP_SLACK = 0.03  # a gap may shrink by this much to get back onto the grid
MAX_SPARSE_INTERVAL = 5.0
MAX_LATE_INTERVAL = 3.0
INITIAL_EXPECTED = 15.0  # seconds; a typical Qwen-Image task, for progress display only
UNKNOWN_DENSE = 30.0  # seconds of dense polls for a task of a model with no duration known
# The longest duration learned: the service keeps a task 24 hours, and one running an hour
# is far past any Qwen-Image task seen. A longer one, or one that is not a finite number
# (a file saying 1e400, a service's clock jumping), teaches nothing.
MAX_DURATION = 3600.0
_WEIGHT = 0.5

Estimate = tuple[float, float]  # (mean, deviation) in seconds


def plausible(estimate: Estimate) -> bool:
    """Whether ``(mean, deviation)`` are finite numbers of seconds, within MAX_DURATION (a
    mean above 0); logged once when not."""
    mean, deviation = estimate
    return (bool(bounded(mean, 0.0, MAX_DURATION, "a learned task duration"))
            and bounded(deviation, 0.0, MAX_DURATION, "a learned duration deviation")
            is not None)


class DurationEstimator:
    """Thread-safe EMA of durations per key (e.g. ``(base_url, model, "async")``)."""

    def __init__(self, initial: float = INITIAL_EXPECTED):
        self.initial = initial
        self._stats: dict[tuple, Estimate] = {}
        self._lock = threading.Lock()

    def expected(self, key: tuple) -> Estimate:
        """``(mean, deviation)`` in seconds; the prior where nothing is known (for display)."""
        return self.learned(key) or (self.initial, self.initial / 4)

    def learned(self, key: tuple) -> Estimate | None:
        """``(mean, deviation)`` learned for ``key``; None when no task taught it yet."""
        with self._lock:
            return self._stats.get(key)

    def seed(self, known: dict[tuple, Estimate]) -> None:
        """Take estimates learned by earlier processes, where this one has none yet; one
        out of range (``plausible``) is left out: no prior rather than a wrong one."""
        with self._lock:
            for key, estimate in known.items():
                if plausible(estimate):
                    self._stats.setdefault(key, estimate)

    def record(self, key: tuple, seconds: float) -> Estimate | None:
        """Learn one duration; the new estimate (None when ``seconds`` is not usable)."""
        seconds = bounded(seconds, 0.0, MAX_DURATION, "a task duration")
        if not seconds:
            return None
        with self._lock:
            if key not in self._stats:
                self._stats[key] = (seconds, seconds / 4)
            else:
                mean, deviation = self._stats[key]
                deviation = (1 - _WEIGHT) * deviation + _WEIGHT * abs(seconds - mean)
                mean = (1 - _WEIGHT) * mean + _WEIGHT * seconds
                self._stats[key] = (mean, deviation)
            return self._stats[key]

    def schedule(self, key: tuple) -> "PollSchedule":
        """The poll schedule of a task of ``key`` created now."""
        learned = self.learned(key)
        if learned is not None:
            return PollSchedule(*learned)
        return PollSchedule.without_prior(lambda: self.learned(key))


class PollSchedule:
    def __init__(self, expected: float, deviation: float):
        self._follow: Callable[[], Estimate | None] | None = None
        self._plan(expected, deviation)

    @classmethod
    def without_prior(cls, learned: Callable[[], Estimate | None]) -> "PollSchedule":
        """Dense from the start while nothing is known; the learned schedule once
        ``learned()`` tells an estimate (another task of the model ended)."""
        schedule = cls(0.0, 0.0)
        schedule.dense_until = UNKNOWN_DENSE
        schedule._follow = learned
        return schedule

    def _plan(self, expected: float, deviation: float) -> None:
        self.expected = expected
        lead = max(1.0, 2 * deviation, expected / 4)
        # Dense polls fall on a grid through ``expected + ALIGN``: one of them comes just
        # after the expected end, instead of anywhere up to MIN_INTERVAL after it.
        self._anchor = expected + ALIGN
        self.dense_from = max(0.0, self._grid_point(expected - lead))
        self.dense_until = expected + max(5.0, 4 * deviation, expected)
        self._gap = MIN_INTERVAL
        self._previous: float | None = None  # when the poll before the last one was made

    def _grid_point(self, at_least: float) -> float:
        steps = math.ceil((at_least - self._anchor) / MIN_INTERVAL - 1e-9)
        return self._anchor + steps * MIN_INTERVAL

    def next_delay(self, elapsed: float) -> float:
        """Seconds from the poll just made (at ``elapsed``) to the next one."""
        if self._follow is not None:
            learned = self._follow()
            if learned is not None:
                self._follow = None
                self._plan(*learned)
        previous, self._previous = self._previous, elapsed
        if elapsed + MIN_INTERVAL - SNAP_SLACK < self.dense_from:
            delay = min(self._gap, MAX_SPARSE_INTERVAL, self.dense_from - elapsed)
            self._gap *= 1.5
            return max(MIN_INTERVAL - SNAP_SLACK, delay)
        if elapsed <= self.dense_until:
            earliest = elapsed + MIN_GAP
            if previous is not None:
                earliest = max(earliest, previous + PAIR_WINDOW)
            if earliest - SNAP_SLACK <= self._anchor:
                # Onto the grid; SNAP_SLACK absorbs the thread's wake-up lateness.
                return self._grid_point(earliest - SNAP_SLACK) - elapsed
            # Past the expected end: evenly, as often as the pace allows.
            return max(earliest, elapsed + MIN_INTERVAL) - elapsed
        late = elapsed - self.dense_until
        return min(MIN_INTERVAL + 0.1 * late, MAX_LATE_INTERVAL)


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


ProcessState.declare("durations", DurationEstimator)  # one per process state, made on first use
