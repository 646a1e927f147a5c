"""Finding, in the task list, the task of a creation whose answer was lost.

Lost answers (``TaskFinder``)
=============================
When a task-creating POST was sent and no usable answer came back (``transport`` raises
``AmbiguousRequestError``), the task may exist. The asynchronous task list
(``GET {base}/tasks``, Model Studio: asynchronous task management) shows every task of the
account, by any key, with ``model_name``, ``gmt_create`` (epoch ms, the service's clock),
``api_key_id`` and the submit call's ``request_id``, but not the prompt. A task is adopted
only on evidence that ties it to this call:

1. **The window, on the service's clock.** The service made the task between the moment
   the request left (``sent``) and the moment its loss was noticed, on *its* clock: the
   offset is learned from the ``Date`` header of its answers (``service.clock``), so this
   machine's clock may be minutes off. The window is ``[sent, noticed]`` moved by that
   offset and ``WINDOW_SLACK`` seconds wider on each side. The list's
   ``start_time``/``end_time`` (``YYYYMMDDhhmmss``) have no documented time zone, so the
   window is asked for as UTC+8 (the zone of every other task time) and as UTC, and the
   answers are merged. No ``Date`` seen: nothing is concluded.
2. **Not claimed.** A task id that a journal entry has (a call that got its answer, or an
   earlier adoption) is never a candidate; an answered creation claims its task
   atomically (``Journal.claim``).
3. **The prompt**, for tasks that show it (``text2image/image-synthesis``:
   ``results[].orig_prompt`` once SUCCEEDED): only a task showing the prompt sent can be
   adopted, whichever key made it. A task that ended without images shows none and is
   not billed: it is never adopted, and sending again costs nothing twice.
4. **The key**, for tasks that show no prompt (3.0): only a task of this key, whose
   ``api_key_id`` is learned early -- after the key's first answered creation, its task
   is looked up once by id (free) -- so from the key's second call on exactly one unclaimed
   task of this key in the window is adopted. While the id is unknown nothing is adopted
   and the candidates are reported without downloading their images (they may be another
   key's).

Calls of one journal that lose their answers together (a batch) are decided together:
while another creation of the same key and model whose task could fall in the window
still awaits its answer, nobody decides; then the lost calls whose windows overlap (and,
for prompt-showing tasks, with the same prompt) share the candidates under the journal's
lock (``Journal.share``): each task goes to one call (the earliest sent first), calls
left without one were not created. Where more than one of those
calls could own a task and they differ (a seed), the adoption carries a ``doubt``:
``info``, the result's notes and the sidecar say so, and the result is not indexed for
reuse. More candidates than lost calls: none is adopted, the candidates are reported
(``Finding.several``). None once every lost call's grace period is over: not created.
What the sender then does (adopt, store the candidates' images, send once more) is a step
of sending (``call.generation``).

What evidence cannot tell apart: a task of the same key made elsewhere (another machine
or journal) in the same seconds, with the same prompt (or for 3.0 with any prompt), is
taken for this call's.

Grace period (an assumption)
    How soon a new task appears in the list is not documented. ``Config.recovery_grace``
    (``QWEN_IMAGE_RECOVERY_GRACE``, default ``config.DEFAULT_RECOVERY_GRACE`` = 120 s after
    the failure was noticed) assumes the list shows a task within two minutes of its
    creation: a task query sees a task at once, and the list is the same task store read
    another way. Only a complete listing (every page read) can conclude "none"; a listing
    that fails or is cut short leaves the request ambiguous.

One look reads at most ``MAX_PAGES`` list pages per time zone and makes at most
``QUERIES_PER_LOOK`` task queries (the account has 20 per second for all its programs);
candidates not read yet wait for the next look.

The synchronous interface makes no task and cannot be recovered.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from ..catalog.specs import ASYNC
from ..errors import ApiError, TransportError
from ..service.transport import Transport
from ..service.wire import TaskState
from ..storage.journal import LOST, NOT_CREATED, SENDING, Entry, Journal

log = logging.getLogger(__name__)

WINDOW_SLACK = 5.0  # seconds the window reaches past [sent, noticed] on the service's clock
LIST_STEP = 5.0  # seconds between two looks at the list
MIN_LIST_STEP = 0.5  # ... but a short grace period (a quarter of it) gets several looks
PAGE_SIZE = 100  # the list's default is 10; no maximum is documented
MAX_PAGES = 5  # per time zone; a longer listing is not read to the end (nothing concluded)
QUERIES_PER_LOOK = 20  # task queries of one look (the account's rate per second)
PROMPT_WAIT = 1800.0  # longest wait past the grace period for candidates to show a prompt
TASK_DATA_TTL = 24 * 3600.0  # the service keeps tasks and result URLs this long
_UTC8 = datetime.timezone(datetime.timedelta(hours=8))


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
    doubt: str = ""  # the adopted task may be another call's of this journal (why)

    @property
    def none(self) -> bool:
        return self.adopted is None and not self.several and self.complete


@dataclass(frozen=True)
class _Lost:
    """A lost creation of the journal and its window on the service's clock."""

    entry: Entry
    sent: float  # this machine's clock
    noticed: float
    earliest: float  # the service's clock
    latest: float

    def holds(self, task: ListedTask) -> bool:
        return task.created_ms is None or self.earliest <= task.created_ms / 1000 <= self.latest


