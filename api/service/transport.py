"""HTTP to DashScope: one session, SDK-like headers, error mapping and retries.

Retry rule
==========
Attempts run through ``retry.retrying`` (backoff with jitter on top of ``Retry-After``,
bounded attempts and time; a 429 bounded by time only).

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
and nothing is resent here (for a task, ``recovery`` then looks for it in the task list).

A billed POST never follows a redirect (it would re-send the request, perhaps to another
host): a 3xx answer is an error. A plain-http base URL (loopback only, ``config``)
bypasses any HTTP proxy of the environment. Task ids are checked (``task_path``: "." and
".." or anything with a slash are refused) and URL-encoded before they go into a path.
"""
from __future__ import annotations

import email.utils
import json
import logging
import platform
import re
import threading
import time
from typing import Callable
from urllib.parse import quote, urljoin, urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from ..bounds import bounded
from ..catalog.regions import region_name
from ..config import Config
from ..errors import (
    AmbiguousRequestError,
    ApiError,
    ConfigurationError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
    excerpt,
)
from ..version import VERSION
from .answers import api_error
from .clock import ServiceClock
from .retry import Retry, RetryPolicy, retrying
from .wire import TASK_ID_CHARS, plausible_task_id

log = logging.getLogger(__name__)

USER_AGENT = (f"qwen-image-dashscope/{VERSION}; python/{platform.python_version()}; "
              f"platform/{platform.system()}; requests/{requests.__version__}")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # task queries and cancels; billed POSTs use Config.timeout
_OSS_FIELD = re.compile(r"<(Code|Message|RequestId)>([^<]*)</\1>")


# The longest Retry-After taken as given: DashScope's rate windows are a second or a
# minute. A longer one (``Retry-After: 1e9`` would hold the model's gate for the life of
# the process) counts as not given: the backoff and the limiter's own pause apply.
MAX_RETRY_AFTER = 60.0


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = max(0.0, when.timestamp() - time.time())
    return bounded(seconds, 0.0, MAX_RETRY_AFTER, "Retry-After")


def _json_body(response: requests.Response) -> dict | None:
    # DashScope sometimes labels JSON as text/plain, so the content type is not trusted.
    try:
        body = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def snippet(response: requests.Response) -> str:
    """A short, sanitised, redacted, one-line excerpt of an answer's body for messages."""
    return excerpt(response.content[:800])


def task_path(task_id: str) -> str:
    """``/tasks/{task_id}``, for a plausible task id only (``wire.plausible_task_id``; else
    ``ValidationError`` before anything is sent), URL-encoded besides: an id from a caller,
    the journal or the service can never add a path segment or a query."""
    if not plausible_task_id(task_id):
        shown = repr(task_id)[:80] if isinstance(task_id, str) else type(task_id).__name__
        raise ValidationError("task_id", f"{shown} is not a task id; nothing was sent",
                              allowed=TASK_ID_CHARS)
    return f"/tasks/{quote(task_id, safe='')}"


def proxies_for(url: str) -> dict | None:
    """Per-request proxy settings: a plain-http URL (loopback only, ``config``) bypasses
    any HTTP proxy of the environment, which would otherwise see the key in clear."""
    if urlsplit(url).scheme == "http":
        return {"no_proxy": urlsplit(url).hostname}
    return None


# Raised while a request is prepared, before anything leaves this machine.
_LOCAL = (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL,
          requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema, UnicodeError)


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the request certainly did not leave this machine."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        cause = exc.args[0]
        # NewConnectionError (refused, DNS) is a ConnectTimeoutError in urllib3.
        return isinstance(cause, MaxRetryError) and isinstance(cause.reason, ConnectTimeoutError)
    return False


def _retry(error: ApiError) -> Retry:
    return Retry(error, error.retry_after, rate_limited=isinstance(error, RateLimitError))


