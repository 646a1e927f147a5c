"""The asynchronous task list: ``GET {base}/tasks`` (every task of the account in the region).

Query parameters, all optional: ``task_id`` (only that task, whatever the other filters
say), ``start_time`` and ``end_time`` as ``YYYYMMDDhhmmss`` — read as UTC+8 like the task
times (the vendor's page does not name the time zone) and compared with the creation time,
end_time inclusive to the second; one missing: 24 h from or to the other; both missing: the
last 24 h; a span over 24 h or end before start: 400 — ``model_name``, ``status`` (one of
rules.TASK_STATUSES), ``api_key_id`` (sent by the SDK), ``page_no`` (1) and ``page_size``
(10); the SDK's ``region`` is ignored (the endpoint's region decides). Bad values: 400
InvalidParameter. Newest first.

Answer: {request_id, total, total_page, page_no, page_size, data: [{task_id, status,
model_name, request_id (of the creating request), gmt_create (epoch ms), start_time (ms,
once started), end_time (ms, once ended), region, api_key_id, caller_uid, caller_parent_id
(the main account: the same), user_api_unique_key}]}.
"""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from . import rules
from .errors import invalid
from .http import request_id
from .tasks import GENERATION, SYNTHESIS, Task

_API_KEYS = {SYNTHESIS: "text2image:image-synthesis", GENERATION: "image-generation:generation"}


def task_list(tasks: list[Task], query: dict[str, str], now: float) -> dict[str, Any]:
    """The list answer for the tasks a key may see, under *query* (call with the lock held)."""
    page_no, page_size = page_param(query, "page_no", 1), page_param(query, "page_size", 10)
    status = query.get("status")
    if status and status not in rules.TASK_STATUSES:
        raise invalid(f"status must be one of {', '.join(rules.TASK_STATUSES)}.")
    if query.get("task_id"):
        chosen = [task for task in tasks if task.id == query["task_id"]]
    else:
        start, end = _window(query.get("start_time"), query.get("end_time"), now)
        chosen = [task for task in tasks
                  if start <= task.submitted < end + 1
                  and query.get("model_name", task.model) in ("", task.model)
                  and status in (None, "", task.status)
                  and query.get("api_key_id", task.key.api_key_id) in ("", task.key.api_key_id)]
    chosen.sort(key=lambda task: task.submitted, reverse=True)
    page = chosen[(page_no - 1) * page_size:page_no * page_size]
    return {"request_id": request_id(), "total": len(chosen),
            "total_page": math.ceil(len(chosen) / page_size), "page_no": page_no,
            "page_size": page_size, "data": [_item(task) for task in page]}


def _item(task: Task) -> dict[str, Any]:
    item: dict[str, Any] = {"task_id": task.id, "status": task.status, "model_name": task.model,
                            "request_id": task.request_id, "gmt_create": _ms(task.submitted)}
    if task.scheduled is not None:
        item["start_time"] = _ms(task.scheduled)
    if task.ended is not None:
        item["end_time"] = _ms(task.ended)
    item.update(region=task.region, api_key_id=task.key.api_key_id,
                caller_uid=task.key.caller_uid, caller_parent_id=task.key.caller_uid,
                user_api_unique_key=f"apikey:v1:aigc:{_API_KEYS[task.api]}:{task.model}")
    return item


def _window(start_text: str | None, end_text: str | None, now: float) -> tuple[float, float]:
    start, end = _time(start_text, "start_time"), _time(end_text, "end_time")
    if start is None and end is None:
        start, end = now - rules.TASK_WINDOW, now
    elif start is None:
        start = end - rules.TASK_WINDOW
    elif end is None:
        end = start + rules.TASK_WINDOW
    if end < start:
        raise invalid("end_time must not be before start_time.")
    if end - start > rules.TASK_WINDOW:
        raise invalid("The span from start_time to end_time must not exceed 24 hours.")
    return start, end


def _time(text: str | None, name: str) -> float | None:
    if not text:
        return None
    try:
        moment = datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        raise invalid(f"{name} must read YYYYMMDDhhmmss, got {text!r}.") from None
    return moment.replace(tzinfo=rules.UTC8).timestamp()


def page_param(query: dict[str, str], name: str, default: int) -> int:
    """A positive integer query parameter (page_no, page_size); else 400."""
    text = query.get(name)
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise invalid(f"{name} must be a positive integer, got {text!r}.")
    return int(text)


def _ms(timestamp: float) -> int:
    return int(timestamp * 1000)
