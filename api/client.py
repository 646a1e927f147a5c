"""The Qwen-Image client: validate once, run the call in a worker, wait, return images.

A call reads top-down in ``start_*`` and ``_start``: validate the request (once:
``validation``), serve it from the result store if asked and possible, else hand it to
``generation.Generator.start``, which books it with the spend guard and runs its worker
side in a thread; the returned ``waiting.Running`` is what the caller waits on
(``Running.wait``: progress and ``cancel_event``; ``text_to_image``/``edit_image`` are
``start_*`` and that wait). ``create_task`` is ``Generator.create_task``. An
``InvalidApiKey`` gets a hint saying which region the key belongs to (``keycheck``).
Process-wide state (limiters, upload cache, key probes, learned durations) is the
client's ``state`` (``state.PROCESS_STATE`` by default), like a ``requests.Session``'s pool.
"""
from __future__ import annotations

import threading
from typing import Callable
from urllib.parse import urlsplit

import requests

from .call.generation import Generator
from .call.inputs import AUTO, check_transport
from .call.waiting import Job, Progress, Running, Worker
from .catalog.models import spec_for
from .catalog.regions import normalize_region, other_region, region_url
from .catalog.specs import ASYNC, SYNC, TEXT_TO_IMAGE
from .catalog.validation import Checked, validate
from .config import Config, is_loopback
from .errors import AuthenticationError, CancelledError, ValidationError
from .recovery.unfinished import recover_in_background
from .schema import GenerationResult, ImageEditRequest, TextToImageRequest
from .service.download import Downloader
from .service.keycheck import explained, key_accepted
from .service.retry import RetryPolicy
from .service.transport import Transport
from .service.wire import resolved
from .state import PROCESS_STATE, ProcessState
from .storage.budget import BudgetStatus, SpendGuard
from .storage.charges import Charges
from .storage.journal import Journal
from .storage.store import ResultStore, image_from_stored, request_fingerprint

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
        return self.start_text_to_image(request, interface=interface, reuse=reuse).wait(
            on_progress, cancel_event)

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
        return self.start_edit_image(request, input_transport=input_transport,
                                     reuse=reuse).wait(on_progress, cancel_event)

    def start_text_to_image(self, request: TextToImageRequest, *, interface: str | None = None,
                            reuse: bool = False, after: Callable | None = None,
                            on_done: Callable[[], None] | None = None) -> Running:
        """``text_to_image`` without the wait: the call, validated and booked, runs in its
        worker thread; the caller waits on the returned ``Running`` (its ``wait``, or its
        ``progress``/``done``/``result``/``abandon`` in a loop of its own, as ComfyUI's nodes
        do for all their calls at once). ``after(result)`` runs in the worker once the
        images are in (its value is ``Running.extra``); ``on_done()`` when the worker ends."""
        checked = self._check(request, TextToImageRequest)
        interface, note = checked.spec.resolve_interface(interface)
        if note:
            checked.notes.append(note)
        return self._start(checked, interface, reuse, after, on_done)

    def start_edit_image(self, request: ImageEditRequest, *, input_transport: str = AUTO,
                         reuse: bool = False, after: Callable | None = None,
                         on_done: Callable[[], None] | None = None) -> Running:
        """``edit_image`` without the wait (see ``start_text_to_image``)."""
        checked = self._check(request, ImageEditRequest)
        check_transport(input_transport, self.config.region_info)
        return self._start(checked, SYNC, reuse, after, on_done, input_transport=input_transport)

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
        spec = checked.spec
        if spec.async_path is None:
            raise ValidationError("model", f"{spec.id} has no asynchronous interface",
                                  hint="Use text_to_image(), which calls it synchronously.")
        try:
            return self.generator.create_task(checked)
        except AuthenticationError as exc:
            raise self._explained(exc) from None

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
        stopped = CancelledError(
            f"Stopped waiting for task {task_id}; it continues at DashScope.",
            hint="cancel_task() cancels it while it is still queued; get_task() reads its "
                 "result for 24 hours.")
        return Running(job, worker, given_up=lambda: stopped).wait(
            on_progress, cancel_event).answer

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

    def _start(self, checked: Checked, interface: str, reuse: bool, after, on_done, *,
               input_transport: str = AUTO) -> Running:
        stored = self._from_store(checked.request, checked.notes, reuse)
        if stored is not None:
            running = Running.ready(stored)
            running.extra = after(stored) if after is not None else None
            if on_done is not None:
                on_done()
            return running
        self.config.api_key()  # a missing or malformed key fails here, before any work
        if self.background_recovery:
            recover_in_background(self)
        return self.generator.start(checked, interface, input_transport=input_transport,
                                    after=after, on_done=on_done,
                                    where_images_go=self._where_images_go(),
                                    explain=self._explained)

    def _explained(self, error: BaseException) -> BaseException:
        """An ``InvalidApiKey`` with a hint saying which region the key belongs to."""
        if not isinstance(error, AuthenticationError):
            return error
        return explained(error, self.config, self.transport, self.state.key_probes)

    def _from_store(self, request, notes: list[str], reuse: bool) -> GenerationResult | None:
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

    def _where_images_go(self) -> str:
        if self.store is not None:
            return (f"Its images will be downloaded in the background and saved to "
                    f"{self.store.directory} (the log says when); if this process ends "
                    "first, `qwen-image recover` saves them from the journal.")
        return ("No result store is configured, so its images are not saved; their URLs "
                "(valid 24 hours) will be in the log. Configure a ResultStore to keep them.")
