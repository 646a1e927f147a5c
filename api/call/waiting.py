"""Waiting for a call while it runs in a worker thread: progress, cancel, abandoned work.

Each generation runs in a daemon worker thread; the calling thread only waits for it,
delivers progress callbacks, and watches ``cancel_event``. That is what makes every call
interruptible within a fraction of a second even while an HTTP request is blocking, and
what keeps paid images safe: when the caller gives up on work that can no longer be
stopped (a running task, a synchronous call already sent), the worker carries on, saves
the images to the result store and logs where they went (``guarded``).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..catalog.specs import ModelSpec
from ..errors import CancelledError

log = logging.getLogger(__name__)

WAIT_STEP = 0.05  # how often the calling thread looks at cancel_event
TICK = 0.5  # progress is re-sent at least this often while waiting


@dataclass(frozen=True)
class Progress:
    stage: str  # "queued" | "preparing" (uploading, shrinking inputs) | "running" | ...
    elapsed: float  # seconds since the call started
    task_id: str | None
    fraction: float  # rough estimate, 0..1
    message: str


class Abandoned(Exception):
    """The caller's cancel_event was set while the worker was still running."""


class Job:
    """What the calling thread and the worker share about one call."""

    def __init__(self, request, spec: ModelSpec, interface: str, expected: float, *,
                 notes: list[str] | None = None, reservation=None, input_transport: str = ""):
        self.request = request
        self.spec = spec
        self.interface = interface
        self.expected = expected
        self.notes = notes if notes is not None else []
        self.reservation = reservation  # the spend guard's charge, settled by the worker
        self.input_transport = input_transport
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.abandon_event = threading.Event()  # the caller stopped waiting
        self.sent = False  # the billed POST may have reached the service
        self.finished = False
        self.task_id: str | None = None
        self.status: str | None = None
        self.stage = "queued"
        self.events: queue.SimpleQueue[Progress] = queue.SimpleQueue()

    @property
    def abandoned(self) -> bool:
        return self.abandon_event.is_set()

    def fraction(self, stage: str, elapsed: float) -> float:
        if stage == "running":
            return min(0.95, elapsed / self.expected) if self.expected > 0 else 0.0
        return {"queued": 0.0, "downloading": 0.95, "done": 1.0}.get(stage, 0.0)

    def emit(self, stage: str, message: str) -> None:
        self.stage = stage
        elapsed = time.monotonic() - self.started
        self.events.put(Progress(stage, elapsed, self.task_id, self.fraction(stage, elapsed),
                                 message))

    def mark_sent(self) -> None:
        """Called right before a billed attempt; refuses once the caller has gone."""
        with self.lock:
            if self.abandoned:
                raise CancelledError("Cancelled before the request was sent; nothing was billed.")
            self.sent = True

    def stage_message(self) -> str:
        subject = f"task {self.task_id}" if self.task_id else self.spec.id
        return {"queued": f"{subject} queued", "running": f"{subject} running",
                "downloading": "downloading images"}.get(self.stage, self.stage)


class Worker:
    """A daemon thread running one function; the caller waits on it in short steps."""

    def __init__(self, function: Callable[[], object], name: str):
        self._function = function
        self._done = threading.Event()
        self._result = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = self._function()
        except BaseException as exc:  # handed to the waiting caller, or logged if abandoned
            self._error = exc
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


def notify(on_progress: Callable[[Progress], None] | None, progress: Progress) -> None:
    if on_progress is None:
        return
    try:
        on_progress(progress)
    except Exception:  # a broken progress display must not lose a paid image
        log.exception("on_progress callback failed")


def wait_for(worker: Worker, job: Job, on_progress, cancel_event: threading.Event | None):
    """The worker's result; progress on the way; ``Abandoned`` once ``cancel_event`` is set
    (unless the work has just finished)."""
    last_sent = time.monotonic()
    while True:
        finished = worker.wait(WAIT_STEP)
        while True:
            try:
                event = job.events.get_nowait()
            except queue.Empty:
                break
            notify(on_progress, event)
            last_sent = time.monotonic()
        if finished:
            return worker.result()
        now = time.monotonic()
        if now - last_sent >= TICK:
            elapsed = now - job.started
            notify(on_progress, Progress(job.stage, elapsed, job.task_id,
                                         job.fraction(job.stage, elapsed), job.stage_message()))
            last_sent = now
        if cancel_event is not None and cancel_event.is_set():
            with job.lock:
                if not job.finished:
                    job.abandon_event.set()
            if job.abandoned:
                raise Abandoned()


def guarded(job: Job, work: Callable[[Job], object]):
    """``work(job)``, marking the job finished; logs where an abandoned job's images went."""
    try:
        result = work(job)
    except BaseException as exc:
        with job.lock:
            job.finished = True
        if job.abandoned:
            level = logging.INFO if isinstance(exc, CancelledError) else logging.WARNING
            log.log(level, "The cancelled %s run ended without images: %s", job.spec.id, exc)
        raise
    with job.lock:
        job.finished = True
    if job.abandoned:
        saved = [img.saved_path for img in result.images if img.saved_path]
        if saved:
            log.warning("The cancelled %s run finished; its %d image(s) were saved: %s",
                        job.spec.id, len(saved), ", ".join(saved))
        else:
            log.warning("The cancelled %s run finished; no result store is configured, so "
                        "its images were not saved. URLs (valid 24 hours): %s",
                        job.spec.id, " ".join(img.url for img in result.images))
    return result
