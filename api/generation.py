"""The worker side of a call: send, follow the task, download, store, account.

``Generator`` runs in the worker thread of ``waiting``: the synchronous call
(``run_sync``), or the task's creation and polling (``run_async``), then the downloads and
the result store (``collect``). It also carries the task primitives the client's low-level
API uses (``create``, ``query``, ``cancel``). Concurrency and rate come from the process
state's limiters; the spend guard's booking is settled here from the service's usage.
"""
from __future__ import annotations

import logging
import time

from .charges import Charges
from .config import Config
from .download import Downloader
from .errors import (
    ApiError,
    DownloadError,
    TaskCanceledError,
    TaskFailedError,
    TransportError,
)
from .inputs import InputPlanner
from .limiter import ModelLimiter
from .models import ASYNC, IMAGE_EDIT, SYNC, ModelSpec
from .polling import PollSchedule, service_duration
from .pricing import cost_usd
from .schema import GeneratedImage, GenerationResult
from .service_errors import task_error
from .state import ProcessState
from .store import ResultStore, request_fingerprint
from .transport import Transport
from .waiting import Abandoned, Job
from .wire import (
    SYNC_PATH,
    TaskState,
    billed_count,
    encode_body,
    messages_body,
    needs_oss_resolve,
    read_created,
    read_generated,
    read_task,
    text2image_body,
)

log = logging.getLogger(__name__)

# Polls keep failing (network down, 5xx) for this long before the wait gives up.
POLL_OUTAGE_LIMIT = 300.0


def task_body(request, spec: ModelSpec, images: list[str] = ()) -> dict:
    """The body of ``spec``'s asynchronous path."""
    if spec.async_path.startswith("/services/aigc/text2image/"):
        return text2image_body(request, spec)
    return messages_body(request, spec, images)


