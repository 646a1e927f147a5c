"""The service's clock as seen from here: its offset from this machine's, learned from the
``Date`` header of DashScope's answers.

A lost task creation is looked for in the task list by ``gmt_create``, which is the
service's time; this machine's clock may be minutes off. Every answer's ``Date`` (whole
seconds, RFC 7231) bounds the offset: the service wrote it between the moment the request
left and the moment the answer came, so ``offset`` lies in
``[date - received, date + 1 - sent]``. The bounds of the last few answers are joined
(answers come from several servers, whose clocks may differ by a little).
"""
from __future__ import annotations

import email.utils
import threading
from collections import deque

SAMPLES = 16  # answers whose bounds are joined
MAX_OFFSET = 7 * 86400.0  # a Date further off than this is not believed


class ServiceClock:
    """Thread-safe; ``observe`` every answer, ``offset()`` when a service time is needed."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=SAMPLES)
        self._lock = threading.Lock()

    def observe(self, date: str | None, sent: float, received: float) -> None:
        """Learn from an answer's ``Date`` header; ``sent``/``received``: epoch seconds on
        this machine's clock when the request left and the answer came."""
        if not date:
            return
        try:
            stamp = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, OverflowError):
            return
        low, high = stamp - received, stamp + 1.0 - sent
        if not (-MAX_OFFSET < low <= high < MAX_OFFSET):
            return
        with self._lock:
            self._samples.append((low, high))

    def offset(self) -> tuple[float, float] | None:
        """(lowest, highest) seconds the service's clock may be ahead of this one; None
        before any answer carried a usable ``Date``."""
        with self._lock:
            if not self._samples:
                return None
            return min(s[0] for s in self._samples), max(s[1] for s in self._samples)
