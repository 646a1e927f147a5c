"""The journal of billed requests: a paid image is never lost to a crash or a lost answer.

One file per user, beside the spend guard's ledger (``Config.journal``: the folder of
``QWEN_IMAGE_JOURNAL_DIR``, else the ledger's folder, ``~/.dashscope``), shared by every
process of the user (ComfyUI, the command line): ``qwen-image-journal.jsonl``.

Format
    JSON Lines, append-only. ``{"op": "begin", "id", ...}`` is written (and fsynced)
    before a billed request is sent: the request's fingerprint and fields, model, region,
    base URL, interface, the key's fingerprint (never the key), the time, and the result
    store's folder. ``{"op": "set", "id", "set": {...}}`` lines add what became known:
    the task id, the result URLs, the status and the outcome. ``{"op": "key", ...}``
    records the ``api_key_id`` the task list shows for a key. An entry is the fold of its
    lines; a torn last line (a crash mid-write) is skipped.

Locking
    Every append and every read-modify-write runs under an exclusive ``fcntl.flock`` on
    ``<journal>.lock`` (opened without following a symlink), plus a thread lock per file;
    the file is opened after the lock is taken, so a compaction (rewrite to one line per
    entry, temporary file + rename) is never appended to behind its back.

    A decision over the entries is made and written under those locks (``claim``,
    ``share``: recovery shares lost calls' candidates that way, ``take_over``).

Writing
    What is written is decided here only: the other modules say what happened, one method
    each (``sending``, ``answered``, ``lost``, ``succeeded``, ``stored``, ``failed``, ...),
    and never compose statuses or fields themselves.

Ownership
    The folder and the file must belong to this user and be writable by nobody else
    (POSIX): entries planted by another user could claim tasks, name result folders or
    teach recovery a wrong key id. Otherwise the journal is refused (``ConfigurationError``).

Pruning
    Entries older than ``KEEP_DONE`` (48 h) and done are dropped when the file is compacted
    (when it grows past ``COMPACT_BYTES`` and has doubled since this process last compacted
    it, and on ``prune``). Unfinished entries stay until recovery settles them
    (``recovery``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..catalog.specs import IMAGE_EDIT
from ..config import Config, key_fingerprint
from ..errors import AmbiguousRequestError, ConfigurationError, QwenImageError
from ..schema import ImageEditRequest, TextToImageRequest
from ..state import PROCESS_STATE, ProcessState
from .store import ResultStore, atomic_write, exclusive_lock, request_fingerprint

log = logging.getLogger(__name__)

JOURNAL_NAME = "qwen-image-journal.jsonl"
KEEP_DONE = 48 * 3600.0  # seconds a finished entry is kept (task data lives 24 h)
COMPACT_BYTES = 1 << 20  # a larger file is compacted on the next begin

# Statuses. An entry is done once nothing more can be fetched for it.
SENDING = "sending"  # written before the request; no answer yet (or the process died)
CREATED = "created"  # the task exists (task_id)
SUCCEEDED = "succeeded"  # the result URLs are known (urls); not stored yet
STORED = "stored"  # every image is in the result store (saved)
UNFETCHED = "unfetched"  # billed images that could not be downloaded or stored yet
LOST = "lost"  # sent, no usable answer; recovery looks for the task
FAILED = "failed"  # proven not billed: an error answer, a failed or cancelled task
NOT_SENT = "not_sent"  # a local failure before anything was sent
NOT_CREATED = "not_created"  # recovery found no task after its grace period
AMBIGUOUS = "ambiguous"  # several candidate tasks; their images were stored and reported
LOST_SYNC = "lost_sync"  # a synchronous call without an answer: it cannot be recovered
EXPIRED = "expired"  # older than the service keeps tasks and result URLs
HANDED = "handed"  # create_task returned the task id to its caller, who fetches the images
DONE = (STORED, FAILED, NOT_SENT, NOT_CREATED, AMBIGUOUS, LOST_SYNC, EXPIRED, HANDED)
NO_TASK_LISTED = "the task list shows no task for it after the grace period: not created"


@dataclass
class Entry:
    """One billed request as the journal knows it."""

    id: str
    time: float  # epoch seconds, local clock, written right before sending
    model: str
    region: str
    base_url: str
    interface: str  # "sync" or "async"
    key: str  # the key's fingerprint (config.key_fingerprint), never the key
    fingerprint: str  # store.request_fingerprint of the request
    request: dict  # the request's fields (no input image bytes), for sidecars and matching
    store: str | None  # the result store folder its images belong to
    path: str | None = None  # the async path the task was created on
    status: str = SENDING
    task_id: str | None = None
    urls: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # AMBIGUOUS: the task ids found
    outcome: str = ""  # a sentence for people
    updated: float = 0.0
    owner: str = ""  # "host:pid" of the process that sent it (or now recovers it)
    sent_at: float = 0.0  # epoch seconds, local clock, when the last attempt left
    doubt: str = ""  # why its task may be another call's (recovery could not tell)

    @property
    def owner_alive(self) -> bool:
        """Whether the process that sent it still runs (on this host)."""
        host, _, pid = self.owner.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except OSError:  # it exists but belongs to someone else
            return True
        return True

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def prompt(self) -> str | None:
        return self.request.get("prompt")


_FIELDS = {f.name for f in dataclasses.fields(Entry)}


def request_fields(request) -> dict:
    """What the journal keeps of a request: every field but the input images' bytes."""
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)
              if f.name != "images"}
    return {**fields, "family": request.family, "images": len(getattr(request, "images", ()))}


