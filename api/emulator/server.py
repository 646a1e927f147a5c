"""The emulator's HTTP front end and state (behaviour: see the package docstring)."""
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

from . import images, rules, validate
from .validate import ApiError

log = logging.getLogger(__name__)

_UTC8 = timezone(timedelta(hours=8))
_RESULT_PATH = re.compile(r"/results/([0-9a-f]{32})\.png")
_ROUTES = (  # (method, path under {base}, handler)
    ("POST", re.compile(r"/services/aigc/multimodal-generation/generation/?"), "_generation"),
    ("POST", re.compile(r"/services/aigc/text2image/image-synthesis/?"), "_create_task"),
    ("GET", re.compile(r"/tasks/(?P<task_id>[^/]+)/?"), "_query_task"),
    ("POST", re.compile(r"/tasks/(?P<task_id>[^/]+)/cancel/?"), "_cancel_task"),
    ("GET", re.compile(r"/uploads/?"), "_get_policy"),
)
_FAULTS = {  # kind: default details; the stage where it fires is in _STAGE
    "http_error": {
        "status": 500, "code": "InternalError", "message": rules.MESSAGES["InternalError"], "retry_after": None,
    },
    "drop": {},
    "drop_after": {},
    "non_json": {"status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"},
    "truncate": {},
    "task_failed": {"code": "InternalError.Algo", "message": rules.MESSAGES["InternalError.Algo"]},
}
_ANSWER_FAULTS = ("http_error", "drop", "drop_after", "non_json")


@dataclass
class RecordedRequest:
    """One request as the emulator received it; the API key itself is never kept."""

    method: str
    path: str  # without the query string
    query: str
    region: str  # None outside the API prefixes (result downloads, the upload host)
    headers: dict  # Authorization redacted; look-ups ignore case
    body: bytes
    json: object  # the parsed body, or None
    time: float
    key_id: str  # short hash of the bearer token, or None
    status: int = None  # the HTTP status answered; None while running or when no answer was sent
    notes: list = field(default_factory=list)  # what the service did silently, e.g. truncation


class _Headers(dict):
    """A plain dict of request headers whose look-ups ignore case, like HTTP's."""

    def _key(self, name):
        return next((k for k in self if k.lower() == str(name).lower()), None)

    def __getitem__(self, name):
        key = self._key(name)
        if key is None:
            raise KeyError(name)
        return super().__getitem__(key)

    def get(self, name, default=None):
        key = self._key(name)
        return default if key is None else super().__getitem__(key)

    def __contains__(self, name):
        return self._key(name) is not None


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict = field(default_factory=dict)


@dataclass
class _Fault:
    kind: str
    count: int
    path: str
    details: dict


@dataclass
class _Task:
    id: str
    key_id: str
    region: str
    model: str
    job: validate.Job
    request: dict
    submitted: float
    failure: tuple = None  # (code, message) from a task_failed fault
    status: str = "PENDING"
    scheduled: float = None
    ended: float = None
    urls: list = field(default_factory=list)


@dataclass
class _Group:
    """The async tasks of one (key, model): the unit of the concurrency limit."""

    queue: deque = field(default_factory=deque)
    running: int = 0


@dataclass
class _Call:
    region: str
    key_id: str
    headers: dict
    query: dict
    record: RecordedRequest
    args: dict

    def body(self):
        if not isinstance(self.record.json, dict):
            raise validate.invalid("The request body must be a JSON object.")
        return self.record.json


