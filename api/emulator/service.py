"""The DashScope API under ``{base}`` = ``{url}/{region}/api/v1``: routing and endpoints.

    POST {base}/services/aigc/multimodal-generation/generation   synchronous generation
    POST {base}/services/aigc/text2image/image-synthesis         create a task: qwen-image,
                                                                 qwen-image-plus
    POST {base}/services/aigc/image-generation/generation        create a task: 3.0 (body
                                                                 as the synchronous one)
    GET  {base}/tasks/{task_id}                                  query a task
    POST {base}/tasks/{task_id}/cancel                           cancel a PENDING task
    GET  {base}/uploads?action=getPolicy&model=M                 upload policy (cn-beijing)

Request rules are in validate.py, the answer shapes in answers.py and tasks.py. Any error:
``{"request_id", "code", "message"}`` with the status of rules.STATUS.

Synchronous answers come after ``latency`` seconds. Creating a task without
``X-DashScope-Async: enable``: 403 AccessDenied "current user api does not support
synchronous calls"; a model the task API does not serve: 400 "Model not exist.". The
creation answer is {"request_id", "output": {"task_id", "task_status": "PENDING"}}. A task
query for a task this key cannot see: 200 with task_status UNKNOWN.
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
from .accounts import Keyring
from .catalog import MODELS
from .errors import ApiError, invalid
from .faults import Faults
from .http import RecordedRequest, Response, error_response, json_response, request_id
from .limits import RateLimiter
from .state import Shared
from .tasks import GENERATION, SYNTHESIS, Scheduler, Task, document, usage
from .uploads import UPLOAD_PATH, Results, Storage

_ROUTES = (  # (method, path under {base}, endpoint method name)
    ("POST", re.compile(r"/services/aigc/multimodal-generation/generation/?"), "_generation"),
    ("POST", re.compile(r"/services/aigc/text2image/image-synthesis/?"), "_create_synthesis"),
    ("POST", re.compile(r"/services/aigc/image-generation/generation/?"), "_create_generation"),
    ("GET", re.compile(r"/tasks/(?P<task_id>[^/]+)/?"), "_query_task"),
    ("POST", re.compile(r"/tasks/(?P<task_id>[^/]+)/cancel/?"), "_cancel_task"),
    ("GET", re.compile(r"/uploads/?"), "_get_policy"),
)


@dataclass
class Call:
    """One authenticated API request on its way through an endpoint."""

    region: str
    key_id: str
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
                 url: Callable[[], str], port: Callable[[], int]) -> None:
        self._shared, self._keyring, self._limiter = shared, keyring, limiter
        self._faults, self._scheduler = faults, scheduler
        self._results, self._storage = results, storage
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
            key_id = self._keyring.authenticate(headers.get("Authorization"), region)
            for route_method, pattern, name in _ROUTES:
                match = pattern.fullmatch(sub)
                if match and route_method == method:
                    params = {k: v[-1] for k, v in parse_qs(query).items()}
                    call = Call(region, key_id, headers, record, params, match.groupdict())
                    return getattr(self, name)(call)
            raise ApiError("NotFound", f"{method} {sub} is not an API of this service.")
        except ApiError as err:
            return self.error(err)

    # -- generation and tasks -----------------------------------------------------------

    def _generation(self, call: Call) -> Response:
        body = call.body()
        name, model = validate.model_of(body, "sync")
        self._limiter.admit_generation(call.key_id, name)
        job = validate.generation(body, name, model, self._fetcher(call, name))
        self._note(call.record, job)
        started = time.monotonic()
        pngs = images.render(job)
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
        self._limiter.admit_generation(call.key_id, name)
        if api == SYNTHESIS:
            job = validate.synthesis(body, name, model)
        else:
            job = validate.generation(body, name, model, self._fetcher(call, name))
        self._note(call.record, job)
        fault = self._faults.take(call.record.path, ("task_failed",), default=True)
        failure = fault and (fault.details["code"], fault.details["message"])
        task = Task(str(uuid.uuid4()), api, call.key_id, call.region, name, job, body,
                    time.time(), failure=failure)
        self._scheduler.submit(task)
        return json_response({"request_id": request_id(),
                              "output": {"task_id": task.id, "task_status": "PENDING"}})

    def _query_task(self, call: Call) -> Response:
        self._limiter.admit("query", call.key_id, rules.QUERY_QPS)
        with self._shared.lock:
            self._shared.stats.add("task_queries")
            task = self._scheduler.visible(call.args["task_id"], call.key_id)
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
            task = self._scheduler.visible(call.args["task_id"], call.key_id)
            if task is None or not self._scheduler.cancel(task):
                raise ApiError("UnsupportedOperation")
        return json_response({"request_id": request_id()})

    # -- temporary storage -----------------------------------------------------------

    def _get_policy(self, call: Call) -> Response:
        if call.region not in rules.UPLOAD_REGIONS:
            raise ApiError("NotFound", "Temporary file storage (uploads) is offered in the "
                           "cn-beijing region only.")
        if call.query.get("action") != "getPolicy":
            raise invalid("action must be getPolicy.")
        model = call.query.get("model")
        if not model:
            raise invalid('Required parameter "model" missing.')
        if model not in MODELS:
            raise invalid(rules.MODEL_NOT_EXIST)
        self._limiter.admit("policy", (call.key_id, model), rules.POLICY_QPS)
        data = self._storage.policy(call.key_id, model, self._url() + UPLOAD_PATH)
        return json_response({"request_id": request_id(), "data": data})

    def _fetcher(self, call: Call, model: str) -> validate.Fetch:
        """How the service gets the bytes of the image items of *call* for *model*."""
        oss = call.headers.get("X-DashScope-OssResourceResolve", "").strip().lower() == "enable"

        def fetch(value: str) -> bytes:
            return validate.image_bytes(
                value, fetch_url=lambda url: self._results.fetch_own_url(url, self._port()),
                fetch_oss=lambda name: self._storage.fetch(name, call.key_id, model),
                oss_enabled=oss)

        return fetch

    def _note(self, record: RecordedRequest, job: validate.Job) -> None:
        record.notes.extend(job.notes)
        if job.notes:
            with self._shared.lock:
                self._shared.stats.add("prompts_truncated")
