"""The worker side of a call: send, follow the task, download, store, account.

``Generator`` runs in the worker thread of ``waiting``: the synchronous call
(``run_sync``), or the task's creation and polling (``run_async``), then the downloads and
the result store (``collect``). It also carries the task primitives the client's low-level
API uses (``create``, ``query``, ``cancel``). Concurrency and rate come from the process
state's limiters; the spend guard's booking is settled here from the service's usage.

Every billed request is written to the journal before it is sent and updated as it goes
(``journal``); a task creation whose answer is lost is looked for in the task list
(``recovery.TaskFinder``): adopted when exactly one task is this call's, its candidates'
images stored and reported when several could be, and sent once more when the list shows
none after the grace period. A spend-guard ledger that fails after the answer came is
reported, never allowed to cost the images.
"""
from __future__ import annotations

import logging
import math
import time

from ..catalog.pricing import cost_usd
from ..catalog.specs import ASYNC, IMAGE_EDIT, SYNC, ModelSpec
from ..config import Config, key_fingerprint
from ..errors import (
    ApiError,
    DownloadError,
    QwenImageError,
    TaskCanceledError,
    TaskError,
    TaskFailedError,
    TransportError,
    ValidationError,
)
from ..recovery.finder import TaskFinder, create_or_find
from ..schema import GeneratedImage, GenerationResult, Usage
from ..service.answers import task_error
from ..service.download import Downloader, over_pixel_cap
from ..service.quotas import model_limits
from ..service.transport import Transport, task_path
from ..service.wire import (
    SYNC_PATH,
    TaskState,
    billed_count,
    encode_body,
    messages_body,
    needs_oss_resolve,
    read_generated,
    read_task,
    task_body,
    within_asked,
)
from ..state import ProcessState
from ..storage.charges import Charges
from ..storage.durations import learned_durations
from ..storage.journal import Entry, Journal
from ..storage.store import ResultStore, request_fingerprint
from .inputs import InputPlanner
from .limiter import ModelLimiter, Slot
from .polling import service_duration
from .waiting import Abandoned, Job

log = logging.getLogger(__name__)

# Polls keep failing (network down, 5xx) for this long before the wait gives up.
POLL_OUTAGE_LIMIT = 300.0


