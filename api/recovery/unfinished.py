"""Finishing the journal's unfinished entries: ``qwen-image recover`` and the background
recovery of a process's first call.

For every entry of the last 24 hours that is not done (``journal``), with the key and
endpoint configured now (an entry of another key or endpoint is skipped: the key goes only
where the configuration says), and whose sending process is gone:

- the answer came but its images did not land: they are downloaded again (result URLs
  live 24 hours);
- a task id is known: the task is polled to its end and its images downloaded;
- a task creation without an answer: the task list is searched (``recovery.TaskFinder``),
  and the task adopted, or every candidate's images stored, or the entry closed as never
  created;
- a synchronous call without an answer: it made no task and cannot be recovered.

Images go to the store the entry names (or ``out``). Entries older than 24 hours are
closed as expired: the service no longer keeps their tasks.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TextIO

from ..call.waiting import Job
from ..catalog.models import spec_for
from ..catalog.specs import SYNC, TEXT2IMAGE_PATH
from ..config import key_fingerprint
from ..errors import AmbiguousTaskError, QwenImageError, TaskError
from ..schema import GenerationResult
from ..service.transport import CONNECT_TIMEOUT
from ..storage.journal import (
    AMBIGUOUS,
    EXPIRED,
    FAILED,
    LOST,
    LOST_SYNC,
    NOT_CREATED,
    STORED,
    Entry,
    Journal,
    journaled_request,
)
from ..storage.store import ResultStore
from .finder import TASK_DATA_TTL

if TYPE_CHECKING:
    from ..client import QwenImageClient

log = logging.getLogger(__name__)



@dataclass
class Recovered:
    """What ``Recoverer.recover`` did with one entry."""

    entry: Entry
    status: str  # the entry's journal status afterwards, or "skipped"
    message: str
    saved: list[str] = field(default_factory=list)


def pending(journal: Journal, *, before: float | None = None) -> list[Entry]:
    """Unfinished entries of the last 24 hours (oldest first; ``before``: sent before that
    epoch time); older ones are closed as expired, as the service no longer keeps them."""
    for old in journal.unfinished(within=float("inf"), before=time.time() - TASK_DATA_TTL):
        journal.expired(old.id, "older than the 24 hours the service keeps tasks")
    journal.prune()  # done entries older than 48 hours go
    return journal.unfinished(within=TASK_DATA_TTL, before=before)


class Recoverer:
    """Finishes the journal's unfinished entries with ``client``'s key and endpoint: polls
    their tasks, finds lost ones, and stores every image that succeeded in the store the
    entry names (or ``out``). Used by ``qwen-image recover`` and, in the background, by
    the first call of a process (``recover_in_background``)."""

    def __init__(self, client: "QwenImageClient", *, out: ResultStore | None = None):
        self.client = client
        self.journal = client.journal
        self.out = out

    def recover(self, entry: Entry) -> Recovered:
        config = self.client.config
        if entry.base_url != config.base_url or entry.key != key_fingerprint(config.api_key()):
            return Recovered(entry, "skipped", f"sent to {entry.base_url} with another key or "
                             "endpoint than configured now; run with that configuration")
        store = self.out or (ResultStore(entry.store) if entry.store else None)
        if store is None:
            return Recovered(entry, "skipped", "no result store is recorded for it; name one "
                                               "(--out)")
        recovering = self.client.state.recovering
        mine = recovering.first(entry.id)
        if mine and not self.journal.take_over(entry.id):
            recovering.clear(entry.id)
            mine = False
        if not mine:  # its sender or another recovery has it: one image is stored once
            return Recovered(entry, "skipped", f"still in progress in process {entry.owner}"
                             if entry.owner_alive else "being recovered by another run")
        try:
            return self._recover(entry, store)
        except AmbiguousTaskError as exc:
            return Recovered(entry, AMBIGUOUS, str(exc), exc.saved)
        except TaskError as exc:
            if exc.status == "UNKNOWN":  # the service no longer knows the task
                self.journal.expired(entry.id, str(exc))
                return Recovered(entry, EXPIRED, str(exc))
            self.journal.failed(entry.id, exc)
            return Recovered(entry, FAILED, str(exc))
        finally:
            self.journal.released(entry.id)
            recovering.clear(entry.id)

    def _recover(self, entry: Entry, store: ResultStore) -> Recovered:
        generator = self.client.generator
        request = journaled_request(entry)
        spec = spec_for(entry.model, request.family)
        job = Job(request, spec, entry.interface, 0.0)
        if entry.urls:  # the answer came, the images did not land
            result = GenerationResult(
                images=[], model=entry.model, region=entry.region, interface=entry.interface,
                task_id=entry.task_id, orig_prompt=request.prompt, seed=request.seed,
                notes=["recovered from the journal"])
            result = generator.collect(job, result, entry.urls, store=store, entry=entry)
            return Recovered(entry, STORED, "downloaded", _saved(result))
        if entry.interface == SYNC:
            self.journal.sync_lost(entry.id, _SYNC_LOST)
            return Recovered(entry, LOST_SYNC, _SYNC_LOST)
        task_id, request_id = entry.task_id, None
        if task_id is None:
            # A process that died waiting for the answer noticed nothing: the answer could
            # have come until its timeout.
            noticed = (entry.updated or entry.time) if entry.status == LOST else (
                (entry.sent_at or entry.time) + CONNECT_TIMEOUT + self.client.config.timeout)
            finding = generator.finder().find(entry, noticed=noticed,
                                              shows_prompt=spec.async_path == TEXT2IMAGE_PATH)
            if finding.several:
                generator.store_candidates(job, entry, finding, store=store)
            if finding.none:
                message = "no task was created for it (the task list shows none): nothing billed"
                self.journal.not_created(entry.id, message)
                return Recovered(entry, NOT_CREATED, message)
            if finding.adopted is None:
                return Recovered(entry, entry.status, "the task list could not be read in "
                                                      "full; try again later")
            task_id, request_id = finding.adopted.task_id, finding.adopted.request_id
            entry.doubt = finding.doubt
        final = generator.poll_until_done(job, task_id, time.monotonic())
        result = generator.finish_task(job, entry, task_id, final, request_id, store=store)
        return Recovered(entry, STORED, f"task {task_id} downloaded", _saved(result))


def recover_all(journal: Journal, out: ResultStore | None, stream: TextIO,
                client_for: Callable[[str], "QwenImageClient"]) -> bool:
    """``qwen-image recover``: every pending entry, each with ``client_for(region)`` (a
    client of the entry's region, closed after use); what happened is written to
    ``stream``. True when nothing is left that could be fetched."""
    entries = pending(journal)
    stream.write(f"{len(entries) or 'No'} unfinished request(s) of the last 24 hours in "
                 f"{journal.path}\n")
    clean = True
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.time))
        stream.write(f"{when}  {entry.model}  {entry.interface}  "
                     f"{entry.task_id or 'no task id'}  {entry.status}\n")
        stream.flush()
        try:
            with client_for(entry.region) as client:
                done = Recoverer(client, out=out).recover(entry)
        except QwenImageError as error:
            clean = False
            stream.write(f"  not recovered: {error}\n")
            continue
        clean = clean and done.status in (STORED, FAILED, NOT_CREATED, EXPIRED)
        stream.write(f"  {done.status}: {done.message}\n")
        stream.writelines(f"  {path}\n" for path in done.saved)
    return clean


_SYNC_LOST = ("a synchronous call whose answer was lost cannot be recovered (it made no "
              "task); its images, if any, are billed but unknown")


def _saved(result) -> list[str]:
    return [image.saved_path for image in result.images if image.saved_path]


def recover_in_background(client: "QwenImageClient") -> threading.Thread | None:
    """Once per process, journal and endpoint: recover in a daemon thread what was sent
    before this process started (a ComfyUI restart), logging what it stored."""
    if client.journal is None or client.store is None:
        return None
    if not client.state.recoveries_started.first((str(client.journal.path),
                                                  client.config.base_url)):
        return None

    def run() -> None:
        recoverer = Recoverer(client)
        try:
            entries = pending(client.journal, before=client.state.started)
        except QwenImageError as exc:
            log.warning("Background recovery could not read the journal: %s", exc)
            return
        for entry in entries:
            try:
                done = recoverer.recover(entry)
            except QwenImageError as exc:
                log.warning("Background recovery of %s (%s) failed: %s", entry.task_id or
                            entry.id, entry.model, exc)
                continue
            if done.status != "skipped":
                log.warning("Recovered %s %s from before the restart: %s %s", entry.model,
                            entry.task_id or "", done.message, " ".join(done.saved))

    thread = threading.Thread(target=run, name="qwen-image-recovery", daemon=True)
    thread.start()
    return thread
