"""The Qwen-Image client: validate, send, wait, download, store.

Each generation runs in a daemon worker thread; the calling thread only waits for it,
delivers progress callbacks, and watches ``cancel_event``. That is what makes every call
interruptible within a fraction of a second even while an HTTP request is blocking, and
what keeps paid images safe: when the caller gives up on work that can no longer be
stopped (a running task, a synchronous call already sent), the worker carries on, saves
the images to the result store and logs where they went.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import requests

from .config import Config, normalize_region
from .download import Downloader
from .errors import (
    ApiError,
    AuthenticationError,
    CancelledError,
    DownloadError,
    QwenImageError,
    ServerError,
    TaskCanceledError,
    TaskFailedError,
    TaskUnknownError,
    TransportError,
    ValidationError,
)
from .limiter import ModelLimiter, attach_task, limiter_for, task_finished, task_query_gate
from .models import ASYNC, IMAGE_EDIT, SYNC, TEXT_TO_IMAGE, ModelSpec, spec_for
from .polling import ESTIMATOR, PollSchedule, service_duration
from .schema import GeneratedImage, GenerationResult, ImageEditRequest, TextToImageRequest
from .store import ResultStore, image_from_stored, request_fingerprint
from .transport import RetryPolicy, Transport, region_name
from .validation import validate

log = logging.getLogger(__name__)

SYNC_PATH = "/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "/services/aigc/text2image/image-synthesis"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
_WAIT_STEP = 0.05  # how often the calling thread looks at cancel_event
_TICK = 0.5  # progress is re-sent at least this often while waiting
CANCEL_WAIT = 1.0  # longest wait for DashScope to confirm the cancel of a queued task
# Polls keep failing (network down, 5xx) for this long before the wait gives up.
POLL_OUTAGE_LIMIT = 300.0

_TASK_HINTS = {
    "DataInspectionFailed": "The content check refused the prompt or the generated image. "
                            "Rephrase the prompt. Failed tasks are not billed.",
    "InvalidParameter": "The service refused a parameter (see the message). Failed tasks are "
                        "not billed.",
}


@dataclass(frozen=True)
class Progress:
    stage: str  # "queued" | "running" | "downloading" | "done"
    elapsed: float  # seconds since the call started
    task_id: str | None
    fraction: float  # rough estimate, 0..1
    message: str


class _Job:
    """What the calling thread and the worker share about one call."""

    def __init__(self, request, spec: ModelSpec, interface: str, expected: float):
        self.request = request
        self.spec = spec
        self.interface = interface
        self.expected = expected
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


class _Worker:
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


class QwenImageClient:
    """Text to image and image edit on DashScope.

    ``store``: every downloaded image is written there before the call returns (and
    images of cancelled runs land there too). ``session``: a ``requests.Session`` for the
    DashScope API (connection reuse, proxies). ``retry``: the backoff policy.
    """

    def __init__(self, config: Config | None = None, *, store: ResultStore | None = None,
                 session: requests.Session | None = None, retry: RetryPolicy | None = None):
        self.config = config or Config.resolve()
        self.store = store
        self.transport = Transport(self.config, session=session, retry=retry)
        self.downloader = Downloader(retry=retry)

    def __repr__(self) -> str:
        key = self.config.key_source.masked if self.config.key_source else None
        return (f"QwenImageClient(region={self.config.region!r}, "
                f"base_url={self.config.base_url!r}, key={key!r}, store={self.store!r})")

    def close(self) -> None:
        self.transport.session.close()
        self.downloader.session.close()

    def __enter__(self) -> "QwenImageClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- generation ---------------------------------------------------------------------

    def text_to_image(self, request: TextToImageRequest, *, interface: str | None = None,
                      on_progress: Callable[[Progress], None] | None = None,
                      cancel_event: threading.Event | None = None,
                      reuse: bool = False) -> GenerationResult:
        """Generate images from a prompt.

        ``interface``: "async" (task + polling; the default: cancellable while queued) or
        "sync" (one blocking call). ``reuse``: with a fixed seed and a store, an identical
        earlier request is served from disk and nothing is sent.
        """
        spec, notes = self._prepare(request, TextToImageRequest)
        interface = interface or spec.default_interface
        if interface not in spec.interfaces:
            raise ValidationError("interface", f"{interface!r} is not offered for {spec.id}",
                                  allowed=list(spec.interfaces))
        stored = self._from_store(request, notes, reuse, on_progress)
        if stored is not None:
            return stored
        self.config.api_key()  # a missing key fails here, before any work starts
        if interface == ASYNC:
            return self._run(request, spec, ASYNC, notes, self._async_work, on_progress,
                             cancel_event)
        return self._run(request, spec, SYNC, notes, self._sync_work, on_progress, cancel_event)

    def edit_image(self, request: ImageEditRequest, *,
                   on_progress: Callable[[Progress], None] | None = None,
                   cancel_event: threading.Event | None = None,
                   reuse: bool = False) -> GenerationResult:
        """Edit 1-3 images with an instruction (synchronous interface, the only one offered)."""
        spec, notes = self._prepare(request, ImageEditRequest)
        stored = self._from_store(request, notes, reuse, on_progress)
        if stored is not None:
            return stored
        self.config.api_key()
        return self._run(request, spec, SYNC, notes, self._sync_work, on_progress, cancel_event)

    # -- low-level task calls -----------------------------------------------------------

    def create_task(self, request: TextToImageRequest) -> str:
        """Create an asynchronous text-to-image task and return its id (billed if it succeeds).

        The model's concurrency slot stays taken until ``get_task``/``wait_task`` sees the
        task end or ``cancel_task`` cancels it.
        """
        spec, _ = self._prepare(request, TextToImageRequest)
        limiter = limiter_for(self.config.api_key(), spec)
        slot = limiter.acquire()
        try:
            answer = self.transport.post_billed(ASYNC_PATH, _async_body(request),
                                                asynchronous=True,
                                                before_attempt=limiter.before_post)
            task_id = _task_id(answer)
        except BaseException:
            slot.release()
            raise
        attach_task(task_id, slot)
        return task_id

    def get_task(self, task_id: str) -> dict:
        """The task's current answer (``output.task_status``, results, times, usage)."""
        return self._query(task_id)

    def cancel_task(self, task_id: str) -> dict:
        """Cancel a task that is still PENDING; nothing is billed for it."""
        answer = self.transport.post_cancel(task_id)
        task_finished(task_id)
        return answer

    def wait_task(self, task_id: str, *, model: str | None = None,
                  on_progress: Callable[[Progress], None] | None = None,
                  cancel_event: threading.Event | None = None) -> dict:
        """Poll until the task ends; return the SUCCEEDED answer or raise its ``TaskError``.

        ``model`` picks the learned duration for the poll schedule. On ``cancel_event`` the
        wait stops (``CancelledError``) but the task is left alone.
        """
        spec = spec_for(model or "qwen-image-plus", TEXT_TO_IMAGE)
        job = _Job(None, spec, ASYNC, ESTIMATOR.expected(self._duration_key(spec, ASYNC))[0])
        job.task_id = task_id
        job.sent = True
        worker = _Worker(lambda: self._poll_until_done(job, task_id, job.started,
                                                       stop_when_abandoned=True),
                         f"qwen-image-wait-{task_id[:8]}")
        try:
            return self._wait_for(worker, job, on_progress, cancel_event)
        except _Abandoned:
            raise CancelledError(
                f"Stopped waiting for task {task_id}; it continues at DashScope.",
                hint="cancel_task() cancels it while it is still queued; get_task() reads its "
                     "result for 24 hours.") from None

    def check_key(self, region: str, *, base_url: str | None = None) -> bool:
        """Whether the configured key is valid in ``region`` (a free, unbilled probe).

        Queries a random task id: a valid key gets ``200 UNKNOWN``, a key of another region
        or an invalid key gets ``401 InvalidApiKey``.
        """
        region = normalize_region(region)
        if base_url is None:
            base_url = (self.config.base_url if region == self.config.region else
                        Config.resolve(region, api_key=self.config.api_key()).base_url)
        try:
            self.transport.get(f"/tasks/{uuid.uuid4()}", base_url=base_url)
        except AuthenticationError:
            return False
        return True

    # -- the calling thread -------------------------------------------------------------

    def _prepare(self, request, expected_type) -> tuple[ModelSpec, list[str]]:
        if not isinstance(request, expected_type):
            raise ValidationError("request", f"expected a {expected_type.__name__}, got "
                                             f"{type(request).__name__}")
        notes = validate(request)
        return spec_for(request.model, request.family), notes

    def _from_store(self, request, notes: list[str], reuse: bool,
                    on_progress) -> GenerationResult | None:
        if not reuse:
            return None
        if self.store is None:
            notes.append("reuse was asked for but no result store is configured")
            return None
        if request.seed is None:
            notes.append("reuse skipped: without a fixed seed every call makes a new image")
            return None
        stored = self.store.lookup(request_fingerprint(request, self.config.region))
        if stored is None:
            return None
        meta = stored[0].metadata
        images = [image_from_stored(s) for s in stored]
        _call(on_progress, Progress("done", 0.0, meta.get("task_id"), 1.0,
                                    f"{len(images)} image(s) from the result store"))
        return GenerationResult(
            images=images, model=request.model, region=self.config.region,
            interface=meta.get("interface") or SYNC, request_id=meta.get("request_id"),
            task_id=meta.get("task_id"), orig_prompt=meta.get("orig_prompt"),
            actual_prompt=meta.get("actual_prompt"), usage=meta.get("usage") or {},
            submit_time=meta.get("submit_time"), scheduled_time=meta.get("scheduled_time"),
            end_time=meta.get("end_time"), seed=request.seed, cost_usd=0.0,
            notes=notes + [f"served from the result store ({stored[0].path.parent}); an "
                           "identical request with the same seed was made before, so nothing "
                           "was sent or billed"],
            from_store=True)

    def _duration_key(self, spec: ModelSpec, interface: str) -> tuple:
        return (self.config.base_url, spec.id, interface)

    def _run(self, request, spec: ModelSpec, interface: str, notes: list[str], work,
             on_progress, cancel_event) -> GenerationResult:
        expected = ESTIMATOR.expected(self._duration_key(spec, interface))[0]
        job = _Job(request, spec, interface, expected)
        worker = _Worker(lambda: self._guarded(job, work, notes),
                         f"qwen-image-{interface}-{spec.id}")
        try:
            result = self._wait_for(worker, job, on_progress, cancel_event)
        except _Abandoned:
            raise self._cancelled(job) from None
        _call(on_progress, Progress("done", time.monotonic() - job.started, job.task_id, 1.0,
                                    f"{len(result.images)} image(s) ready"))
        return result

    def _wait_for(self, worker: _Worker, job: _Job, on_progress, cancel_event):
        last_sent = time.monotonic()
        while True:
            finished = worker.wait(_WAIT_STEP)
            while True:
                try:
                    event = job.events.get_nowait()
                except queue.Empty:
                    break
                _call(on_progress, event)
                last_sent = time.monotonic()
            if finished:
                return worker.result()
            now = time.monotonic()
            if now - last_sent >= _TICK:
                elapsed = now - job.started
                _call(on_progress, Progress(job.stage, elapsed, job.task_id,
                                            job.fraction(job.stage, elapsed),
                                            _stage_message(job)))
                last_sent = now
            if cancel_event is not None and cancel_event.is_set():
                with job.lock:
                    if not job.finished:
                        job.abandon_event.set()
                if job.abandoned:
                    raise _Abandoned()

    def _cancelled(self, job: _Job) -> CancelledError:
        """Stop a job the caller gave up on; the message says what happens to the money."""
        with job.lock:
            sent, task_id, status = job.sent, job.task_id, job.status
        if not sent:
            return CancelledError("Cancelled before the request was sent; nothing was billed.")
        later = self._where_images_go()
        if job.interface == ASYNC:
            if task_id is None:
                return CancelledError(
                    "Cancelled while the task was being created. It is cancelled as soon as "
                    "DashScope answers; nothing is billed for a task cancelled while queued.",
                    hint=f"If it had already started by then, {later}")
            if status in (None, "PENDING", "SUSPENDED"):
                cancel = _Worker(lambda: self.cancel_task(task_id),
                                 f"qwen-image-cancel-{task_id[:8]}")
                if not cancel.wait(CANCEL_WAIT):
                    return CancelledError(
                        f"Cancelled. A cancel request for task {task_id} was sent but DashScope "
                        "has not answered yet; nothing is billed if the task was still queued "
                        "when it arrived.", hint=f"If it had already started, {later}")
                try:
                    cancel.result()
                except (ApiError, TransportError) as exc:
                    log.info("Task %s could not be cancelled (%s); it has started", task_id,
                             getattr(exc, "code", exc))
                else:
                    return CancelledError(
                        f"Cancelled. Task {task_id} was still queued and has been cancelled at "
                        "DashScope; nothing was billed.")
            return CancelledError(
                f"Cancelled. Task {task_id} had already started and cannot be stopped; "
                "DashScope bills its images when it succeeds.", hint=later)
        return CancelledError(
            "Cancelled. The synchronous request was already sent and cannot be stopped; "
            "DashScope bills its images.", hint=later)

    def _where_images_go(self) -> str:
        if self.store is not None:
            return (f"Its images will be downloaded in the background and saved to "
                    f"{self.store.directory} (the log says when).")
        return ("No result store is configured, so its images are not saved; their URLs "
                "(valid 24 hours) will be in the log. Configure a ResultStore to keep them.")

    # -- the worker ---------------------------------------------------------------------

    def _guarded(self, job: _Job, work, notes: list[str]) -> GenerationResult:
        try:
            result = work(job, notes)
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

    def _acquire(self, job: _Job, limiter: ModelLimiter):
        return limiter.acquire(
            job.abandon_event,
            on_wait=lambda: job.emit("queued", f"waiting for one of the {limiter.concurrent} "
                                               f"{job.spec.id} requests in progress to end"))

    def _before_post(self, job: _Job, limiter: ModelLimiter) -> None:
        limiter.before_post(job.abandon_event)
        with job.lock:
            if job.abandoned:
                raise CancelledError("Cancelled before the request was sent; nothing was billed.")
            job.sent = True

    def _sync_work(self, job: _Job, notes: list[str]) -> GenerationResult:
        request, spec = job.request, job.spec
        limiter = limiter_for(self.config.api_key(), spec)
        body, oss = _sync_body(request, spec)
        slot = self._acquire(job, limiter)
        try:
            job.emit("running", "generating")
            sent_at = time.monotonic()
            answer = self.transport.post_billed(
                SYNC_PATH, body, oss_resolve=oss, cancel_event=job.abandon_event,
                before_attempt=lambda: self._before_post(job, limiter))
        finally:
            slot.release()
        ESTIMATOR.record(self._duration_key(spec, SYNC), time.monotonic() - sent_at)
        urls = _sync_urls(answer)
        result = GenerationResult(
            images=[], model=spec.id, region=self.config.region, interface=SYNC,
            request_id=answer.get("request_id"), orig_prompt=request.prompt,
            usage=answer.get("usage") or {}, seed=request.seed,
            cost_usd=_cost(spec, self.config.region, answer.get("usage"), len(urls)),
            notes=notes)
        return self._collect(job, result, urls)

    def _async_work(self, job: _Job, notes: list[str]) -> GenerationResult:
        request, spec = job.request, job.spec
        limiter = limiter_for(self.config.api_key(), spec)
        slot = self._acquire(job, limiter)
        try:
            created = self.transport.post_billed(
                ASYNC_PATH, _async_body(request), asynchronous=True,
                cancel_event=job.abandon_event,
                before_attempt=lambda: self._before_post(job, limiter))
            task_id = _task_id(created)
            created_at = time.monotonic()
            with job.lock:
                job.task_id = task_id
                job.status = created["output"].get("task_status")
                cancel_now = job.abandoned
            if cancel_now:
                self._cancel_quietly(task_id)
            job.emit("queued", f"task {task_id} created")
            final = self._poll_until_done(job, task_id, created_at)
        finally:
            slot.release()
        output = final["output"]
        results = output.get("results") or []
        urls = [item["url"] for item in results if item.get("url")]
        failed = [f"image {index}: {item.get('code')}: {item.get('message')}"
                  for index, item in enumerate(results, start=1) if not item.get("url")]
        if not urls:
            raise TaskFailedError(
                f"Task {task_id} ended without any image ({'; '.join(failed) or 'no results'}).",
                task_id=task_id, status="SUCCEEDED", request_id=final.get("request_id"),
                hint="Failed images are not billed; run again.")
        notes.extend(f"{item} of task {task_id} failed (not billed)" for item in failed)
        first = next(item for item in results if item.get("url"))
        result = GenerationResult(
            images=[], model=spec.id, region=self.config.region, interface=ASYNC,
            request_id=created.get("request_id"), task_id=task_id,
            orig_prompt=first.get("orig_prompt") or request.prompt,
            actual_prompt=first.get("actual_prompt"), usage=final.get("usage") or {},
            submit_time=output.get("submit_time"), scheduled_time=output.get("scheduled_time"),
            end_time=output.get("end_time"), seed=request.seed,
            cost_usd=_cost(spec, self.config.region, final.get("usage"), len(urls)),
            notes=notes)
        return self._collect(job, result, urls)

    def _cancel_quietly(self, task_id: str) -> None:
        try:
            self.cancel_task(task_id)
            log.info("Task %s was cancelled while queued; nothing is billed", task_id)
        except (ApiError, TransportError) as exc:
            log.info("Task %s could not be cancelled (%s); its images will be kept", task_id,
                     getattr(exc, "code", exc))

    def _poll_until_done(self, job: _Job, task_id: str, created_at: float, *,
                         stop_when_abandoned: bool = False) -> dict:
        """The final answer of a task; ``stop_when_abandoned`` when nobody needs its images."""
        duration_key = self._duration_key(job.spec, ASYNC)
        schedule = PollSchedule(*ESTIMATOR.expected(duration_key))
        next_at = created_at + schedule.next_delay(0.0)
        failing_since = None
        while True:
            delay = max(0.0, next_at - time.monotonic())
            if stop_when_abandoned:
                if job.abandon_event.wait(delay):
                    raise _Abandoned()
            else:
                time.sleep(delay)
            polled_at = time.monotonic()
            try:
                answer = self._query(task_id)
            except (TransportError, ApiError) as exc:
                if isinstance(exc, ApiError) and not exc.retryable:
                    raise
                failing_since = failing_since or polled_at
                if polled_at - failing_since > POLL_OUTAGE_LIMIT:
                    raise
                log.warning("Task %s: query failed (%s); polling on", task_id, exc)
                next_at = polled_at + schedule.next_delay(polled_at - created_at)
                continue
            failing_since = None
            output = answer.get("output") or {}
            status = output.get("task_status")
            with job.lock:
                job.status = status
            if status in TERMINAL:
                break
            if status == "RUNNING":
                job.emit("running", f"task {task_id} running")
            else:
                job.emit("queued", f"task {task_id} {str(status).lower()}")
            next_at = polled_at + schedule.next_delay(polled_at - created_at)
        if status == "SUCCEEDED":
            seconds = service_duration(output) or (time.monotonic() - created_at)
            ESTIMATOR.record(self._duration_key(job.spec, ASYNC), seconds)
            return answer
        raise _task_error(task_id, status, output, answer.get("request_id"),
                          self.config.region)

    def _query(self, task_id: str) -> dict:
        gate = task_query_gate(self.config.api_key())
        answer = self.transport.get(f"/tasks/{task_id}", before_attempt=gate.wait)
        output = answer.get("output")
        if not isinstance(output, dict) or "task_status" not in output:
            raise ServerError(200, "InvalidResponse",
                              f"the task query answer has no task_status: {str(answer)[:200]}",
                              answer.get("request_id"),
                              hint="Run again; if it persists, the service's format changed.")
        if output["task_status"] in TERMINAL:
            task_finished(task_id)
        return answer

    def _collect(self, job: _Job, result: GenerationResult, urls: list[str]) -> GenerationResult:
        """Download every URL, store the images, and note the ones that failed."""
        job.emit("downloading", f"downloading {len(urls)} image(s)")
        outcomes = self.downloader.fetch_all(urls)
        result.images = [o for o in outcomes if isinstance(o, GeneratedImage)]
        failures = [o for o in outcomes if isinstance(o, DownloadError)]
        if self.store is not None and result.images:
            fingerprint = request_fingerprint(job.request, self.config.region)
            try:
                self.store.save(result, job.request, fingerprint=fingerprint)
            except OSError as exc:  # a full disk must not cost the images in hand
                log.error("Could not save %d image(s) to %s (%s); URLs (valid 24 hours): %s",
                          len(result.images), self.store.directory, exc,
                          " ".join(image.url for image in result.images))
                result.notes.append(f"the images could not be saved to the result store: {exc}")
        if failures and not result.images:
            raise failures[0]
        result.notes.extend(f"an image could not be downloaded: {f}" for f in failures)
        return result