def _same_stream(a: Entry, b: Entry) -> bool:
    """Whether the tasks of ``a`` and ``b`` look alike in the list (key, endpoint, model)."""
    return (a.key, a.base_url, a.model, a.interface) == (b.key, b.base_url, b.model, ASYNC)


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
        self.step = min(step, max(MIN_LIST_STEP, grace / 4))  # several looks in a short grace

    def find(self, entry: Entry, *, noticed: float, shows_prompt: bool,
             sent: float | None = None,
             sleep: Callable[[float], None] = time.sleep) -> Finding:
        """Look until a decision (module docstring); ``sent``/``noticed``: epoch seconds
        when the request left and when it ended without an answer."""
        sent = sent or entry.sent_at or entry.time
        states: dict[str, TaskState] = {}
        while True:
            offset = self._offset()
            if offset is None:
                log.warning("No answer of DashScope told its time (Date): the task list "
                            "cannot be searched")
                return Finding(complete=False)
            entries = self.journal.entries()
            mine = entries.get(entry.id, entry)
            if mine.task_id:  # a sibling's decision gave it its task
                return Finding(adopted=ListedTask(mine.task_id, None, entry.model, None, None,
                                                  None), doubt=mine.doubt)
            if mine.status == NOT_CREATED:  # a sibling's decision: it was not created
                return Finding()
            group = self._group(entry, entries, sent, noticed, offset, shows_prompt)
            earliest = min(g.earliest for g in group)
            latest = max(g.latest for g in group)
            listed, complete = self._list(entry.model, earliest, latest)
            if listed is None:  # the list cannot be read: nothing can be concluded now
                return Finding(complete=False)
            own_id = self._own_key_id(listed, entry)
            claimed = {e.task_id for e in entries.values() if e.task_id}
            candidates = [t for t in listed if t.model in (None, entry.model)
                          and t.task_id not in claimed
                          and (own_id is None or t.api_key_id == own_id)
                          and any(g.holds(t) for g in group)]
            unread = self._read(candidates, states) if shows_prompt else False
            if shows_prompt:  # a task showing another prompt (or none, at its end) is not ours
                candidates = [t for t in candidates if not states.get(t.task_id)
                              or not states[t.task_id].terminal
                              or prompt_matches(states[t.task_id].orig_prompt, entry.prompt)]
            now = time.time()
            decide_at = max(g.noticed for g in group) + self.grace
            patient = now < decide_at + PROMPT_WAIT
            matched = shows_prompt and len(group) == 1 and any(
                t.task_id in states and prompt_matches(states[t.task_id].orig_prompt,
                                                       entry.prompt) for t in candidates)
            if patient and (unread or self._awaiting(entry, entries, latest, offset[0])):
                sleep(self.step)
                continue
            if matched or now >= decide_at:
                finding = self._decide(entry, group, candidates, states, own_id, complete,
                                       shows_prompt, latest, offset[0])
                if finding is not None:
                    return finding
            sleep(self.step)

    def learn_key_id(self, task_id: str) -> None:
        """Learn this key's ``api_key_id`` from its task ``task_id`` (one list look-up by
        id, free), unless the journal knows it."""
        if not self.journal.key_id(self.key, self.base_url):
            self._look_up_key_id(task_id)

    # -- internals ----------------------------------------------------------------------

    def _offset(self) -> tuple[float, float] | None:
        """The service clock's offset; without one yet, one list page of one task is read
        for its ``Date``."""
        if self.transport.clock.offset() is None:
            try:
                self._get({"page_no": "1", "page_size": "1"})
            except (ApiError, TransportError) as exc:
                log.warning("The task list could not be read (%s)", exc.detail)
        return self.transport.clock.offset()

    def _group(self, entry: Entry, entries: dict[str, Entry], sent: float, noticed: float,
               offset: tuple[float, float], shows_prompt: bool) -> list[_Lost]:
        """This entry and the journal's other lost creations its tasks could be confused
        with (same key, endpoint and model; the same prompt where tasks show it;
        overlapping windows); this entry first."""
        low, high = offset

        def lost(e: Entry, sent_at: float, noticed_at: float) -> _Lost:
            return _Lost(e, sent_at, noticed_at, sent_at + low - WINDOW_SLACK,
                         noticed_at + high + WINDOW_SLACK)

        me = lost(entry, sent, noticed)
        group = [me]
        for other in entries.values():
            if (other.id == entry.id or other.status != LOST or other.task_id
                    or not _same_stream(other, entry)
                    or (shows_prompt and other.prompt != entry.prompt)):
                continue
            sibling = lost(other, other.sent_at or other.time, other.updated or other.time)
            if sibling.earliest <= me.latest and me.earliest <= sibling.latest:
                group.append(sibling)
        return group

    @staticmethod
    def _awaiting(entry: Entry, entries: dict[str, Entry], latest: float, low: float) -> bool:
        """Whether another creation of the same key and model, sent early enough to have
        its task in the window, still awaits its answer (it will claim its task)."""
        me = f"{socket.gethostname()}:{os.getpid()}"
        return any(
            other.id != entry.id and other.status == SENDING and not other.task_id
            and other.sent_at and _same_stream(other, entry)
            and other.sent_at + low - WINDOW_SLACK <= latest
            and (other.owner == me or other.owner_alive)
            for other in entries.values())

    def _read(self, candidates: list[ListedTask], states: dict[str, TaskState]) -> bool:
        """Query candidates whose prompt is not known yet (at most QUERIES_PER_LOOK);
        whether some are left unread or unfinished."""
        unread = [t for t in candidates
                  if t.task_id not in states or not states[t.task_id].terminal]
        for task in unread[:QUERIES_PER_LOOK]:
            states[task.task_id] = self.query(task.task_id)
        return any(t.task_id not in states or not states[t.task_id].terminal for t in unread)

    def _decide(self, entry: Entry, group: list[_Lost], candidates: list[ListedTask],
                states: dict[str, TaskState], own_id: str | None, complete: bool,
                shows_prompt: bool, latest: float, low: float) -> Finding | None:
        """Share the candidates among the group under the journal's lock and write every
        member's outcome; this entry's finding, or None when the journal changed since it
        was read (look again)."""
        outcome: dict[str, object] = {}

        def fits(member: _Lost, task: ListedTask) -> bool | None:
            """Whether the task can be the member's; None: its prompt cannot be read yet."""
            if not member.holds(task):
                return False
            if not shows_prompt:
                return True
            state = states.get(task.task_id)
            if state is None or not state.terminal:
                return None
            return prompt_matches(state.orig_prompt, member.entry.prompt)

        def decide(entries: dict[str, Entry]) -> dict[str, dict] | None:
            for member in group:
                now = entries.get(member.entry.id)
                if now is None or now.task_id or now.status not in (LOST, SENDING):
                    return None  # decided or answered meanwhile
            if self._awaiting(entry, entries, latest, low):
                return None
            claimed = {e.task_id for e in entries.values() if e.task_id}
            pool = [t for t in candidates if t.task_id not in claimed]
            plan = _share(group, pool, fits, own_id is not None or shows_prompt)
            if plan is None:
                outcome["several"] = [t for t in pool if group[0].holds(t)]
                return None
            if not complete and any(task is None for task, _ in plan.values()):
                outcome["incomplete"] = True  # "not created" needs every page read
                return None
            outcome["plan"] = plan
            return {member_id: (task.task_id if task else None, doubt)
                    for member_id, (task, doubt) in plan.items()}

        self.journal.share(decide)
        if "several" in outcome:
            return Finding(several=outcome["several"], complete=complete,
                           key_unknown=own_id is None)
        if "incomplete" in outcome:
            return Finding(complete=False)
        if "plan" not in outcome:
            return None
        task, doubt = outcome["plan"][entry.id]
        return Finding(adopted=task, complete=complete, doubt=doubt)

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
                and e.base_url == self.base_url and e.id != entry.id and not e.doubt}
        for task in listed:
            if task.task_id in mine and task.api_key_id:
                self.journal.learn_key_id(self.key, self.base_url, task.api_key_id)
                return task.api_key_id
        recent = sorted((e for e in entries.values() if e.task_id in mine
                         and e.time > time.time() - TASK_DATA_TTL), key=lambda e: -e.time)
        for other in recent[:1]:  # one look-up by task id per search
            return self._look_up_key_id(other.task_id)
        return None

    def _look_up_key_id(self, task_id: str) -> str | None:
        try:
            tasks, _ = read_task_list(self._get({"task_id": task_id}))
        except (ApiError, TransportError) as exc:
            log.info("Could not look up task %s in the task list (%s)", task_id, exc)
            return None
        for task in tasks:
            if task.task_id == task_id and isinstance(task.api_key_id, str) and task.api_key_id:
                self.journal.learn_key_id(self.key, self.base_url, task.api_key_id)
                return task.api_key_id
        return None


