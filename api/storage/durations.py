"""Learned task durations kept on disk, so a new process starts from what the last one knew.

File: ``qwen-image-durations.json`` beside the spend-guard ledger (``Config.budget.path``'s
folder, ``~/.dashscope`` by default), shared by ComfyUI and the command line:

    {"version": 1, "durations": [{"base_url": "...", "model": "qwen-image-plus",
      "interface": "async", "mean": 14.2, "deviation": 1.9, "updated": 1790000000.0}, ...]}

One entry per (base URL, model, interface): the base URL names the region (and tells the
real service from a proxy or the emulator). A client's generator reads the file once per
process (``LearnedDurations``: the process state's estimator is seeded with what it does
not know yet) and writes an entry back after every duration it learns. Each write is a
read-modify-write under an exclusive ``fcntl.flock`` on a sibling ``.lock`` file
(``store.exclusive_lock``: never followed through a symlink; threads of one process also
share a lock), then an atomic rename. Entries not updated for
``KEEP_DAYS`` are dropped, and at most ``MAX_ENTRIES`` kept.

The file only spares the first tasks of a process a few polls (``polling`` needs no prior),
so any problem with it (unwritable folder, a file of another shape, a duration that is not
a plausible number of seconds) is logged once and otherwise ignored: it never fails a call.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..bounds import bounded, warn_once
from ..call.polling import DurationEstimator, Estimate, plausible
from .store import exclusive_lock

if TYPE_CHECKING:
    from ..config import Config
    from ..state import ProcessState

log = logging.getLogger(__name__)

FILE_NAME = "qwen-image-durations.json"
KEEP_DAYS = 30
MAX_ENTRIES = 200
_FIELDS = ("base_url", "model", "interface")

def _warn_once(path: Path, exc: Exception) -> None:
    warn_once(("durations file", path), "Learned task durations cannot be kept in %s (%s); "
              "the first tasks of each process poll a little more often", path, exc, logger=log)


class DurationFile:
    """The durations file at ``path``; ``thread_lock`` serialises this process's threads."""

    def __init__(self, path: Path, thread_lock: threading.Lock):
        self.path = path
        self._thread_lock = thread_lock

    def load(self) -> dict[tuple, Estimate]:
        """``{(base_url, model, interface): (mean, deviation)}``; empty when unreadable."""
        try:
            with self._locked():
                entries = self._read()
        except (OSError, ValueError) as exc:
            _warn_once(self.path, exc)
            return {}
        return {tuple(e[f] for f in _FIELDS): (e["mean"], e["deviation"]) for e in entries}

    def save(self, key: tuple, estimate: Estimate) -> None:
        """Write ``key``'s estimate, keeping every other process's entries."""
        try:
            with self._locked():
                try:
                    entries = self._read()
                except ValueError:  # another shape: nothing in it worth keeping
                    entries = []
                record = dict(zip(_FIELDS, key, strict=False), mean=round(estimate[0], 3),
                              deviation=round(estimate[1], 3), updated=time.time())
                kept = [e for e in entries if tuple(e[f] for f in _FIELDS) != key]
                oldest = time.time() - KEEP_DAYS * 86400
                kept = [e for e in kept if _updated(e) >= oldest]
                kept.sort(key=_updated)
                self._write(kept[-(MAX_ENTRIES - 1):] + [record])
        except OSError as exc:
            _warn_once(self.path, exc)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with exclusive_lock(Path(f"{self.path}.lock"), lambda exc: exc):
                yield

    def _read(self) -> list[dict]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        entries = document.get("durations") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a durations file of this pack")
        # An entry out of range (1e400, NaN, a year) is dropped: no prior for its model.
        return [e for e in entries if isinstance(e, dict)
                and all(isinstance(e.get(f), str) for f in _FIELDS)
                and plausible((e.get("mean"), e.get("deviation")))]

    def _write(self, entries: list[dict]) -> None:
        data = json.dumps({"version": 1, "durations": entries}, indent=1).encode("utf-8")
        # No fsync: losing the last write to a power cut costs a few polls, while a sync
        # would delay every finished task's images.
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent,
                                                 prefix=f".{self.path.name}.", suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _updated(entry: dict) -> float:
    """When an entry was written; 0 (the oldest) when it says no plausible time."""
    return bounded(entry.get("updated"), 0.0, time.time() + 86400,
                   "a learned duration's time") or 0.0


class LearnedDurations:
    """The process state's estimator, with learning written through to a file (if any)."""

    def __init__(self, estimator: DurationEstimator, file: DurationFile | None,
                 loaded: set[Path]):
        self.estimator = estimator
        self.file = file
        if file is not None and file.path not in loaded:  # once per process state and file
            loaded.add(file.path)
            estimator.seed(file.load())

    def record(self, key: tuple, seconds: float) -> None:
        estimate = self.estimator.record(key, seconds)
        if estimate is not None and self.file is not None:
            self.file.save(key, estimate)


def learned_durations(config: Config, state: ProcessState) -> LearnedDurations:
    """``state``'s estimator, written through to the file beside ``config``'s spend-guard
    ledger (none when the configuration names no ledger)."""
    file = None
    if config.budget is not None:
        path = config.budget.path.parent / FILE_NAME
        file = DurationFile(path, state.ledger_locks.for_path(path))
    return LearnedDurations(state.durations, file, state.durations_loaded)
