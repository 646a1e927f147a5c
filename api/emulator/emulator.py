"""The Emulator: options, life cycle, inspection, and the path every request takes.

A request is recorded and its body read under a cap: ``upload_body_limit`` on the upload
host, ``body_limit`` on every other route. A body announced over it gets its answer from
the headers alone (413 BadRequest.TooLarge; the upload host: OSS's 400 EntityTooLarge), is
then drained and the connection closed; a chunked one is read to its end keeping nothing
past the cap, then refused the same way. Answer faults apply next (faults.py), then the
request goes to the API (service.py), a result download or the upload host (uploads.py),
or gets 404.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from . import faults, rules, validate
from .accounts import Keyring, key_id
from .errors import ApiError
from .faults import Faults
from .http import (
    Handler,
    RecordedRequest,
    Response,
    Server,
    content_length,
    oss_error,
    parse_json,
    read_body,
    redacted_headers,
    require_loopback,
    send,
)
from .limits import RateLimiter, quota_table
from .service import Service
from .state import Settings, Shared
from .tasks import Scheduler
from .uploads import RESULT_PATH, UPLOAD_PATH, Results, Signer, Storage

log = logging.getLogger(__name__)

# Seconds the server loop may take to notice stop(): a test suite starts and stops hundreds of
# emulators, each stop waited for (0.05 s, socketserver's usual 0.5 s, would add seconds).
STOP_POLL = 0.01


class Emulator:
    """A local DashScope: both regions, sync generation, async tasks, results and uploads.

    latency: seconds per generation and per task; rate_limits: refuse requests over the
    account limits (429); result_ttl: seconds result URLs and finished tasks live; keys:
    {key: region or (region, account)} (default rules.DEFAULT_KEYS; accounts.py); host and
    port: where to listen (loopback only; port 0 picks a free one at start()); body_limit:
    bytes of a request body on any route but the upload host (None: rules.BODY_LIMIT, 0: no
    limit); upload_body_limit: the same on the upload host (None: rules.UPLOAD_BODY_LIMIT);
    quotas: {model: {quota field: value}} over the defaults, which the rate limits obey
    (limits.py); quotas_status: 200, or 403 / 404 for a quotas API that refuses or does
    not exist; sync_concurrency: synchronous calls in flight per (key, model) before 429
    Throttling (None: unlimited); clock_offset: seconds the service's clock is ahead of
    this machine's (negative: behind) -- task times, the task list and Date headers.
    rgba: serve every result as an RGBA PNG, transparent
    in places (images.py), as the Qwen-Image 2.1 family can make them.
    """

    def __init__(self, latency: float = 0.2, rate_limits: bool = True,
                 result_ttl: float = 86400.0,
                 keys: Mapping[str, str | tuple[str, str]] | None = None,
                 host: str = "127.0.0.1", port: int = 0, body_limit: int | None = None,
                 upload_body_limit: int | None = None,
                 quotas: Mapping[str, Mapping[str, Any]] | None = None,
                 quotas_status: int = 200, sync_concurrency: int | None = None,
                 clock_offset: float = 0.0, rgba: bool = False) -> None:
        require_loopback(host)
        if quotas_status not in (200, 403, 404):
            raise ValueError("quotas_status must be 200, 403 or 404")
        if sync_concurrency is not None and sync_concurrency < 1:
            raise ValueError("sync_concurrency must be at least 1 (None: unlimited)")
        self._keyring = Keyring(keys)
        table = quota_table(quotas)
        self._shared = Shared(Settings(
            latency=float(latency), rate_limits=bool(rate_limits), result_ttl=float(result_ttl),
            body_limit=rules.BODY_LIMIT if body_limit is None else int(body_limit),
            upload_body_limit=(rules.UPLOAD_BODY_LIMIT if upload_body_limit is None
                               else int(upload_body_limit)),
            clock_offset=float(clock_offset), rgba=bool(rgba)))
        self._host, self._port = host, port
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[RecordedRequest] = []
        signer = Signer()
        self._faults = Faults(self._shared)
        self._results = Results(self._shared, signer, lambda: self.url)
        self._storage = Storage(self._shared, signer)
        self._scheduler = Scheduler(self._shared, self._results.publish, table)
        limiter = RateLimiter(self._shared, table, sync_concurrency)
        self._service = Service(self._shared, self._keyring, limiter, self._faults,
                                self._scheduler, self._results, self._storage, table,
                                quotas_status, url=lambda: self.url, port=lambda: self._port)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._shared.stopping.clear()
        server = Server(self._host, self._port, self._handle, clock=self._shared.now)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": STOP_POLL},
                                        name="dashscope-emulator", daemon=True)
        self._thread.start()
        log.debug("DashScope emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._shared.stopping.set()  # wakes sleeping sync calls and tasks
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("start() the emulator first: its port is chosen then")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    def base_url(self, region: str) -> str:
        if region not in rules.REGIONS:
            raise ValueError(f"unknown region {region!r}; known: {rules.REGIONS}")
        return f"{self.url}/{region}/api/v1"

    def keys_of(self, region: str) -> list[str]:
        """The API keys the emulator accepts in *region*."""
        return self._keyring.keys_of(region)

    # -- settings ------------------------------------------------------------------------

    @property
    def latency(self) -> float:
        return self._shared.settings.latency

    def set_latency(self, seconds: float) -> None:
        with self._shared.lock:
            self._shared.settings.latency = float(seconds)

    @property
    def clock_offset(self) -> float:
        return self._shared.settings.clock_offset

    def set_clock_offset(self, seconds: float) -> None:
        """Set the service's clock ``seconds`` ahead of this machine's (negative: behind)."""
        with self._shared.lock:
            self._shared.settings.clock_offset = float(seconds)

    @property
    def rgba(self) -> bool:
        return self._shared.settings.rgba

    def set_rgba(self, rgba: bool) -> None:
        with self._shared.lock:
            self._shared.settings.rgba = bool(rgba)

    @property
    def rate_limits(self) -> bool:
        return self._shared.settings.rate_limits

    @property
    def result_ttl(self) -> float:
        return self._shared.settings.result_ttl

    @property
    def body_limit(self) -> int:
        return self._shared.settings.body_limit

    # -- inspection and control ------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._shared.lock:
            return list(self._requests)

    @property
    def served_images(self) -> dict[str, bytes]:
        """{result URL: PNG bytes} of every image served."""
        return self._results.served()

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return self._scheduler.snapshot()

    @property
    def faults(self) -> list[tuple[str, int, str | None]]:
        """Faults still queued: (kind, remaining count, path)."""
        return self._faults.pending()

    def input_images(self, recorded: RecordedRequest) -> list[bytes]:
        """Raw bytes of the image items of a recorded multimodal request, in order."""
        try:
            messages = recorded.json["input"]["messages"]
            items = [item["image"] for m in messages for item in m["content"]
                     if isinstance(item, dict) and isinstance(item.get("image"), str)]
        except (TypeError, KeyError):
            return []
        try:
            return [validate.image_bytes(
                value, fetch_url=lambda url: self._results.fetch_own_url(url, self._port),
                fetch_oss=self._storage.fetch_any, oss_enabled=True) for value in items]
        except ApiError as err:
            raise ValueError(err.message) from None

    def inject(self, kind: str, *, count: int = 1, path: str | None = None,
               **details: Any) -> None:
        """Queue a fault (faults.py lists the kinds and their details)."""
        self._faults.inject(kind, count, path, details)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def stats(self) -> dict[str, Any]:
        with self._shared.lock:
            return self._shared.stats.snapshot()

    def reset_stats(self) -> None:
        with self._shared.lock:
            self._shared.stats.clear()
            self._scheduler.reseed_peaks()

    # -- request handling ---------------------------------------------------------------------

    def _handle(self, h: Handler) -> None:
        split = urlsplit(h.path)
        region, sub = _split_api_path(split.path)
        record = RecordedRequest(
            h.command, split.path, split.query, region, redacted_headers(h.headers.items()), b"",
            None, time.time(), key_id(h.headers.get("Authorization")))
        with self._shared.lock:
            self._requests.append(record)
            self._shared.stats.add("requests")
        if not self._read_body(h, record):
            return

        # A fault without a path is meant for the next call of the API, not the quotas read
        # a client makes first: that one is hit only when named.
        fault = self._faults.take(split.path, faults.ANSWER_KINDS,
                                  default=region is not None and sub.rstrip("/") != "/quotas")
        if fault and fault.kind == "drop":
            h.close_connection = True  # nothing processed, nothing answered
            return
        redirect_to = f"{self.url}/redirected{h.path}"
        early = fault and faults.early_answer(fault, self._service.error, redirect_to)
        if early:
            return self._answer(h, record, early)

        download_fault = None
        try:
            if region is not None:
                response = self._service.handle(h.command, region, sub, split.query, h.headers,
                                                record)
            elif RESULT_PATH.fullmatch(split.path) and h.command in ("GET", "HEAD"):
                response, png = self._results.lookup(split.path, split.query)
                if png is not None and h.command == "GET":
                    download_fault = self._faults.take(split.path, faults.DOWNLOAD_KINDS,
                                                       default=True)
            elif split.path == UPLOAD_PATH and h.command == "POST":
                response = self._storage.upload(h.headers.get("Content-Type", ""), record.body)
            else:
                response = self._service.error(ApiError(
                    "NotFound", f"{h.command} {split.path} does not exist.", status=404))
        except Exception:  # a bug in the emulator must still answer, as a 500
            log.exception("emulator failure on %s %s", h.command, split.path)
            response = self._service.error(ApiError("InternalError"))
        if fault and fault.kind == "drop_after":
            h.close_connection = True  # processed in full, then the connection is lost
            return
        if fault and fault.kind == "gateway_html":  # processed in full, then the gateway fails
            response = faults.gateway_page(fault.details["status"])
        drip = download_fault and download_fault.kind == "slow_drip"
        self._answer(h, record, response,
                     truncate=bool(download_fault and download_fault.kind == "truncate"),
                     drip=(download_fault.details["duration"], download_fault.details["chunk"])
                     if drip else None)

    def _read_body(self, h: Handler, record: RecordedRequest) -> bool:
        """Read the body into *record* under the route's cap; False if it was answered."""
        upload = record.path == UPLOAD_PATH
        settings = self._shared.settings
        cap = settings.upload_body_limit if upload else settings.body_limit
        try:
            length = content_length(h.headers)
        except ValueError:
            bad = ApiError("InvalidParameter", "Bad Content-Length.")
            self._answer(h, record, self._service.error(bad), close=True)
            return False
        if cap and length > cap:
            # Answer before reading, as a gateway does; then drain so the client sees it.
            self._answer(h, record, self._too_large(upload), linger=length)
            return False
        body = read_body(h, length, cap)
        if body is None:  # chunked: the size is known only now
            self._answer(h, record, self._too_large(upload))  # read to its end: keep-alive
            return False
        record.body, record.json = body, parse_json(body)
        return True

    def _too_large(self, upload: bool) -> Response:
        if upload:
            return oss_error(400, "EntityTooLarge",
                             "Your proposed upload exceeds the maximum allowed size.")
        return self._service.error(ApiError("BadRequest.TooLarge"))

    def _answer(self, h: Handler, record: RecordedRequest, response: Response, *,
                truncate: bool = False, linger: int = 0, close: bool = False,
                drip: tuple[float, int] | None = None) -> None:
        with self._shared.lock:
            record.status = response.status
            if response.status == 429:
                self._shared.stats.add("rate_limited")
        send(h, response, truncate=truncate, linger=linger, close=close, drip=drip)


def _split_api_path(path: str) -> tuple[str | None, str]:
    """(region, path under {base}) for /{region}/api/v1/...; (None, "") for other paths."""
    parts = path.split("/", 4)
    if len(parts) >= 4 and parts[1] in rules.REGIONS and parts[2:4] == ["api", "v1"]:
        return parts[1], "/" + (parts[4] if len(parts) > 4 else "")
    return None, ""
