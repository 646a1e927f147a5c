"""One exception hierarchy for everything a user can meet.

``str(error)`` is a single message that names the cause and the fix. DashScope's
``code``, ``message`` and ``request_id`` are kept as attributes. No message ever holds
the API key: ``redact`` is applied to every text that came from outside.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .state import PROCESS_STATE

if TYPE_CHECKING:
    from .call.waiting import Worker

__all__ = [  # what callers catch; the rest is the pack's own plumbing
    "redact", "QwenImageError", "ConfigurationError", "MissingApiKeyError", "ValidationError",
    "ApiError", "AuthenticationError", "AccessDeniedError", "InvalidParameterError",
    "ContentModerationError", "RateLimitError", "QuotaExhaustedError", "ModelNotFoundError",
    "ServerError", "TaskError", "TaskFailedError", "TaskCanceledError", "TaskUnknownError",
    "AmbiguousRequestError", "AmbiguousTaskError", "TransportError", "DownloadError",
    "CancelledError", "BudgetExceededError",
]

_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{4,}")


def redact(text: str) -> str:
    """Remove every configured key's exact value (``ProcessState.keys``: the key and its body
    without ``sk-``), then anything shaped like a DashScope key (sk-...), leaving at most the
    last four characters."""
    for secret in PROCESS_STATE.keys.secrets():
        if secret in text:
            text = text.replace(secret, f"[key …{secret[-4:]}]" if len(secret) >= 12
                                else "[key]")
    return _KEY_PATTERN.sub(lambda m: "sk-…" + m.group(0)[-4:], text)


# Control characters (terminal escapes among them) and the invisible ones that reorder or
# hide text (bidi overrides, zero-width spaces).
_INVISIBLE = "\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\\x00-\\x1f{_INVISIBLE}]+")
_CONTROL_IN_LINES = re.compile(f"[\\x00-\\x08\\x0b-\\x1f{_INVISIBLE}]+")  # \t and \n stay


def printable(text: str) -> str:
    """``text`` fit for a terminal: every control character but line breaks and tabs (so
    no escape sequence from outside reaches it) replaced by a space."""
    return _CONTROL_IN_LINES.sub(" ", text)


def excerpt(data: bytes, limit: int = 160) -> str:
    """A short, redacted, one-line excerpt of a body from outside, for messages: control
    characters (terminal escapes, bidi overrides) removed, at most ``limit`` characters."""
    text = redact(_CONTROL.sub(" ", data[: limit * 4].decode("utf-8", "replace")))
    text = " ".join(text.split())
    return (text[:limit] + "…" if len(text) > limit else text) or "(empty body)"


class QwenImageError(Exception):
    """Base class of every error of the pack. ``hint`` is the fix, appended to the message."""

    def __init__(self, message: str, *, hint: str = ""):
        self.detail = redact(message)
        self.hint = redact(hint)
        super().__init__(self.detail + (f" {self.hint}" if self.hint else ""))


class ConfigurationError(QwenImageError):
    """The key, region or base URL could not be resolved or is not allowed."""


class MissingApiKeyError(ConfigurationError):
    """No key for the region in the environment or the key file; nothing was sent."""


class ValidationError(QwenImageError, ValueError):
    """Input the vendor documents as invalid; raised before any request is sent."""

    def __init__(self, parameter: str, problem: str, *, allowed=None, hint: str = ""):
        self.parameter = parameter
        self.allowed = allowed
        text = f"{parameter}: {problem}."
        if allowed is not None:
            shown = ", ".join(map(str, allowed)) if isinstance(allowed, (list, tuple)) else allowed
            text += f" Allowed: {shown}."
        super().__init__(text, hint=hint)


class ApiError(QwenImageError):
    """DashScope answered with an error body ``{code, message, request_id}``."""

    retryable = False

    def __init__(self, status: int | None, code: str | None, message: str,
                 request_id: str | None = None, *, hint: str = "",
                 retry_after: float | None = None):
        self.status = status
        self.code = code or "Unknown"
        self.message = redact(message or "")
        self.request_id = request_id
        self.retry_after = retry_after
        where = f" (HTTP {status}" + (f", request_id {request_id}" if request_id else "") + ")"
        super().__init__(f"DashScope {self.code}: {self.message}{where}.", hint=hint)


class AuthenticationError(ApiError):
    """InvalidApiKey: a wrong key, or a key of the other region."""


class AccessDeniedError(ApiError):
    """403: the key may not use this model, workspace or region (not activated, RAM rights)."""


class InvalidParameterError(ApiError):
    """400 and other 4xx: the service refused a parameter or an input; nothing was billed."""


class ContentModerationError(ApiError):
    """DataInspectionFailed: the prompt, an input or the output was judged inappropriate."""


class RateLimitError(ApiError):
    """Throttling / Throttling.RateQuota: try again after a pause."""

    retryable = True


class QuotaExhaustedError(ApiError):
    """Throttling.AllocationQuota, overdue bills, free tier only: retrying cannot help."""


class ModelNotFoundError(ApiError):
    """404: the model id does not exist, or not in this region."""


class ServerError(ApiError):
    """5xx from DashScope. The service bills only successful images, so a retry is safe."""

    retryable = True


class TaskError(QwenImageError):
    """An asynchronous task ended without images."""

    def __init__(self, message: str, *, task_id: str, status: str, code: str | None = None,
                 request_id: str | None = None, hint: str = ""):
        self.task_id = task_id
        self.status = status
        self.code = code
        self.request_id = request_id
        super().__init__(message, hint=hint)


class TaskFailedError(TaskError):
    """The task ended FAILED (or SUCCEEDED without any image); failed images are not billed."""


class TaskCanceledError(TaskError):
    """The task was cancelled while queued; nothing was billed."""


class TaskUnknownError(TaskError):
    """UNKNOWN: the id does not exist for this key and region, or is older than 24 h."""


class AmbiguousRequestError(QwenImageError):
    """A billed request was sent but no answer came back.

    The service may have generated (and billed) the image, so the request is not sent
    again automatically: a second attempt could pay twice. For a task, the journal keeps
    it and ``qwen-image recover`` looks for it again.
    """


class AmbiguousTaskError(AmbiguousRequestError):
    """A task creation's answer was lost and the task list shows several tasks that could
    be it: none was adopted, and every one's images were downloaded into the result store.

    ``candidates``: the task ids; ``saved``: the files written.
    """

    def __init__(self, message: str, *, candidates: list[str], saved: list[str],
                 hint: str = ""):
        self.candidates = candidates
        self.saved = saved
        super().__init__(message, hint=hint)


class TransportError(QwenImageError):
    """No answer from DashScope after the retries (connection refused, DNS, timeouts)."""


class DownloadError(QwenImageError):
    """A result image could not be downloaded or is not an image."""


class CancelledError(QwenImageError):
    """The user cancelled the wait.

    ``task_id``: the task, when one was created. ``background``: when work that cannot be
    stopped goes on (a started task, a sent synchronous call) and its images will be
    stored, the worker doing it (``waiting.Worker``: ``wait(timeout)`` tells whether it has
    ended, ``result()`` gives its result or raises its error); else None.
    """

    def __init__(self, message: str, *, hint: str = "", task_id: str | None = None,
                 background: "Worker | None" = None):
        self.task_id = task_id
        self.background = background
        super().__init__(message, hint=hint)


class BudgetExceededError(QwenImageError):
    """The spend guard refused a request that would cross the configured budget."""
