"""Finding a task whose creation answer was lost, and finishing what the journal left open.

Lost answers (``TaskFinder``)
=============================
When a task-creating POST was sent and no usable answer came back (``transport`` raises
``AmbiguousRequestError``), the task may exist. The asynchronous task list
(``GET {base}/tasks``, Model Studio: "Manage asynchronous tasks") shows every task of the account, by any key, with
``model_name``, ``gmt_create`` (epoch ms), ``api_key_id`` and the submit call's
``request_id``, but not the prompt. So the finder, every ``LIST_STEP`` seconds:

1. lists the model's tasks around the send: ``[sent - CLOCK_SKEW, noticed + CLOCK_SKEW]``
   by ``gmt_create``. The list's ``start_time``/``end_time`` (``YYYYMMDDhhmmss``) have no
   documented time zone, so the window is asked for twice, as UTC+8 (the zone of every
   other task time) and as UTC, and the answers are merged;
2. keeps the tasks of this key: its ``api_key_id`` is learned from the list entries of the
   key's own journaled tasks (remembered in the journal); while it is unknown, a task is
   never adopted, since another key's task of the same model cannot be told apart;
3. drops task ids any journal entry claims (calls of this or another process that got
   their answer);
4. for tasks that show their prompt (``text2image/image-synthesis``: ``results[].orig_prompt``
   once SUCCEEDED) drops those with another prompt; 3.0 tasks show none.

It decides once a candidate's prompt matched, or once the grace period is over, and no
candidate whose prompt could still be read is unfinished: exactly one left (with this
key's id known) is adopted (claimed in the journal, then polled and downloaded as usual);
several are reported (``Finding.several``: the caller downloads every one's images, which
costs nothing, and fails with the list); none means the task was not created, and
``create_or_find`` sends it once more.

Grace period (an assumption)
    How soon a new task appears in the list is not documented. ``Config.recovery_grace``
    (``QWEN_IMAGE_RECOVERY_GRACE``, default ``config.DEFAULT_RECOVERY_GRACE`` = 120 s after
    the failure was noticed) assumes the list shows a task within two minutes of its
    creation: a task query sees a task at once, and the list is the same task store read
    another way. Only
    a complete listing (every page read) can conclude "none"; a listing that fails or is
    cut short leaves the request ambiguous.

The synchronous interface makes no task and cannot be recovered.
"""
from __future__ import annotations

import datetime
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..errors import (
    AmbiguousRequestError,
    AmbiguousTaskError,
    ApiError,
    QwenImageError,
    ServerError,
    TransportError,
)
from ..storage.journal import AMBIGUOUS, CREATED, LOST, NOT_CREATED, Entry, Journal
from ..catalog.specs import ASYNC, TEXT2IMAGE_PATH, ModelSpec
from ..storage.store import ResultStore
from ..service.transport import Transport
from ..call.waiting import Job
from ..service.wire import TaskState, read_created

if TYPE_CHECKING:
    from ..call.generation import Generator

log = logging.getLogger(__name__)

CLOCK_SKEW = 300.0  # seconds of disagreement allowed between this clock and the service's
LIST_STEP = 5.0  # seconds between two looks at the list
PAGE_SIZE = 100  # the list's default is 10; no maximum is documented
MAX_PAGES = 20  # a longer listing is not read to the end (then nothing is concluded)
PROMPT_WAIT = 1800.0  # longest wait past the grace period for candidates to show a prompt
MAX_CANDIDATE_DOWNLOADS = 6  # candidates whose images are fetched when none is adopted
TASK_DATA_TTL = 24 * 3600.0  # the service keeps tasks and result URLs this long
_UTC8 = datetime.timezone(datetime.timedelta(hours=8))
_NO_IMAGES = ("FAILED", "CANCELED", "UNKNOWN")


@dataclass(frozen=True)
class ListedTask:
    """One entry of the task list (the fields the finder reads)."""

    task_id: str
    status: str | None
    model: str | None
    api_key_id: str | None
    created_ms: int | None  # gmt_create
    request_id: str | None  # of the submit call


