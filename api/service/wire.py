"""DashScope's wire format: the request bodies the pack sends and the answers it reads.

Pure functions and typed answers: no HTTP, no threads, so every shape is testable on its
own. Bodies follow the official SDK's serialisation (``json.dumps(..., ensure_ascii=False)``,
keys ``model``, ``input``, ``parameters``). A parameter goes into a body only when the
model takes it (``ModelSpec.takes``); validation has already noted the ones left out.

Answers come in these shapes (the response examples of the seed references and of Model
Studio's "Qwen-Image generation and editing API reference"):

- synchronous ``multimodal-generation``: ``output.choices[0].message.content[i].image``;
- asynchronous ``text2image/image-synthesis`` tasks: ``output.results[i].url`` with
  ``orig_prompt`` and ``actual_prompt`` (the rewritten prompt);
- asynchronous ``image-generation/generation`` tasks (3.0): ``choices`` as in the sync answer;
- ``usage`` as ``{width, height, image_count}`` or, for 3.0, ``{output_width, output_height,
  input_image_count, input_image_type, output_image_count, output_image_type}``;
- ``output.rewrite_status`` where the model rewrites prompts its own way (3.0).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

from ..bounds import bounded, warn_once
from ..catalog.specs import PARAMETER_DEFAULTS, ModelSpec
from ..errors import ServerError, ValidationError
from ..schema import Usage

SYNC_PATH = "/services/aigc/multimodal-generation/generation"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
# Optional parameters in the order the SDK writes them; each is sent only if taken.
_OPTIONAL = ("negative_prompt", "size", "n", "prompt_extend", "prompt_extend_mode",
             "enable_thinking", "watermark", "seed")


def encode_body(body: dict) -> bytes:
    """The JSON body exactly as sent (the SDK's serialisation), so its size can be checked.

    A prompt that cannot be encoded (a lone surrogate) is refused before anything is sent.
    """
    try:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError("prompt", f"holds text that cannot be sent as UTF-8 "
                                        f"({exc.reason} at position {exc.start})") from None


def resolved(request, spec: ModelSpec):
    """``request`` with the documented default of every parameter the model takes and the
    request leaves open, so that bodies and the result store say what was asked for."""
    takes = spec.takes_in(request.family)
    defaults = {**PARAMETER_DEFAULTS, "size": spec.default_size(request.family)}
    return dataclasses.replace(request, **{
        name: value for name, value in defaults.items()
        if name in takes and value is not None and getattr(request, name) is None})


def parameters(request, spec: ModelSpec) -> dict:
    """``parameters`` of a body: what the request sets and the model takes."""
    takes = spec.takes_in(request.family)
    values = {name: getattr(request, name, None) for name in _OPTIONAL}
    return {name: value for name, value in values.items()
            if value is not None and (name == "n" or name in takes)}


def messages_body(request, spec: ModelSpec, images: list[str] = ()) -> dict:
    """The body of ``multimodal-generation`` (and of 3.0's asynchronous path).

    ``images``: edit inputs' values as sent (data URIs, URLs, oss:// names), in order.
    """
    content = [{"image": value} for value in images] + [{"text": request.prompt}]
    return {"model": request.model,
            "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters(request, spec)}


def text2image_body(request, spec: ModelSpec) -> dict:
    """The body of ``text2image/image-synthesis`` (qwen-image-plus and qwen-image tasks)."""
    params = parameters(request, spec)
    prompt = {"prompt": request.prompt}
    if "negative_prompt" in params:
        prompt["negative_prompt"] = params.pop("negative_prompt")
    return {"model": request.model, "input": prompt, "parameters": params}


def task_body(request, spec: ModelSpec, images: list[str] = ()) -> dict:
    """The body of ``spec``'s asynchronous path."""
    if spec.async_path.startswith("/services/aigc/text2image/"):
        return text2image_body(request, spec)
    return messages_body(request, spec, images)


def needs_oss_resolve(images: list[str]) -> bool:
    """An ``oss://`` input needs the ``X-DashScope-OssResourceResolve`` header."""
    return any(value.startswith("oss://") for value in images)


# -- answers ------------------------------------------------------------------------------


# Plausible ranges of usage figures: no Qwen-Image output or input has a side over 16384
# pixels, and no call makes or takes more than 100 images.
MAX_SIDE = 16384
MAX_COUNT = 100


def read_usage(usage: dict | None) -> Usage:
    """``usage`` of either shape as one type (fields the answer lacks, or gives out of
    range, are None)."""
    usage = usage if isinstance(usage, dict) else {}

    def number(high: int, *names: str) -> int | None:
        for name in names:
            if usage.get(name) is not None:
                return bounded(usage[name], 0, high, f"usage.{name}", whole=True)
        return None

    return Usage(output_images=number(MAX_COUNT, "output_image_count", "image_count"),
                 input_images=number(MAX_COUNT, "input_image_count"),
                 width=number(MAX_SIDE, "output_width", "width"),
                 height=number(MAX_SIDE, "output_height", "height"),
                 output_tier=usage.get("output_image_type"),
                 input_tier=usage.get("input_image_type"))


def within_asked(usage: Usage, outputs: int, inputs: int) -> Usage:
    """``usage`` with its image counts no higher than what the call asked for (``outputs``
    images from ``inputs`` input images): the spend guard and the cost never count more
    than the request could have made, whatever an answer says."""
    changes = {}
    for name, asked in (("output_images", outputs), ("input_images", inputs)):
        reported = getattr(usage, name)
        if reported is not None and reported > asked:
            warn_once(f"usage.{name}", "The service reported %s = %d for a call of %d; "
                      "counting %d", name, reported, asked, asked)
            changes[name] = asked
    return dataclasses.replace(usage, **changes) if changes else usage


def billed_count(usage: Usage, url_count: int) -> int:
    """Images billed: the count the service reports, else the URLs it returned."""
    return usage.output_images if usage.output_images is not None else url_count


def _choice_urls(output: dict) -> list[str]:
    try:
        content = output["choices"][0]["message"]["content"]
        return [item["image"] for item in content if isinstance(item, dict) and item.get("image")]
    except (KeyError, IndexError, TypeError):
        return []


def _invalid(what: str, answer: dict, hint: str) -> ServerError:
    return ServerError(200, "InvalidResponse", f"{what}: {str(answer)[:300]}",
                       answer.get("request_id"), hint=hint)


@dataclass(frozen=True)
class Generated:
    """A synchronous generation's answer."""

    urls: list[str]
    usage: Usage
    raw_usage: dict
    request_id: str | None
    rewrite_status: str | None


def read_generated(answer: dict) -> Generated:
    output = answer.get("output") if isinstance(answer.get("output"), dict) else {}
    urls = _choice_urls(output)
    if not urls:
        raise _invalid("the answer holds no image URL", answer,
                       "Run again; if it persists, report the request id.")
    raw = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return Generated(urls, read_usage(raw), raw, answer.get("request_id"),
                     output.get("rewrite_status"))


# A task id as the service writes them (UUIDs): letters, digits, '-', '_' and '.', not
# starting with a dot, so "." and ".." (and anything with a slash or a query) never get
# into a URL path.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TASK_ID_CHARS = ("up to 128 letters, digits, '-', '_' and '.', starting with a letter or "
                 "digit (e.g. a UUID)")


def plausible_task_id(task_id) -> bool:
    return isinstance(task_id, str) and _TASK_ID.fullmatch(task_id) is not None


def read_created(answer: dict) -> str:
    """The task id of a task-creation answer."""
    task_id = (answer.get("output") or {}).get("task_id")
    if not plausible_task_id(task_id):
        raise _invalid("the task creation answer has no task id", answer,
                       "A task may have been created: check the task list in the Model Studio "
                       "console before running again.")
    return task_id


@dataclass(frozen=True)
class TaskState:
    """One answer of a task query."""

    task_id: str
    status: str
    answer: dict = field(repr=False)  # the whole answer, as the service sent it
    request_id: str | None = None
    urls: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "image 2: code: message" per failed item
    usage: Usage = field(default_factory=Usage)
    raw_usage: dict = field(default_factory=dict)
    orig_prompt: str | None = None
    actual_prompt: str | None = None
    rewrite_status: str | None = None

    @property
    def output(self) -> dict:
        return self.answer["output"]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def code(self) -> str | None:
        return self.output.get("code")

    @property
    def message(self) -> str:
        return str(self.output.get("message") or "")


def read_task(answer: dict, task_id: str) -> TaskState:
    output = answer.get("output")
    if not isinstance(output, dict) or "task_status" not in output:
        raise _invalid("the task query answer has no task_status", answer,
                       "Run again; if it persists, the service's format changed.")
    results = [item for item in output.get("results") or [] if isinstance(item, dict)]
    urls = [item["url"] for item in results if item.get("url")] or _choice_urls(output)
    failed = [f"image {index}: {item.get('code')}: {item.get('message')}"
              for index, item in enumerate(results, start=1) if not item.get("url")]
    first = next((item for item in results if item.get("url")), {})
    raw = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return TaskState(task_id=task_id, status=str(output["task_status"]), answer=answer,
                     request_id=answer.get("request_id"), urls=urls, failed=failed,
                     usage=read_usage(raw), raw_usage=raw,
                     orig_prompt=first.get("orig_prompt"),
                     actual_prompt=first.get("actual_prompt"),
                     rewrite_status=output.get("rewrite_status"))
