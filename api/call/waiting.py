"""One call in flight: its worker thread, the loop that waits for it, progress and cancel.

A call's HTTP work (send, poll, download, store) runs in one daemon worker thread; the
caller only waits for it, in one loop (``Running.wait`` for the Python API and the command
line; ComfyUI's nodes run the same steps for all their calls in their own asyncio loop,
``nodes.runner``). That is what makes every call interruptible within a fraction of a
second even while an HTTP request is blocking, and what keeps paid images safe: when the
caller gives up on work that can no longer be stopped (a running task, a synchronous call
already sent), the worker carries on, saves the images to the result store and logs where
they went (``guarded``). A task still queued when the caller gives up is cancelled by the
worker itself (``Job.abandon_event``), so no second thread is needed for it.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..catalog.specs import SYNC, ModelSpec
from ..errors import CancelledError

log = logging.getLogger(__name__)

WAIT_STEP = 0.05  # how often the calling thread looks at cancel_event
TICK = 0.5  # progress is re-sent at least this often while waiting
CANCEL_WAIT = 1.0  # longest wait for DashScope to confirm the cancel of a queued task


@dataclass(frozen=True)
class Progress:
    stage: str  # "queued" | "preparing" (uploading, shrinking inputs) | "running" | ...
    elapsed: float  # seconds since the call started
    task_id: str | None
    fraction: float  # rough estimate, 0..1
    message: str


class Abandoned(Exception):
    """In the worker of ``wait_task``: the caller stopped waiting (the task is left alone)."""


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
        # Set by the worker once it has asked DashScope to cancel the queued task of an
        # abandoned call; ``cancelled``: whether DashScope accepted (nothing billed).
        self.cancel_answered = threading.Event()
        self.cancelled: bool | None = None

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
    """A daemon thread running one function; the caller waits on it in short steps.

    ``on_done()`` is called in the worker thread once the function has returned or raised
    (an asyncio caller uses it to wake up at once)."""

    def __init__(self, function: Callable[[], object], name: str,
                 on_done: Callable[[], None] | None = None):
        self._function = function
        self._on_done = on_done
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
            if self._on_done is not None:
                self._on_done()

    @property
    def done(self) -> bool:
        return self._done.is_set()

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


class Running:
    """A call in flight: the worker doing its HTTP work and the job it shares with the caller.

    ``progress()`` gives what to show since the last look (the worker's events, or a tick
    every ``TICK`` while nothing happens); ``done``/``result()`` the outcome; ``abandon()``
    gives the call up and returns the ``CancelledError`` that says what happens to the money.
    ``Running.ready`` wraps a result that needed no work (one from the result store).
    """

    def __init__(self, job: Job | None, worker: Worker | None, *, result=None,
                 where_images_go: str = "", keeps_images: bool = False,
                 explain: Callable[[BaseException], BaseException] | None = None,
                 given_up: Callable[[], CancelledError] | None = None):
        self.job = job
        self.worker = worker
        self.extra = None  # what the caller's ``after(result)`` made of the result
        self._ready = result
        self._where_images_go = where_images_go
        self._keeps_images = keeps_images
        self._explain = explain
        self._given_up = given_up or self._cancelled
        self._last_shown = time.monotonic()
        self._ended = False  # the final "done" progress was given

    @classmethod
    def ready(cls, result) -> "Running":
        return cls(None, None, result=result)

    @property
    def done(self) -> bool:
        return self.worker is None or self.worker.done

    def result(self):
        """The worker's result, or its error (an error ``explain`` can improve, improved)."""
        if self.worker is None:
            return self._ready
        try:
            return self.worker.result()
        except BaseException as exc:
            better = self._explain(exc) if self._explain is not None else exc
            if better is exc:
                raise
            raise better from None

    def progress(self) -> list[Progress]:
        if self.done and not self._ended:
            self._ended = True
            return self._drain() + self._end()
        if self.job is None:
            return []
        shown = self._drain()
        now = time.monotonic()
        if shown:
            self._last_shown = now
        elif now - self._last_shown >= TICK:
            job, elapsed = self.job, now - self.job.started
            shown.append(Progress(job.stage, elapsed, job.task_id,
                                  job.fraction(job.stage, elapsed), job.stage_message()))
            self._last_shown = now
        return shown

    def _drain(self) -> list[Progress]:
        shown = []
        if self.job is None:
            return shown
        while True:
            try:
                shown.append(self.job.events.get_nowait())
            except queue.Empty:
                return shown

    def _end(self) -> list[Progress]:
        """The last progress of a call that ended with images."""
        try:
            result = self.result()
        except BaseException:  # the caller meets the error through result()
            return []
        if self.worker is None:
            return [Progress("done", 0.0, result.task_id, 1.0,
                             f"{len(result.images)} image(s) from the result store")]
        if not hasattr(result, "images"):  # wait_task's answer
            return []
        return [Progress("done", time.monotonic() - self.job.started, self.job.task_id, 1.0,
                         f"{len(result.images)} image(s) ready")]

    def give_up(self) -> bool:
        """Give the call up: the worker stops what can still be stopped (a request not sent,
        a task still queued, which it cancels at DashScope). False when it had just finished."""
        job = self.job
        if job is None:
            return False
        with job.lock:
            if job.finished:
                return False
            job.abandon_event.set()
        return True

    def abandon(self) -> CancelledError | None:
        """``give_up``, and the ``CancelledError`` that says what happens to the money (it may
        wait up to ``CANCEL_WAIT`` for DashScope to confirm the cancel of a queued task).
        None when the call had just finished."""
        return self._given_up() if self.give_up() else None

    def wait(self, on_progress: Callable[[Progress], None] | None = None,
             cancel_event: threading.Event | None = None):
        """The one loop that waits: progress on the way, the result at the end; on
        ``cancel_event`` the call is given up (``CancelledError``) unless it has just
        finished."""
        while True:
            finished = self.worker is None or self.worker.wait(WAIT_STEP)
            for event in self.progress():
                notify(on_progress, event)
            if finished:
                return self.result()
            if cancel_event is not None and cancel_event.is_set():
                error = self.abandon()
                if error is not None:
                    raise error

    def _cancelled(self) -> CancelledError:
        """What happens to the money of a call given up now. Where work goes on that cannot
        be stopped and its images will be stored, the error carries the worker as
        ``background`` (a command line keeps its promise to save the images by waiting)."""
        job = self.job
        with job.lock:
            sent, task_id, status = job.sent, job.task_id, job.status
        if not sent:
            return CancelledError("Cancelled before the request was sent; nothing was billed.")
        later = self._where_images_go
        going_on = dict(task_id=task_id, background=self.worker if self._keeps_images else None)
        if job.interface == SYNC:
            return CancelledError(
                "Cancelled. The synchronous request was already sent and cannot be stopped; "
                "DashScope bills its images.", hint=later, **going_on)
        if task_id is None:
            return CancelledError(
                "Cancelled while the task was being created. It is cancelled as soon as "
                "DashScope answers; nothing is billed for a task cancelled while queued.",
                hint=f"If it had already started by then, {later}", **going_on)
        if status in (None, "PENDING", "SUSPENDED"):
            if not job.cancel_answered.wait(CANCEL_WAIT):
                return CancelledError(
                    f"Cancelled. A cancel request for task {task_id} was sent but DashScope "
                    "has not answered yet; nothing is billed if the task was still queued "
                    "when it arrived.", hint=f"If it had already started, {later}", **going_on)
            if job.cancelled:
                return CancelledError(
                    f"Cancelled. Task {task_id} was still queued and has been cancelled at "
                    "DashScope; nothing was billed.", task_id=task_id)
        return CancelledError(
            f"Cancelled. Task {task_id} had already started and cannot be stopped; "
            "DashScope bills its images when it succeeds.", hint=later, **going_on)


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