class _Abandoned(Exception):
    """The caller's cancel_event was set while the worker was still running."""


def _call(on_progress, progress: Progress) -> None:
    if on_progress is None:
        return
    try:
        on_progress(progress)
    except Exception:  # a broken progress display must not lose a paid image
        log.exception("on_progress callback failed")


def _stage_message(job: _Job) -> str:
    subject = f"task {job.task_id}" if job.task_id else job.spec.id
    return {"queued": f"{subject} queued", "running": f"{subject} running",
            "downloading": "downloading images"}.get(job.stage, job.stage)


def _image_value(image) -> str:
    if isinstance(image, str):
        return image
    from .images import to_data_uri

    return to_data_uri(bytes(image))


def _sync_body(request, spec: ModelSpec) -> tuple[dict, bool]:
    """The multimodal-generation body, and whether an input is an oss:// name."""
    content: list[dict] = []
    oss = False
    parameters: dict = {"negative_prompt": request.negative_prompt, "n": request.n,
                        "watermark": request.watermark}
    if request.family == IMAGE_EDIT:
        for image in request.images:
            value = _image_value(image)
            oss = oss or value.startswith("oss://")
            content.append({"image": value})
        if request.size is not None:
            parameters["size"] = request.size
        if request.prompt_extend is not None and spec.prompt_extend:
            parameters["prompt_extend"] = request.prompt_extend
    else:
        parameters["size"] = request.size
        parameters["prompt_extend"] = request.prompt_extend
    if request.seed is not None:
        parameters["seed"] = request.seed
    content.append({"text": request.prompt})
    body = {"model": request.model,
            "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters}
    return body, oss


def _async_body(request: TextToImageRequest) -> dict:
    parameters = {"size": request.size, "n": request.n, "prompt_extend": request.prompt_extend,
                  "watermark": request.watermark}
    if request.seed is not None:
        parameters["seed"] = request.seed
    return {"model": request.model,
            "input": {"prompt": request.prompt, "negative_prompt": request.negative_prompt},
            "parameters": parameters}


def _task_id(answer: dict) -> str:
    task_id = (answer.get("output") or {}).get("task_id")
    if not task_id:
        raise ServerError(200, "InvalidResponse",
                          f"the task creation answer has no task id: {str(answer)[:200]}",
                          answer.get("request_id"),
                          hint="A task may have been created: check the task list in the Model "
                               "Studio console before running again.")
    return task_id


def _sync_urls(answer: dict) -> list[str]:
    try:
        content = answer["output"]["choices"][0]["message"]["content"]
        urls = [item["image"] for item in content if isinstance(item, dict) and item.get("image")]
    except (KeyError, IndexError, TypeError):
        urls = []
    if not urls:
        raise ServerError(200, "InvalidResponse",
                          f"the answer holds no image URL: {str(answer)[:300]}",
                          answer.get("request_id"),
                          hint="Run again; if it persists, report the request id.")
    return urls


def _cost(spec: ModelSpec, region: str, usage: dict | None, url_count: int) -> float | None:
    price = spec.price(region)
    if price is None:
        return None
    count = (usage or {}).get("image_count")
    count = count if isinstance(count, int) and count >= 0 else url_count
    return round(price * count, 6)


def _task_error(task_id: str, status: str | None, output: dict, request_id: str | None,
                region: str) -> QwenImageError:
    if status == "FAILED":
        code = output.get("code")
        return TaskFailedError(
            f"Task {task_id} failed: {code}: {output.get('message', '')}",
            task_id=task_id, status=status, code=code, request_id=request_id,
            hint=_TASK_HINTS.get(code or "", "Failed tasks are not billed. Run again; if it "
                                             "keeps failing, report the task id."))
    if status == "CANCELED":
        return TaskCanceledError(
            f"Task {task_id} was cancelled (while queued); nothing was billed.",
            task_id=task_id, status=status, request_id=request_id,
            hint="Run again to generate the image.")
    from .config import other_region

    return TaskUnknownError(
        f"DashScope does not know task {task_id} (status UNKNOWN).", task_id=task_id,
        status=str(status), request_id=request_id,
        hint=f"Tasks are kept for 24 hours, and a task created with a key of "
             f"{region_name(other_region(region))} cannot be seen from "
             f"{region_name(region)}. Check the id and the region.")