class Transport:
    """The HTTP side of a client: thread-safe, one pooled session per client."""

    def __init__(self, config: Config, *, session: requests.Session | None = None,
                 retry: RetryPolicy | None = None):
        self.config = config
        self.retry = retry or RetryPolicy()
        self.clock = ServiceClock()  # learned from every answer's Date header
        self.session = session or requests.Session()
        if session is None:
            # Enough pooled connections for concurrent polls and calls of one client.
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)
        elif proxies_for(config.base_url) and {"http", "all"} & set(self.session.proxies):
            raise ConfigurationError(
                f"The session has an HTTP proxy, and the base URL {config.base_url} is plain "
                "http: the proxy would see the API key in clear.",
                hint="Use a session without proxies for a loopback base URL.")

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

    def post_billed(self, path: str, payload: bytes, *, asynchronous: bool = False,
                    oss_resolve: bool = False, before_attempt: Callable[[], None] | None = None,
                    cancel_event: threading.Event | None = None,
                    on_refused: Callable[[ApiError], None] | None = None) -> dict:
        """Send a POST that may generate (and bill) images; see the module's retry rule.

        ``payload`` is the encoded JSON body (``wire.encode_body``). ``before_attempt`` runs
        before every attempt (the rate limiter; it may raise ``CancelledError``, which is
        safe then: nothing of that attempt was sent). ``on_refused(error)`` hears of every
        attempt answered with a retryable error before it is retried (the limiter adapts).
        """
        extra = {"Content-Type": "application/json"}
        if asynchronous:
            extra["X-DashScope-Async"] = "enable"
        if oss_resolve:
            extra["X-DashScope-OssResourceResolve"] = "enable"
        url = self.url(path)
        what = "task creation" if asynchronous else "generation"

        def attempt() -> dict:
            started = time.time()
            try:
                response = self.session.post(url, data=payload, headers=self._headers(extra),
                                             timeout=(CONNECT_TIMEOUT, self.config.timeout),
                                             allow_redirects=False, proxies=proxies_for(url))
            except requests.exceptions.SSLError as exc:
                raise self._ssl_error(exc) from None
            except _LOCAL as exc:
                raise ConfigurationError(f"The {what} request could not be prepared "
                                         f"({type(exc).__name__}: {exc}); nothing was sent.",
                                         hint="Check the API key and the base URL.") from None
            except requests.RequestException as exc:
                if _never_connected(exc):
                    raise Retry(self._unreachable(exc)) from None
                raise self._ambiguous(what, path, f"{type(exc).__name__}: {exc}") from None
            log.debug("POST %s -> %s", path, response.status_code)
            self.clock.observe(response.headers.get("Date"), started, time.time())
            if response.is_redirect:
                # Never re-sent elsewhere: the key and a billed request go where configured.
                where = urlsplit(urljoin(url, response.headers.get("Location", ""))).netloc
                raise ApiError(response.status_code, "Redirect",
                               f"the {what} request was answered with a redirect to "
                               f"{where or 'nowhere'}; it was not followed",
                               hint="Nothing was generated. Check the base URL (from "
                                    f"{self.config.base_url_origin}).")
            body = _json_body(response)
            if response.status_code == 200:
                if body is None:
                    raise self._ambiguous(what, path, "HTTP 200 with a body that is not JSON: "
                                          f"{snippet(response)}")
                return body
            if body is not None and ("code" in body or "message" in body):
                error = self._api_error(response, body)
            elif response.status_code in (429, 503):
                error = self._api_error(response, None)
            elif response.status_code >= 500:
                raise self._ambiguous(what, path, f"HTTP {response.status_code} from something "
                                      f"other than DashScope: {snippet(response)}")
            else:
                raise self._api_error(response, None)
            if not error.retryable:
                raise error
            if on_refused is not None:
                on_refused(error)
            raise _retry(error)

        return retrying(attempt, self.retry, what=path, cancel_event=cancel_event,
                        before_attempt=before_attempt,
                        cancelled_message=f"Cancelled while waiting to retry {path}. The "
                                          "previous attempt was answered with an error, so "
                                          "nothing was billed.")

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
        return self._idempotent("POST", f"{task_path(task_id)}/cancel",
                                cancel_event=cancel_event)

    def post_upload(self, url: str, fields: dict[str, str], file: tuple[str, bytes, str], *,
                    cancel_event: threading.Event | None = None) -> None:
        """A multipart POST of ``file`` (name, bytes, media type) to object storage.

        It never carries the API key: the signed ``fields`` authorise it. An object that
        already exists (409 FileAlreadyExists, e.g. stored by an attempt whose answer was
        lost) counts as stored, as its name is the content's hash.
        """
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}

        def attempt() -> None:
            response = self._send(url, lambda: self.session.post(
                url, data=fields, files={"file": file}, headers=headers,
                timeout=(CONNECT_TIMEOUT, self.config.timeout)))
            log.debug("POST %s -> %s", url, response.status_code)
            if response.ok:
                return
            found = dict(_OSS_FIELD.findall(response.content.decode("utf-8", "replace")))
            if response.status_code == 409 and found.get("Code") == "FileAlreadyExists":
                return
            args = (response.status_code, found.get("Code") or None,
                    found.get("Message") or snippet(response), found.get("RequestId"))
            if response.status_code in (408, 429) or response.status_code >= 500:
                raise Retry(ServerError(*args, hint="Object storage had a temporary problem."),
                            retry_after_seconds(response))
            raise ApiError(*args, hint="The temporary storage refused the upload; nothing was "
                                       "billed. Run again; if it persists, pass the images as "
                                       "http(s) URLs or choose input_transport 'data_uri'.")

        retrying(attempt, self.retry, what=url, cancel_event=cancel_event)

    def _idempotent(self, method: str, path: str, *, params=None, base_url=None,
                    cancel_event=None, before_attempt=None, retry=None) -> dict:
        url = self.url(path, base_url)

        def attempt() -> dict:
            started = time.time()
            response = self._send(base_url or self.config.base_url, lambda: self.session.request(
                method, url, params=params, headers=self._headers(),
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), proxies=proxies_for(url)))
            log.debug("%s %s -> %s", method, path, response.status_code)
            if base_url is None:  # another host's clock says nothing of the service's
                self.clock.observe(response.headers.get("Date"), started, time.time())
            body = _json_body(response)
            if response.status_code == 200 and body is not None:
                return body
            if response.status_code == 200:
                raise Retry(ServerError(200, "InvalidResponse",
                                        f"the answer is not JSON: {snippet(response)}",
                                        hint="A proxy may be rewriting answers; run again."))
            error = self._api_error(response, body)
            if not (error.retryable or response.status_code >= 500):
                raise error
            raise _retry(error)

        return retrying(attempt, retry or self.retry, what=path, cancel_event=cancel_event,
                        before_attempt=before_attempt)

    # -- helpers ------------------------------------------------------------------------

    def _send(self, where: str, send: Callable[[], requests.Response]) -> requests.Response:
        """``send()``, with connection failures as ``Retry`` (the call is idempotent)."""
        try:
            return send()
        except requests.exceptions.SSLError as exc:
            raise self._ssl_error(exc, where) from None
        except requests.RequestException as exc:
            raise Retry(self._unreachable(exc, where)) from None

    def _api_error(self, response: requests.Response, body: dict | None) -> ApiError:
        if body is None:
            code, message, request_id = None, snippet(response), None
        else:
            code = body.get("code")
            message = str(body.get("message") or body.get("msg") or "")
            request_id = body.get("request_id")
        if code is None and response.status_code == 413:  # a gateway's own page
            code = "BadRequest.TooLarge"
        return api_error(response.status_code, code, message, request_id,
                         region=self.config.region, retry_after=retry_after_seconds(response))

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