class Generator:
    def __init__(self, config: Config, transport: Transport, downloader: Downloader,
                 store: ResultStore | None, state: ProcessState, charges: Charges):
        self.config = config
        self.transport = transport
        self.downloader = downloader
        self.store = store
        self.state = state
        self.charges = charges
        self.inputs = InputPlanner(transport, config.region_info, state.uploads)

    def limiter(self, spec: ModelSpec) -> ModelLimiter:
        return self.state.limits.for_model(self.config.api_key(), spec)

    def duration_key(self, spec: ModelSpec, interface: str) -> tuple:
        return (self.config.base_url, spec.id, interface)

    # -- task primitives ----------------------------------------------------------------

    def create(self, spec: ModelSpec, body: dict, *, oss: bool = False, cancel_event=None,
               before_attempt=None) -> tuple[str, dict]:
        """Create a task; its id and the creation answer."""
        answer = self.transport.post_billed(spec.async_path, encode_body(body),
                                            asynchronous=True, oss_resolve=oss,
                                            cancel_event=cancel_event,
                                            before_attempt=before_attempt)
        return read_created(answer), answer

    def query(self, task_id: str) -> TaskState:
        gate = self.state.limits.query_gate(self.config.api_key())
        state = read_task(self.transport.get(f"/tasks/{task_id}", before_attempt=gate.wait),
                          task_id)
        if state.terminal:
            self.state.limits.task_finished(task_id)
            self.charges.close_task(task_id, state)
        return state

    def cancel(self, task_id: str) -> dict:
        answer = self.transport.post_cancel(task_id)
        self.state.limits.task_finished(task_id)
        self.charges.close_task(task_id, None)
        return answer

    def cancel_quietly(self, task_id: str) -> None:
        try:
            self.cancel(task_id)
            log.info("Task %s was cancelled while queued; nothing is billed", task_id)
        except (ApiError, TransportError) as exc:
            log.info("Task %s could not be cancelled (%s); its images will be kept", task_id,
                     getattr(exc, "code", exc))

    def poll_until_done(self, job: Job, task_id: str, created_at: float, *,
                        stop_when_abandoned: bool = False) -> TaskState:
        """The task's SUCCEEDED state, or its error; ``stop_when_abandoned`` when nobody
        needs its images."""
        durations = self.state.durations
        key = self.duration_key(job.spec, ASYNC)
        schedule = PollSchedule(*durations.expected(key))
        next_at = created_at + schedule.next_delay(0.0)
        failing_since = None
        while True:
            delay = max(0.0, next_at - time.monotonic())
            if stop_when_abandoned:
                if job.abandon_event.wait(delay):
                    raise Abandoned()
            else:
                time.sleep(delay)
            polled_at = time.monotonic()
            try:
                state = self.query(task_id)
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
            with job.lock:
                job.status = state.status
            if state.terminal:
                break
            if state.status == "RUNNING":
                job.emit("running", f"task {task_id} running")
            else:
                job.emit("queued", f"task {task_id} {state.status.lower()}")
            next_at = polled_at + schedule.next_delay(polled_at - created_at)
        if state.status == "SUCCEEDED":
            seconds = service_duration(state.output) or (time.monotonic() - created_at)
            durations.record(key, seconds)
            return state
        raise task_error(task_id, state.status, state.code, state.message, state.request_id,
                         self.config.region)

    # -- whole calls --------------------------------------------------------------------

    def _before_post(self, job: Job, limiter: ModelLimiter) -> None:
        limiter.before_post(job.abandon_event)
        job.mark_sent()

    def _acquire(self, job: Job, limiter: ModelLimiter):
        return limiter.acquire(
            job.abandon_event,
            on_wait=lambda: job.emit("queued", f"waiting for one of the {limiter.concurrent} "
                                               f"{job.spec.id} requests in progress to end"))

    def _image_values(self, job: Job) -> list[str]:
        request = job.request
        if request.family != IMAGE_EDIT:
            return []
        overhead = len(encode_body(messages_body(request, job.spec,
                                                 [""] * len(request.images))))
        return self.inputs.values(job, overhead)

    def run_sync(self, job: Job) -> GenerationResult:
        request, spec = job.request, job.spec
        limiter = self.limiter(spec)
        try:
            images = self._image_values(job)
            body = encode_body(messages_body(request, spec, images))
            slot = self._acquire(job, limiter)
            try:
                job.emit("running", "generating")
                sent_at = time.monotonic()
                answer = self.transport.post_billed(
                    SYNC_PATH, body, oss_resolve=needs_oss_resolve(images),
                    cancel_event=job.abandon_event,
                    before_attempt=lambda: self._before_post(job, limiter))
            finally:
                slot.release()
        except BaseException as exc:
            self.charges.release_unless_billed(job.reservation, exc)
            raise
        self.state.durations.record(self.duration_key(spec, SYNC), time.monotonic() - sent_at)
        generated = read_generated(answer)
        cost = cost_usd(spec, self.config.region, generated.usage, len(generated.urls),
                        len(images))
        self.charges.settle(job.reservation, billed_count(generated.usage, len(generated.urls)), cost)
        result = GenerationResult(
            images=[], model=spec.id, region=self.config.region, interface=SYNC,
            request_id=generated.request_id, orig_prompt=request.prompt,
            usage=generated.raw_usage, seed=request.seed, cost_usd=cost, notes=job.notes)
        return self.collect(job, result, generated.urls)

    def run_async(self, job: Job) -> GenerationResult:
        request, spec = job.request, job.spec
        limiter = self.limiter(spec)
        created = None
        try:
            images = self._image_values(job)
            slot = self._acquire(job, limiter)
            try:
                task_id, created = self.create(
                    spec, task_body(request, spec, images), oss=needs_oss_resolve(images),
                    cancel_event=job.abandon_event,
                    before_attempt=lambda: self._before_post(job, limiter))
                created_at = time.monotonic()
                with job.lock:
                    job.task_id = task_id
                    job.status = created["output"].get("task_status")
                    cancel_now = job.abandoned
                if cancel_now:
                    self.cancel_quietly(task_id)
                job.emit("queued", f"task {task_id} created")
                final = self.poll_until_done(job, task_id, created_at)
            finally:
                slot.release()
            if not final.urls:
                raise TaskFailedError(
                    f"Task {task_id} ended without any image "
                    f"({'; '.join(final.failed) or 'no results'}).",
                    task_id=task_id, status="SUCCEEDED", request_id=final.request_id,
                    hint="Failed images are not billed; run again.")
        except BaseException as exc:
            # Until the task exists every error proves nothing was billed; after that only
            # an end without images does (a lost task may still succeed).
            if created is None or isinstance(exc, (TaskFailedError, TaskCanceledError)):
                self.charges.release_unless_billed(job.reservation, exc)
            raise
        cost = cost_usd(spec, self.config.region, final.usage, len(final.urls), len(images))
        self.charges.settle(job.reservation, billed_count(final.usage, len(final.urls)), cost)
        job.notes.extend(f"{item} of task {task_id} failed (not billed)" for item in final.failed)
        output = final.output
        result = GenerationResult(
            images=[], model=spec.id, region=self.config.region, interface=ASYNC,
            request_id=created.get("request_id"), task_id=task_id,
            orig_prompt=final.orig_prompt or request.prompt, actual_prompt=final.actual_prompt,
            usage=final.raw_usage, submit_time=output.get("submit_time"),
            scheduled_time=output.get("scheduled_time"), end_time=output.get("end_time"),
            seed=request.seed, cost_usd=cost, notes=job.notes)
        return self.collect(job, result, final.urls)

    def collect(self, job: Job, result: GenerationResult, urls: list[str]) -> GenerationResult:
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