class Emulator:
    """A local DashScope: both regions, sync generation, async tasks, results and uploads."""

    def __init__(self, latency=0.2, rate_limits=True, result_ttl=86400.0, keys=None,
                 host="127.0.0.1", port=0, body_limit=None):
        _require_loopback(host)
        self._keys = dict(rules.DEFAULT_KEYS if keys is None else keys)
        unknown = set(self._keys.values()) - set(rules.REGIONS)
        if unknown:
            raise ValueError(f"unknown regions {sorted(unknown)}; known: {rules.REGIONS}")
        self._latency = float(latency)
        self.rate_limits = bool(rate_limits)
        self.result_ttl = float(result_ttl)
        self.body_limit = rules.BODY_LIMIT if body_limit is None else int(body_limit)
        self._host, self._port = host, port
        self._secret = secrets.token_bytes(16)  # signs result URLs and upload policies
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server = self._thread = None
        self._connections = set()
        self._requests, self._faults = [], []
        self._tasks, self._groups, self._windows = {}, {}, {}
        self._results, self._policies, self._uploads = {}, {}, {}
        self._clear_stats()

    # -- life cycle ---------------------------------------------------------------------

    def start(self):
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        server = (_Server6 if ":" in self._host else _Server)((self._host, self._port), _Handler)
        server.emulator = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="dashscope-emulator", daemon=True
        )
        self._thread.start()
        log.debug("DashScope emulator listening on %s", self.url)
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes sleeping sync calls and tasks
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # idle keep-alive connections would block their threads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        if not self._port:
            raise RuntimeError("start() the emulator first: its port is chosen then")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    def base_url(self, region):
        if region not in rules.REGIONS:
            raise ValueError(f"unknown region {region!r}; known: {rules.REGIONS}")
        return f"{self.url}/{region}/api/v1"

    # -- inspection and control ------------------------------------------------------------

    @property
    def latency(self):
        return self._latency

    def set_latency(self, seconds):
        with self._lock:
            self._latency = float(seconds)

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    @property
    def served_images(self):
        with self._lock:
            return {result["url"]: result["png"] for result in self._results.values()}

    @property
    def tasks(self):
        with self._lock:
            return [
                {
                    "id": t.id, "model": t.model, "status": t.status, "key_id": t.key_id, "region": t.region,
                    "submit_time": t.submitted, "scheduled_time": t.scheduled, "end_time": t.ended,
                    "seed": t.job.seed, "urls": list(t.urls), "failure": t.failure,
                    "request": json.loads(json.dumps(t.request)),
                }
                for t in self._tasks.values()
            ]

    @property
    def faults(self):
        """Faults still queued: (kind, remaining count, path)."""
        with self._lock:
            return [(f.kind, f.count, f.path) for f in self._faults]

    def input_images(self, recorded):
        """Raw bytes of the image items of a recorded multimodal request, in order."""
        try:
            messages = recorded.json["input"]["messages"]
            items = [item["image"] for m in messages for item in m["content"]
                     if isinstance(item, dict) and isinstance(item.get("image"), str)]
        except (TypeError, KeyError):
            return []
        try:
            return [validate.image_bytes(v, fetch_url=self._fetch_own_url, fetch_oss=self._fetch_any_oss,
                                         oss_enabled=True) for v in items]
        except ApiError as err:
            raise ValueError(err.message) from None

    def inject(self, kind, *, count=1, path=None, **details):
        if kind not in _FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {sorted(_FAULTS)}")
        unknown = set(details) - set(_FAULTS[kind])
        if unknown:
            raise ValueError(f"fault {kind!r} takes no {sorted(unknown)}; it takes {sorted(_FAULTS[kind])}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(_Fault(kind, count, path, {**_FAULTS[kind], **details}))

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    @property
    def stats(self):
        with self._lock:
            return {
                **self._counts,
                "errors": dict(self._errors),
                "max_concurrent_tasks": dict(self._max_running),
                "max_outstanding_tasks": dict(self._max_outstanding),
                "max_requests_per_second": dict(self._max_rps),
            }

    def reset_stats(self):
        with self._lock:
            self._clear_stats()
            for key, group in self._groups.items():  # maxima restart from what runs now
                if group.running or group.queue:
                    self._max_running[key] = group.running
                    self._max_outstanding[key] = group.running + _pending(group)

    def _clear_stats(self):
        self._counts = dict.fromkeys(
            ("requests", "tasks_created", "images_billed", "rate_limited", "task_queries",
             "uploads", "faults_fired", "prompts_truncated"), 0)
        self._errors = Counter()
        self._max_running, self._max_outstanding, self._max_rps = {}, {}, {}
        self._attempts = {}

    # -- request handling ---------------------------------------------------------------------

    def _handle(self, h):
        split = urlsplit(h.path)
        region, sub = _split_api_path(split.path)
        auth = h.headers.get("Authorization")
        record = RecordedRequest(
            h.command, split.path, split.query, region, _redacted_headers(h.headers), b"", None,
            time.time(), _key_id(auth),
        )
        with self._lock:
            self._requests.append(record)
            self._counts["requests"] += 1
        try:
            length = _content_length(h.headers)
        except ValueError:
            return self._answer(h, record, self._error(ApiError("InvalidParameter", "Bad Content-Length.")),
                                close=True)
        too_large = region is not None and self.body_limit
        if too_large and length > self.body_limit:
            # Answer before reading, as a gateway does; then drain so the client sees the 413.
            return self._answer(h, record, self._error(ApiError("BadRequest.TooLarge")), linger=length)
        body = _read_body(h, length)
        if too_large and len(body) > self.body_limit:  # chunked: the size is known only now
            return self._answer(h, record, self._error(ApiError("BadRequest.TooLarge")))
        record.body, record.json = body, _parse_json(body)

        fault = self._take_fault(split.path, _ANSWER_FAULTS, default=region is not None)
        if fault and fault.kind == "drop":
            h.close_connection = True  # nothing processed, nothing answered
            return None
        if fault and fault.kind == "http_error":
            d = fault.details
            headers = {} if d["retry_after"] is None else {"Retry-After": str(d["retry_after"])}
            err = ApiError(d["code"], d["message"], status=d["status"], headers=headers)
            return self._answer(h, record, self._error(err))
        if fault and fault.kind == "non_json":
            d = fault.details
            return self._answer(h, record, _Response(d["status"], d["body"].encode(), d["content_type"]))

        truncate = False
        try:
            if region is not None:
                response = self._api(h, record, region, sub, split.query)
            elif _RESULT_PATH.fullmatch(split.path) and h.command in ("GET", "HEAD"):
                response, png = self._lookup_result(split.path, split.query)
                truncate = (png is not None and h.command == "GET"
                            and self._take_fault(split.path, ("truncate",), default=True) is not None)
            elif split.path == "/oss-upload" and h.command == "POST":
                response = self._upload(h.headers, record.body)
            else:
                response = self._error(ApiError("NotFound", f"{h.command} {split.path} does not exist.",
                                                status=404))
        except Exception:  # a bug in the emulator must still answer, as a 500
            log.exception("emulator failure on %s %s", h.command, split.path)
            response = self._error(ApiError("InternalError"))
        if fault and fault.kind == "drop_after":
            h.close_connection = True  # processed in full, then the connection is lost
            return None
        return self._answer(h, record, response, truncate=truncate)

    def _answer(self, h, record, response, *, truncate=False, linger=0, close=False):
        body = response.body
        with self._lock:
            record.status = response.status
            if response.status == 429:
                self._counts["rate_limited"] += 1
        h.send_response(response.status)
        h.send_header("Content-Type", response.content_type)
        h.send_header("Content-Length", str(len(body)))
        for name, value in response.headers.items():
            h.send_header(name, value)
        if truncate or linger or close:
            h.send_header("Connection", "close")
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body[: len(body) // 2] if truncate else body)
        h.wfile.flush()
        if linger:
            _drain(h, linger)

    def _error(self, err):
        with self._lock:
            self._errors[err.code] += 1
        body = {"request_id": _request_id(), "code": err.code, "message": err.message}
        return _Response(err.status, _json_bytes(body), headers=err.headers)

    def _take_fault(self, path, kinds, default):
        """The first queued fault of *kinds* matching *path* (its substring; else *default*)."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and (fault.path in path if fault.path is not None else default):
                    fault.count -= 1
                    if not fault.count:
                        self._faults.remove(fault)
                    self._counts["faults_fired"] += 1
                    log.debug("fault %s fired on %s", fault.kind, path)
                    return fault
        return None

    def _api(self, h, record, region, sub, query):
        try:
            key_id = self._authenticate(h.headers.get("Authorization"), region)
            for method, pattern, name in _ROUTES:
                match = pattern.fullmatch(sub)
                if match and method == h.command:
                    params = {k: v[-1] for k, v in parse_qs(query).items()}
                    call = _Call(region, key_id, h.headers, params, record, match.groupdict())
                    return getattr(self, name)(call)
            raise ApiError("NotFound", f"{h.command} {sub} is not an API of this service.")
        except ApiError as err:
            return self._error(err)

    def _authenticate(self, header, region):
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError("InvalidApiKey", "No API-key provided." if not header else None)
        if self._keys.get(token.strip()) != region:  # each key belongs to one region
            raise ApiError("InvalidApiKey")
        return _key_id(header)

    def _admit(self, kind, bucket, limit):
        """Count one request in a sliding 1 s window; 429 when rate limits are on and it is full."""
        now = time.monotonic()
        with self._lock:
            window = self._windows.setdefault((kind, bucket), deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if self.rate_limits and len(window) >= limit:
                raise ApiError("Throttling.RateQuota", headers={"Retry-After": "1"})
            window.append(now)

    def _admit_generation(self, key_id, model):
        now, bucket = time.monotonic(), (key_id, model)
        with self._lock:  # the statistic counts every attempt, refused or not: it judges the client
            attempts = self._attempts.setdefault(bucket, deque())
            while attempts and now - attempts[0] >= 1.0:
                attempts.popleft()
            attempts.append(now)
            self._max_rps[bucket] = max(self._max_rps.get(bucket, 0), len(attempts))
        self._admit("generate", bucket, rules.RPS)

    # -- API endpoints ---------------------------------------------------------------------------

    def _generation(self, call):
        body = call.body()
        name, model = validate.model_of(body, asynchronous=False)
        self._admit_generation(call.key_id, name)
        oss = call.headers.get("X-DashScope-OssResourceResolve", "").strip().lower() == "enable"
        job = validate.generation(body, name, model, lambda value: validate.image_bytes(
            value, fetch_url=self._fetch_own_url, oss_enabled=oss,
            fetch_oss=lambda oss_name: self._fetch_oss(oss_name, call.key_id, name)))
        self._note(call.record, job)
        started = time.monotonic()
        pngs = images.render(job)
        self._stopping.wait(max(0.0, self._latency - (time.monotonic() - started)))
        with self._lock:
            urls = [self._publish(png) for png in pngs]
            self._counts["images_billed"] += len(urls)
        output = {"choices": [{"finish_reason": "stop", "message": {
            "role": "assistant", "content": [{"image": url} for url in urls]}}]}
        if model.kind == "t2i":
            output["task_metric"] = {"TOTAL": job.n, "FAILED": 0, "SUCCEEDED": job.n}
        usage = {"width": job.size[0], "height": job.size[1], "image_count": job.n}
        return _json_response({"output": output, "usage": usage, "request_id": _request_id()})

    def _create_task(self, call):
        if call.headers.get("X-DashScope-Async", "").strip().lower() != "enable":
            raise ApiError("AccessDenied", "current user api does not support synchronous calls")
        body = call.body()
        name, model = validate.model_of(body, asynchronous=True)
        self._admit_generation(call.key_id, name)
        job = validate.synthesis(body, name, model)
        self._note(call.record, job)
        fault = self._take_fault(call.record.path, ("task_failed",), default=True)
        with self._lock:
            task = _Task(str(uuid.uuid4()), call.key_id, call.region, name, job, body, time.time(),
                         failure=fault and (fault.details["code"], fault.details["message"]))
            self._tasks[task.id] = task
            key = (call.key_id, name)
            group = self._groups.setdefault(key, _Group())
            group.queue.append(task)
            self._counts["tasks_created"] += 1
            self._max_outstanding[key] = max(self._max_outstanding.get(key, 0), group.running + _pending(group))
            self._dispatch(key)
        return _json_response({"request_id": _request_id(),
                               "output": {"task_id": task.id, "task_status": "PENDING"}})

    def _query_task(self, call):
        self._admit("query", call.key_id, rules.QUERY_QPS)
        with self._lock:
            self._counts["task_queries"] += 1
            task = self._visible_task(call)
            if task is None:
                return _json_response({"request_id": _request_id(), "output": {
                    "task_id": call.args["task_id"], "task_status": "UNKNOWN"}})
            body = {"request_id": _request_id(), "output": _task_document(task)}
            if task.status == "SUCCEEDED":
                body["usage"] = {"image_count": len(task.urls)}
        return _json_response(body)

    def _cancel_task(self, call):
        with self._lock:
            task = self._visible_task(call)
            if task is None or task.status != "PENDING":
                raise ApiError("UnsupportedOperation")
            task.status, task.ended = "CANCELED", time.time()  # _dispatch skips it in the queue
        return _json_response({"request_id": _request_id()})

    def _get_policy(self, call):
        if call.region not in rules.UPLOAD_REGIONS:
            raise ApiError("NotFound", "Temporary file storage (uploads) is offered in the cn-beijing region only.")
        if call.query.get("action") != "getPolicy":
            raise validate.invalid("action must be getPolicy.")
        model = call.query.get("model")
        if not model:
            raise validate.invalid('Required parameter "model" missing.')
        if model not in rules.MODELS:
            raise validate.invalid(rules.MODEL_NOT_EXIST)
        self._admit("policy", (call.key_id, model), rules.POLICY_QPS)
        now = time.time()
        upload_dir = f"dashscope-instant/{call.key_id}/{datetime.now(_UTC8):%Y-%m-%d}/{uuid.uuid4().hex}"
        document = {
            "expiration": datetime.fromtimestamp(now + rules.POLICY_TTL, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": [{"bucket": "dashscope-instant"}, ["starts-with", "$key", upload_dir],
                           ["content-length-range", 0, rules.UPLOAD_MAX_MB * 1024 * 1024]],
        }
        policy = base64.b64encode(json.dumps(document).encode()).decode()
        signature = self._sign(policy)
        with self._lock:
            self._policies[policy] = {"key_id": call.key_id, "model": model, "upload_dir": upload_dir,
                                      "signature": signature, "expires": now + rules.POLICY_TTL}
        data = {
            "policy": policy, "signature": signature, "upload_dir": upload_dir,
            "upload_host": f"{self.url}/oss-upload", "expire_in_seconds": rules.UPLOAD_TTL,
            "max_file_size_mb": rules.UPLOAD_MAX_MB, "capacity_limit_mb": rules.UPLOAD_CAPACITY_MB,
            "oss_access_key_id": rules.UPLOAD_ACCESS_KEY, "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }
        return _json_response({"request_id": _request_id(), "data": data})

    # -- the OSS side: results and uploads ---------------------------------------------------------

    def _upload(self, headers, body):
        fields = _multipart(body, headers.get("Content-Type", ""))
        if fields is None:
            return _oss_error(400, "InvalidArgument", "The body must be multipart/form-data.")
        for name in ("OSSAccessKeyId", "Signature", "policy", "key", "file"):
            if name not in fields:
                return _oss_error(400, "InvalidArgument", f"The form field {name} is missing.")
        text = {name: value.decode("utf-8", "replace") for name, value in fields.items() if name != "file"}
        with self._lock:
            policy = self._policies.get(text["policy"])
        if policy is None or text["OSSAccessKeyId"] != rules.UPLOAD_ACCESS_KEY:
            return _oss_error(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist.")
        if not hmac.compare_digest(text["Signature"], policy["signature"]):
            return _oss_error(403, "SignatureDoesNotMatch",
                              "The request signature we calculated does not match the signature you provided.")
        if time.time() > policy["expires"]:
            return _oss_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        key, upload_dir = text["key"], policy["upload_dir"]
        if not key.startswith(upload_dir + "/") or key == upload_dir + "/":
            return _oss_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: "
                              f'["starts-with", "$key", "{upload_dir}"]')
        if len(fields["file"]) > rules.UPLOAD_MAX_MB * 1024 * 1024:
            return _oss_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
        with self._lock:
            if text.get("x-oss-forbid-overwrite", "false").lower() == "true" and key in self._uploads:
                return _oss_error(409, "FileAlreadyExists", "The object you specified already exists.")
            self._uploads[key] = {"data": fields["file"], "key_id": policy["key_id"], "model": policy["model"],
                                  "expires": time.time() + rules.UPLOAD_TTL}
            self._counts["uploads"] += 1
        status = text.get("success_action_status", "204")
        return _Response(int(status) if status in ("200", "201") else 204, b"", "text/plain")

    def _fetch_oss(self, name, key_id, model):
        """An uploaded file, if this account uploaded it for this model and it has not expired."""
        with self._lock:
            upload = self._uploads.get(name[len("oss://"):])
        if (upload is None or upload["key_id"] != key_id or upload["model"] != model
                or time.time() > upload["expires"]):
            raise ApiError("InvalidURL", f"download failed: {name} is not a file of this account and model.")
        return upload["data"]

    def _fetch_any_oss(self, name):
        with self._lock:
            upload = self._uploads.get(name[len("oss://"):])
        if upload is None:
            raise ApiError("InvalidURL", f"download failed: {name} was never uploaded.")
        return upload["data"]

    def _fetch_own_url(self, url):
        """What the service downloads: only the emulator's own result URLs are reachable here."""
        parts = urlsplit(url)
        try:
            own = parts.port == self._port and (
                parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback)
        except (ValueError, TypeError):
            own = False
        if not own:
            raise ApiError("InvalidURL", f"download failed: {url} is not reachable from the emulator.")
        response, png = self._lookup_result(parts.path, parts.query)
        if png is None:
            raise ApiError("InvalidURL", f"download failed: {url} answered HTTP {response.status}.")
        return png

    def _publish(self, png):
        """Store a result image and return its signed, expiring URL (call with the lock held)."""
        image_id = uuid.uuid4().hex
        expires_at = time.time() + self.result_ttl
        expires = str(math.ceil(expires_at))
        signature = self._sign(f"{image_id}\n{expires}")
        url = (f"{self.url}/results/{image_id}.png?Expires={expires}"
               f"&OSSAccessKeyId={rules.RESULT_ACCESS_KEY}&Signature={quote(signature, safe='')}")
        self._results[image_id] = {"png": png, "url": url, "expires_at": expires_at,
                                   "query": (expires, rules.RESULT_ACCESS_KEY, signature)}
        return url

    def _lookup_result(self, path, query):
        """(response, png): the answer OSS would give to a result download; png None on error."""
        match = _RESULT_PATH.fullmatch(path)
        with self._lock:
            result = self._results.get(match.group(1)) if match else None
        if result is None:
            return _oss_error(404, "NoSuchKey", "The specified key does not exist."), None
        params = parse_qs(query)
        given = tuple(params.get(name, [""])[0] for name in ("Expires", "OSSAccessKeyId", "Signature"))
        if not all(given):
            return _oss_error(403, "AccessDenied",
                              "You have no right to access this object because of bucket acl."), None
        if time.time() > result["expires_at"]:
            return _oss_error(403, "AccessDenied", "Request has expired.", Expires=given[0]), None
        if given != result["query"]:
            return _oss_error(403, "SignatureDoesNotMatch",
                              "The request signature we calculated does not match the signature you provided."), None
        return _Response(200, result["png"], "image/png"), result["png"]

    def _sign(self, text):
        return base64.b64encode(hmac.new(self._secret, text.encode(), hashlib.sha1).digest()).decode()

    # -- async tasks -----------------------------------------------------------------------------

    def _dispatch(self, key):
        """Start queued tasks of one (key, model) while it has free slots (lock held)."""
        group = self._groups[key]
        while group.running < rules.CONCURRENT and group.queue:
            task = group.queue.popleft()
            if task.status != "PENDING":  # canceled while queued
                continue
            task.status, task.scheduled = "RUNNING", time.time()
            group.running += 1
            self._max_running[key] = max(self._max_running.get(key, 0), group.running)
            threading.Thread(target=self._run_task, args=(task, self._latency), daemon=True,
                             name=f"task-{task.id[:8]}").start()

    def _run_task(self, task, latency):
        started, pngs, failure = time.monotonic(), [], task.failure
        if failure is None:
            try:
                pngs = images.render(task.job)
            except Exception:
                log.exception("rendering task %s failed", task.id)
                failure = ("InternalError.Algo", rules.MESSAGES["InternalError.Algo"])
        if self._stopping.wait(max(0.0, latency - (time.monotonic() - started))):
            return
        with self._lock:
            task.ended = time.time()
            if failure:
                task.status, task.failure = "FAILED", failure
            else:
                task.status, task.urls = "SUCCEEDED", [self._publish(png) for png in pngs]
                self._counts["images_billed"] += len(pngs)
            key = (task.key_id, task.model)
            self._groups[key].running -= 1
            self._dispatch(key)

    def _visible_task(self, call):
        """The task named in the path if this key may see it and it is not forgotten (lock held)."""
        task = self._tasks.get(call.args["task_id"])
        if task is None or task.key_id != call.key_id:  # a key lives in one region: covers regions too
            return None
        if task.ended is not None and time.time() > task.ended + self.result_ttl:
            return None  # the service keeps task data as long as result URLs live
        return task

    def _note(self, record, job):
        record.notes.extend(job.notes)
        if job.notes:
            with self._lock:
                self._counts["prompts_truncated"] += 1


def _task_document(task):
    doc = {"task_id": task.id, "task_status": task.status, "submit_time": _utc8(task.submitted)}
    if task.scheduled is not None:
        doc["scheduled_time"] = _utc8(task.scheduled)
    if task.ended is not None:
        doc["end_time"] = _utc8(task.ended)
    n = task.job.n
    if task.status == "SUCCEEDED":
        doc["results"] = [
            {"url": url, "orig_prompt": task.job.prompt,
             **({"actual_prompt": task.job.actual_prompt} if task.job.prompt_extend else {})}
            for url in task.urls
        ]
        doc["task_metrics"] = {"TOTAL": n, "SUCCEEDED": n, "FAILED": 0}
    elif task.status == "FAILED":
        doc["code"], doc["message"] = task.failure
        doc["task_metrics"] = {"TOTAL": n, "SUCCEEDED": 0, "FAILED": n}
    else:
        doc["task_metrics"] = {"TOTAL": n, "SUCCEEDED": 0, "FAILED": 0}
    return doc


def _pending(group):
    return sum(task.status == "PENDING" for task in group.queue)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes connections itself; do not wait for idle ones
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Clients that hang up early (timeouts, tests of faults) are routine, not tracebacks.
        log.debug("connection from %s ended abnormally", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    server_version = "DashScopeEmulator"
    timeout = 60  # an idle keep-alive connection is closed after this
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

    def setup(self):
        super().setup()
        with self.server.emulator._lock:
            self.server.emulator._connections.add(self.connection)

    def finish(self):
        with self.server.emulator._lock:
            self.server.emulator._connections.discard(self.connection)
        super().finish()

    def _dispatch(self):
        self.server.emulator._handle(self)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s " + format, self.address_string(), *args)


def _require_loopback(host):
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the emulator listens on loopback addresses only, not {host!r}")


def _split_api_path(path):
    """(region, path under {base}) for /{region}/api/v1/...; (None, None) for other paths."""
    parts = path.split("/", 4)
    if len(parts) >= 4 and parts[1] in rules.REGIONS and parts[2:4] == ["api", "v1"]:
        return parts[1], "/" + (parts[4] if len(parts) > 4 else "")
    return None, None


def _key_id(header):
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hashlib.sha256(token.strip().encode()).hexdigest()[:8]


def _redacted_headers(headers):
    out = _Headers()
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme, _, token = value.strip().partition(" ")
            tail = token.strip()[-4:] if len(token.strip()) >= 8 else ""
            value = f"Bearer sk-…{tail}" if scheme.lower() == "bearer" else "…"
        out[name] = value
    return out


def _content_length(headers):
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return -1
    length = int(headers.get("Content-Length") or 0)
    if length < 0:
        raise ValueError(length)
    return length


def _read_body(h, length):
    if length >= 0:
        return h.rfile.read(length) if length else b""
    chunks = []  # chunked transfer coding: size line, data, CRLF ... until a 0 size
    while True:
        size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if not size:
            while h.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        chunks.append(h.rfile.read(size))
        h.rfile.readline()


def _drain(h, length):
    """Read and discard an unread body so closing does not reset the client before it reads."""
    try:
        h.connection.settimeout(2.0)
        while length > 0:
            chunk = h.rfile.read1(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)
    except OSError:
        pass
    h.close_connection = True


def _parse_json(body):
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _multipart(body, content_type):
    """Fields of a multipart/form-data body as {name: bytes}; None if it is not one."""
    mime, _, params = content_type.partition(";")
    boundary = next((v.strip().strip('"') for k, _, v in (p.strip().partition("=") for p in params.split(";"))
                     if k.lower() == "boundary"), None)
    if mime.strip().lower() != "multipart/form-data" or not boundary:
        return None
    fields = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        name = re.search(rb'(?:^|[;\s])name="([^"]*)"', head)
        if not sep or not name:
            return None
        fields[name.group(1).decode("utf-8", "replace")] = data[:-2] if data.endswith(b"\r\n") else data
    return fields


def _request_id():
    return str(uuid.uuid4())


def _json_bytes(obj):
    return json.dumps(obj, ensure_ascii=False).encode()


def _json_response(obj):
    return _Response(200, _json_bytes(obj))


def _oss_error(status, code, message, **extra):
    """An error as OSS writes it: XML, not DashScope's JSON."""
    items = {"Code": code, "Message": message, "RequestId": uuid.uuid4().hex[:24].upper(),
             "HostId": "emulator.oss", **extra}
    xml = "".join(f"  <{k}>{_xml_escape(str(v))}</{k}>\n" for k, v in items.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n{xml}</Error>\n'.encode()
    return _Response(status, body, "application/xml")


def _xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _utc8(timestamp):
    moment = datetime.fromtimestamp(timestamp, _UTC8)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
