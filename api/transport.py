"""HTTP to DashScope: one session, SDK-like headers, error mapping and retries.

Retry rule
==========
Waits between attempts use exponential backoff with full jitter (a random delay between
0 and ``min(cap, base * 2**attempt)``), added to any ``Retry-After`` the answer gives,
within a bounded number of attempts and a bounded total time; a 429 rate limit is bounded
by the total time only, as it proves the request was not processed.

Reads (GET task queries, probes, upload policies) and the cancel call are idempotent: they
are retried on connection failures, timeouts, 429, 5xx, and answers that are not JSON. The
temporary-storage upload (a multipart POST to object storage) is retried the same way: it
is not billed, and its object name is the content's hash, so a repeat stores the same file.

Billed POSTs (task creation, synchronous generation) follow the no-duplicate rule: a
second attempt is sent only when the first one certainly was not processed, i.e.

- the connection was never established (refused, DNS failure, connect timeout): the
  request never left this machine; or
- the service answered with a DashScope error body (``{"code", "message"}``) that is
  retryable (429 Throttling / Throttling.RateQuota / LimitRequests, 5xx, 408), or a
  429/503 without a body: the reference bills only successful images, and an error
  answer means no image was made.

When the request was sent and no usable answer came back -- a read timeout, a connection
reset or closed after sending, a 200 that is not JSON, a 5xx page that is not
DashScope's (a gateway's 502/504 may come after the service got the request) -- the
service may have processed it and billed the image. ``AmbiguousRequestError`` is raised
and nothing is resent: the caller decides, knowing that a retry may pay twice.
"""
from __future__ import annotations

import email.utils
import itertools
import json
import logging
import platform
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from . import __version__
from .config import Config, other_region, region_env_suffix
from .errors import (
    AccessDeniedError,
    AmbiguousRequestError,
    ApiError,
    AuthenticationError,
    CancelledError,
    ContentModerationError,
    InvalidParameterError,
    ModelNotFoundError,
    QuotaExhaustedError,
    RateLimitError,
    ServerError,
    TransportError,
    redact,
)
from .models import BEIJING, REQUEST_BODY_TARGET, SINGAPORE

log = logging.getLogger(__name__)

USER_AGENT = (f"qwen-image-dashscope/{__version__}; python/{platform.python_version()}; "
              f"platform/{platform.system()}; requests/{requests.__version__}")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # task queries and cancels; billed POSTs use Config.timeout

_RATE_CODES = {"Throttling", "Throttling.RateQuota", "LimitRequests"}
_QUOTA_HINTS = {
    "Throttling.AllocationQuota": (
        "The quota or free tier of this model is used up for this account, or the "
        "'stop when the free quota is used up' switch is on. Retrying will not help: turn "
        "that switch off or buy quota in the Model Studio console, or use another model."),
    "AllocationQuota.FreeTierOnly": (
        "The account is set to use only the free tier, and it is used up. Turn off 'stop "
        "when the free quota is used up' (免費額度用完即停) in the Model Studio console to pay "
        "as you go. Retrying will not help."),
    "Arrearage": (
        "The Alibaba Cloud account has an overdue payment. Top up in the Billing console, "
        "then run again. Retrying before that will not help."),
    "PrepaidBillOverdue": (
        "A prepaid bill of the account is overdue. Settle it in the Billing console, then "
        "run again. Retrying before that will not help."),
    "PostpaidBillOverdue": (
        "A pay-as-you-go bill of the account is overdue. Settle it in the Billing console, "
        "then run again. Retrying before that will not help."),
    "CommodityNotPurchased": (
        "Model Studio is not activated (purchased) for this account in this region. "
        "Activate it in the Model Studio console, then run again."),
}
_PARAMETER_HINTS = {
    "InvalidURL": "An input image URL is not valid or not reachable by the service; use a "
                  "public http(s) URL (URL-encode non-ASCII characters) or pass the image "
                  "itself. oss:// names work only in Beijing, within 48 hours of upload.",
    "BadRequest.InputDownloadFailed": "The service could not download an input image URL; "
                                      "make sure it is public, or pass the image itself.",
    "BadRequest.UnsupportedFileFormat": "An input image is not JPG, PNG, BMP, TIFF or WEBP.",
    "UnsupportedOperation": "Only a task still queued (PENDING) can be cancelled; a running "
                            "task finishes, and is billed if it succeeds.",
    "BadRequest.TooLarge": "The request body is too large for the service or a proxy in "
                           "between, although the pack keeps it under "
                           f"{REQUEST_BODY_TARGET / 2**20:g} MiB: a proxy may have a lower "
                           "limit. Pass the input images as http(s) URLs, or use Beijing "
                           "(input_transport 'upload').",
}
_OSS_FIELD = re.compile(r"<(Code|Message|RequestId)>([^<]*)</\1>")


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


