"""Asynchronous tasks: the scheduler with its queue per (key, model), and task documents.

At most the model's async_user_concurrency_limit (limits.py; default 2) tasks per (key,
model) run at once, always (it is queueing, not an error); later ones stay PENDING in
submission order; with an async_user_queue_limit, a creation that finds that many waiting
gets 429 Throttling. A task runs ``latency`` seconds (the value when it starts), then
SUCCEEDED or FAILED. Only a PENDING task can be canceled. A task is visible to every key of
the account that created it, in the task's region (accounts.py), while it has not ended
more than ``result_ttl`` seconds ago; any other look-up finds nothing (the query answers
UNKNOWN).

Task documents (``GET {base}/tasks/{id}``, the "output" object): task_id, task_status,
submit_time, scheduled_time (once started), end_time (once ended), code/message (FAILED).
Tasks of text2image/image-synthesis add results (SUCCEEDED: [{url, orig_prompt,
actual_prompt}], actual_prompt only with prompt_extend) and task_metrics {TOTAL, SUCCEEDED,
FAILED}; once SUCCEEDED the answer's usage is {image_count}. Tasks of
image-generation/generation (3.0) add, once SUCCEEDED, rewrite_status and choices whose
items are {"image": url, "type": "image"}, and the answer's usage is the qima one
(answers.py). Times are UTC+8 "YYYY-MM-DD HH:mm:ss.SSS".
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import answers, images, rules
from .accounts import Key
from .catalog import MODELS
from .errors import ApiError
from .state import Bucket, Shared
from .validate import Drawing

log = logging.getLogger(__name__)


SYNTHESIS, GENERATION = "image-synthesis", "image-generation"  # the two task APIs


@dataclass
class Task:
    id: str
    api: str  # SYNTHESIS or GENERATION
    key: Key
    model: str
    job: Drawing
    request: dict[str, Any]
    submitted: float
    request_id: str  # of the creating request, as the task list shows it
    failure: tuple[str, str] | None = None  # (code, message) from a task_failed fault
    oversize: tuple[int, int] | None = None  # from an oversized fault: the images' real size
    status: str = "PENDING"
    scheduled: float | None = None
    ended: float | None = None
    urls: list[str] = field(default_factory=list)

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def region(self) -> str:
        return self.key.region


@dataclass
class _Group:
    """The tasks of one (key, model): the unit of the concurrency limit."""

    queue: deque[Task] = field(default_factory=deque)
    running: int = 0

    def pending(self) -> int:
        return sum(task.status == "PENDING" for task in self.queue)


class Scheduler:
    """Queues tasks per (key, model) and runs them on threads; *publish* stores a result PNG
    and returns its URL (called with the lock held)."""

    def __init__(self, shared: Shared, publish: Callable[[bytes], str],
                 quotas: dict[str, dict[str, Any]]) -> None:
        self._shared, self._publish, self._quotas = shared, publish, quotas
        self._tasks: dict[str, Task] = {}
        self._groups: dict[Bucket, _Group] = {}

    def ensure_room(self, key_id: str, model: str) -> None:
        """429 Throttling if the queue of (key_id, model) is full (call with the lock held)."""
        limit = self._quotas[model]["async_user_queue_limit"]
        group = self._groups.get((key_id, model))
        if limit is not None and group is not None and group.pending() >= limit:
            raise ApiError("Throttling", rules.QUEUE_FULL, headers={"Retry-After": "1"})

    def submit(self, task: Task) -> None:
        shared = self._shared
        with shared.lock:
            self._tasks[task.id] = task
            bucket = (task.key_id, task.model)
            group = self._groups.setdefault(bucket, _Group())
            group.queue.append(task)
            shared.stats.add("tasks_created")
            shared.stats.peak("max_outstanding_tasks", bucket, group.running + group.pending())
            self._dispatch(bucket)

    def visible(self, task_id: str, key: Key) -> Task | None:
        """The task if this key may see it and it is not forgotten (call with the lock held)."""
        task = self._tasks.get(task_id)
        return task if task is not None and self._sees(key, task) else None

    def visible_tasks(self, key: Key) -> list[Task]:
        """Every task this key may see, oldest first (call with the lock held)."""
        return [task for task in self._tasks.values() if self._sees(key, task)]

    def _sees(self, key: Key, task: Task) -> bool:
        if task.key.account != key.account or task.region != key.region:
            return False
        # The service keeps task data as long as result URLs live.
        return (task.ended is None
                or self._shared.now() <= task.ended + self._shared.settings.result_ttl)

    def cancel(self, task: Task) -> bool:
        """Cancel a PENDING task (call with the lock held); False for any other status."""
        if task.status != "PENDING":
            return False
        task.status, task.ended = "CANCELED", self._shared.now()  # _dispatch skips it in the queue
        return True

    def snapshot(self) -> list[dict[str, Any]]:
        """Every task as a plain dict (Emulator.tasks)."""
        with self._shared.lock:
            return [
                {"id": t.id, "model": t.model, "status": t.status, "key_id": t.key_id,
                 "region": t.region, "submit_time": t.submitted, "scheduled_time": t.scheduled,
                 "end_time": t.ended, "seed": t.job.seed, "urls": list(t.urls),
                 "failure": t.failure, "request": _copy(t.request)}
                for t in self._tasks.values()
            ]

    def reseed_peaks(self) -> None:
        """After the statistics are cleared, the peaks restart from what runs now."""
        with self._shared.lock:
            for bucket, group in self._groups.items():
                if group.running or group.queue:
                    self._shared.stats.peaks["max_concurrent_tasks"][bucket] = group.running
                    self._shared.stats.peaks["max_outstanding_tasks"][bucket] = (
                        group.running + group.pending())

    def _dispatch(self, bucket: Bucket) -> None:
        """Start queued tasks of one (key, model) while it has free slots (lock held)."""
        group = self._groups[bucket]
        limit = self._quotas[bucket[1]]["async_user_concurrency_limit"]  # None: no limit
        while (limit is None or group.running < limit) and group.queue:
            task = group.queue.popleft()
            if task.status != "PENDING":  # canceled while queued
                continue
            task.status, task.scheduled = "RUNNING", self._shared.now()
            group.running += 1
            self._shared.stats.peak("max_concurrent_tasks", bucket, group.running)
            threading.Thread(target=self._run, args=(task, self._shared.settings.latency),
                             daemon=True, name=f"task-{task.id[:8]}").start()

    def _run(self, task: Task, latency: float) -> None:
        started, pngs, failure = time.monotonic(), [], task.failure
        if failure is None:
            try:
                pngs = images.render(task.job, self._shared.settings.rgba)
                if task.oversize:
                    pngs = [images.enlarge(png, task.oversize) for png in pngs]
            except Exception:
                log.exception("rendering task %s failed", task.id)
                failure = ("InternalError.Algo", rules.MESSAGES["InternalError.Algo"])
        if self._shared.stopping.wait(max(0.0, latency - (time.monotonic() - started))):
            return
        with self._shared.lock:
            task.ended = self._shared.now()
            if failure:
                task.status, task.failure = "FAILED", failure
            else:
                task.status, task.urls = "SUCCEEDED", [self._publish(png) for png in pngs]
                self._shared.stats.add("images_billed", len(pngs))
            bucket = (task.key_id, task.model)
            self._groups[bucket].running -= 1
            self._dispatch(bucket)


def document(task: Task) -> dict[str, Any]:
    """The "output" of a task query (call with the lock held)."""
    doc: dict[str, Any] = {"task_id": task.id, "task_status": task.status,
                           "submit_time": utc8(task.submitted)}
    if task.scheduled is not None:
        doc["scheduled_time"] = utc8(task.scheduled)
    if task.ended is not None:
        doc["end_time"] = utc8(task.ended)
    if task.status == "FAILED" and task.failure:
        doc["code"], doc["message"] = task.failure
    if task.api == GENERATION:
        if task.status == "SUCCEEDED":
            doc["rewrite_status"] = task.job.rewrite_status
            doc["choices"] = answers.choices(task.urls, typed=True)
        return doc
    n = task.job.n
    if task.status == "SUCCEEDED":
        extend = {"actual_prompt": task.job.actual_prompt} if task.job.prompt_extend else {}
        doc["results"] = [{"url": url, "orig_prompt": task.job.prompt, **extend}
                          for url in task.urls]
        doc["task_metrics"] = {"TOTAL": n, "SUCCEEDED": n, "FAILED": 0}
    elif task.status == "FAILED":
        doc["task_metrics"] = {"TOTAL": n, "SUCCEEDED": 0, "FAILED": n}
    else:
        doc["task_metrics"] = {"TOTAL": n, "SUCCEEDED": 0, "FAILED": 0}
    return doc


def usage(task: Task) -> dict[str, Any] | None:
    """The usage block of a task query answer: only once SUCCEEDED."""
    if task.status != "SUCCEEDED":
        return None
    if task.api == GENERATION:
        return answers.usage(task.job, MODELS[task.model], len(task.urls))
    return {"image_count": len(task.urls)}


def utc8(timestamp: float) -> str:
    """A task time as the service writes it: UTC+8, milliseconds."""
    moment = datetime.fromtimestamp(timestamp, rules.UTC8)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _copy(obj: Any) -> Any:
    """A deep copy of a JSON document."""
    return json.loads(json.dumps(obj))
