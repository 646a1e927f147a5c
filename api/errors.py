"""One exception hierarchy for everything a user can meet.

``str(error)`` is a single message that names the cause and the fix. DashScope's
``code``, ``message`` and ``request_id`` are kept as attributes. No message ever holds
the API key: ``redact`` is applied to every text that came from outside.
"""
from __future__ import annotations

import re

_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{4,}")


def redact(text: str) -> str:
    """Replace anything shaped like a DashScope key (sk-...) by its last four characters."""
    return _KEY_PATTERN.sub(lambda m: "sk-…" + m.group(0)[-4:], text)


class QwenImageError(Exception):
    """Base class. ``hint`` is the fix, appended to the message."""

    def __init__(self, message: str, *, hint: str = ""):
        self.detail = redact(message)
        self.hint = hint
        super().__init__(self.detail + (f" {hint}" if hint else ""))


class ConfigurationError(QwenImageError):
    """The key, region or base URL could not be resolved or is not allowed."""


class MissingApiKeyError(ConfigurationError):
    pass


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
                 request_id: str | None = None, *, hint: str = "", retry_after: float | None = None):
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
    pass


class InvalidParameterError(ApiError):
    pass


class ContentModerationError(ApiError):
    """DataInspectionFailed: the prompt, an input or the output was judged inappropriate."""


class RateLimitError(ApiError):
    """Throttling / Throttling.RateQuota: try again after a pause."""

    retryable = True


class QuotaExhaustedError(ApiError):
    """Throttling.AllocationQuota, overdue bills, free tier only: retrying cannot help."""


class ModelNotFoundError(ApiError):
    pass


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
    pass


class TaskCanceledError(TaskError):
    pass


class TaskUnknownError(TaskError):
    """UNKNOWN: the id does not exist for this key and region, or is older than 24 h."""


class AmbiguousRequestError(QwenImageError):
    """A billed request was sent but no answer came back.

    The service may have generated (and billed) the image, so the request is not sent
    again automatically: a second attempt could pay twice.
    """


class TransportError(QwenImageError):
    """No answer from DashScope after the retries (connection refused, DNS, timeouts)."""


class DownloadError(QwenImageError):
    """A result image could not be downloaded or is not an image."""


class CancelledError(QwenImageError):
    """The user cancelled the wait."""


class BudgetExceededError(QwenImageError):
    """The spend guard refused a request that would cross the configured budget."""
