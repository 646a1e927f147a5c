"""Client-side rate and concurrency limits, shared by every client of the process.

DashScope limits each account per model (requests per second or per minute, tasks
processing at once) and task queries to 20 per second per account. The pack keeps under
those limits itself, so that a batch is scheduled instead of retried into 429s: one
``ModelLimiter`` per (key fingerprint, model) lives in ``Limits``, held by the process state
(``state.ProcessState``), so two nodes, two clients or two threads using the same key share
it. Its figures (``ModelLimits``) are the account's own where the quotas API tells them
(``quotas``), else the model table's.

- Rate: at most ``requests`` billed POSTs (every attempt, retries too) in any sliding
  ``period`` (1 s, or 60 s for a per-minute model), with a margin so that network jitter
  cannot make two windows look like one at the server. A wait of a second or more is
  reported to ``on_wait`` as a countdown; a cancel ends any wait at once.
- Task slots: ``concurrent`` tasks at once. A ``Slot`` is taken before a task is created and
  given back when it ends. A synchronous call takes one too where the reference counts them
  (``sync_limited``: text to image); where it says synchronous calls are unlimited in number
  (the edit models) only the rate holds them.
- Adaptive window (synchronous attempts in flight): open at first. A 429 that says rate or
  concurrency (``RateLimitError``) shrinks it to what the service was evidently serving and
  pauses the rate gate for the Retry-After; successes widen it again by one per window's
  worth, though not back to a refused level for ``PROBE_AFTER`` seconds. A 429 answer proves
  nothing was processed, so the attempt is simply sent again (``transport``): a service
  stricter than its documentation costs seconds, never a failure or a second bill.

Keys are never stored: the registry is keyed by a SHA-256 fingerprint.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..catalog.specs import FALLBACK_REQUESTS_PER_SECOND, ModelSpec
from ..config import key_fingerprint
from ..errors import ApiError, CancelledError, RateLimitError
from ..service.retry import sleep_or_cancel
from ..state import ProcessState

log = logging.getLogger(__name__)

# Seconds added to a 1 s window (a 60 s window gets 1 %, 0.6 s): the service counts a request
# when it arrives, and the first of a process or of a new connection may leave tens of
# milliseconds after the gate let it through.
_WINDOW_MARGIN = 0.1
COUNTDOWN_FROM = 1.0  # rate waits at least this long are reported as a countdown
COUNTDOWN_STEP = 0.25  # seconds between countdown reports (under waiting.TICK)
PROBE_AFTER = 60.0  # seconds before the window grows back to a level the service refused
TASK_QUERIES_PER_SECOND = 20  # per account, from the reference
# A slot whose task was created through the low-level API and never waited for is given
# back after this long, so a forgotten task id cannot block the model for good.
SLOT_MAX_AGE = 1800.0

OnWait = Callable[[float], None]  # called with the seconds left before the next send


@dataclass(frozen=True)
class ModelLimits:
    """The figures one model's calls are held to, and where they come from."""

    requests: int  # billed POSTs per ``period``
    period: float  # seconds: 1 (per second) or 60 (per minute)
    concurrent: int  # tasks at once (and synchronous calls, when ``sync_limited``)
    sync_limited: bool  # False: synchronous calls are held by the rate only
    source: str  # "quotas API", "model table" or "fallback"

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "ModelLimits":
        """The model table's figures; the seeds' where it publishes none. Synchronous
        calls count against the slots unless the table says they do not."""
        rate = spec.rate
        if rate.requests is not None:
            requests, period, source = rate.requests, rate.period, "model table"
        else:
            requests, period, source = int(FALLBACK_REQUESTS_PER_SECOND), 1.0, "fallback"
        return cls(requests, period, spec.concurrent_tasks, rate.sync_limited is not False,
                   source)

    def describe(self) -> str:
        unit = {1.0: "second", 60.0: "minute"}.get(self.period, f"{self.period:g} s")
        sync = "" if self.sync_limited else "; synchronous calls not limited in number"
        return (f"{self.requests} requests per {unit}, {self.concurrent} tasks at "
                f"once{sync} ({self.source})")


