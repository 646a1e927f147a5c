"""The DashScope API under ``{base}`` = ``{url}/{region}/api/v1``: routing and endpoints.

    POST {base}/services/aigc/multimodal-generation/generation   synchronous generation
    POST {base}/services/aigc/text2image/image-synthesis         create a task: qwen-image,
                                                                 qwen-image-plus
    POST {base}/services/aigc/image-generation/generation        create a task: 3.0, 2.1-pro
                                                                 (the synchronous body)
    GET  {base}/tasks/{task_id}                                  query a task
    POST {base}/tasks/{task_id}/cancel                           cancel a PENDING task
    GET  {base}/tasks?start_time=&end_time=&...                  the task list (tasklist.py)
    GET  {base}/quotas?model=&page_no=&page_size=                the account's limits
    GET  {base}/uploads?action=getPolicy&model=M                 upload policy (cn-beijing)

Request rules are in validate.py, the answer shapes in answers.py and tasks.py. Any error:
``{"request_id", "code", "message"}`` with the status of rules.STATUS.

Synchronous answers come after ``latency`` seconds. Creating a task without
``X-DashScope-Async: enable``: 403 AccessDenied "current user api does not support
synchronous calls"; a model the task API does not serve: 400 "Model not exist.". The
creation answer is {"request_id", "output": {"task_id", "task_status": "PENDING"}}. A task
query for a task this key cannot see: 200 with task_status UNKNOWN.

The quotas answer is {"request_id", "output": {"quotas": [{model, workspace_id,
model_limit: {limits.QUOTA_FIELDS}, workspace_limit (null: none set)}]}}, sorted by model,
paged by page_no (1) and page_size (20); ``quotas_status`` 404 makes the path unknown (404
NotFound), 403 refuses it (403 AccessDenied).
"""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from . import answers, images, rules, validate
from .accounts import Key, Keyring
from .catalog import MODELS
from .errors import ApiError, invalid
from .faults import Faults
from .http import RecordedRequest, Response, error_response, json_response, request_id
from .limits import RateLimiter
from .state import Shared
from .tasklist import page_param, task_list
from .tasks import GENERATION, SYNTHESIS, Scheduler, Task, document, usage
from .uploads import UPLOAD_PATH, Results, Storage

_ROUTES = (  # (method, path under {base}, endpoint method name)
    ("POST", re.compile(r"/services/aigc/multimodal-generation/generation/?"), "_generation"),
    ("POST", re.compile(r"/services/aigc/text2image/image-synthesis/?"), "_create_synthesis"),
    ("POST", re.compile(r"/services/aigc/image-generation/generation/?"), "_create_generation"),
    ("GET", re.compile(r"/tasks/?"), "_list_tasks"),
    ("GET", re.compile(r"/tasks/(?P<task_id>[^/]+)/?"), "_query_task"),
    ("POST", re.compile(r"/tasks/(?P<task_id>[^/]+)/cancel/?"), "_cancel_task"),
    ("GET", re.compile(r"/quotas/?"), "_list_quotas"),
    ("GET", re.compile(r"/uploads/?"), "_get_policy"),
)


@dataclass
class Call:
    """One authenticated API request on its way through an endpoint."""

    key: Key
    headers: Any  # case-insensitive look-ups
    record: RecordedRequest
    query: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)  # named groups of the route

    def body(self) -> dict[str, Any]:
        if not isinstance(self.record.json, dict):
            raise invalid("The request body must be a JSON object.")
        return self.record.json


