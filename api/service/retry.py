"""The one retry loop of the pack, and the one cancellable sleep.

Every call that may be repeated (task queries, cancels, upload policies, uploads, result
downloads, and billed POSTs under the no-duplicate rule of ``transport``) runs through
``retrying``: an attempt either returns, raises ``Retry`` (worth another attempt), or
raises anything else (final). Waits use exponential backoff with full jitter, added to any
``Retry-After`` the answer gave, within a bounded number of attempts and a bounded total
time; a rate-limit refusal (``Retry(..., rate_limited=True)``) is bounded by the total time
only, as it proves that nothing was processed.
"""
from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..errors import CancelledError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # in all, the first one included
    base: float = 0.5  # seconds
    cap: float = 10.0  # longest single wait
    total: float = 120.0  # no new attempt starts after this many seconds

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Wait before attempt number ``attempt + 1`` (``attempt`` counts from 0)."""
        jitter = random.uniform(0.0, min(self.cap, self.base * 2 ** attempt))
        # On top of Retry-After, not instead of it: processes told "after 1 s" together
        # would otherwise all come back at the same instant and collide again.
        return jitter + (retry_after or 0.0)


class Retry(Exception):
    """An attempt failed in a way worth another one; ``error`` is raised if none is left."""

    def __init__(self, error: Exception, retry_after: float | None = None, *,
                 rate_limited: bool = False):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.rate_limited = rate_limited


def sleep_or_cancel(seconds: float, cancel_event: threading.Event | None,
                    message: str) -> None:
    """Sleep ``seconds``; raise ``CancelledError(message)`` at once if ``cancel_event`` is set."""
    if cancel_event is None:
        time.sleep(max(0.0, seconds))
    elif cancel_event.wait(max(0.0, seconds)):
        raise CancelledError(message)


def retrying(attempt: Callable[[], T], policy: RetryPolicy, *, what: str,
             cancel_event: threading.Event | None = None,
             before_attempt: Callable[[], None] | None = None,
             cancelled_message: str | None = None,
             give_up: Callable[[Exception, int], Exception] | None = None) -> T:
    """``attempt()`` until it returns or raises something other than ``Retry``.

    ``before_attempt`` runs before each attempt (a rate gate). ``what`` names the call in
    log lines; ``cancelled_message`` is the ``CancelledError`` text when ``cancel_event``
    ends a wait between attempts; ``give_up(error, attempts)`` turns the last error into
    the one raised.
    """
    started = time.monotonic()
    for number in itertools.count():
        if before_attempt is not None:
            before_attempt()
        try:
            return attempt()
        except Retry as failed:
            delay = policy.delay(number, failed.retry_after)
            last = number + 1 >= policy.attempts and not failed.rate_limited
            if last or time.monotonic() - started + delay > policy.total:
                log.warning("%s: giving up after %d attempts in %.1f s", what, number + 1,
                            time.monotonic() - started)
                raise (give_up(failed.error, number + 1) if give_up else failed.error) from None
            log.warning("%s failed (%s); attempt %d in %.1f s", what,
                        getattr(failed.error, "code", None) or type(failed.error).__name__,
                        number + 2, delay)
            sleep_or_cancel(delay, cancel_event,
                            cancelled_message or f"Cancelled while waiting to retry {what}.")
    raise AssertionError("unreachable: the loop returns or raises")