class RateGate:
    """At most ``count`` events in any ``window`` seconds (sliding window)."""

    def __init__(self, count: int, window: float):
        self._times: collections.deque[float] = collections.deque()
        self._hold_until = 0.0
        self._lock = threading.Lock()
        self.set_rate(count, window)

    def set_rate(self, count: int, window: float) -> None:
        with self._lock:
            self.count = max(1, int(count))
            self.window = window + max(_WINDOW_MARGIN, window / 100)

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the service said its window is full)."""
        with self._lock:
            self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    def _admit(self) -> float:
        """0 after recording an event now, else the seconds until one may be sent."""
        with self._lock:
            now = time.monotonic()
            while self._times and now - self._times[0] >= self.window:
                self._times.popleft()
            if now < self._hold_until:
                return self._hold_until - now
            if len(self._times) < self.count:
                self._times.append(now)
                return 0.0
            # After a lowered count more than ``count`` may be in the window.
            return self._times[len(self._times) - self.count] + self.window - now

    def wait(self, cancel_event: threading.Event | None = None,
             what: str = "the rate limit", on_wait: OnWait | None = None) -> None:
        while True:
            delay = self._admit()
            if delay <= 0:
                return
            if on_wait is not None and delay >= COUNTDOWN_FROM:
                on_wait(delay)  # re-reported every step, so a display counts down
                delay = min(delay, COUNTDOWN_STEP)
            sleep_or_cancel(delay, cancel_event,
                            f"Cancelled while waiting for {what}; nothing was sent or billed.")


class Window:
    """How many synchronous attempts may be in flight at once; ``size`` None: no limit.

    ``in_flight`` counts the attempts holding a place (some still wait for the rate),
    ``sent`` those of them that went out and are not answered yet.
    """

    def __init__(self):
        self.size: float | None = None
        self.in_flight = 0
        self.sent = 0
        self._ceiling: int | None = None  # a refused level, not reached again until ...
        self._ceiling_until = 0.0  # ... this monotonic time

    def has_room(self) -> bool:
        return self.size is None or self.in_flight < int(self.size)

    def refused(self) -> None:
        # The service refused this attempt while the others sent went on: it serves at
        # most sent - 1 at once, as far as this process can tell.
        level = self.sent
        self._leave(True)
        self.size = float(max(1, min(self.size or math.inf, level - 1)))
        self._ceiling, self._ceiling_until = level, time.monotonic() + PROBE_AFTER

    def succeeded(self) -> None:
        self._leave(True)
        if self.size is None:
            return
        grown = self.size + 1 / self.size  # one more per window's worth of successes
        if self._ceiling is not None and time.monotonic() < self._ceiling_until:
            grown = min(grown, max(self.size, self._ceiling - 1))
        self.size = grown

    def mark_sent(self) -> None:
        self.sent += 1

    def left(self, was_sent: bool) -> None:
        """An attempt ended without telling anything about the service's limit."""
        self._leave(was_sent)

    def _leave(self, was_sent: bool) -> None:
        self.in_flight -= 1
        self.sent -= was_sent


class Slot:
    """One call's passage through its model's limiter: the task slot it holds (if it takes
    one) and its current attempt's place in the window (synchronous calls).
    ``release`` may be called many times."""

    def __init__(self, limiter: "ModelLimiter", *, holds_slot: bool, sync: bool):
        self._limiter = limiter
        self.holds_slot = holds_slot
        self.sync = sync
        self.taken_at = time.monotonic()
        self.released = False
        self._place: str | None = None  # in the window: "waiting" for the rate, or "sent"

    def before_attempt(self, cancel_event: threading.Event | None = None, *,
                       on_rate_wait: OnWait | None = None,
                       on_window_wait: Callable[[], None] | None = None) -> None:
        """Wait for the window (synchronous calls) and the rate; call before every attempt."""
        if self.sync:
            self._end_attempt(None)  # one that failed without a refusal, if any
            self._limiter.enter_window(cancel_event, on_window_wait)
            self._place = "waiting"
        self._limiter.before_post(cancel_event, on_rate_wait)
        if self.sync:
            self._limiter.update_window(Window.mark_sent)
            self._place = "sent"

    def refused(self, error: ApiError) -> None:
        """The transport's ``on_refused``: the attempt was answered with a retryable error."""
        if isinstance(error, RateLimitError):
            self._limiter.throttled(error)
            self._end_attempt(Window.refused)
        else:
            self._end_attempt(None)

    def succeeded(self) -> None:
        self._end_attempt(Window.succeeded)

    def release(self) -> None:
        self._end_attempt(None)
        if self.holds_slot:
            self._limiter.release_slot(self)

    def _end_attempt(self, outcome: Callable[[Window], None] | None) -> None:
        """Give the window place back: by ``outcome``, else as an attempt that told nothing."""
        place, self._place = self._place, None
        if place is not None:
            self._limiter.update_window(
                outcome or (lambda window: window.left(was_sent=place == "sent")))