class Service:
    """The API endpoints; *url* and *port* tell where the emulator listens."""

    def __init__(self, shared: Shared, keyring: Keyring, limiter: RateLimiter, faults: Faults,
                 scheduler: Scheduler, results: Results, storage: Storage,
                 quotas: dict[str, dict[str, Any]], quotas_status: int,
                 url: Callable[[], str], port: Callable[[], int]) -> None:
        self._shared, self._keyring, self._limiter = shared, keyring, limiter
        self._faults, self._scheduler = faults, scheduler
        self._results, self._storage = results, storage
        self._quotas, self._quotas_status = quotas, quotas_status
        self._url, self._port = url, port

    def error(self, err: ApiError) -> Response:
        """The answer to *err*, counted in stats["errors"]."""
        with self._shared.lock:
            self._shared.stats.errors[err.code] += 1
        return error_response(err)

    def handle(self, method: str, region: str, sub: str, query: str, headers: Any,
               record: RecordedRequest) -> Response:
        """Authenticate, route and answer one API request."""
        try:
            key = self._keyring.authenticate(headers.get("Authorization"), region)
            for route_method, pattern, name in _ROUTES:
                match = pattern.fullmatch(sub)
                if match and route_method == method:
                    params = {k: v[-1] for k, v in parse_qs(query).items()}
                    return getattr(self, name)(Call(key, headers, record, params,
                                                    match.groupdict()))
            raise _not_found(method, sub)
        except ApiError as err:
            return self.error(err)

    # -- generation and tasks -----------------------------------------------------------

    def _generation(self, call: Call) -> Response:
        body = call.body()
        name, model = validate.model_of(body, "sync")
        self._limiter.admit_generation(call.key.key_id, name)
        with self._limiter.sync_call((call.key.key_id, name)):
            job = validate.generation(body, name, model, self._fetcher(call, name))
            self._note(call.record, job)
            oversize = self._oversize(call)
            started = time.monotonic()
            pngs = images.render(job, self._shared.settings.rgba)
            if oversize:
                pngs = [images.enlarge(png, oversize) for png in pngs]
            latency = self._shared.settings.latency
            self._shared.stopping.wait(max(0.0, latency - (time.monotonic() - started)))
        with self._shared.lock:
            urls = [self._results.publish(png) for png in pngs]
            self._shared.stats.add("images_billed", len(urls))
        return json_response({"output": answers.sync_output(job, model, urls),
                              "usage": answers.usage(job, model, len(urls)),
                              "request_id": request_id()})

    def _create_synthesis(self, call: Call) -> Response:
        return self._create_task(call, SYNTHESIS)

    def _create_generation(self, call: Call) -> Response:
        return self._create_task(call, GENERATION)

    def _create_task(self, call: Call, api: str) -> Response:
        if call.headers.get("X-DashScope-Async", "").strip().lower() != "enable":
            raise ApiError("AccessDenied", "current user api does not support synchronous calls")
        body = call.body()
        name, model = validate.model_of(body, api)
        self._limiter.admit_generation(call.key.key_id, name)
        if api == SYNTHESIS:
            job = validate.synthesis(body, name, model)
        else:
            job = validate.generation(body, name, model, self._fetcher(call, name))
        self._note(call.record, job)
        answer_id = request_id()
        with self._shared.lock:  # room, faults and the queue in one step
            self._scheduler.ensure_room(call.key.key_id, name)
            fault = self._faults.take(call.record.path, ("task_failed",), default=True)
            task = Task(str(uuid.uuid4()), api, call.key, name, job, body, self._shared.now(),
                        answer_id, failure=fault and (fault.details["code"],
                                                      fault.details["message"]),
                        oversize=self._oversize(call))
            self._scheduler.submit(task)
        return json_response({"request_id": answer_id,
                              "output": {"task_id": task.id, "task_status": "PENDING"}})

    def _query_task(self, call: Call) -> Response:
        self._limiter.admit("query", call.key.key_id, rules.QUERY_QPS)
        with self._shared.lock:
            self._shared.stats.add("task_queries")
            task = self._scheduler.visible(call.args["task_id"], call.key)
            if task is None:
                return json_response({"request_id": request_id(), "output": {
                    "task_id": call.args["task_id"], "task_status": "UNKNOWN"}})
            body: dict[str, Any] = {"request_id": request_id(), "output": document(task)}
            task_usage = usage(task)
            if task_usage is not None:
                body["usage"] = task_usage
        return json_response(body)

    def _cancel_task(self, call: Call) -> Response:
        with self._shared.lock:
            task = self._scheduler.visible(call.args["task_id"], call.key)
            if task is None or not self._scheduler.cancel(task):
                raise ApiError("UnsupportedOperation")
        return json_response({"request_id": request_id()})

    def _list_tasks(self, call: Call) -> Response:
        self._limiter.admit("query", call.key.key_id, rules.QUERY_QPS)
        with self._shared.lock:
            tasks = self._scheduler.visible_tasks(call.key)
            return json_response(task_list(tasks, call.query, self._shared.now()))

    # -- the account ----------------------------------------------------------------

    def _list_quotas(self, call: Call) -> Response:
        if self._quotas_status == 404:
            raise _not_found("GET", "/quotas")
        if self._quotas_status == 403:
            raise ApiError("AccessDenied", "You are not authorized to list the quotas.")
        model = call.query.get("model")
        page_no = page_param(call.query, "page_no", 1)
        page_size = page_param(call.query, "page_size", 20)
        names = [m for m in sorted(self._quotas) if not model or m == model]
        quotas = [{"model": m, "workspace_id": call.key.workspace_id,
                   "model_limit": dict(self._quotas[m]), "workspace_limit": None}
                  for m in names[(page_no - 1) * page_size:page_no * page_size]]
        return json_response({"request_id": request_id(), "output": {"quotas": quotas}})

    # -- temporary storage -----------------------------------------------------------

    def _get_policy(self, call: Call) -> Response:
        if call.key.region not in rules.UPLOAD_REGIONS:
            raise ApiError("NotFound", "Temporary file storage (uploads) is offered in the "
                           "cn-beijing region only.")
        if call.query.get("action") != "getPolicy":
            raise invalid("action must be getPolicy.")
        model = call.query.get("model")
        if not model:
            raise invalid('Required parameter "model" missing.')
        if model not in MODELS:
            raise invalid(rules.MODEL_NOT_EXIST)
        self._limiter.admit("policy", (call.key.key_id, model), rules.POLICY_QPS)
        data = self._storage.policy(call.key, model, self._url() + UPLOAD_PATH)
        return json_response({"request_id": request_id(), "data": data})

    # -- helpers ---------------------------------------------------------------------

    def _fetcher(self, call: Call, model: str) -> validate.Fetch:
        """How the service gets the bytes of the image items of *call* for *model*."""
        oss = call.headers.get("X-DashScope-OssResourceResolve", "").strip().lower() == "enable"

        def fetch(value: str) -> bytes:
            return validate.image_bytes(
                value, fetch_url=lambda url: self._results.fetch_own_url(url, self._port()),
                fetch_oss=lambda name: self._storage.fetch(name, call.key.account, model),
                oss_enabled=oss)

        return fetch

    def _oversize(self, call: Call) -> tuple[int, int] | None:
        """The size an oversized fault imposes on this request's images, if one fires."""
        fault = self._faults.take(call.record.path, ("oversized",), default=True)
        return (fault.details["width"], fault.details["height"]) if fault else None

    def _note(self, record: RecordedRequest, job: validate.Drawing) -> None:
        record.notes.extend(job.notes)
        if job.notes:
            with self._shared.lock:
                self._shared.stats.add("prompts_truncated")


def _not_found(method: str, sub: str) -> ApiError:
    return ApiError("NotFound", f"{method} {sub} is not an API of this service.")

