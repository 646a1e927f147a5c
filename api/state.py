"""What the clients of one process share, as one explicit object.

DashScope's limits are per account and model, its temporary files per account and model,
and a key's region does not change: so two nodes, two clients or two threads using the
same key must share limiters, the limits the quotas API told, the upload cache, key
probes and learned task durations (seeded once from the durations file, ``durations_store``).
Like ``requests.Session`` holding its connection pool, ``ProcessState`` holds all of it;
every client uses ``PROCESS_STATE`` unless given its own (``QwenImageClient(state=...)``),
and ``reset()`` empties it (tests call it between cases). Keys are never stored: entries
are keyed by ``config.key_fingerprint``.
"""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

from .call.limiter import Limits
from .call.polling import DurationEstimator
from .service.quotas import QuotaBook


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
    """Limiters, quotas read, query gates, task slots, upload names, key probes, learned
    durations and ledger locks of every client that uses this object."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Forget everything (work still running keeps the objects it already holds)."""
        self.limits = Limits()
        self.quotas = QuotaBook()
        self.uploads = UploadCache()
        self.key_probes = KeyProbes()
        self.durations = DurationEstimator()
        self.durations_loaded: set[Path] = set()  # durations files read into ``durations``
        self.ledger_locks = LedgerLocks()


PROCESS_STATE = ProcessState()