class ModelLimiter:
    def __init__(self, model: str, limits: ModelLimits):
        self.model = model
        self.limits = limits
        self.rate = RateGate(limits.requests, limits.period)
        self.window = Window()
        self._slots: set[Slot] = set()
        self._condition = threading.Condition()

    @property
    def concurrent(self) -> int:
        return self.limits.concurrent

    def apply(self, limits: ModelLimits) -> None:
        """Hold calls to ``limits`` from now on (the quotas API told new figures)."""
        with self._condition:
            if limits == self.limits:
                return
            log.info("%s limits: %s", self.model, limits.describe())
            self.limits = limits
            self.rate.set_rate(limits.requests, limits.period)
            self._condition.notify_all()

    def acquire(self, cancel_event: threading.Event | None = None, on_wait=None, *,
                sync: bool = False) -> Slot:
        """A passage for one call: with a task slot, waiting (cancellably) while
        ``concurrent`` are taken, unless ``sync`` and synchronous calls are not limited.

        ``on_wait()`` is called once if the call has to wait, so the caller can say so.
        """
        if sync and not self.limits.sync_limited:
            return Slot(self, holds_slot=False, sync=True)

        def free() -> bool:
            self._reclaim_stale()
            return len(self._slots) < self.limits.concurrent

        with self._condition:
            self._wait_until(free, cancel_event, on_wait,
                             lambda: f"one of the {self.limits.concurrent} {self.model} tasks "
                                     "in progress to end")
            slot = Slot(self, holds_slot=True, sync=sync)
            self._slots.add(slot)
            return slot

    def _wait_until(self, ready: Callable[[], bool], cancel_event: threading.Event | None,
                    on_wait: Callable[[], None] | None, what: Callable[[], str]) -> None:
        """Wait (holding ``_condition``) until ``ready()``; ``on_wait()`` once if it has to;
        ``CancelledError`` naming ``what()`` when ``cancel_event`` is set meanwhile."""
        waited = False
        while not ready():
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            if cancel_event is not None and cancel_event.is_set():
                raise CancelledError(f"Cancelled while waiting for {what()}; nothing was sent "
                                     "or billed.")
            self._condition.wait(0.05)

    def before_post(self, cancel_event: threading.Event | None = None,
                    on_wait: OnWait | None = None) -> None:
        """Wait for the rate window; call before every attempt of a billed POST."""
        self.rate.wait(cancel_event, f"the {self.model} request rate limit", on_wait)

    def throttled(self, error: ApiError) -> None:
        """The service said its rate or concurrency limit is reached: send nothing for the
        Retry-After, or one request's share of the period."""
        pause = error.retry_after or self.limits.period / self.limits.requests
        self.rate.hold(pause)
        log.info("%s: DashScope answered %s; holding new requests %.1f s", self.model,
                 error.code, pause)

    def enter_window(self, cancel_event: threading.Event | None,
                     on_wait: Callable[[], None] | None) -> None:
        with self._condition:
            self._wait_until(self.window.has_room, cancel_event, on_wait,
                             lambda: f"a {self.model} call in progress to end")
            self.window.in_flight += 1

    def update_window(self, change: Callable[[Window], None]) -> None:
        with self._condition:
            before = self.window.size
            change(self.window)
            after = self.window.size
            if after is not None and (before is None or after < before):
                log.info("%s: DashScope accepts fewer calls at once than documented; at most "
                         "%d in flight for now", self.model, int(after))
            self._condition.notify_all()

    def release_slot(self, slot: Slot) -> None:
        with self._condition:
            if not slot.released:
                slot.released = True
                self._slots.discard(slot)
                self._condition.notify_all()

    def _reclaim_stale(self) -> None:
        now = time.monotonic()
        for slot in [s for s in self._slots if now - s.taken_at > SLOT_MAX_AGE]:
            log.warning("A %s task slot was held for %.0f s without its task being waited for; "
                        "giving it back", self.model, now - slot.taken_at)
            slot.released = True
            self._slots.discard(slot)


class Limits:
    """The limiters, query gates and held task slots of one process state."""

    def __init__(self):
        self._lock = threading.Lock()
        self.limiters: dict[tuple[str, str], ModelLimiter] = {}  # (key fingerprint, model)
        self.query_gates: dict[str, RateGate] = {}  # key fingerprint -> gate
        self._task_slots: dict[str, Slot] = {}  # task id -> slot of a low-level create_task

    def for_model(self, api_key: str, spec: ModelSpec,
                  limits: ModelLimits | None = None) -> ModelLimiter:
        """The shared limiter of (key, model), held to ``limits`` when given (a new one
        starts with the table's)."""
        key = (key_fingerprint(api_key), spec.id)
        with self._lock:
            limiter = self.limiters.get(key)
            if limiter is None:
                limiter = self.limiters[key] = ModelLimiter(
                    spec.id, limits or ModelLimits.from_spec(spec))
                return limiter
        if limits is not None:
            limiter.apply(limits)
        return limiter

    def query_gate(self, api_key: str) -> RateGate:
        fingerprint = key_fingerprint(api_key)
        with self._lock:
            gate = self.query_gates.get(fingerprint)
            if gate is None:
                gate = self.query_gates[fingerprint] = RateGate(TASK_QUERIES_PER_SECOND, 1.0)
            return gate

    def attach_task(self, task_id: str, slot: Slot) -> None:
        """Hold ``slot`` until ``task_finished(task_id)`` (low-level create_task use)."""
        with self._lock:
            self._task_slots[task_id] = slot

    def task_finished(self, task_id: str) -> None:
        with self._lock:
            slot = self._task_slots.pop(task_id, None)
        if slot is not None:
            slot.release()


ProcessState.declare("limits", Limits)  # one per process state, made on first use
