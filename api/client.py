"""The Qwen-Image client: validate once, run the call in a worker, wait, return images.

A call reads top-down in ``_generate``: validate the request (once: ``validation``),
serve it from the result store if asked and possible, book it with the spend guard
(``charges``), then run the worker side (``generation.Generator``) in a thread while the
calling thread waits, reports progress and watches ``cancel_event`` (``waiting``). An
``InvalidApiKey`` gets a hint saying which region the key belongs to (``keycheck``).
Process-wide state (limiters, upload cache, key probes, learned durations) is the
client's ``state`` (``state.PROCESS_STATE`` by default), like a ``requests.Session``'s pool.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

import requests

from .call.generation import Generator
from .call.inputs import AUTO, check_transport
from .call.waiting import Abandoned, Job, Progress, Worker, guarded, notify, wait_for
from .catalog.models import spec_for
from .catalog.regions import normalize_region, other_region, region_url
from .catalog.specs import ASYNC, SYNC, TEXT_TO_IMAGE
from .catalog.validation import Checked, validate
from .config import Config, is_loopback
from .errors import ApiError, AuthenticationError, CancelledError, TransportError, ValidationError
from .recovery.unfinished import recover_in_background
from .schema import GenerationResult, ImageEditRequest, TextToImageRequest
from .service.download import Downloader
from .service.keycheck import explained, key_accepted
from .service.retry import RetryPolicy
from .service.transport import Transport
from .service.wire import resolved, task_body
from .state import PROCESS_STATE, ProcessState
from .storage.budget import BudgetStatus, SpendGuard
from .storage.charges import Charges
from .storage.journal import HANDED, Journal
from .storage.store import ResultStore, image_from_stored, request_fingerprint

log = logging.getLogger(__name__)

CANCEL_WAIT = 1.0  # longest wait for DashScope to confirm the cancel of a queued task

__all__ = ["Progress", "QwenImageClient"]


class QwenImageClient:
    """Text to image and image edit on DashScope.

    ``store``: every downloaded image is written there before the call returns (and
    images of cancelled runs land there too). ``session``: a ``requests.Session`` for the
    DashScope API (connection reuse, proxies). ``retry``: the backoff policy. ``budget``:
    the spend guard; by default the one the configuration describes (``Config.budget``,
    none unless a daily limit is set). ``state``: what clients of the process share.
    ``journal``: the journal of billed requests (default: in ``Config.journal_dir``).
    ``background_recovery``: the first call of the process also finishes, in the
    background, what an earlier process left in the journal (``unfinished``); ComfyUI's
    nodes turn it on.
    """

    def __init__(self, config: Config | None = None, *, store: ResultStore | None = None,
                 session: requests.Session | None = None, retry: RetryPolicy | None = None,
                 budget: SpendGuard | None = None, state: ProcessState | None = None,
                 journal: Journal | None = None, background_recovery: bool = False):
        self.config = config or Config.resolve()
        self.store = store
        self.state = state or PROCESS_STATE
        self.budget = budget if budget is not None else SpendGuard.from_settings(
            self.config.budget, state=self.state)
        if journal is None and self.config.journal_dir is not None:
            journal = Journal.in_folder(self.config.journal_dir, state=self.state)
        self.journal = journal
        self.background_recovery = background_recovery
        self.transport = Transport(self.config, session=session, retry=retry)
        # Plain-http results only from the emulator: a client of the real service
        # never fetches http://127.0.0.1/... (a local service an answer points it at).
        self.downloader = Downloader(retry=retry, loopback_http=is_loopback(
            urlsplit(self.config.base_url).hostname or ""))
        self.charges = Charges(self.budget, self.config.region)
        self.generator = Generator(self.config, self.transport, self.downloader, store,
                                   self.state, self.charges, journal)

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

        ``interface``: "async" (task + polling; the default where the model has it:
        cancellable while queued) or "sync" (one blocking call). An asynchronous request to
        a model that has only the synchronous interface uses it and says so in ``notes``.
        ``reuse``: with a fixed seed and a store, an identical earlier request is served
        from disk and nothing is sent.
        """
        checked = self._check(request, TextToImageRequest)
        interface, note = checked.spec.resolve_interface(interface)
        if note:
            checked.notes.append(note)
        return self._generate(checked, interface, on_progress, cancel_event, reuse)

    def edit_image(self, request: ImageEditRequest, *, input_transport: str = AUTO,
                   on_progress: Callable[[Progress], None] | None = None,
                   cancel_event: threading.Event | None = None,
                   reuse: bool = False) -> GenerationResult:
        """Edit images with an instruction (the synchronous interface).

        ``input_transport``: how encoded input images travel (``inputs``). "auto"
        (default): as data URIs while the request body stays within
        ``REQUEST_BODY_TARGET``; beyond it through the temporary storage in Beijing, and
        re-encoded to fit elsewhere. "data_uri": never uploaded. "upload": always through
        the temporary storage (Beijing only). URL and ``oss://`` inputs are sent as given.
        """
        checked = self._check(request, ImageEditRequest)
        check_transport(input_transport, self.config.region_info)
        return self._generate(checked, SYNC, on_progress, cancel_event, reuse,
                              input_transport=input_transport)

    def budget_status(self) -> BudgetStatus | None:
        """Today's spend and limits of the spend guard; None when there is none."""
        return self.budget.status() if self.budget is not None else None

    # -- low-level task calls -----------------------------------------------------------

    def create_task(self, request: TextToImageRequest) -> str:
        """Create an asynchronous text-to-image task and return its id (billed if it succeeds).

        The model's concurrency slot stays taken until ``get_task``/``wait_task`` sees the
        task end or ``cancel_task`` cancels it.
        """
        checked = self._check(request, TextToImageRequest)
        spec, request = checked.spec, checked.request
        if spec.async_path is None:
            raise ValidationError("model", f"{spec.id} has no asynchronous interface",
                                  hint="Use text_to_image(), which calls it synchronously.")
        limiter = self.generator.limiter(spec)
        reservation = self.charges.reserve(spec, request.n, request.size, 0, checked.notes)
        try:
            slot = limiter.acquire()
        except BaseException:
            self.charges.release(reservation)
            raise
        try:
            task_id, _, entry = self.generator.create(spec, task_body(request, spec),
                                                      request=request,
                                                      before_attempt=limiter.before_post)
        except BaseException as exc:
            slot.release()
            self.charges.release_unless_billed(reservation, exc)
            if isinstance(exc, AuthenticationError):
                raise self._explained(exc) from None
            raise
        self.state.limits.attach_task(task_id, slot)
        self.charges.hold_for_task(task_id, reservation)
        if entry is not None:
            self.journal.update(entry.id, status=HANDED, outcome="returned to the caller")
        return task_id

    def get_task(self, task_id: str) -> dict:
        """The task's current answer (``output.task_status``, results, times, usage)."""
        return self.generator.query(task_id).answer

    def cancel_task(self, task_id: str) -> dict:
        """Cancel a task that is still PENDING; nothing is billed for it."""
        return self.generator.cancel(task_id)

    def wait_task(self, task_id: str, *, model: str | None = None,
                  on_progress: Callable[[Progress], None] | None = None,
                  cancel_event: threading.Event | None = None) -> dict:
        """Poll until the task ends; return the SUCCEEDED answer or raise its ``TaskError``.

        ``model`` picks the learned duration for the poll schedule. On ``cancel_event`` the
        wait stops (``CancelledError``) but the task is left alone.
        """
        spec = spec_for(model or "qwen-image-plus", TEXT_TO_IMAGE)
        key = self.generator.duration_key(spec, ASYNC)
        job = Job(None, spec, ASYNC, self.state.durations.expected(key)[0])
        job.task_id, job.sent = task_id, True
        worker = Worker(lambda: self.generator.poll_until_done(job, task_id, job.started,
                                                               stop_when_abandoned=True),
                        f"qwen-image-wait-{task_id[:8]}")
        try:
            return wait_for(worker, job, on_progress, cancel_event).answer
        except Abandoned:
            raise CancelledError(
                f"Stopped waiting for task {task_id}; it continues at DashScope.",
                hint="cancel_task() cancels it while it is still queued; get_task() reads its "
                     "result for 24 hours.") from None

    def check_key(self, region: str, *, base_url: str | None = None) -> bool:
        """Whether the configured key is valid in ``region`` (a free, unbilled probe)."""
        region = normalize_region(region)
        if base_url is None:
            if region == self.config.region:
                base_url = self.config.base_url
            elif region == other_region(self.config.region) and self.config.other_base_url:
                base_url = self.config.other_base_url
            else:
                base_url = region_url(region, None)
        return key_accepted(self.transport, base_url)

    # -- one call, top-down -------------------------------------------------------------

    def _check(self, request, expected_type) -> Checked:
        """Validated (once), with the model's defaults filled in."""
        if not isinstance(request, expected_type):
            raise ValidationError("request", f"expected a {expected_type.__name__}, got "
                                             f"{type(request).__name__}")
        checked = validate(request, self.config.region)
        checked.request = resolved(checked.request, checked.spec)
        return checked

    def _generate(self, checked: Checked, interface: str, on_progress, cancel_event,
                  reuse: bool, *, input_transport: str = AUTO) -> GenerationResult:
        spec, request, notes = checked.spec, checked.request, checked.notes
        stored = self._from_store(request, notes, reuse, on_progress)
        if stored is not None:
            return stored
        self.config.api_key()  # a missing or malformed key fails here, before any work
        if self.background_recovery:
            recover_in_background(self)
        inputs = len(getattr(request, "images", ()))
        reservation = self.charges.reserve(spec, request.n, request.size, inputs, notes)
        try:  # until the worker has the job, a failure gives the booking back here
            expected = self.state.durations.expected(
                self.generator.duration_key(spec, interface))[0]
            job = Job(request, spec, interface, expected, notes=notes, reservation=reservation,
                      input_transport=input_transport)
            work = self.generator.run_async if interface == ASYNC else self.generator.run_sync
            worker = Worker(lambda: guarded(job, work), f"qwen-image-{interface}-{spec.id}")
        except BaseException:
            self.charges.release(reservation)
            raise
        try:
            result = wait_for(worker, job, on_progress, cancel_event)
        except Abandoned:
            raise self._cancelled(job, worker) from None
        except AuthenticationError as exc:
            raise self._explained(exc) from None
        notify(on_progress, Progress("done", time.monotonic() - job.started, job.task_id, 1.0,
                                     f"{len(result.images)} image(s) ready"))
        return result

    def _explained(self, error: AuthenticationError) -> AuthenticationError:
        return explained(error, self.config, self.transport, self.state.key_probes)

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
        notify(on_progress, Progress("done", 0.0, meta.get("task_id"), 1.0,
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

    def _cancelled(self, job: Job, worker: Worker) -> CancelledError:
        """Stop a job the caller gave up on; the message says what happens to the money.

        Where work goes on that cannot be stopped and its images will be stored, the error
        carries the worker as ``background`` (a command line keeps its promise to save the
        images by waiting for it).
        """
        with job.lock:
            sent, task_id, status = job.sent, job.task_id, job.status
        if not sent:
            return CancelledError("Cancelled before the request was sent; nothing was billed.")
        later = self._where_images_go()
        going_on = dict(task_id=task_id,
                        background=worker if self.store is not None else None)
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
            cancel = Worker(lambda: self.cancel_task(task_id), f"qwen-image-cancel-{task_id[:8]}")
            if not cancel.wait(CANCEL_WAIT):
                return CancelledError(
                    f"Cancelled. A cancel request for task {task_id} was sent but DashScope "
                    "has not answered yet; nothing is billed if the task was still queued "
                    "when it arrived.", hint=f"If it had already started, {later}", **going_on)
            try:
                cancel.result()
            except (ApiError, TransportError) as exc:
                log.info("Task %s could not be cancelled (%s); it has started", task_id,
                         getattr(exc, "code", exc))
            else:
                return CancelledError(
                    f"Cancelled. Task {task_id} was still queued and has been cancelled at "
                    "DashScope; nothing was billed.", task_id=task_id)
        return CancelledError(
            f"Cancelled. Task {task_id} had already started and cannot be stopped; "
            "DashScope bills its images when it succeeds.", hint=later, **going_on)

    def _where_images_go(self) -> str:
        if self.store is not None:
            return (f"Its images will be downloaded in the background and saved to "
                    f"{self.store.directory} (the log says when); if this process ends "
                    "first, `qwen-image recover` saves them from the journal.")
        return ("No result store is configured, so its images are not saved; their URLs "
                "(valid 24 hours) will be in the log. Configure a ResultStore to keep them.")