def read_task_list(answer: dict) -> tuple[list[ListedTask], int]:
    """The entries of one list page and the number of pages."""
    tasks = []
    for item in answer.get("data") or []:
        if not isinstance(item, dict) or not isinstance(item.get("task_id"), str):
            continue
        created = item.get("gmt_create")
        tasks.append(ListedTask(
            item["task_id"], item.get("status"), item.get("model_name"),
            item.get("api_key_id"),
            int(created) if isinstance(created, (int, float)) and math.isfinite(created) else None,
            item.get("request_id")))
    pages = answer.get("total_page")
    return tasks, pages if isinstance(pages, int) and pages >= 1 else 1


def list_windows(start: float, end: float) -> list[dict[str, str]]:
    """``start_time``/``end_time`` for epoch seconds [start, end], read as UTC+8 and as UTC."""
    def stamp(moment: float, zone: datetime.tzinfo) -> str:
        return datetime.datetime.fromtimestamp(moment, zone).strftime("%Y%m%d%H%M%S")

    return [{"start_time": stamp(math.floor(start), zone), "end_time": stamp(math.ceil(end), zone)}
            for zone in (_UTC8, datetime.timezone.utc)]


def prompt_matches(shown: str | None, sent: str | None) -> bool:
    """Whether a task's ``orig_prompt`` is the prompt sent (or its cut, for long prompts)."""
    if not shown or not sent:
        return False
    return shown == sent or (len(shown) >= 500 and sent.startswith(shown))


@dataclass
class Finding:
    """What the list shows for a lost creation."""

    adopted: ListedTask | None = None
    several: list[ListedTask] = field(default_factory=list)
    complete: bool = True  # False: the listing failed or was cut short
    key_unknown: bool = False  # this key's api_key_id is not known, so nothing is adopted

    @property
    def none(self) -> bool:
        return self.adopted is None and not self.several and self.complete


