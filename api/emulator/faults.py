"""Injected faults: a first-in, first-out queue consumed by the requests they match.

``emu.inject(kind, count=1, path=None, **details)``: ``path`` is a substring of the request
path; without it a fault matches any API request (not the quotas API, downloads or uploads),
except as noted; ``path="/quotas"`` aims one at the quotas API.

    http_error   answer status (500), code ("InternalError"), message, retry_after (None:
                 no Retry-After header) instead of processing
    drop         read the request, close the connection, answer nothing, process nothing
    drop_after   process in full (task created, images made and billed), then close
                 without answering
    non_json     answer status (502) with body ("<html>Bad Gateway</html>") and
                 content_type ("text/html")
    gateway_html a gateway's HTML error page, status (502; 504 reads "Gateway Time-out"),
                 instead of processing; with after (False) true the request is processed in
                 full first (task created, images made and billed), then the page answered
    redirect     answer status (307) with a Location header, location (None: the same
                 path under {url}/redirected, which answers 404), processing nothing
    truncate     result downloads (by default any): announce the full Content-Length,
                 send half, close
    slow_drip    result downloads (by default any): the whole body, chunk (16) bytes at a
                 time, spread over duration (2.0) seconds
    task_failed  the next created task ends FAILED with code ("InternalError.Algo") and
                 message, after running like any task
    oversized    the images of the next generating request (sync or task) are width x
                 height (5000 x 5000) pixels, whatever was asked; usage still says the size
                 asked for
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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
    "gateway_html": {"status": 502, "after": False},
    "redirect": {"status": 307, "location": None},
    "truncate": {},
    "slow_drip": {"duration": 2.0, "chunk": 16},
    "task_failed": {"code": "InternalError.Algo", "message": rules.MESSAGES["InternalError.Algo"]},
    "oversized": {"width": 5000, "height": 5000},
}
# Decided when the request has been read; the others fire where they act.
ANSWER_KINDS = ("http_error", "drop", "drop_after", "non_json", "gateway_html", "redirect")
DOWNLOAD_KINDS = ("truncate", "slow_drip")
_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


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


def early_answer(fault: Fault, error: Callable[[ApiError], Response],
                 redirect_to: str) -> Response | None:
    """What a fault answers instead of processing the request, if it does; *error* turns an
    ApiError into its (counted) answer; *redirect_to* is the default redirect target."""
    d = fault.details
    if fault.kind == "http_error":
        headers = {} if d["retry_after"] is None else {"Retry-After": str(d["retry_after"])}
        return error(ApiError(d["code"], d["message"], status=d["status"], headers=headers))
    if fault.kind == "non_json":
        return Response(d["status"], d["body"].encode(), d["content_type"])
    if fault.kind == "gateway_html" and not d["after"]:
        return gateway_page(d["status"])
    if fault.kind == "redirect":
        location = d["location"] or redirect_to
        body = f"<html><body>Moved to <a href=\"{location}\">{location}</a></body></html>"
        return Response(d["status"], body.encode(), "text/html", {"Location": location})
    return None


def gateway_page(status: int) -> Response:
    """The HTML error page of the service's gateway (Tengine), not a DashScope body."""
    title = f"{status} {_REASONS.get(status, 'Error')}"
    body = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}"
            "</h1></center>\r\n<hr><center>Tengine</center>\r\n</body>\r\n</html>\r\n")
    return Response(status, body.encode(), "text/html")
