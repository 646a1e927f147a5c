"""The worker side of a call: send, follow the task, download, store, account.

``Generator.start`` books a call with the spend guard and starts its worker thread
(``waiting``), which runs the synchronous call (``run_sync``), or the task's creation and
polling (``run_async``), then the downloads and the result store (``collect``). It also
carries the client's low-level API (``create_task``, ``query``, ``cancel``). Concurrency
and rate come from the process state's limiters; every booking of the spend guard is made,
settled or given back here (``charges``), from the service's usage.

Every billed request is written to the journal before it is sent and updated as it goes
(``journal``). Finding the task of a creation whose answer is lost is a step of sending
(``create``): one search of the task list (``recovery.TaskFinder.find``), and then the task
adopted when exactly one is this call's, the candidates' images stored and reported when
several could be (``store_candidates``, which ``recover`` uses too), or the request sent
once more when the list shows none after the grace period. After a key's first answered
creation, the worker looks its task up in the list before the first poll, to learn the
key's id there (``_learn_key_id``). A spend-guard ledger that fails after the answer came
is reported, never allowed to cost the images.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

from ..catalog.pricing import cost_usd
from ..catalog.specs import ASYNC, IMAGE_EDIT, SYNC, TEXT2IMAGE_PATH, ModelSpec
from ..catalog.validation import Checked
from ..config import Config, key_fingerprint
from ..errors import (
    AmbiguousRequestError,
    AmbiguousTaskError,
    ApiError,
    DownloadError,
    QwenImageError,
    ServerError,
    TaskCanceledError,
    TaskError,
    TaskFailedError,
    TransportError,
    ValidationError,
)
from ..recovery.finder import Finding, ListedTask, TaskFinder
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
    read_created,
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
from .waiting import Abandoned, Job, Running, Worker, guarded

log = logging.getLogger(__name__)

# Polls keep failing (network down, 5xx) for this long before the wait gives up.
POLL_OUTAGE_LIMIT = 300.0
MAX_CANDIDATE_DOWNLOADS = 6  # candidates whose images are fetched when none is adopted
MAX_LISTED = 10  # candidate ids kept in a message or in the journal


@dataclass(frozen=True)
class Created:
    """A task created for a call."""

    task_id: str
    answer: dict  # the creation answer; of a task found in the list, its ids only
    entry: Entry | None  # None without a journal
    answered: bool = True  # False: the answer was lost and the task found in the list


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

    # -- creating a task: journal it, send it, find it when its answer is lost -----------

    def begin(self, request, model: str, interface: str, path: str) -> Entry | None:
        """Journal a request before it is sent (None without a journal or a request)."""
        if self.journal is None or request is None:
            return None
        return self.journal.begin_request(request, model=model, interface=interface,
                                          path=path, config=self.config, store=self.store)

    def create(self, spec: ModelSpec, body: dict, *, request=None, job: Job | None = None,
               oss: bool = False, cancel_event=None,
               before_attempt=None) -> Created:
        """Create a task (``Created``: its id, the creation answer and its journal entry).

        With ``request`` and a journal, the request is journaled first; a lost answer is
        looked for in the task list (``_find_lost``), and a creation the list shows no task
        for is sent once more (it cannot pay twice). ``job``: the call whose result store
        receives the candidates' images when several tasks could be it.
        """
        payload = encode_body(body)
        for resend in (False, True):
            entry = self.begin(request, spec.id, ASYNC, spec.async_path)
            sent = []

            # The POST calls it in this iteration; the defaults bind this iteration's values.
            def before(*, entry=entry, sent=sent) -> None:
                if before_attempt is not None:
                    before_attempt()
                sent.append(time.time())
                if entry is not None:  # before it leaves: a finder waits for its answer
                    self.journal.sending(entry.id, sent[-1])

            try:
                try:
                    answer = self.transport.post_billed(
                        spec.async_path, payload, asynchronous=True, oss_resolve=oss,
                        cancel_event=cancel_event, before_attempt=before)
                    task_id = read_created(answer)
                except ServerError as exc:  # a 200 without a task id: one may exist
                    if not sent or exc.code != "InvalidResponse":
                        raise
                    raise AmbiguousRequestError(exc.detail, hint=exc.hint) from None
            except AmbiguousRequestError as lost:
                if entry is None:
                    raise
                found = self._find_lost(spec, entry, lost, job,
                                        sent=sent[-1] if sent else entry.time)
                if found is not None:
                    return Created(found.task_id, {"request_id": found.request_id,
                                                   "output": {"task_id": found.task_id}},
                                   entry, answered=False)
                if resend:
                    raise TransportError(
                        "The task creation was sent twice without an answer, and the task "
                        "list shows no task for either: nothing was created or billed.",
                        hint="Check the network or proxy between here and DashScope.") from None
                continue
            except BaseException as exc:
                if entry is not None:
                    self.journal.unanswered(entry.id, sent=bool(sent), error=exc)
                raise
            if entry is not None and not self.journal.answered(entry.id, task_id):
                log.error("Task %s, named by its creation answer, was adopted by another "
                          "call's recovery; this call keeps it", task_id)
            return Created(task_id, answer, entry)
        raise AssertionError("unreachable: the loop returns or raises")

    def _learn_key_id(self, task_id: str) -> None:
        """Learn the key's id in the task list from its answered task ``task_id`` (one free
        look-up by id), unless it is known or another call is learning it (the process
        state's marks): a lost answer of a task without a prompt (3.0) can then be found
        from the key's second call on."""
        finder, learning = self.finder(), self.state.learning_key_ids
        mark = (finder.key, finder.base_url)
        if not learning.first(mark, unless=lambda: bool(self.journal.key_id(*mark))):
            return
        try:
            finder.learn_key_id(task_id)
        except QwenImageError as exc:
            log.info("This key's id in the task list could not be learned (%s)", exc)
        finally:
            learning.clear(mark)

    def _find_lost(self, spec: ModelSpec, entry: Entry, lost: AmbiguousRequestError,
                   job: Job | None, *, sent: float) -> ListedTask | None:
        """The task of a lost creation (adopted; ``entry.doubt`` says when it may be another
        call's), or None when the list shows none (the request was not processed and may be
        sent again); raises ``AmbiguousTaskError`` when several could be it, or ``lost`` when
        the list could not tell. ``sent``: when the lost attempt left (epoch seconds)."""
        noticed = time.time()
        self.journal.lost(entry.id, lost, sent)
        log.warning("%s Looking for the task in the task list (up to %g s).", lost.detail,
                    self.config.recovery_grace)
        if job is not None:
            job.emit("queued", "answer lost: looking for the task in the task list")
        finding = self.finder().find(entry, noticed=noticed, sent=sent,
                                     shows_prompt=spec.async_path == TEXT2IMAGE_PATH)
        if finding.adopted is not None:
            entry.doubt = finding.doubt
            if job is not None:
                job.notes.append(f"the answer to the task creation was lost; task "
                                 f"{finding.adopted.task_id} was found in the task list")
            return finding.adopted
        if finding.several:
            self.store_candidates(job, entry, finding, lost)
        if finding.none:
            self.journal.not_created(entry.id)
            log.warning("The lost request created no task; it may be sent again")
            return None
        raise AmbiguousRequestError(
            lost.detail, hint=f"{lost.hint} The task list could not be read in full to find "
                              "the task; `qwen-image recover` looks again and saves its images.")

    def store_candidates(self, job: Job | None, entry: Entry, finding: Finding,
                         lost: AmbiguousRequestError | None = None, *,
                         store: ResultStore | None = None) -> None:
        """Download the images of every candidate (at most MAX_CANDIDATE_DOWNLOADS; none
        without a ``job``, nor while this key's id is unknown: they may be another key's)
        into the store, then raise ``AmbiguousTaskError`` listing them (at most MAX_LISTED):
        downloads cost nothing, and one of them may be the lost call's."""
        several, saved, lines = finding.several, [], []
        fetch = several[:MAX_CANDIDATE_DOWNLOADS] if job is not None and not finding.key_unknown \
            else []
        for task in fetch:
            try:
                final = self.poll_until_done(job, task.task_id, time.monotonic())
                # Not indexed for reuse: the image may be another call's.
                result = self.finish_task(job, None, task.task_id, final, task.request_id,
                                          store=store, index=False)
            except QwenImageError as exc:
                lines.append(f"{task.task_id}: {exc.detail}")
                continue
            paths = [image.saved_path or image.url for image in result.images]
            saved += paths
            lines.append(f"{task.task_id}: {' '.join(paths)}")
        lines += [f"{task.task_id}: not downloaded" for task in several[len(lines):MAX_LISTED]]
        if len(several) > MAX_LISTED:
            lines.append(f"and {len(several) - MAX_LISTED} more")
        ids = [task.task_id for task in several[:MAX_LISTED]]
        if finding.key_unknown:  # left open: once the key's id is known, `recover` looks again
            self.journal.undecided(entry.id, ids)
        else:
            self.journal.ambiguous(entry.id, ids, saved)
        why = ("several could be it" if len(several) > 1 else
               "this key's id in the task list is not known yet (it is learned from the key's "
               "first answered task), so a task of another key could not be told apart")
        if finding.key_unknown:
            hint = ("Their images were not downloaded: they may be another key's. Once this "
                    "key has had an answered task, `qwen-image recover` looks again; or check "
                    "the task list of the Model Studio console.")
        else:
            hint = ("Their images are in the result store (downloading costs nothing); those "
                    "you did not ask for belong to another call of the same key and model.")
        raise AmbiguousTaskError(
            f"{lost.detail + ' ' if lost else ''}The task list shows {len(several)} candidate "
            f"task(s) and {why}; none was adopted: " + "; ".join(lines) + ".",
            candidates=ids, saved=saved, hint=hint)

    # -- whole calls --------------------------------------------------------------------

    def start(self, checked: Checked, interface: str, *, input_transport: str,
              after: Callable | None = None, on_done: Callable[[], None] | None = None,
              where_images_go: str = "",
              explain: Callable[[BaseException], BaseException] | None = None) -> Running:
        """Book the call with the spend guard (a refusal is raised here, before any thread)
        and start its worker (``run_sync``/``run_async``, then ``after(result)``, whose
        value is ``Running.extra``; ``on_done()`` when the worker ends). ``where_images_go``
        and ``explain``: the ``Running``'s words for a call given up, and its errors'."""
        spec, request, notes = checked.spec, checked.request, checked.notes
        inputs = len(getattr(request, "images", ()))
        reservation = self.charges.reserve(spec, request.n, request.size, inputs, notes)
        try:  # until the worker has the job, a failure gives the booking back here
            expected = self.state.durations.expected(self.duration_key(spec, interface))[0]
            job = Job(request, spec, interface, expected, notes=notes, reservation=reservation,
                      input_transport=input_transport)
            work = self.run_async if interface == ASYNC else self.run_sync
            running = Running(job, None, where_images_go=where_images_go,
                              keeps_images=self.store is not None, explain=explain)

            def call() -> GenerationResult:
                result = guarded(job, work)
                if after is not None:
                    running.extra = after(result)
                return result

            running.worker = Worker(call, f"qwen-image-{interface}-{spec.id}", on_done)
        except BaseException:
            self.charges.release(reservation)
            raise
        return running

    def create_task(self, checked: Checked) -> str:
        """The low-level API's task creation: booked, in the model's slot, journaled as
        handed to the caller. The slot and the booking stay with the task id until a query
        sees the task end (``query``) or it is cancelled (``cancel``)."""
        spec, request = checked.spec, checked.request
        limiter = self.limiter(spec)
        reservation = self.charges.reserve(spec, request.n, request.size, 0, checked.notes)
        try:
            slot = limiter.acquire()
        except BaseException:
            self.charges.release(reservation)
            raise
        try:
            # No poll follows in this call, so the key's id is not learned here: a search
            # of the task list that needs it looks it up from the journal's tasks.
            created = self.create(spec, task_body(request, spec), request=request,
                                  before_attempt=limiter.before_post)
        except BaseException as exc:
            slot.release()
            self.charges.release_unless_billed(reservation, exc)
            raise
        self.state.limits.attach_task(created.task_id, slot)
        self.charges.hold_for_task(created.task_id, reservation)
        if created.entry is not None:
            self.journal.handed(created.entry.id)
        return created.task_id

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
        created = None
        try:  # from here on, any failure before sending gives the booking back
            limiter = self.limiter(spec, job.abandon_event)
            images = self._image_values(job)
            slot = self._acquire(job, limiter)
            try:
                created = self.create(
                    spec, task_body(request, spec, images), request=request, job=job,
                    oss=needs_oss_resolve(images), cancel_event=job.abandon_event,
                    before_attempt=lambda: self._before_post(job, slot))
                task_id, created_at = created.task_id, time.monotonic()
                with job.lock:
                    job.task_id = task_id
                    job.status = created.answer["output"].get("task_status")
                    cancel_now = job.abandoned
                if cancel_now:
                    self.cancel_for(job, task_id)
                job.emit("queued", f"task {task_id} created")
                if created.answered and created.entry is not None:
                    self._learn_key_id(task_id)  # in the gap before the first poll
                final = self.poll_until_done(job, task_id, created_at)
            finally:
                slot.release()
        except BaseException as exc:
            # Until the task exists every error proves nothing was billed (but a lost
            # answer); after that only an end without images does (a lost task may still
            # succeed, and recovery can fetch it).
            if created is None or isinstance(exc, (TaskFailedError, TaskCanceledError)):
                self._release(job, exc)
            if created is not None and created.entry is not None and isinstance(exc, TaskError):
                self.journal.failed(created.entry.id, exc)
            raise
        return self.finish_task(job, created.entry, task_id, final,
                                created.answer.get("request_id"), inputs=len(images), settle=True)

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