class TaskFinder:
    """Looks in the task list for the task of a journal entry whose creation answer was lost.

    ``query(task_id)`` reads one task (the generator's, so its gate and accounting apply);
    ``gate()`` waits for the account's query rate before each list call.
    """

    def __init__(self, transport: Transport, journal: Journal,
                 query: Callable[[str], TaskState], gate: Callable[[], None], *, key: str,
                 grace: float, step: float = LIST_STEP):
        self.transport = transport
        self.journal = journal
        self.query = query
        self.gate = gate
        self.key = key  # the configured key's fingerprint
        self.base_url = transport.config.base_url
        self.grace = grace
        self.step = min(step, max(0.5, grace / 4))  # several looks within a short grace

    def find(self, entry: Entry, *, noticed: float, shows_prompt: bool,
             sleep: Callable[[float], None] = time.sleep) -> Finding:
        """Look until a decision (module docstring); ``noticed``: epoch seconds when the
        request ended without an answer."""
        earliest, latest = entry.time - CLOCK_SKEW, noticed + CLOCK_SKEW
        decide_at = noticed + self.grace
        states: dict[str, TaskState] = {}
        while True:
            listed, complete = self._list(entry.model, earliest, latest)
            if listed is None:  # the list cannot be read: nothing can be concluded now
                return Finding(complete=False)
            own_id = self._own_key_id(listed, entry)
            claimed = self.journal.claimed()
            candidates = [
                t for t in listed
                if t.model in (None, entry.model)
                and (t.created_ms is None or earliest <= t.created_ms / 1000 <= latest)
                and claimed.get(t.task_id, entry.id) == entry.id
                and (own_id is None or t.api_key_id == own_id)]
            if shows_prompt:
                for task in candidates:
                    if task.task_id not in states or not states[task.task_id].terminal:
                        states[task.task_id] = self.query(task.task_id)
                candidates = [t for t in candidates if not self._other_prompt(
                    states[t.task_id], entry.prompt)]
            matched = shows_prompt and any(
                prompt_matches(states[t.task_id].orig_prompt, entry.prompt) for t in candidates)
            now = time.time()
            unreadable = shows_prompt and now < decide_at + PROMPT_WAIT and any(
                not states[t.task_id].terminal for t in candidates)
            if (matched or now >= decide_at) and not unreadable:
                return self._decide(entry, candidates, states, own_id, complete)
            sleep(self.step)

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _other_prompt(state: TaskState, prompt: str | None) -> bool:
        return state.status == "SUCCEEDED" and bool(state.orig_prompt) and not prompt_matches(
            state.orig_prompt, prompt)

    def _decide(self, entry: Entry, candidates: list[ListedTask], states: dict[str, TaskState],
                own_id: str | None, complete: bool) -> Finding:
        def status(task: ListedTask) -> str | None:
            state = states.get(task.task_id)
            return state.status if state is not None else task.status

        live = [t for t in candidates if status(t) not in _NO_IMAGES]
        pool = live or candidates
        if len(pool) == 1 and own_id is not None:
            if self.journal.claim(entry.id, pool[0].task_id):
                return Finding(adopted=pool[0], complete=complete)
            pool = []  # claimed by another entry a moment ago: not ours
        return Finding(several=pool, complete=complete, key_unknown=own_id is None)

    def _list(self, model: str, earliest: float,
              latest: float) -> tuple[list[ListedTask] | None, bool]:
        """The model's tasks in the window (merged over both time zones), None when the
        list cannot be read; whether every page was read."""
        found: dict[str, ListedTask] = {}
        complete = True
        for window in list_windows(earliest, latest):
            page, pages = 1, 1
            while page <= pages:
                if page > MAX_PAGES:
                    complete = False
                    break
                try:
                    tasks, pages = read_task_list(self._get(
                        {**window, "model_name": model, "page_no": str(page),
                         "page_size": str(PAGE_SIZE)}))
                except (ApiError, TransportError) as exc:
                    log.warning("The task list could not be read (%s)", exc.detail)
                    return None, False
                found.update((t.task_id, t) for t in tasks)
                page += 1
        return list(found.values()), complete

    def _get(self, params: dict[str, str]) -> dict:
        return self.transport.get("/tasks", params=params, before_attempt=self.gate)

    def _own_key_id(self, listed: list[ListedTask], entry: Entry) -> str | None:
        """This key's ``api_key_id``: remembered, seen on its own tasks, or looked up."""
        known = self.journal.key_id(self.key, self.base_url)
        if known:
            return known
        entries = self.journal.entries()
        mine = {e.task_id for e in entries.values() if e.task_id and e.key == self.key
                and e.base_url == self.base_url and e.id != entry.id}
        for task in listed:
            if task.task_id in mine and task.api_key_id:
                self.journal.learn_key_id(self.key, self.base_url, task.api_key_id)
                return task.api_key_id
        recent = sorted((e for e in entries.values() if e.task_id in mine
                         and e.time > time.time() - TASK_DATA_TTL), key=lambda e: -e.time)
        for other in recent[:1]:  # one look-up by task id per search
            try:
                tasks, _ = read_task_list(self._get({"task_id": other.task_id}))
            except (ApiError, TransportError) as exc:
                log.info("Could not look up task %s in the task list (%s)", other.task_id, exc)
                return None
            for task in tasks:
                if task.task_id == other.task_id and task.api_key_id:
                    self.journal.learn_key_id(self.key, self.base_url, task.api_key_id)
                    return task.api_key_id
        return None


# -- task creation with a lost answer in a live call -------------------------------------


def create_or_find(generator: "Generator", spec: ModelSpec, send: Callable[..., dict], *,
                   request=None, job: Job | None = None,
                   before_attempt: Callable[[], None] | None = None
                   ) -> tuple[str, dict, Entry | None]:
    """Journal a task creation, ``send(before_attempt)`` it, and return the task id, the
    answer and the entry; a lost answer goes to ``resolve_lost``, and a creation the list
    shows no task for is sent once more (it cannot pay twice)."""
    for resend in (False, True):
        entry = generator.begin(request, spec.id, ASYNC, spec.async_path)
        sent = []

        def before() -> None:
            if before_attempt is not None:
                before_attempt()
            sent.append(True)

        try:
            try:
                answer = send(before)
                task_id = read_created(answer)
            except ServerError as exc:  # a 200 without a task id: one may exist
                if not sent or exc.code != "InvalidResponse":
                    raise
                raise AmbiguousRequestError(exc.detail, hint=exc.hint) from None
        except AmbiguousRequestError as lost:
            if entry is None:
                raise
            found = resolve_lost(generator, spec, entry, lost, job)
            if found is not None:
                return found.task_id, {"request_id": found.request_id,
                                       "output": {"task_id": found.task_id}}, entry
            if resend:
                raise TransportError(
                    "The task creation was sent twice without an answer, and the task list "
                    "shows no task for either: nothing was created or billed.",
                    hint="Check the network or proxy between here and DashScope.") from None
            continue
        except BaseException as exc:
            if entry is not None:
                generator.journal.unanswered(entry.id, sent=bool(sent), error=exc)
            raise
        if entry is not None:
            generator.journal.update(entry.id, status=CREATED, task_id=task_id, sync=True)
        return task_id, answer, entry
    raise AssertionError("unreachable: the loop returns or raises")