def _share(group: list[_Lost], pool: list[ListedTask],
           fits: Callable[[_Lost, ListedTask], bool | None], evidence: bool
           ) -> dict[str, tuple[ListedTask | None, str]] | None:
    """{entry id: (its task or None, doubt)} for every member, each task to the earliest
    sent member it fits; None when the candidates cannot be shared (more than the lost
    calls, a prompt still unread, or tasks that only a key's id could tell apart while it
    is unknown)."""
    members = sorted(group, key=lambda m: m.sent)
    if any(fits(m, t) is None for m in members for t in pool):
        return None
    tasks = sorted((t for t in pool if any(fits(m, t) for m in members)),
                   key=lambda t: t.created_ms or 0)
    if len(tasks) > len(members) or (tasks and not evidence):
        return None
    plan: dict[str, tuple[ListedTask | None, str]] = {m.entry.id: (None, "") for m in members}
    for task in tasks:
        owners = [m for m in members if fits(m, task)]
        free = [m for m in owners if plan[m.entry.id][0] is None]
        if not free:
            return None
        doubt = ""
        if len({m.entry.fingerprint for m in owners}) > 1:
            seeds = ", ".join(sorted((str(m.entry.request.get("seed")) for m in owners),
                                     key=lambda seed: (len(seed), seed)))
            doubt = (f"task {task.task_id} could be the task of any of {len(owners)} calls "
                     f"sent in the same seconds (seeds {seeds}) whose answers were lost; "
                     "which one is not known, so the seed and parameters recorded for it may "
                     "be another of those calls'")
        plan[free[0].entry.id] = (task, doubt)
    return plan

