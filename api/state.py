"""What the clients of one process share, as one explicit object.

DashScope's limits are per account and model, its temporary files per account and model,
and a key's region does not change: so two nodes, two clients or two threads using the
same key must share limiters, the limits the quotas API told, the upload cache, key
probes and learned task durations (seeded once from the durations file,
``storage.durations``). Like ``requests.Session`` holding its connection pool,
``ProcessState`` holds all of it, and also every other thing the pack keeps per process:
the keys to redact (``keys``), what was warned about once (``warned``), when the process
started (``started``), the ledger and settle locks, the journal's compaction sizes, and
which recoveries and key-id look-ups are under way.

Every client uses ``PROCESS_STATE`` unless given its own (``QwenImageClient(state=...)``);
code without a client at hand (exceptions redacting keys, warn-once) uses ``PROCESS_STATE``.
``reset()`` makes it as a fresh process finds it (tests call it between cases); the keys
registry is kept, since configurations made before still hold fingerprints of it.

This module imports nothing of the pack, so everything can use it. The limiters, the
quotas read and the learned durations are parts whose types live with the code that uses
them (``call.limiter``, ``service.quotas``, ``call.polling``): each of those modules
declares its part (``ProcessState.declare``), and a state makes it on first use.
"""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Hashable, Iterator

if TYPE_CHECKING:
    from .call.limiter import Limits
    from .call.polling import DurationEstimator
    from .service.quotas import QuotaBook

class KeyRegistry:
    """The configured keys, by fingerprint: the only place a resolved key is held, and what
    ``redact`` removes from every message."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_fingerprint: dict[str, str] = {}
        self._secrets: set[str] = set()

    def remember(self, fingerprint: str, key: str) -> None:
        """Hold ``key``; ``redact`` removes it, and its body without the ``sk-`` prefix (a
        service or a proxy may quote the key that way)."""
        with self._lock:
            self._by_fingerprint[fingerprint] = key
            if key:
                self._secrets.add(key)
                body = key[3:] if key.startswith("sk-") else ""
                if len(body) >= 8:
                    self._secrets.add(body)

    def key(self, fingerprint: str) -> str:
        with self._lock:
            return self._by_fingerprint[fingerprint]

    def secrets(self) -> list[str]:
        """The values to redact, longest first (a key before its own body)."""
        with self._lock:
            return sorted(self._secrets, key=len, reverse=True)


class Marks:
    """A thread-safe set of marks: what is under way (a recovery, a look-up) or done once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._marks: set[Hashable] = set()

    def first(self, mark: Hashable, unless: Callable[[], bool] | None = None) -> bool:
        """Mark ``mark``; True when it was not marked yet (and ``unless()``, checked under
        the same lock, is false)."""
        with self._lock:
            if mark in self._marks or (unless is not None and unless()):
                return False
            self._marks.add(mark)
            return True

    def clear(self, mark: Hashable) -> None:
        with self._lock:
            self._marks.discard(mark)


class UploadCache:
    """oss:// names of files already in DashScope's temporary storage, until they expire.

    Keyed by (base URL, key fingerprint, model, content sha256); two calls needing the same
    new file wait for one upload.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._names: dict[tuple, tuple[str, float]] = {}  # entry -> (name, monotonic expiry)
        self._uploading: dict[tuple, threading.Lock] = {}

    @contextlib.contextmanager
    def one_upload_at_a_time(self, entry: tuple) -> Iterator[None]:
        with self._lock:
            lock = self._uploading.setdefault(entry, threading.Lock())
        with lock:
            yield

    def known(self, entry: tuple) -> str | None:
        with self._lock:
            found = self._names.get(entry)
            return found[0] if found and found[1] > time.monotonic() else None

    def remember(self, entry: tuple, name: str, expires: float) -> None:
        with self._lock:
            now = time.monotonic()
            for old in [e for e, (_, until) in self._names.items() if until <= now]:
                del self._names[old]
                self._uploading.pop(old, None)
            self._names[entry] = (name, expires)


class KeyProbes:
    """Whether a key was accepted by another region's endpoint (a probe per key and URL)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._accepted: dict[tuple[str, str], bool] = {}

    def get(self, fingerprint: str, url: str) -> bool | None:
        with self._lock:
            return self._accepted.get((fingerprint, url))

    def put(self, fingerprint: str, url: str, accepted: bool) -> None:
        with self._lock:
            self._accepted[(fingerprint, url)] = accepted


class LedgerLocks:
    """One thread lock per spend-guard ledger file.

    ``flock`` excludes other processes; threads of this one share this lock as well, so the
    guard is correct even where flock is missing or acts per process.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._locks: dict[Path, threading.Lock] = {}

    def for_path(self, path: Path) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(path, threading.Lock())


class ProcessState:
    """Everything the pack keeps per process, for every client that uses this object."""

    _parts: ClassVar[dict[str, Callable[[], object]]] = {}

    if TYPE_CHECKING:
        limits: Limits
        quotas: QuotaBook
        durations: DurationEstimator

    @classmethod
    def declare(cls, name: str, factory: Callable[[], object]) -> None:
        """``name`` is a part made by ``factory()`` on a state's first use of it (and again
        after ``reset``)."""
        cls._parts[name] = factory

    def __init__(self):
        self.keys = KeyRegistry()
        self.reset()

    def __getattr__(self, name: str):
        factory = ProcessState._parts.get(name)
        if factory is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with self._parts_lock:
            if name not in self.__dict__:
                self.__dict__[name] = factory()
        return self.__dict__[name]

    def reset(self) -> None:
        """As a fresh process finds it (work still running keeps the objects it holds)."""
        for name in ProcessState._parts:
            self.__dict__.pop(name, None)
        self._parts_lock = threading.Lock()
        self.started = time.time()  # journal entries older than this are an earlier process's
        self.uploads = UploadCache()
        self.key_probes = KeyProbes()
        self.durations_loaded: set[Path] = set()  # durations files read into ``durations``
        self.ledger_locks = LedgerLocks()
        self.settle_lock = threading.Lock()  # the spend guard's settle-and-forget step
        self.journal_compacted: dict[Path, int] = {}  # a journal's size after our last compaction
        self.warned = Marks()  # what was logged once
        self.recovering = Marks()  # journal entries a recovery of this process is fetching
        self.recoveries_started = Marks()  # (journal, endpoint): background recovery started
        self.learning_key_ids = Marks()  # (key, base URL) whose task-list id a call looks up


PROCESS_STATE = ProcessState()