def region_name(region: str) -> str:
    return {SINGAPORE: "Singapore (ap-southeast-1)", BEIJING: "Beijing (cn-beijing)"}.get(
        region, region)


def _authentication_hint(region: str) -> str:
    other = other_region(region)
    return (f"Check the API key used for {region_name(region)}: DASHSCOPE_API_KEY_"
            f"{region_env_suffix(region)}, else DASHSCOPE_API_KEY, else the key file. "
            f"Keys work in one region only: a key created in the {region_name(other)} "
            f"console fails here with this error. If it is a {region_name(other)} key, set "
            f"DASHSCOPE_API_REGION={other} (or move it to DASHSCOPE_API_KEY_"
            f"{region_env_suffix(other)}). `qwen-image doctor` tells which region a key "
            "belongs to.")


def api_error(status: int | None, code: str | None, message: str, request_id: str | None,
              *, region: str, retry_after: float | None = None) -> ApiError:
    """The ``errors`` class and fix for a DashScope error answer (protocol notes §9)."""
    code = code or None
    args = (status, code, message, request_id)
    if code == "InvalidApiKey" or status == 401:
        return AuthenticationError(*args, hint=_authentication_hint(region))
    if code in _QUOTA_HINTS:
        return QuotaExhaustedError(*args, hint=_QUOTA_HINTS[code])
    if code in _RATE_CODES or status == 429:
        return RateLimitError(
            *args, retry_after=retry_after,
            hint="Too many requests for this model on this account (other programs using "
                 "the same key count too). Wait a little and run again.")
    if code in ("DataInspectionFailed", "InvalidParameter.DataInspection") or (
            code and "DataInspection" in code):
        return ContentModerationError(
            *args, hint="The prompt, an input image or the generated image was judged "
                        "inappropriate by the content check. Rephrase the prompt or change "
                        "the input images. Nothing was billed.")
    if status == 403:
        return AccessDeniedError(
            *args, hint=f"This key has no access to the model in {region_name(region)}: "
                        "activate the model in the Model Studio console of that region, check "
                        "the RAM user's permissions and the workspace, or use another model.")
    if status == 404:
        return ModelNotFoundError(
            *args, hint=f"Check the model id; the model may not exist in "
                        f"{region_name(region)} (some models are offered in one region only).")
    if status == 408 or (status is not None and status >= 500):
        return ServerError(
            *args, retry_after=retry_after,
            hint="A temporary problem at DashScope; failed calls are not billed. Run again "
                 "in a moment; if it persists, report the request id to Alibaba Cloud.")
    if status is not None and 400 <= status < 500:
        hint = _PARAMETER_HINTS.get(code or "", (
            "The service refused a parameter; its message says which. Fix it and run again; "
            "nothing was billed."))
        return InvalidParameterError(*args, hint=hint)
    return ApiError(*args, hint="Unexpected answer from DashScope; nothing was billed.")


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def encode_body(body: dict) -> bytes:
    """The JSON body exactly as sent (the SDK's serialisation), so its size can be checked."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _json_body(response: requests.Response) -> dict | None:
    # DashScope sometimes labels JSON as text/plain, so the content type is not trusted.
    try:
        body = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _snippet(response: requests.Response) -> str:
    text = response.content[:200].decode("utf-8", "replace")
    return " ".join(redact(text).split()) or "(empty body)"


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the request certainly did not leave this machine."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        cause = exc.args[0]
        # NewConnectionError (refused, DNS) is a ConnectTimeoutError in urllib3.
        return isinstance(cause, MaxRetryError) and isinstance(cause.reason, ConnectTimeoutError)
    return False


class _Retry(Exception):
    """An attempt of an idempotent call failed in a way worth another attempt."""

    def __init__(self, error: Exception, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class Transport:
    """The HTTP side of a client: thread-safe, one pooled session per client."""

    def __init__(self, config: Config, *, session: requests.Session | None = None,
                 retry: RetryPolicy | None = None):
        self.config = config
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        if session is None:
            # Enough pooled connections for concurrent polls and calls of one client.
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)

    def _headers(self, extra: dict | None = None) -> dict:
        # The key is added per request, never to session.headers, so nothing that prints
        # or reuses the session (e.g. a download from another host) can carry it.
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json",
                   "Authorization": f"Bearer {self.config.api_key()}"}
        headers.update(extra or {})
        return headers

    def url(self, path: str, base_url: str | None = None) -> str:
        return (base_url or self.config.base_url).rstrip("/") + path

    # -- billed POSTs -------------------------------------------------------------------

    def post_billed(self, path: str, body: dict, *, asynchronous: bool = False,
                    oss_resolve: bool = False, before_attempt: Callable[[], None] | None = None,
                    cancel_event: threading.Event | None = None) -> dict:
        """Send a POST that may generate (and bill) images; see the module's retry rule.

        ``before_attempt`` runs before every attempt (the rate limiter; it may raise
        ``CancelledError``, which is safe then: nothing of that attempt was sent).
        """
        extra = {"Content-Type": "application/json"}
        if asynchronous:
            extra["X-DashScope-Async"] = "enable"
        if oss_resolve:
            extra["X-DashScope-OssResourceResolve"] = "enable"
        payload = encode_body(body)
        url = self.url(path)
        what = "task creation" if asynchronous else "generation"
        started = time.monotonic()
        for attempt in itertools.count():  # _pause ends it (attempts, time budget)
            if before_attempt is not None:
                before_attempt()
            try:
                response = self.session.post(url, data=payload, headers=self._headers(extra),
                                             timeout=(CONNECT_TIMEOUT, self.config.timeout))
            except requests.exceptions.SSLError as exc:
                raise self._ssl_error(exc) from None
            except requests.RequestException as exc:
                if not _never_connected(exc):
                    raise self._ambiguous(what, path, f"{type(exc).__name__}: {exc}") from None
                error, retry_after = self._unreachable(exc), None
            else:
                log.debug("POST %s -> %s", path, response.status_code)
                body_json = _json_body(response)
                if response.status_code == 200:
                    if body_json is None:
                        raise self._ambiguous(what, path, "HTTP 200 with a body that is not "
                                              f"JSON: {_snippet(response)}")
                    return body_json
                retry_after = retry_after_seconds(response)
                if body_json is not None and ("code" in body_json or "message" in body_json):
                    error = self._api_error(response, body_json, retry_after)
                elif response.status_code in (429, 503):
                    error = self._api_error(response, None, retry_after)
                elif response.status_code >= 500:
                    raise self._ambiguous(what, path, f"HTTP {response.status_code} from "
                                          f"something other than DashScope: {_snippet(response)}")
                else:
                    raise self._api_error(response, None, retry_after)
                if not error.retryable:
                    raise error
            self._pause(error, attempt, retry_after, started, path, cancel_event, billed=True)

    # -- idempotent calls ---------------------------------------------------------------

    def get(self, path: str, *, params: dict | None = None, base_url: str | None = None,
            cancel_event: threading.Event | None = None,
            before_attempt: Callable[[], None] | None = None,
            retry: RetryPolicy | None = None) -> dict:
        return self._idempotent("GET", path, params=params, base_url=base_url,
                                cancel_event=cancel_event, before_attempt=before_attempt,
                                retry=retry)

    def post_cancel(self, task_id: str, *, cancel_event: threading.Event | None = None) -> dict:
        # The SDK sends the cancel with an empty body and no Content-Type.
        return self._idempotent("POST", f"/tasks/{task_id}/cancel", cancel_event=cancel_event)

    def post_upload(self, url: str, fields: dict[str, str], file: tuple[str, bytes, str], *,
                    cancel_event: threading.Event | None = None) -> None:
        """A multipart POST of ``file`` (name, bytes, media type) to object storage.

        It never carries the API key: the signed ``fields`` authorise it. An object that
        already exists (409 FileAlreadyExists, e.g. stored by an attempt whose answer was
        lost) counts as stored, as its name is the content's hash.
        """
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}

        def attempt() -> None:
            response = self.session.post(url, data=fields, files={"file": file}, headers=headers,
                                         timeout=(CONNECT_TIMEOUT, self.config.timeout))
            log.debug("POST %s -> %s", url, response.status_code)
            if response.ok:
                return
            found = dict(_OSS_FIELD.findall(response.content.decode("utf-8", "replace")))
            if response.status_code == 409 and found.get("Code") == "FileAlreadyExists":
                return
            args = (response.status_code, found.get("Code") or None,
                    found.get("Message") or _snippet(response), found.get("RequestId"))
            if response.status_code in (408, 429) or response.status_code >= 500:
                raise _Retry(ServerError(*args, hint="Object storage had a temporary problem."),
                             retry_after_seconds(response))
            raise ApiError(*args, hint="The temporary storage refused the upload; nothing was "
                                       "billed. Run again; if it persists, pass the images as "
                                       "http(s) URLs or choose input_transport 'data_uri'.")

        self._retrying(url, attempt, url, cancel_event, None, self.retry)

    def _idempotent(self, method: str, path: str, *, params=None, base_url=None,
                    cancel_event=None, before_attempt=None, retry=None) -> dict:
        url = self.url(path, base_url)

        def attempt() -> dict:
            response = self.session.request(method, url, params=params, headers=self._headers(),
                                            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            log.debug("%s %s -> %s", method, path, response.status_code)
            body_json = _json_body(response)
            if response.status_code == 200 and body_json is not None:
                return body_json
            retry_after = retry_after_seconds(response)
            if response.status_code == 200:
                raise _Retry(ServerError(200, "InvalidResponse",
                                         f"the answer is not JSON: {_snippet(response)}",
                                         hint="A proxy may be rewriting answers; run again."))
            error = self._api_error(response, body_json, retry_after)
            if not (error.retryable or response.status_code >= 500):
                raise error
            raise _Retry(error, retry_after)

        return self._retrying(path, attempt, base_url or self.config.base_url, cancel_event,
                              before_attempt, retry or self.retry)

    def _retrying(self, path: str, attempt: Callable[[], object], url: str,
                  cancel_event: threading.Event | None,
                  before_attempt: Callable[[], None] | None, retry: RetryPolicy):
        """``attempt()`` until it returns, within ``retry``; it raises ``_Retry`` to go on.

        ``url`` names the server in the error when it cannot be reached.
        """
        started = time.monotonic()
        for number in itertools.count():  # _pause ends it (attempts, time budget)
            if before_attempt is not None:
                before_attempt()
            try:
                return attempt()
            except requests.exceptions.SSLError as exc:
                raise self._ssl_error(exc, url) from None
            except requests.RequestException as exc:
                error, retry_after = self._unreachable(exc, url), None
            except _Retry as failed:
                error, retry_after = failed.error, failed.retry_after
            self._pause(error, number, retry_after, started, path, cancel_event, billed=False,
                        retry=retry)

    # -- helpers ------------------------------------------------------------------------

    def _pause(self, error: Exception, attempt: int, retry_after: float | None, started: float,
               path: str, cancel_event: threading.Event | None, *, billed: bool,
               retry: RetryPolicy | None = None) -> None:
        """Sleep before the next attempt, or raise ``error`` when the budget is spent."""
        retry = retry or self.retry
        delay = retry.delay(attempt, retry_after)
        # A 429 rate limit proves nothing was processed; another process sharing the key
        # may keep the account busy for a while, so only the time budget bounds it.
        last = attempt + 1 >= retry.attempts and not isinstance(error, RateLimitError)
        if last or time.monotonic() - started + delay > retry.total:
            log.warning("%s: giving up after %d attempts in %.1f s", path, attempt + 1,
                        time.monotonic() - started)
            raise error
        log.warning("%s failed (%s); attempt %d in %.1f s", path,
                    getattr(error, "code", type(error).__name__), attempt + 2, delay)
        if cancel_event is None:
            time.sleep(delay)
        elif cancel_event.wait(delay):
            suffix = " The previous attempt was answered with an error, so nothing was billed." \
                if billed else ""
            raise CancelledError(f"Cancelled while waiting to retry {path}.{suffix}")

    def _api_error(self, response: requests.Response, body: dict | None,
                   retry_after: float | None) -> ApiError:
        if body is None:
            code, message, request_id = None, _snippet(response), None
        else:
            code = body.get("code")
            message = str(body.get("message") or body.get("msg") or "")
            request_id = body.get("request_id")
        return api_error(response.status_code, code, message, request_id,
                         region=self.config.region, retry_after=retry_after)

    def _unreachable(self, exc: requests.RequestException,
                     url: str | None = None) -> TransportError:
        return TransportError(
            f"Could not reach DashScope at {url or self.config.base_url} "
            f"({type(exc).__name__}: {exc}).",
            hint="Check the network, a proxy (HTTPS_PROXY) or a firewall, and the base URL "
                 f"(from {self.config.base_url_origin}).")

    def _ssl_error(self, exc: requests.RequestException, url: str | None = None) -> TransportError:
        return TransportError(
            f"TLS to {url or self.config.base_url} failed ({exc}).",
            hint="A proxy or antivirus may be intercepting HTTPS; set REQUESTS_CA_BUNDLE to "
                 "its certificate, or fix the system clock.")

    def _ambiguous(self, what: str, path: str, cause: str) -> AmbiguousRequestError:
        if what == "task creation":
            check = ("If a task was created it appears in the task list of the Model Studio "
                     f"console ({region_name(self.config.region)}) for 24 hours, with its "
                     "images.")
        else:
            check = ("A generated image would show in the usage statistics of the Model "
                     f"Studio console ({region_name(self.config.region)}) about an hour later.")
        return AmbiguousRequestError(
            f"The {what} request ({path}) was sent to DashScope but no usable answer came "
            f"back ({cause}). It may have been processed and billed, so it was not sent "
            "again.",
            hint=f"{check} Run it again only if you accept possibly paying twice.")