def resolve_lost(generator: "Generator", spec: ModelSpec, entry: Entry,
                 lost: AmbiguousRequestError, job: Job | None) -> ListedTask | None:
    """The task of a lost creation (adopted), or None when the list shows none (the
    request was not processed and may be sent again); raises ``AmbiguousTaskError`` when
    several could be it, or ``lost`` when the list could not tell."""
    journal = generator.journal
    journal.update(entry.id, status=LOST, outcome=str(lost), sync=True)
    log.warning("%s Looking for the task in the task list (up to %g s).", lost.detail,
                generator.config.recovery_grace)
    if job is not None:
        job.emit("queued", "answer lost: looking for the task in the task list")
    finding = generator.finder().find(entry, noticed=time.time(),
                                      shows_prompt=spec.async_path == TEXT2IMAGE_PATH)
    if finding.adopted is not None:
        if job is not None:
            job.notes.append(f"the answer to the task creation was lost; task "
                             f"{finding.adopted.task_id} was found in the task list")
        return finding.adopted
    if finding.several:
        store_candidates(generator, job, entry, finding, lost)
    if finding.none:
        journal.update(entry.id, status=NOT_CREATED, outcome="the task list shows no task "
                       "for it after the grace period: not created")
        log.warning("The lost request created no task; it may be sent again")
        return None
    raise AmbiguousRequestError(
        lost.detail, hint=f"{lost.hint} The task list could not be read in full to find the "
                          "task; `qwen-image recover` looks again and saves its images.")


def store_candidates(generator: "Generator", job: Job | None, entry: Entry, finding: Finding,
                     lost: AmbiguousRequestError | None = None, *,
                     store: ResultStore | None = None) -> None:
    """Download the images of every candidate (at most MAX_CANDIDATE_DOWNLOADS; none
    without a ``job``) into the store, then raise ``AmbiguousTaskError`` listing them:
    downloads cost nothing, and one of them may be the lost call's."""
    several, saved, lines = finding.several, [], []
    for task in several[:MAX_CANDIDATE_DOWNLOADS] if job is not None else []:
        try:
            final = generator.poll_until_done(job, task.task_id, time.monotonic())
            # Not indexed for reuse: the image may be another call's.
            result = generator.finish_task(job, None, task.task_id, final, task.request_id,
                                           store=store, index=False)
        except QwenImageError as exc:
            lines.append(f"{task.task_id}: {exc.detail}")
            continue
        paths = [image.saved_path or image.url for image in result.images]
        saved += paths
        lines.append(f"{task.task_id}: {' '.join(paths)}")
    lines += [f"{task.task_id}: not downloaded" for task in several[len(lines):]]
    ids = [task.task_id for task in several]
    generator.journal.update(entry.id, status=AMBIGUOUS, candidates=ids, saved=saved,
                             outcome="candidate tasks not adopted; their images were stored")
    why = ("this key's id in the task list is not known yet (it is learned from a task of "
           "the key that the journal knows), so another key's task could not be told apart"
           if finding.key_unknown else "several could be it")
    raise AmbiguousTaskError(
        f"{lost.detail + ' ' if lost else ''}The task list shows {len(several)} candidate "
        f"task(s) and {why}; none was adopted: " + "; ".join(lines) + ".",
        candidates=ids, saved=saved,
        hint="Their images are in the result store (downloading costs nothing); those you "
             "did not ask for belong to another call of the same account and model.")
