"""A daily spend guard: refuse a billed request before sending it when it would cross a budget.

Limits are images per day and/or US dollars per day (``Config.budget``, from
``QWEN_IMAGE_BUDGET_IMAGES_PER_DAY`` / ``QWEN_IMAGE_BUDGET_USD_PER_DAY``, or
``SpendGuard(...)`` arguments). Costs come from the price table in ``models``.

Ledger
    A small JSON file (``QWEN_IMAGE_BUDGET_FILE``, else ``~/.dashscope/qwen-image-budget.json``)
    holds the images and dollars charged per day, so a restart, or another process using the
    same file (ComfyUI and the command line), sees today's spend. Every change is a
    read-modify-write under an exclusive ``fcntl.flock`` on a sibling ``.lock`` file (never
    followed through a symlink), and the ledger itself is replaced atomically (temporary
    file + rename), so a crash never leaves it half written. Contents this pack would not
    write (NaN, negative or non-numeric counts) are refused with a clear error, never read
    as zero. Where ``fcntl`` does not exist (Windows) only the threads of one process
    are serialised, and a warning says so once.

Day
    The machine's local calendar day: the budget starts afresh at local midnight.

Accounting
    ``reserve`` charges ``n`` images (and ``n`` x the price) before the request is sent, and
    refuses with ``BudgetExceededError`` if that would cross a limit, so concurrent requests
    cannot overshoot together. Then exactly one of:

    - ``settle(reservation, images)``: the request succeeded; the charge becomes the number
      of images the service reported (``usage.image_count``);
    - ``release(reservation)``: the request certainly failed, and the reference bills only
      successful images, so the charge is removed;
    - nothing: the outcome is unknown (no answer after sending, a task lost from sight), so
      the charge stays, as the service may have billed it. A process killed mid-request
      leaves its reservation charged for the same reason.

    A model without a price in the table is counted against the image limit only (its
    result gets a note saying so). Results served from the result store cost nothing and are
    not counted.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import (
    BUDGET_FILE_ENV,
    BUDGET_IMAGES_ENV,
    BUDGET_USD_ENV,
    BudgetSettings,
    budget_settings,
)
from ..errors import BudgetExceededError, ConfigurationError
from ..state import PROCESS_STATE, ProcessState
from .store import atomic_write, exclusive_lock

log = logging.getLogger(__name__)

KEEP_DAYS = 31  # older days are dropped from the ledger
_EPSILON = 1e-9  # dollar sums are floats; equal to the limit is still within it

def _money(value: float) -> str:
    return f"${value:.4f}".rstrip("0").rstrip(".") if value else "$0"


@dataclass
class Reservation:
    """What one request was charged before sending; settled or released once."""

    day: str
    model: str
    images: int
    price: float | None  # USD per image; None: the model's price is unknown
    done: bool = field(default=False, repr=False)

    @property
    def usd(self) -> float:
        return round(self.images * self.price, 6) if self.price is not None else 0.0


@dataclass(frozen=True)
class BudgetStatus:
    day: str
    images_used: int
    usd_used: float
    images_limit: int | None
    usd_limit: float | None
    unpriced_images: int  # images of models without a price: not in usd_used
    path: Path

    @property
    def images_left(self) -> int | None:
        return None if self.images_limit is None else max(0, self.images_limit - self.images_used)

    @property
    def usd_left(self) -> float | None:
        if self.usd_limit is None:
            return None
        return round(max(0.0, self.usd_limit - self.usd_used), 6)

    def as_dict(self) -> dict:
        return {"day": self.day, "day_boundary": "local midnight",
                "images_used": self.images_used, "images_limit": self.images_limit,
                "images_left": self.images_left, "usd_used": round(self.usd_used, 6),
                "usd_limit": self.usd_limit, "usd_left": self.usd_left,
                "unpriced_images": self.unpriced_images, "ledger": str(self.path)}

    def summary(self) -> str:
        parts = []
        if self.images_limit is not None:
            parts.append(f"{self.images_left} of {self.images_limit} images left today "
                         f"({self.images_used} used)")
        if self.usd_limit is not None:
            parts.append(f"{_money(self.usd_left)} of {_money(self.usd_limit)} left today "
                         f"({_money(self.usd_used)} used)")
        return "; ".join(parts) + f" [{self.day}, resets at local midnight; ledger {self.path}]"


class SpendGuard:
    """Daily limits on billed images and dollars, shared through a ledger file.

    ``path``: the ledger (default: ``QWEN_IMAGE_BUDGET_FILE``, else
    ``~/.dashscope/qwen-image-budget.json``). ``today``: the local date (for tests).
    """

    def __init__(self, images_per_day: int | None = None, usd_per_day: float | None = None,
                 path: str | os.PathLike | None = None, *,
                 today: Callable[[], datetime.date] | None = None,
                 state: ProcessState | None = None):
        if path is None:
            path = budget_settings().path
        self.images_per_day = images_per_day
        self.usd_per_day = usd_per_day
        self.path = Path(path).expanduser()
        self._thread_lock = (state or PROCESS_STATE).ledger_locks.for_path(self.path)
        self._today = today or (lambda: datetime.datetime.now().astimezone().date())

    @classmethod
    def from_settings(cls, settings: BudgetSettings | None, *,
                      state: ProcessState | None = None) -> "SpendGuard | None":
        if settings is None or not settings.enabled:
            return None
        return cls(settings.images_per_day, settings.usd_per_day, settings.path, state=state)

    def __repr__(self) -> str:
        return (f"SpendGuard(images_per_day={self.images_per_day!r}, "
                f"usd_per_day={self.usd_per_day!r}, path={str(self.path)!r})")

    # -- the public operations ----------------------------------------------------------

    def reserve(self, model: str, images: int, price: float | None, *,
                what: str = "") -> Reservation:
        """Charge ``images`` (at ``price`` each) to today, or raise ``BudgetExceededError``.

        ``what`` describes the request in the refusal (e.g. "qwen-image-plus in Singapore").
        """
        reservation = Reservation(self._day(), model, images, price)
        try:
            with self._ledger() as ledger:
                entry = ledger.setdefault(reservation.day, _empty())
                refusals = self._refusals(entry, reservation)
                if refusals:
                    raise self._exceeded(reservation, entry, refusals, what)
                _add(entry, reservation.images, reservation.usd, price is None)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc.detail} Nothing was sent.", hint=exc.hint) from None
        return reservation

    def settle(self, reservation: Reservation, images: int, usd: float | None = None) -> None:
        """The request succeeded and ``images`` were billed (``usd`` in all, when the service's
        usage tells it; else at the reserved price): correct the charge to that."""
        if self._finish(reservation):
            extra = images - reservation.images
            if usd is None or reservation.price is None:
                usd = images * (reservation.price or 0.0)
            self._adjust(reservation, extra, round(usd - reservation.usd, 6))

    def release(self, reservation: Reservation) -> None:
        """The request certainly failed (so it was not billed): remove its charge."""
        if self._finish(reservation):
            self._adjust(reservation, -reservation.images, -reservation.usd)

    def status(self) -> BudgetStatus:
        day = self._day()
        with self._ledger(write=False) as ledger:
            entry = ledger.get(day, _empty())
        return BudgetStatus(day, int(entry["images"]), float(entry["usd"]), self.images_per_day,
                            self.usd_per_day, int(entry.get("unpriced_images", 0)), self.path)

    # -- internals ----------------------------------------------------------------------

    def _day(self) -> str:
        return self._today().isoformat()

    @staticmethod
    def _finish(reservation: Reservation) -> bool:
        # Settling twice (an abandoned call finishing late) must not count twice.
        with PROCESS_STATE.settle_lock:
            if reservation.done:
                return False
            reservation.done = True
            return True

    def _adjust(self, reservation: Reservation, images: int, usd: float) -> None:
        with self._ledger() as ledger:
            entry = ledger.setdefault(reservation.day, _empty())
            _add(entry, images, usd, reservation.price is None)

    def _refusals(self, entry: dict, reservation: Reservation) -> list[str]:
        refusals = []
        if (self.images_per_day is not None
                and entry["images"] + reservation.images > self.images_per_day):
            refusals.append(
                f"the daily image budget of {self.images_per_day} "
                f"({BUDGET_IMAGES_ENV}) has {entry['images']} used or in progress today, and "
                f"this request would add {reservation.images}")
        if (self.usd_per_day is not None and reservation.price is not None
                and entry["usd"] + reservation.usd > self.usd_per_day + _EPSILON):
            refusals.append(
                f"the daily spending budget of {_money(self.usd_per_day)} ({BUDGET_USD_ENV}) "
                f"has {_money(entry['usd'])} used or in progress today, and this request "
                f"would cost {_money(reservation.usd)} ({reservation.images} x "
                f"{_money(reservation.price)})")
        return refusals

    def _exceeded(self, reservation: Reservation, entry: dict, refusals: list[str],
                  what: str) -> BudgetExceededError:
        raises = []
        if self.images_per_day is not None and any(BUDGET_IMAGES_ENV in r for r in refusals):
            need = entry["images"] + reservation.images
            raises.append(f"{BUDGET_IMAGES_ENV}={need} or more")
        if self.usd_per_day is not None and any(BUDGET_USD_ENV in r for r in refusals):
            need = math.ceil((entry["usd"] + reservation.usd) * 100) / 100
            raises.append(f"{BUDGET_USD_ENV}={need:.2f} or more")
        subject = ", ".join(filter(None, (reservation.model, what)))
        return BudgetExceededError(
            f"Budget exceeded: {'; '.join(refusals)} ({subject}, day {reservation.day}). "
            "Nothing was sent.",
            hint=f"To allow it, raise the budget ({' and '.join(raises)}, or the client's "
                 "SpendGuard limits) in the environment that starts ComfyUI or the command "
                 f"line, or wait for local midnight. Ledger: {self.path} ({BUDGET_FILE_ENV}).")

    @contextlib.contextmanager
    def _ledger(self, write: bool = True):
        """The days of the ledger, under the lock; written back when ``write``."""
        with self._thread_lock, self._file_lock():
            days = self._read()
            yield days
            if write:
                self._write(days)

    def _file_lock(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unusable(exc) from None
        return exclusive_lock(Path(f"{self.path}.lock"), self._unusable)

    def _read(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self._unusable(exc) from None
        try:
            days = json.loads(text)["days"]
            if not isinstance(days, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise self._odd("it is not a ledger this pack wrote") from None
        for day, entry in days.items():
            problem = _entry_problem(entry)
            if problem:
                raise self._odd(f"the entry of {day} {problem}")
        return days

    def _odd(self, problem: str) -> ConfigurationError:
        # Starting from zero would silently lift the budget: refuse instead.
        return ConfigurationError(
            f"The budget ledger {self.path} cannot be trusted: {problem}.",
            hint="Fix or delete it (deleting restarts today's count at zero).")

    def _write(self, days: dict) -> None:
        oldest = (self._today() - datetime.timedelta(days=KEEP_DAYS)).isoformat()
        document = {"version": 1, "day_boundary": "local midnight",
                    "days": {day: entry for day, entry in sorted(days.items()) if day >= oldest}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(document, indent=1).encode("utf-8"))
        except OSError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: OSError) -> ConfigurationError:
        return ConfigurationError(
            f"The budget ledger {self.path} cannot be used ({exc}).",
            hint=f"Make its folder writable, or point {BUDGET_FILE_ENV} at a writable file.")


def _entry_problem(entry) -> str | None:
    """What is wrong with one day of the ledger (None: nothing): counts are whole numbers
    of 0 or more, dollars a finite number of 0 or more."""
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__}, not an object"
    for name, whole in (("images", True), ("usd", False), ("unpriced_images", True)):
        value = entry.get(name, 0 if name == "unpriced_images" else None)
        kinds = (int,) if whole else (int, float)
        if (isinstance(value, bool) or not isinstance(value, kinds)
                or not math.isfinite(value) or value < 0):
            return (f"has {name} = {value!r}, not a "
                    f"{'whole number' if whole else 'finite number'} of 0 or more")
    return None


def _empty() -> dict:
    return {"images": 0, "usd": 0.0, "unpriced_images": 0}


def _add(entry: dict, images: int, usd: float, unpriced: bool) -> None:
    entry["images"] = max(0, int(entry["images"]) + images)
    entry["usd"] = max(0.0, round(float(entry["usd"]) + usd, 6))
    if unpriced:
        entry["unpriced_images"] = max(0, int(entry.get("unpriced_images", 0)) + images)