class Generator:
    def __init__(self, config: Config, transport: Transport, downloader: Downloader,
                 store: ResultStore | None, state: ProcessState, charges: Charges,
                 journal: Journal | None = None):
        self.config = config
        self.transport = transport
        self.downloader = downloader
        self.store = store
        self.state = state
        self.durations = learned_durations(config, state)  # learning kept on disk
        self.charges = charges
        self.journal = journal
        self.inputs = InputPlanner(transport, config.region_info, state.uploads)

    def finder(self) -> TaskFinder:
        gate = self.state.limits.query_gate(self.config.api_key())
        return TaskFinder(self.transport, self.journal, self.query, gate.wait,
                          key=key_fingerprint(self.config.api_key()),
                          grace=self.config.recovery_grace)

    def limiter(self, spec: ModelSpec, cancel_event=None) -> ModelLimiter:
        """``spec``'s shared limiter, held to the account's limits (``quotas``)."""
        limits = model_limits(self.state.quotas, self.transport, spec, cancel_event)
        return self.state.limits.for_model(self.config.api_key(), spec, limits)

    def duration_key(self, spec: ModelSpec, interface: str) -> tuple:
        return (self.config.base_url, spec.id, interface)

    # -- task primitives ----------------------------------------------------------------

    def create(self, spec: ModelSpec, body: dict, *, request=None, job: Job | None = None,
               oss: bool = False, cancel_event=None,
               before_attempt=None) -> tuple[str, dict, Entry | None]:
        """Create a task: its id, the creation answer and its journal entry.

        With ``request`` and a journal, the request is journaled first, and a lost answer
        is looked for in the task list (``recovery.create_or_find``); ``job``: the call
        whose result store receives the candidates' images when several tasks could be it.
        """
        payload = encode_body(body)

        def send(before) -> dict:
            return self.transport.post_billed(spec.async_path, payload, asynchronous=True,
                                              oss_resolve=oss, cancel_event=cancel_event,
                                              before_attempt=before)

        return create_or_find(self, spec, send, request=request, job=job,
                              before_attempt=before_attempt)

    def query(self, task_id: str) -> TaskState:
        gate = self.state.limits.query_gate(self.config.api_key())
        state = read_task(self.transport.get(task_path(task_id), before_attempt=gate.wait),
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

    def cancel_for(self, job: Job, task_id: str) -> None:
        """The call was given up: cancel its task if it is still queued (nothing is billed),
        and tell the caller how that went (``Job.cancel_answered``)."""
        with job.lock:
            status = job.status
        cancelled = False
        if status in (None, "PENDING", "SUSPENDED"):
            try:
                self.cancel(task_id)
                cancelled = True
                log.info("Task %s was cancelled while queued; nothing is billed", task_id)
            except (ApiError, TransportError) as exc:
                log.info("Task %s could not be cancelled (%s); its images will be kept",
                         task_id, getattr(exc, "code", exc))
        job.cancelled = cancelled
        job.cancel_answered.set()

    def poll_until_done(self, job: Job, task_id: str, created_at: float, *,
                        stop_when_abandoned: bool = False) -> TaskState:
        """The task's SUCCEEDED state, or its error; ``stop_when_abandoned`` when nobody
        needs its images."""
        key = self.duration_key(job.spec, ASYNC)
        schedule = self.state.durations.schedule(key)
        next_at = created_at + schedule.next_delay(0.0)
        failing_since = None
        while True:
            delay = max(0.0, next_at - time.monotonic())
            if stop_when_abandoned:
                if job.abandon_event.wait(delay):
                    raise Abandoned()
            elif job.cancel_answered.is_set():
                time.sleep(delay)
            elif job.abandon_event.wait(delay):
                self.cancel_for(job, task_id)  # given up: cancelled if queued, else kept
                time.sleep(max(0.0, next_at - time.monotonic()))
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
            self.durations.record(key, seconds)
            return state
        raise task_error(task_id, state.status, state.code, state.message, state.request_id,
                         self.config.region)

    # -- the journal ----------------------------------------------------------------------

    def begin(self, request, model: str, interface: str, path: str) -> Entry | None:
        """Journal a request before it is sent (None without a journal or a request)."""
        if self.journal is None or request is None:
            return None
        return self.journal.begin_request(request, model=model, interface=interface,
                                          path=path, config=self.config, store=self.store)

    # -- whole calls --------------------------------------------------------------------

    def _before_post(self, job: Job, slot: Slot) -> None:
        slot.before_attempt(
            job.abandon_event,
            on_rate_wait=lambda left: job.emit(
                "queued", f"waiting for the model's rate limit: next call in {math.ceil(left)} s"),
            on_window_wait=lambda: job.emit(
                "queued", f"waiting for a {job.spec.id} call in progress to end (DashScope "
                          "accepts fewer at once than documented)"))
        job.mark_sent()

    def _acquire(self, job: Job, limiter: ModelLimiter) -> Slot:
        return limiter.acquire(
            job.abandon_event, sync=job.interface == SYNC,
            on_wait=lambda: job.emit("queued", f"waiting for one of the {limiter.concurrent} "
                                               f"{job.spec.id} requests in progress to end"))

    def _image_values(self, job: Job) -> list[str]:
        request = job.request
        if request.family != IMAGE_EDIT:
            return []
        overhead = len(encode_body(messages_body(request, job.spec,
                                                 [""] * len(request.images))))
        try:
            return self.inputs.values(job, overhead)
        except OSError as exc:  # Pillow on a truncated or damaged input, re-encoding it
            raise ValidationError("images", f"an input image cannot be decoded ({exc})",
                                  hint="It may be truncated or damaged; nothing was sent.") \
                from None

    def _release(self, job: Job, error: BaseException) -> None:
        """Give the booking back when nothing can have been billed: any failure before the
        request was sent (a local one included), or an error that proves it."""
        if not job.sent:
            self.charges.release(job.reservation)
        else:
            self.charges.release_unless_billed(job.reservation, error)

    def run_sync(self, job: Job) -> GenerationResult:
        request, spec = job.request, job.spec
        entry, sent = None, []  # sent: when each attempt left

        def before() -> None:
            self._before_post(job, slot)
            job.emit("running", "generating")
            sent.append(time.monotonic())

        try:  # from here on, any failure before sending gives the booking back
            limiter = self.limiter(spec, job.abandon_event)
            images = self._image_values(job)
            body = encode_body(messages_body(request, spec, images))
            slot = self._acquire(job, limiter)
            try:
                entry = self.begin(request, spec.id, SYNC, SYNC_PATH)
                answer = self.transport.post_billed(
                    SYNC_PATH, body, oss_resolve=needs_oss_resolve(images),
                    cancel_event=job.abandon_event, before_attempt=before,
                    on_refused=slot.refused)
                slot.succeeded()
            finally:
                slot.release()
        except BaseException as exc:
            if entry is not None:
                self.journal.unanswered(entry.id, sent=bool(sent), error=exc)
            self._release(job, exc)
            raise
        self.durations.record(self.duration_key(spec, SYNC), time.monotonic() - sent[-1])
        generated = read_generated(answer)
        if entry is not None:
            self.journal.succeeded(entry.id, generated.urls, sync=True)
        usage, made = self._billed(job, generated.usage, generated.urls, len(images))
        cost = cost_usd(spec, self.config.region, usage, made, len(images))
        self._settle(job, billed_count(usage, made), cost)
        result = GenerationResult(
            images=[], model=spec.id, region=self.config.region, interface=SYNC,
            request_id=generated.request_id, orig_prompt=request.prompt,
            usage=generated.raw_usage, seed=request.seed, cost_usd=cost, notes=job.notes)
        return self.collect(job, result, generated.urls, entry=entry)

    def run_async(self, job: Job) -> GenerationResult:
        request, spec = job.request, job.spec
        created = entry = None
        try:  # from here on, any failure before sending gives the booking back
            limiter = self.limiter(spec, job.abandon_event)
            images = self._image_values(job)
            slot = self._acquire(job, limiter)
            try:
                task_id, created, entry = self.create(
                    spec, task_body(request, spec, images), request=request, job=job,
                    oss=needs_oss_resolve(images), cancel_event=job.abandon_event,
                    before_attempt=lambda: self._before_post(job, slot))
                created_at = time.monotonic()
                with job.lock:
                    job.task_id = task_id
                    job.status = created["output"].get("task_status")
                    cancel_now = job.abandoned
                if cancel_now:
                    self.cancel_for(job, task_id)
                job.emit("queued", f"task {task_id} created")
                final = self.poll_until_done(job, task_id, created_at)
            finally:
                slot.release()
        except BaseException as exc:
            # Until the task exists every error proves nothing was billed (but a lost
            # answer); after that only an end without images does (a lost task may still
            # succeed, and recovery can fetch it).
            if created is None or isinstance(exc, (TaskFailedError, TaskCanceledError)):
                self._release(job, exc)
            if created is not None and isinstance(exc, TaskError) and entry is not None:
                self.journal.failed(entry.id, exc)
            raise
        return self.finish_task(job, entry, task_id, final, created.get("request_id"),
                                inputs=len(images), settle=True)

    def task_result(self, job: Job, task_id: str, final: TaskState, request_id: str | None,
                    inputs: int = 0) -> GenerationResult:
        """The result of a SUCCEEDED task, before its images are downloaded."""
        spec, request = job.spec, job.request
        if not final.urls:
            raise TaskFailedError(
                f"Task {task_id} ended without any image "
                f"({'; '.join(final.failed) or 'no results'}).",
                task_id=task_id, status="SUCCEEDED", request_id=final.request_id,
                hint="Failed images are not billed; run again.")
        usage, made = self._billed(job, final.usage, final.urls, inputs)
        cost = cost_usd(spec, self.config.region, usage, made, inputs)
        job.notes.extend(f"{item} of task {task_id} failed (not billed)" for item in final.failed)
        output = final.output
        return GenerationResult(
            images=[], model=spec.id, region=self.config.region, interface=ASYNC,
            request_id=request_id, task_id=task_id,
            orig_prompt=final.orig_prompt or request.prompt, actual_prompt=final.actual_prompt,
            usage=final.raw_usage, submit_time=output.get("submit_time"),
            scheduled_time=output.get("scheduled_time"), end_time=output.get("end_time"),
            seed=request.seed, cost_usd=cost, notes=job.notes)

    def finish_task(self, job: Job, entry: Entry | None, task_id: str, final: TaskState,
                    request_id: str | None, *, store: ResultStore | None = None,
                    inputs: int = 0, settle: bool = False,
                    index: bool = True) -> GenerationResult:
        """Account for a SUCCEEDED task (``settle``: this call's booking), then download
        and store its images (in ``store``, else the generator's; ``index``: for reuse)."""
        try:
            result = self.task_result(job, task_id, final, request_id, inputs)
        except TaskFailedError as exc:
            if settle:
                self.charges.release_unless_billed(job.reservation, exc)
            if entry is not None:
                self.journal.failed(entry.id, exc)
            raise
        if entry is not None:
            self.journal.succeeded(entry.id, final.urls)
        if settle:
            usage, made = self._billed(job, final.usage, final.urls, inputs)
            self._settle(job, billed_count(usage, made), result.cost_usd)
        return self.collect(job, result, final.urls, store=store, entry=entry, index=index)

    @staticmethod
    def _billed(job: Job, usage: Usage, urls: list[str], inputs: int) -> tuple[Usage, int]:
        """What the answer says was billed, and its URL count, each bounded by what the
        call asked for (``wire.within_asked``)."""
        return within_asked(usage, job.request.n, inputs), min(len(urls), job.request.n)

    def _settle(self, job: Job, images: int, usd: float | None) -> None:
        """Settle the booking; a ledger that fails now is reported, never allowed to cost
        the images the service has already made."""
        try:
            self.charges.settle(job.reservation, images, usd)
        except QwenImageError as exc:
            log.error("The spend guard could not record a billed call: %s", exc)
            job.notes.append(f"the spend guard's ledger could not record this call ({exc}); "
                             "its images were kept")

    def collect(self, job: Job, result: GenerationResult, urls: list[str], *,
                store: ResultStore | None = None, entry: Entry | None = None,
                index: bool = True) -> GenerationResult:
        """Download every URL, store the images (``index``: for reuse), journal where they
        went, and note the ones that failed or are too large to decode."""
        store = store or self.store
        if entry is not None and entry.doubt:  # recovery could not tell whose task it is
            index, result.doubt = False, entry.doubt
            result.notes.append(entry.doubt)
        job.emit("downloading", f"downloading {len(urls)} image(s)")
        outcomes = self.downloader.fetch_all(urls)
        result.images = [o for o in outcomes if isinstance(o, GeneratedImage)]
        failures = [o for o in outcomes if isinstance(o, DownloadError)]
        saved = True
        if store is not None and result.images:
            fingerprint = (entry.fingerprint if entry is not None else request_fingerprint(
                job.request, self.config.region)) if index else None
            try:
                store.save(result, job.request, fingerprint=fingerprint)
            except OSError as exc:  # a full disk must not cost the images in hand
                saved = False
                log.error("Could not save %d image(s) to %s (%s); URLs (valid 24 hours): %s",
                          len(result.images), store.directory, exc,
                          " ".join(image.url for image in result.images))
                result.notes.append(f"the images could not be saved to the result store: {exc}")
        missing = [url for url, outcome in zip(urls, outcomes, strict=False)
                   if isinstance(outcome, DownloadError) or not saved]
        if entry is not None:
            saved_paths = [i.saved_path for i in result.images if i.saved_path]
            if missing:
                self.journal.unfetched(entry.id, missing, saved_paths)
            else:
                self.journal.stored(entry.id, saved_paths)
        oversized = [image for image in result.images if over_pixel_cap(image)]
        for image in oversized:
            result.images.remove(image)
            result.notes.append(f"an image of {image.width}x{image.height} is too large to "
                                f"decode: kept as sent ({image.saved_path or image.url})")
        if oversized and not result.images:
            raise DownloadError(f"The result is {'; '.join(result.notes[-len(oversized):])}.",
                                hint="Open the stored file with an image viewer.")
        if failures and not result.images:
            raise failures[0]
        result.notes.extend(f"an image could not be downloaded: {f}" for f in failures)
        return result

