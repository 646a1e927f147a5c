"""The Qwen-Image client: validate, send, wait, download, store.

Each generation runs in a daemon worker thread; the calling thread only waits for it,
delivers progress callbacks, and watches ``cancel_event``. That is what makes every call
interruptible within a fraction of a second even while an HTTP request is blocking, and
what keeps paid images safe: when the caller gives up on work that can no longer be
stopped (a running task, a synchronous call already sent), the worker carries on, saves
the images to the result store and logs where they went.

Edit inputs ride as data URIs while the JSON body stays within ``REQUEST_BODY_TARGET``.
Beyond it they go through DashScope's temporary storage where the region has it (Beijing,
``uploads``), and are otherwise re-encoded to share the body (lossless first, then
downscaled), with a note and a log line saying what was done; ``input_transport`` forces
either way. A spend guard (``budget``) is charged before every billed request and settled
after it. A key refused with InvalidApiKey is tried once in the other region, so the error
can say where it belongs.
"""
from __future__ import annotations

import base64
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import requests

from .budget import BudgetStatus, Reservation, SpendGuard
from .config import REGIONS, Config, normalize_region, other_region, region_env_suffix
from .download import Downloader
from .errors import (
    AmbiguousRequestError,
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
from .images import shrink_to_fit, to_data_uri
from .limiter import (
    ModelLimiter,
    attach_task,
    key_fingerprint,
    limiter_for,
    task_finished,
    task_query_gate,
)
from .models import (
    ASYNC,
    IMAGE_EDIT,
    INPUT_TRANSPORTS,
    REQUEST_BODY_TARGET,
    SYNC,
    TEXT_TO_IMAGE,
    ModelSpec,
    spec_for,
)
from .polling import ESTIMATOR, PollSchedule, service_duration
from .schema import GeneratedImage, GenerationResult, ImageEditRequest, TextToImageRequest
from .store import ResultStore, image_from_stored, request_fingerprint
from .transport import RetryPolicy, Transport, encode_body, region_name
from .uploads import REUSE_FOR, TemporaryStorage
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

AUTO, DATA_URI, UPLOAD = INPUT_TRANSPORTS
# The probe of the other region after an InvalidApiKey only improves a message: kept short.
_PROBE_RETRY = RetryPolicy(attempts=2, base=0.2, cap=1.0, total=10.0)
_probe_lock = threading.Lock()
_key_probes: dict[tuple[str, str], bool] = {}  # (key fingerprint, other region's URL) -> accepted

_TASK_HINTS = {
    "DataInspectionFailed": "The content check refused the prompt or the generated image. "
                            "Rephrase the prompt. Failed tasks are not billed.",
    "InvalidParameter": "The service refused a parameter (see the message). Failed tasks are "
                        "not billed.",
}


@dataclass(frozen=True)
class Progress:
    stage: str  # "queued" | "preparing" (uploading, shrinking inputs) | "running" | ...
    elapsed: float  # seconds since the call started
    task_id: str | None
    fraction: float  # rough estimate, 0..1
    message: str


class _Job:
    """What the calling thread and the worker share about one call."""

    def __init__(self, request, spec: ModelSpec, interface: str, expected: float, *,
                 reservation: Reservation | None = None, input_transport: str = AUTO):
        self.request = request
        self.spec = spec
        self.interface = interface
        self.expected = expected
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
    DashScope API (connection reuse, proxies). ``retry``: the backoff policy. ``budget``:
    the spend guard; by default the one the configuration describes (``Config.budget``,
    none unless a daily limit is set).
    """

    def __init__(self, config: Config | None = None, *, store: ResultStore | None = None,
                 session: requests.Session | None = None, retry: RetryPolicy | None = None,
                 budget: SpendGuard | None = None):
        self.config = config or Config.resolve()
        self.store = store
        self.transport = Transport(self.config, session=session, retry=retry)
        self.downloader = Downloader(retry=retry)
        self.budget = budget if budget is not None else SpendGuard.from_settings(
            self.config.budget)
        self._task_reservations: dict[str, Reservation] = {}  # create_task's charges
        self._lock = threading.Lock()

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
        reservation = self._reserve(spec, request.n, notes)
        work = self._async_work if interface == ASYNC else self._sync_work
        return self._run(request, spec, interface, notes, work, on_progress, cancel_event,
                         reservation=reservation)

    def edit_image(self, request: ImageEditRequest, *, input_transport: str = AUTO,
                   on_progress: Callable[[Progress], None] | None = None,
                   cancel_event: threading.Event | None = None,
                   reuse: bool = False) -> GenerationResult:
        """Edit 1-3 images with an instruction (synchronous interface, the only one offered).

        ``input_transport``: how encoded input images travel. "auto" (default): as data
        URIs while the request body stays within ``REQUEST_BODY_TARGET``; beyond it through
        the temporary storage in Beijing, and re-encoded to fit elsewhere. "data_uri": never
        uploaded (re-encoded to fit if needed). "upload": always through the temporary
        storage (Beijing only). URL and ``oss://`` inputs are sent as given.
        """
        spec, notes = self._prepare(request, ImageEditRequest)
        self._check_transport(input_transport)
        stored = self._from_store(request, notes, reuse, on_progress)
        if stored is not None:
            return stored
        self.config.api_key()
        reservation = self._reserve(spec, request.n, notes)
        return self._run(request, spec, SYNC, notes, self._sync_work, on_progress, cancel_event,
                         reservation=reservation, input_transport=input_transport)

    def budget_status(self) -> BudgetStatus | None:
        """Today's spend and limits of the spend guard; None when there is none."""
        return self.budget.status() if self.budget is not None else None

    # -- low-level task calls -----------------------------------------------------------

    def create_task(self, request: TextToImageRequest) -> str:
        """Create an asynchronous text-to-image task and return its id (billed if it succeeds).

        The model's concurrency slot stays taken until ``get_task``/``wait_task`` sees the
        task end or ``cancel_task`` cancels it.
        """
        spec, notes = self._prepare(request, TextToImageRequest)
        limiter = limiter_for(self.config.api_key(), spec)
        reservation = self._reserve(spec, request.n, notes)
        slot = limiter.acquire()
        try:
            answer = self.transport.post_billed(ASYNC_PATH, _async_body(request),
                                                asynchronous=True,
                                                before_attempt=limiter.before_post)
            task_id = _task_id(answer)
        except BaseException as exc:
            slot.release()
            self._release_unless_billed(reservation, exc)
            if isinstance(exc, AuthenticationError):
                raise self._explained(exc) from None
            raise
        attach_task(task_id, slot)
        if reservation is not None:
            with self._lock:
                self._task_reservations[task_id] = reservation
        return task_id

    def get_task(self, task_id: str) -> dict:
        """The task's current answer (``output.task_status``, results, times, usage)."""
        return self._query(task_id)

    def cancel_task(self, task_id: str) -> dict:
        """Cancel a task that is still PENDING; nothing is billed for it."""
        answer = self.transport.post_cancel(task_id)
        task_finished(task_id)
        self._close_task_reservation(task_id, None)
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
                        self.config.other_base_url or REGIONS[region].base_url)
        return self._probe(base_url, None)

    def _probe(self, base_url: str, retry: RetryPolicy | None) -> bool:
        try:
            self.transport.get(f"/tasks/{uuid.uuid4()}", base_url=base_url, retry=retry)
        except AuthenticationError:
            return False
        return True

    def _explained(self, error: AuthenticationError) -> AuthenticationError:
        """``error`` with a hint that says whether the key works in the other region.

        The other region is probed once per key (a free task query) and the answer kept for
        the process; without a known endpoint for it, or when the probe fails, the general
        hint stays.
        """
        url = self.config.other_base_url
        if url is None:
            return error
        key = self.config.api_key()
        probe = (key_fingerprint(key), url)
        with _probe_lock:
            accepted = _key_probes.get(probe)
        if accepted is None:
            try:
                accepted = self._probe(url, _PROBE_RETRY)
            except QwenImageError as exc:
                log.info("Could not try the key in the other region: %s", exc)
                return error
            with _probe_lock:
                _key_probes[probe] = accepted
        here, there = self.config.region, other_region(self.config.region)
        source = self.config.key_source
        if accepted:
            hint = (f"This key is not valid in {region_name(here)}, but this key is accepted by "
                    f"the {REGIONS[there].name} region: set DASHSCOPE_API_REGION={there} or the "
                    f"node's region to '{there} ({REGIONS[there].name})'. To use both regions, "
                    f"put it in DASHSCOPE_API_KEY_{region_env_suffix(there)} and a "
                    f"{REGIONS[here].name} key in DASHSCOPE_API_KEY_{region_env_suffix(here)}.")
        else:
            hint = (f"The key {source.masked} (from {source.origin}) is not accepted in either "
                    f"region: neither {region_name(here)} nor {region_name(there)} knows it. It "
                    "may be mistyped, disabled or deleted: copy it again from the Model Studio "
                    "console (API keys) of the region you use.")
        return AuthenticationError(error.status, error.code, error.message, error.request_id,
                                   hint=hint)

    # -- the calling thread -------------------------------------------------------------

    def _check_transport(self, input_transport: str) -> None:
        if input_transport not in INPUT_TRANSPORTS:
            raise ValidationError("input_transport", f"{input_transport!r} is not a choice",
                                  allowed=list(INPUT_TRANSPORTS))
        region = self.config.region_info
        if input_transport == UPLOAD and not region.temporary_storage:
            raise ValidationError(
                "input_transport", f"'upload' needs DashScope's temporary file storage, which "
                                   f"the {region_name(region.id)} region does not offer (Beijing "
                                   "only)",
                allowed=[AUTO, DATA_URI],
                hint=f"Choose 'auto' (large inputs are then shrunk to fit in {region.name}) or "
                     "use the Beijing region (DASHSCOPE_API_REGION=cn-beijing or the node's "
                     "region), which needs a Beijing key.")

    def _reserve(self, spec: ModelSpec, n: int, notes: list[str]) -> Reservation | None:
        """Charge the spend guard for ``n`` images before anything is sent (or refuse)."""
        if self.budget is None:
            return None
        price = spec.price(self.config.region)
        if price is None:
            notes.append(f"{spec.id} has no price in the pack's table, so the spend guard counts "
                         "its images against the daily image budget only, not the dollar one")
        return self.budget.reserve(spec.id, n, price,
                                   what=f"n={n} in {region_name(self.config.region)}")

    def _release_unless_billed(self, reservation: Reservation | None,
                               error: BaseException) -> None:
        """Give the charge back when ``error`` proves nothing was billed.

        Every error of the pack before or instead of a service answer proves it, except an
        ambiguous one (sent, no answer); anything unexpected keeps the charge too.
        """
        if (reservation is not None and isinstance(error, QwenImageError)
                and not isinstance(error, AmbiguousRequestError)):
            self.budget.release(reservation)

    def _settle(self, reservation: Reservation | None, usage: dict | None,
                url_count: int) -> None:
        if reservation is not None:
            self.budget.settle(reservation, _billed_count(usage, url_count))

    def _close_task_reservation(self, task_id: str, answer: dict | None) -> None:
        """Settle a create_task charge from the task's end: SUCCEEDED bills, the rest not."""
        with self._lock:
            reservation = self._task_reservations.pop(task_id, None)
        if reservation is None:
            return
        if answer is not None and answer["output"]["task_status"] == "SUCCEEDED":
            results = answer["output"].get("results") or []
            self._settle(reservation, answer.get("usage"),
                         sum(1 for item in results if item.get("url")))
        elif answer is None or answer["output"]["task_status"] in ("FAILED", "CANCELED"):
            self.budget.release(reservation)

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
             on_progress, cancel_event, *, reservation: Reservation | None,
             input_transport: str = AUTO) -> GenerationResult:
        expected = ESTIMATOR.expected(self._duration_key(spec, interface))[0]
        job = _Job(request, spec, interface, expected, reservation=reservation,
                   input_transport=input_transport)
        worker = _Worker(lambda: self._guarded(job, work, notes),
                         f"qwen-image-{interface}-{spec.id}")
        try:
            result = self._wait_for(worker, job, on_progress, cancel_event)
        except _Abandoned:
            raise self._cancelled(job) from None
        except AuthenticationError as exc:
            raise self._explained(exc) from None
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

    def _edit_inputs(self, job: _Job, notes: list[str]) -> list[str]:
        """The image values of an edit body that keeps within ``REQUEST_BODY_TARGET``."""
        request, spec = job.request, job.spec
        values = [_image_value(image) for image in request.images]
        local = [i for i, value in enumerate(values) if value.startswith("data:")]
        size = len(encode_body(_sync_body(request, spec, values)[0]))
        mode = job.input_transport
        if not local or (mode != UPLOAD and size <= REQUEST_BODY_TARGET):
            return values
        region = self.config.region_info
        over = (f"as data URIs the request body would be {_mib(size)}, over the "
                f"{_mib(REQUEST_BODY_TARGET)} the pack sends")
        if mode == DATA_URI:
            return self._shrink_inputs(job, values, local, size, notes,
                                       f"input_transport is 'data_uri' and {over}")
        if mode == AUTO and not region.temporary_storage:
            return self._shrink_inputs(
                job, values, local, size, notes,
                f"{over}, and {region.name} has no temporary file storage for large inputs "
                "(DashScope offers it in Beijing only)")
        job.emit("preparing", f"uploading {len(local)} input image(s)")
        try:
            uploads = TemporaryStorage(self.transport).oss_names(
                spec.id, [_local_bytes(request.images[i]) for i in local], job.abandon_event)
        except (ApiError, TransportError) as exc:
            if mode == UPLOAD or isinstance(exc, AuthenticationError):
                raise
            log.warning("The temporary upload failed (%s); shrinking the inputs instead", exc)
            return self._shrink_inputs(job, values, local, size, notes,
                                       f"{over}, and the temporary upload failed ({exc})")
        for index, name in zip(local, uploads.names, strict=True):
            values[index] = name
        why = "input_transport is 'upload'" if mode == UPLOAD else over
        notes.append(f"{len(local)} input image(s) sent through DashScope's temporary storage "
                     f"as oss:// names ({uploads.uploaded} uploaded now, {uploads.reused} "
                     f"uploaded within the last {REUSE_FOR // 3600} h and reused), because "
                     f"{why}")
        log.info(notes[-1])
        return values

    def _shrink_inputs(self, job: _Job, values: list[str], local: list[int], size: int,
                       notes: list[str], why: str) -> list[str]:
        """Re-encode the local inputs so that the body fits, smallest first.

        Each gets an equal share of the room left; one already within its share is kept, and
        what it leaves unused goes to the larger ones.
        """
        job.emit("preparing", f"re-encoding {len(local)} input image(s) to fit")
        room = REQUEST_BODY_TARGET - (size - sum(len(values[i]) for i in local))
        changed = []
        for count, index in enumerate(sorted(local, key=lambda i: len(values[i]))):
            share = room // (len(local) - count)
            try:
                data, done = shrink_to_fit(_local_bytes(job.request.images[index]), share)
            except ValueError as exc:
                raise ValidationError(
                    f"image {index + 1}", f"cannot be sent within the request body limit: {exc}",
                    hint="Send fewer or smaller images, pass them as http(s) URLs, or use the "
                         "Beijing region, which uploads large inputs instead.") from None
            if done:
                values[index] = to_data_uri(data)
                changed.append((index, f"image {index + 1} {done}"))
            room -= len(values[index])
        notes.append(f"the input images were re-encoded to fit, because {why}: "
                     + "; ".join(text for _, text in sorted(changed)))
        log.warning("Qwen-Image edit: %s", notes[-1])
        return values

    def _sync_work(self, job: _Job, notes: list[str]) -> GenerationResult:
        request, spec = job.request, job.spec
        limiter = limiter_for(self.config.api_key(), spec)
        try:
            images = self._edit_inputs(job, notes) if request.family == IMAGE_EDIT else None
            body, oss = _sync_body(request, spec, images)
            slot = self._acquire(job, limiter)
            try:
                job.emit("running", "generating")
                sent_at = time.monotonic()
                answer = self.transport.post_billed(
                    SYNC_PATH, body, oss_resolve=oss, cancel_event=job.abandon_event,
                    before_attempt=lambda: self._before_post(job, limiter))
            finally:
                slot.release()
        except BaseException as exc:
            self._release_unless_billed(job.reservation, exc)
            raise
        ESTIMATOR.record(self._duration_key(spec, SYNC), time.monotonic() - sent_at)
        urls = _sync_urls(answer)
        self._settle(job.reservation, answer.get("usage"), len(urls))
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
        created = None
        try:
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
                    f"Task {task_id} ended without any image "
                    f"({'; '.join(failed) or 'no results'}).",
                    task_id=task_id, status="SUCCEEDED", request_id=final.get("request_id"),
                    hint="Failed images are not billed; run again.")
        except BaseException as exc:
            # Until the task exists every error proves nothing was billed; after that only
            # an end without images does (a lost task may still succeed).
            if created is None or isinstance(exc, (TaskFailedError, TaskCanceledError)):
                self._release_unless_billed(job.reservation, exc)
            raise
        self._settle(job.reservation, final.get("usage"), len(urls))
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
            self._close_task_reservation(task_id, answer)
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
    return image if isinstance(image, str) else to_data_uri(bytes(image))


def _local_bytes(image) -> bytes:
    """The encoded bytes of an input given as bytes or as a data URI."""
    if isinstance(image, str):
        return base64.b64decode(image.split(",", 1)[1])
    return bytes(image)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _sync_body(request, spec: ModelSpec, images: list[str] | None) -> tuple[dict, bool]:
    """The multimodal-generation body, and whether an input is an oss:// name.

    ``images``: the edit inputs' values as sent (data URIs, URLs, oss:// names).
    """
    content: list[dict] = []
    oss = False
    parameters: dict = {"negative_prompt": request.negative_prompt, "n": request.n,
                        "watermark": request.watermark}
    if request.family == IMAGE_EDIT:
        for value in images:
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


def _billed_count(usage: dict | None, url_count: int) -> int:
    """Images billed: the service's ``usage.image_count``, else the URLs it returned."""
    count = (usage or {}).get("image_count")
    return count if isinstance(count, int) and count >= 0 else url_count


def _cost(spec: ModelSpec, region: str, usage: dict | None, url_count: int) -> float | None:
    price = spec.price(region)
    if price is None:
        return None
    return round(price * _billed_count(usage, url_count), 6)


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
