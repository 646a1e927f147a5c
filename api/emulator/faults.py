"""Injected faults: a first-in, first-out queue consumed by the requests they match.

``emu.inject(kind, count=1, path=None, **details)``: ``path`` is a substring of the request
path; without it a fault matches any API request (not downloads or uploads), except as noted.

    http_error   answer status (500), code ("InternalError"), message, retry_after (None:
                 no Retry-After header) instead of processing
    drop         read the request, close the connection, answer nothing, process nothing
    drop_after   process in full (task created, images made and billed), then close
                 without answering
    non_json     answer status (502) with body ("<html>Bad Gateway</html>") and
                 content_type ("text/html")
    truncate     result downloads (by default any): announce the full Content-Length,
                 send half, close
    task_failed  the next created task ends FAILED with code ("InternalError.Algo") and
                 message, after running like any task
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from . import rules
from .errors import ApiError
from .http import Response
from .state import Shared

log = logging.getLogger(__name__)

KINDS: dict[str, dict[str, Any]] = {  # kind: its details and their defaults
    "http_error": {"status": 500, "code": "InternalError",
                   "message": rules.MESSAGES["InternalError"], "retry_after": None},
    "drop": {},
    "drop_after": {},
    "non_json": {"status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"},
    "truncate": {},
    "task_failed": {"code": "InternalError.Algo", "message": rules.MESSAGES["InternalError.Algo"]},
}
ANSWER_KINDS = ("http_error", "drop", "drop_after", "non_json")  # decided before processing


@dataclass
class Fault:
    kind: str
    count: int
    path: str | None
    details: dict[str, Any]


class Faults:
    """The queue of injected faults."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._queue: list[Fault] = []

    def inject(self, kind: str, count: int, path: str | None, details: dict[str, Any]) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {sorted(KINDS)}")
        unknown = set(details) - set(KINDS[kind])
        if unknown:
            raise ValueError(f"fault {kind!r} takes no {sorted(unknown)}; "
                             f"it takes {sorted(KINDS[kind])}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._shared.lock:
            self._queue.append(Fault(kind, count, path, {**KINDS[kind], **details}))

    def take(self, path: str, kinds: tuple[str, ...], default: bool) -> Fault | None:
        """The first queued fault of *kinds* matching *path* (its substring; else *default*)."""
        with self._shared.lock:
            for fault in self._queue:
                matches = fault.path in path if fault.path is not None else default
                if fault.kind in kinds and matches:
                    fault.count -= 1
                    if not fault.count:
                        self._queue.remove(fault)
                    self._shared.stats.add("faults_fired")
                    log.debug("fault %s fired on %s", fault.kind, path)
                    return fault
        return None

    def clear(self) -> None:
        with self._shared.lock:
            self._queue.clear()

    def pending(self) -> list[tuple[str, int, str | None]]:
        """Faults still queued: (kind, remaining count, path)."""
        with self._shared.lock:
            return [(f.kind, f.count, f.path) for f in self._queue]


def early_answer(fault: Fault, error: Callable[[ApiError], Response]) -> Response | None:
    """What an http_error or non_json fault answers instead of processing the request;
    *error* turns an ApiError into its (counted) answer."""
    d = fault.details
    if fault.kind == "http_error":
        headers = {} if d["retry_after"] is None else {"Retry-After": str(d["retry_after"])}
        return error(ApiError(d["code"], d["message"], status=d["status"], headers=headers))
    if fault.kind == "non_json":
        return Response(d["status"], d["body"].encode(), d["content_type"])
    return None
