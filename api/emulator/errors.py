"""The service's error answers as an exception: status, code and message of its error body."""
from __future__ import annotations

from collections.abc import Mapping

from . import rules


class ApiError(Exception):
    """An error answer: HTTP status, code and message of the service's error body."""

    def __init__(self, code: str, message: str | None = None, *, status: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.code = code
        self.message = message or rules.MESSAGES.get(code, code)
        self.status = status or rules.STATUS[code]
        self.headers = dict(headers or {})
        super().__init__(f"{self.status} {code}: {self.message}")


def invalid(message: str) -> ApiError:
    """400 InvalidParameter with *message*: the service's answer to most bad requests."""
    return ApiError("InvalidParameter", message)