def journaled_request(entry: Entry):
    """The request of an entry again (edits without their inputs), for the result store."""
    kind = ImageEditRequest if entry.request.get("family") == IMAGE_EDIT else TextToImageRequest
    names = {f.name for f in dataclasses.fields(kind)} - {"images"}
    fields = {k: v for k, v in entry.request.items() if k in names}
    return kind(**fields, images=()) if kind is ImageEditRequest else kind(**fields)


class Journal:
    """The journal file at ``path``; safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike, *, state: ProcessState | None = None):
        self.path = Path(path).expanduser()
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._state = state or PROCESS_STATE
        self._thread_lock = self._state.ledger_locks.for_path(self.path)

    @classmethod
    def in_folder(cls, folder: str | os.PathLike, *,
                  state: ProcessState | None = None) -> "Journal":
        return cls(Path(folder).expanduser() / JOURNAL_NAME, state=state)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # -- writing ------------------------------------------------------------------------

    def begin(self, **fields) -> Entry:
        """Record a billed request before it is sent; ``ConfigurationError`` if impossible
        (then it must not be sent: nothing could find it again)."""
        entry = Entry(id=uuid.uuid4().hex, time=time.time(), **fields,
                      owner=f"{socket.gethostname()}:{os.getpid()}")
        entry.updated = entry.time
        record = {"op": "begin", **dataclasses.asdict(entry)}
        with self._locked() as size:
            # Recent entries are kept by a compaction: the next one waits until the file
            # has doubled, so a journal of many recent entries is not rewritten every time.
            if size > max(COMPACT_BYTES, 2 * self._state.journal_compacted.get(self.path, 0)):
                self._compact(time.time())
            self._append(record, sync=True)
        return entry

    def begin_request(self, request, *, model: str, interface: str, path: str,
                      config: Config, store: ResultStore | None) -> Entry:
        """``begin`` for a request about to be sent with ``config``'s key and endpoint."""
        return self.begin(
            model=model, region=config.region, base_url=config.base_url, interface=interface,
            key=key_fingerprint(config.api_key()),
            fingerprint=request_fingerprint(request, config.region),
            request=request_fields(request), path=path,
            store=str(store.directory) if store is not None else None)

    def sending(self, entry_id: str, at: float) -> None:
        """An attempt leaves at ``at`` (epoch seconds): from now on a finder of another
        lost creation waits for its answer."""
        self._update(entry_id, sent_at=at)

    def unanswered(self, entry_id: str, *, sent: bool, error: BaseException) -> None:
        """Record how a request ended without an answer to use: never sent, sent without
        an answer (synchronous: lost for good), or answered with an error (not billed).
        Anything else (a bug) leaves the entry for ``recover``."""
        if not sent:
            self._update(entry_id, status=NOT_SENT, outcome=f"not sent: {error}")
        elif isinstance(error, AmbiguousRequestError):
            self._update(entry_id, status=LOST_SYNC, outcome=str(error))
        elif isinstance(error, QwenImageError):
            self._update(entry_id, status=FAILED, outcome=str(error))

    def claim(self, entry_id: str, task_id: str) -> bool:
        """Give ``task_id`` to this entry unless another entry already has it (atomic)."""
        with self._locked():
            entries, _ = self._fold()
            if any(e.task_id == task_id and e.id != entry_id for e in entries.values()):
                return False
            self._append({"op": "set", "id": entry_id,
                          "set": {"task_id": task_id, "status": CREATED,
                                  "updated": time.time()}}, sync=True)
        return True

    def answered(self, entry_id: str, task_id: str) -> bool:
        """The creation answer named ``task_id``: claimed; False when another entry had it
        (a recovery adopted it meanwhile), and this one is given it all the same."""
        if self.claim(entry_id, task_id):
            return True
        self._update(entry_id, status=CREATED, task_id=task_id, sync=True)
        return False

    def lost(self, entry_id: str, error: BaseException, sent_at: float) -> None:
        """The creation sent at ``sent_at`` got no usable answer: its task is looked for."""
        self._update(entry_id, status=LOST, outcome=str(error), sent_at=sent_at, sync=True)

    def share(self, decide: Callable[[dict[str, Entry]],
                                     dict[str, tuple[str | None, str]] | None]) -> None:
        """Recovery's sharing of candidate tasks among lost creations: ``decide(entries)``,
        under the journal's locks, gives {entry id: (its task id, doubt)} (None: nothing
        to write); an entry with a task adopts it, one without was not created. Written
        (synced) before the locks are let go, so no other process decides on the same
        entries in between."""
        def changes(entries: dict[str, Entry]) -> dict[str, dict] | None:
            plan = decide(entries)
            if plan is None:
                return None
            return {entry_id: {"task_id": task_id, "status": CREATED, "doubt": doubt,
                               "updated": time.time()} if task_id else
                    {"status": NOT_CREATED, "updated": time.time(), "outcome": NO_TASK_LISTED}
                    for entry_id, (task_id, doubt) in plan.items()}

        self._transact(changes)

    def not_created(self, entry_id: str, why: str = NO_TASK_LISTED) -> None:
        """The task list shows no task for it: nothing was created or billed."""
        self._update(entry_id, status=NOT_CREATED, outcome=why)

    def undecided(self, entry_id: str, candidates: list[str]) -> None:
        """Candidate tasks reported, none adopted while this key's id in the task list is
        unknown: the entry stays open (``recover`` looks again), and its ``updated`` stays
        when it was lost (the finder's window)."""
        changes = {"candidates": candidates, "outcome": "candidate tasks not adopted: this "
                   "key's id in the task list is not known yet"}
        self._transact(lambda entries: {entry_id: changes})

    def ambiguous(self, entry_id: str, candidates: list[str], saved: list[str]) -> None:
        """Several tasks could be its; none was adopted, their images are in ``saved``."""
        self._update(entry_id, status=AMBIGUOUS, candidates=candidates, saved=saved,
                     outcome="candidate tasks not adopted; their images were stored")

    def succeeded(self, entry_id: str, urls: list[str], *, sync: bool = False) -> None:
        """The result URLs are known; the images are not downloaded yet."""
        self._update(entry_id, status=SUCCEEDED, urls=urls, sync=sync)

    def stored(self, entry_id: str, saved: list[str]) -> None:
        """Every image is in the result store (``saved``: its files)."""
        self._update(entry_id, status=STORED, urls=[], saved=saved)

    def unfetched(self, entry_id: str, missing: list[str], saved: list[str]) -> None:
        """The images at ``missing`` could not be downloaded or stored yet."""
        self._update(entry_id, status=UNFETCHED, urls=missing, saved=saved)

    def failed(self, entry_id: str, error: BaseException) -> None:
        """An error answer, or a task that failed or was cancelled: proven not billed."""
        self._update(entry_id, status=FAILED, outcome=str(error))

    def handed(self, entry_id: str) -> None:
        """``create_task`` returned the task id: its caller fetches the images."""
        self._update(entry_id, status=HANDED, outcome="returned to the caller")

    def sync_lost(self, entry_id: str, why: str) -> None:
        """A synchronous call without an answer: it made no task to recover."""
        self._update(entry_id, status=LOST_SYNC, outcome=why)

    def expired(self, entry_id: str, why: str) -> None:
        """The service no longer keeps its task."""
        self._update(entry_id, status=EXPIRED, outcome=why)

    def take_over(self, entry_id: str) -> bool:
        """Make this process the entry's owner, unless it is done or a live process owns
        it (another recovery): two recoveries never fetch the same entry."""
        me = f"{socket.gethostname()}:{os.getpid()}"

        def decide(entries: dict[str, Entry]) -> dict[str, dict] | None:
            entry = entries.get(entry_id)
            if entry is None or entry.done or (entry.owner != me and entry.owner_alive):
                return None  # this process's own entries stay recoverable here
            return {entry_id: {"owner": me}}

        return bool(self._transact(decide))

    def released(self, entry_id: str) -> None:
        """A recovery let go of the entry: unless it is done, another run may try it."""
        self._transact(lambda entries: None if entries[entry_id].done
                       else {entry_id: {"owner": ""}})

    def learn_key_id(self, key: str, base_url: str, api_key_id: str) -> None:
        """Remember the task list's ``api_key_id`` of the key with fingerprint ``key``."""
        if self.key_id(key, base_url) == api_key_id:
            return
        try:
            with self._locked():
                self._append({"op": "key", "key": key, "base_url": base_url,
                              "api_key_id": api_key_id, "time": time.time()}, sync=False)
        except (OSError, ConfigurationError) as exc:
            log.warning("Could not write to the journal %s (%s)", self.path, exc)

    def prune(self) -> int:
        """Compact the file now; returns how many entries were dropped."""
        with self._locked():
            return self._compact(time.time())

    # -- reading ------------------------------------------------------------------------

    def entries(self) -> dict[str, Entry]:
        with self._locked(create=False):
            return self._fold()[0]

    def key_id(self, key: str, base_url: str) -> str | None:
        with self._locked(create=False):
            return self._fold()[1].get((key, base_url))

    def claimed(self) -> dict[str, str]:
        """{task id: entry id} of every entry that has a task."""
        return {e.task_id: e.id for e in self.entries().values() if e.task_id}

    def unfinished(self, *, within: float, before: float | None = None) -> list[Entry]:
        """Entries not done, written in the last ``within`` seconds (and before ``before``,
        epoch seconds), oldest first."""
        now = time.time()
        found = [e for e in self.entries().values() if not e.done and e.time >= now - within
                 and (before is None or e.time < before)]
        return sorted(found, key=lambda e: e.time)

    # -- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, create: bool = True) -> Iterator[int]:
        """The journal under both locks; yields its current size (0 when absent)."""
        if not create and not self.path.exists():
            with self._thread_lock:
                yield 0
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise self._unusable(exc) from None
        self._check_owner()
        with self._thread_lock, exclusive_lock(self._lock_path, self._unusable):
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            except OSError as exc:
                raise self._unusable(exc) from None
            yield size

    def _update(self, entry_id: str, *, sync: bool = False, **changes) -> None:
        """Add what became known about an entry (task_id, urls, status, outcome, ...).

        Never raises: after a request was sent, a journal that cannot be written must not
        cost the image; the failure is logged.
        """
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"not journal fields: {sorted(unknown)}")
        record = {"op": "set", "id": entry_id, "set": {**changes, "updated": time.time()}}
        try:
            with self._locked():
                self._append(record, sync=sync)
        except (OSError, ConfigurationError) as exc:
            log.error("Could not write to the journal %s (%s): %s", self.path, exc, changes)

    def _transact(self, decide: Callable[[dict[str, Entry]], dict[str, dict] | None]
                  ) -> dict[str, dict] | None:
        """``decide(entries)`` under the journal's locks; the changes it returns
        ({entry id: {field: value}}) are written (synced) before the locks are let go, so
        no other process decides on the same entries in between."""
        with self._locked():
            changes = decide(self._fold()[0])
            for entry_id, fields in (changes or {}).items():
                unknown = set(fields) - _FIELDS
                if unknown:
                    raise TypeError(f"not journal fields: {sorted(unknown)}")
                self._append({"op": "set", "id": entry_id, "set": fields}, sync=True)
        return changes

    def _append(self, record: dict, *, sync: bool) -> None:
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            descriptor = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise self._unusable(exc) from None
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a line torn by a crash, so this one stays whole
            os.write(descriptor, line)  # one write: a crash leaves a whole line or a torn one
            if sync:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _lines(self) -> list[dict]:
        try:
            text = self.path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._unusable(exc) from None
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash
            if isinstance(record, dict):
                records.append(record)
        return records

    def _fold(self) -> tuple[dict[str, Entry], dict[tuple[str, str], str]]:
        entries: dict[str, Entry] = {}
        keys: dict[tuple[str, str], str] = {}
        for record in self._lines():
            op = record.get("op")
            try:
                if op == "begin":
                    fields = {k: v for k, v in record.items() if k in _FIELDS}
                    entries[fields["id"]] = Entry(**fields)
                elif op == "set" and record.get("id") in entries:
                    entry = entries[record["id"]]
                    for name, value in (record.get("set") or {}).items():
                        if name in _FIELDS and name != "id":
                            setattr(entry, name, value)
                elif op == "key":
                    keys[(str(record["key"]), str(record["base_url"]))] = str(record["api_key_id"])
            except (KeyError, TypeError):
                log.warning("Skipping an unreadable journal record in %s", self.path)
        return entries, keys

    def _compact(self, now: float) -> int:
        """Rewrite as one line per kept entry (call under the locks)."""
        entries, keys = self._fold()
        kept = {i: e for i, e in entries.items()
                if not (e.done and e.time < now - KEEP_DONE)}
        lines = [json.dumps({"op": "begin", **dataclasses.asdict(e)}, ensure_ascii=False)
                 for e in kept.values()]
        lines += [json.dumps({"op": "key", "key": k, "base_url": b, "api_key_id": v,
                              "time": now}, ensure_ascii=False) for (k, b), v in keys.items()]
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        try:
            atomic_write(self.path, data, mode=0o600)
        except OSError as exc:
            raise self._unusable(exc) from None
        self._state.journal_compacted[self.path] = len(data)
        return len(entries) - len(kept)

    def _check_owner(self) -> None:
        """Refuse a journal folder or file that another user owns or may write: entries
        planted there could claim tasks, name result folders or mislead recovery."""
        if not hasattr(os, "getuid"):
            return  # no POSIX owners (Windows): the user's profile folder is private
        for path, look in ((self.path.parent, os.stat), (self.path, os.lstat)):
            try:
                status = look(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._unusable(exc) from None
            if status.st_uid != os.getuid() or status.st_mode & 0o022:
                raise ConfigurationError(
                    f"The journal of billed requests {self.path} cannot be used: {path} is "
                    + ("owned by another user" if status.st_uid != os.getuid()
                       else "writable by other users") + ".",
                    hint="Point QWEN_IMAGE_JOURNAL_DIR at a folder of your own that others "
                         "cannot write to (chmod go-w).")

    def _unusable(self, exc: OSError) -> ConfigurationError:
        return ConfigurationError(
            f"The journal of billed requests {self.path} cannot be used ({exc}).",
            hint="Make its folder writable, or point QWEN_IMAGE_JOURNAL_DIR at a writable "
                 "folder.")
