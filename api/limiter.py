"""Client-side rate and concurrency limits, shared by every client of the process.

DashScope limits each account per model (the reference's "計費與限流": task submissions
per second, tasks in progress at once) and task queries to 20 per second per account.
The pack keeps under those limits itself instead of learning them from 429s: one
``ModelLimiter`` per (key fingerprint, model) lives in ``Limits``, held by the process state
(``state.ProcessState``), so two nodes, two clients or two threads using the same key
share it. 429s caused by other
processes are left to the transport's backoff.

- Rate: at most ``spec.requests_per_second`` billed POSTs (every attempt, retries too)
  in any sliding window, with a small margin so that network jitter cannot make two
  windows look like one at the server.
- Concurrency: a ``Slot`` is taken before a task is created (or a synchronous call is
  sent) and released when the task reaches a terminal status or the call returns.

Keys are never stored: the registry is keyed by a SHA-256 fingerprint.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from .config import key_fingerprint
from .errors import CancelledError
from .models import ModelSpec
from .retry import sleep_or_cancel

log = logging.getLogger(__name__)

_WINDOW_MARGIN = 0.05  # seconds added to every window
TASK_QUERIES_PER_SECOND = 20  # per account, from the reference
# A slot whose task was created through the low-level API and never waited for is given
# back after this long, so a forgotten task id cannot block the model for good.
SLOT_MAX_AGE = 1800.0


class RateGate:
    """At most ``count`` events in any ``window`` seconds (sliding window)."""

    def __init__(self, count: int, window: float):
        self.count = count
        self.window = window + _WINDOW_MARGIN
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    @classmethod
    def per_second(cls, rate: float) -> "RateGate":
        # Below one per second (e.g. 2 per minute), one event per 1/rate seconds.
        if rate >= 1:
            return cls(int(rate), 1.0)
        return cls(1, 1.0 / rate)

    def wait(self, cancel_event: threading.Event | None = None,
             what: str = "the rate limit") -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._times and now - self._times[0] >= self.window:
                    self._times.popleft()
                if len(self._times) < self.count:
                    self._times.append(now)
                    return
                delay = self._times[0] + self.window - now
            sleep_or_cancel(delay, cancel_event,
                            f"Cancelled while waiting for {what}; nothing was sent or billed.")


class Slot:
    """One task or synchronous generation in flight; ``release`` may be called many times."""

    def __init__(self, limiter: "ModelLimiter"):
        self._limiter = limiter
        self.taken_at = time.monotonic()
        self.released = False

    def release(self) -> None:
        self._limiter._release(self)


class ModelLimiter:
    def __init__(self, spec: ModelSpec):
        self.model = spec.id
        self.concurrent = max(1, int(spec.concurrent_tasks))
        self.rate = RateGate.per_second(spec.requests_per_second)
        self._slots: set[Slot] = set()
        self._condition = threading.Condition()

    def acquire(self, cancel_event: threading.Event | None = None, on_wait=None) -> Slot:
        """A free slot; waits (cancellably) while ``concurrent`` are taken.

        ``on_wait()`` is called once if the call has to wait, so the caller can say so.
        """
        waited = False
        with self._condition:
            while True:
                self._reclaim_stale()
                if len(self._slots) < self.concurrent:
                    slot = Slot(self)
                    self._slots.add(slot)
                    return slot
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                if cancel_event is not None and cancel_event.is_set():
                    raise CancelledError(
                        f"Cancelled while waiting for one of the {self.concurrent} "
                        f"{self.model} tasks in progress to end; nothing was sent or billed.")
                self._condition.wait(0.05)

    def before_post(self, cancel_event: threading.Event | None = None) -> None:
        """Wait for the rate window; call before every attempt of a billed POST."""
        self.rate.wait(cancel_event, f"the {self.model} request rate limit")

    def _release(self, slot: Slot) -> None:
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

    def for_model(self, api_key: str, spec: ModelSpec) -> ModelLimiter:
        key = (key_fingerprint(api_key), spec.id)
        with self._lock:
            limiter = self.limiters.get(key)
            if limiter is None:
                limiter = self.limiters[key] = ModelLimiter(spec)
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
