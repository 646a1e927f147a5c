"""The spend guard's bookings around one client's billed requests.

Booked before anything is sent (``reserve``), then exactly one of: settled from what the
service reported (``settle``), given back when an error proves nothing was billed
(``release_unless_billed``), or left charged when the outcome is unknown. A task created
through the low-level API is settled when a query sees it end (``close_task``).
"""
from __future__ import annotations

import threading

from ..catalog.pricing import estimate_usd
from ..catalog.regions import region_name
from ..catalog.specs import ModelSpec
from ..errors import AmbiguousRequestError, QwenImageError
from ..service.wire import TaskState, billed_count, within_asked
from .budget import Reservation, SpendGuard


class Charges:
    def __init__(self, guard: SpendGuard | None, region: str):
        self.guard = guard
        self.region = region
        self._lock = threading.Lock()
        self._tasks: dict[str, Reservation] = {}  # create_task's bookings by task id

    def reserve(self, spec: ModelSpec, n: int, size: str | None, input_images: int,
                notes: list[str]) -> Reservation | None:
        """Charge ``n`` images before anything is sent (or refuse)."""
        if self.guard is None:
            return None
        usd = estimate_usd(spec, self.region, n, size, input_images)
        if usd is None:
            notes.append(f"{spec.id} has no price in the pack's table, so the spend guard counts "
                         "its images against the daily image budget only, not the dollar one")
        return self.guard.reserve(spec.id, n, None if usd is None else usd / n,
                                  what=f"n={n} in {region_name(self.region)}")

    def release(self, reservation: Reservation | None) -> None:
        """Give the charge back: nothing was sent, so nothing can have been billed."""
        if reservation is not None:
            self.guard.release(reservation)

    def release_unless_billed(self, reservation: Reservation | None,
                              error: BaseException) -> None:
        """Give the charge back when ``error`` proves nothing was billed.

        Every error of the pack before or instead of a service answer proves it, except an
        ambiguous one (sent, no answer); anything unexpected keeps the charge too.
        """
        if (reservation is not None and isinstance(error, QwenImageError)
                and not isinstance(error, AmbiguousRequestError)):
            self.guard.release(reservation)

    def settle(self, reservation: Reservation | None, images: int, usd: float | None) -> None:
        if reservation is not None:
            self.guard.settle(reservation, images, usd)

    def hold_for_task(self, task_id: str, reservation: Reservation | None) -> None:
        if reservation is not None:
            with self._lock:
                self._tasks[task_id] = reservation

    def close_task(self, task_id: str, state: TaskState | None,
                   usd: float | None = None) -> None:
        """Settle a create_task booking from the task's end: SUCCEEDED bills, the rest not.

        ``state`` None: the task was cancelled while queued.
        """
        with self._lock:
            reservation = self._tasks.pop(task_id, None)
        if reservation is None:
            return
        if state is not None and state.status == "SUCCEEDED":
            usage = within_asked(state.usage, reservation.images, 0)
            self.guard.settle(reservation, billed_count(
                usage, min(len(state.urls), reservation.images)), usd)
        elif state is None or state.status in ("FAILED", "CANCELED"):
            self.guard.release(reservation)
