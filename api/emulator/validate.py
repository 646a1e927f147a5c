"""Request bodies to jobs, or the error the service answers (ApiError).

Models and their families: catalog.py; size rules: sizes.py. Unknown model (or one not
served at the endpoint, e.g. an edit model on image-synthesis): 400 InvalidParameter "Model
not exist.". Missing model: 400 BadRequest.EmptyModel. Missing or empty input: 400
BadRequest.EmptyInput. Other violations: 400 InvalidParameter (one user message with exactly
one text; text-to-image models take no image, edit models 1 to max_images, unified models 0
to max_images; n in [1, max_n], "num_images_per_prompt must be 1" where max_n is 1, checked
before the size; seed in [0, 2147483647]; prompt_extend, watermark and (3.0, 2.1-pro)
enable_thinking booleans; prompt_extend_mode "direct" or "agent", agent with images refused;
a negative_prompt that is not blank refused by 2.1-pro; null counts as absent; unknown
parameters are ignored; qwen-image-edit ignores prompt_extend).

Image items: data:{mime};base64,... (rules.IMAGE_MIMES; an item longer than 10485760
characters: "Exceeded limit on max bytes per data-uri item"), the emulator's own result
URLs (any other URL: 400 InvalidURL "download failed: ..."), or oss://{key} (needs the
header X-DashScope-OssResourceResolve: enable, else 400 InvalidURL). Decoded images must be
JPEG/PNG/BMP/TIFF/WEBP, at most 10 MB, each side in [384, 3072].

Prompts and negative prompts over the model's limits (catalog.Model.prompt_max and
negative_max; characters stand in for the pages' tokens) are cut silently; Drawing.notes says
so. A prompt or negative prompt (after cutting) containing "[[unsafe]]": 400
DataInspectionFailed "Input or output data may contain inappropriate content.".
"""
from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from . import rules
from .catalog import MODELS, Model
from .errors import ApiError, invalid
from .images import open_image
from .sizes import output_size

Fetch = Callable[[str], bytes]  # the bytes of one image item


@dataclass
class Drawing:
    """What the model is asked to draw, after validation and truncation."""

    model: str
    prompt: str
    negative_prompt: str
    size: tuple[int, int] = (0, 0)
    n: int = 1
    seed: int = 0
    prompt_extend: bool = False
    watermark: bool = False
    inputs: list[Image.Image] = field(default_factory=list)  # decoded input images
    notes: list[str] = field(default_factory=list)  # what the service did silently (truncation)

    @property
    def actual_prompt(self) -> str | None:
        return self.prompt + rules.EXTEND_SUFFIX if self.prompt_extend else None

    @property
    def rewrite_status(self) -> str:
        """3.0's output.rewrite_status: whether the prompt was rewritten."""
        return "success" if self.prompt_extend else "not_use"


def model_of(body: Any, api: str) -> tuple[str, Model]:
    """(name, Model) of a request body for *api* ("sync" or a Model.async_api value);
    unknown, or not served there: "Model not exist."."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    name = body.get("model")
    if not name:
        raise ApiError("BadRequest.EmptyModel")
    model = MODELS.get(name) if isinstance(name, str) else None
    if model is None or (api != "sync" and model.async_api != api):
        raise invalid(rules.MODEL_NOT_EXIST)
    return name, model


def generation(body: dict[str, Any], name: str, model: Model, fetch: Fetch) -> Drawing:
    """A messages body (multimodal-generation, image-generation); fetch(value) gives the
    bytes of one image item."""
    messages = _input(body).get("messages")
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        raise invalid("input.messages must hold exactly one message.")
    if messages[0].get("role") != "user":
        raise invalid("The role of the message must be user.")
    content = messages[0].get("content")
    if not isinstance(content, list) or not content:
        raise invalid("The message content must be a non-empty array.")
    texts, images = [], []
    for item in content:
        kind = _item_kind(item)
        if kind is None:
            raise invalid('Each content item must be {"text": string} or {"image": string}.')
        (texts if kind == "text" else images).append(item[kind])
    if len(texts) != 1:
        raise invalid("The content must hold exactly one text item.")
    if model.kind == "t2i" and images:
        raise invalid(f"Model {name} does not accept input images.")
    low = 1 if model.kind == "edit" else 0
    if not low <= len(images) <= model.max_images:
        raise invalid(f"Model {name} takes {low} to {model.max_images} input images, "
                      f"got {len(images)}.")
    params = _parameters(body)
    job = _job(name, model, texts[0], params.get("negative_prompt"), params, bool(images))
    job.inputs = [decode_input(fetch(value)) for value in images]
    rule = model.edit if images else model.t2i
    assert rule is not None  # the image count checks above pick a rule the model has
    job.size = output_size(params.get("size"), name, rule, job.n, job.inputs)
    _inspect(job)
    return job


def synthesis(body: dict[str, Any], name: str, model: Model) -> Drawing:
    """An image-synthesis (async task) body: prompt and negative_prompt sit in input."""
    inp = _input(body)
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("Field required: input.prompt")
    params = _parameters(body)
    job = _job(name, model, prompt, inp.get("negative_prompt"), params, False)
    assert model.t2i is not None  # only text-to-image models serve image-synthesis
    job.size = output_size(params.get("size"), name, model.t2i, job.n, [])
    _inspect(job)
    return job


def image_bytes(value: str, *, fetch_url: Fetch, fetch_oss: Fetch, oss_enabled: bool) -> bytes:
    """Bytes of one image item: a data URI, an http(s) URL or an oss:// name."""
    if value.startswith("data:"):
        if len(value) > rules.DATA_URI_MAX:
            raise invalid("Exceeded limit on max bytes per data-uri item")
        header, comma, payload = value[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not comma or encoding.strip().lower() != "base64":
            raise invalid("The data URI must read data:{mime};base64,{data}.")
        if mime.strip().lower() not in rules.IMAGE_MIMES:
            raise invalid(f"The image type {mime!r} is not supported.")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("The data URI does not hold valid base64.") from None
    if value.startswith("oss://"):
        if not oss_enabled:
            raise ApiError(
                "InvalidURL",
                "oss:// resources need the header X-DashScope-OssResourceResolve: enable."
            )
        return fetch_oss(value)
    if value.startswith(("http://", "https://")):
        return fetch_url(value)
    raise invalid("An image must be an http(s) URL, an oss:// name or a data URI.")


def decode_input(data: bytes) -> Image.Image:
    """A decoded input image within the service's limits; else 400 InvalidParameter."""
    if len(data) > rules.INPUT_MAX_BYTES:
        raise invalid("The input image is larger than 10MB.")
    try:
        img = open_image(data)
    except ValueError:
        raise invalid("The input image format is not supported or the image is damaged.") from None
    low, high = rules.INPUT_SIDE
    if not (low <= img.width <= high and low <= img.height <= high):
        raise invalid(
            f"The input image is {img.width}*{img.height}; "
            f"width and height must be in [{low}, {high}]."
        )
    try:
        img.load()  # after the size check: no decompression of oversized images
    except Exception:  # truncated or corrupt data, whatever Pillow raises
        raise invalid("The input image format is not supported or the image is damaged.") from None
    return img


def _item_kind(item: Any) -> str | None:
    if isinstance(item, dict) and ("text" in item) != ("image" in item):
        kind = "text" if "text" in item else "image"
        return kind if isinstance(item[kind], str) else None
    return None


def _input(body: dict[str, Any]) -> dict[str, Any]:
    inp = body.get("input")
    if not inp:
        raise ApiError("BadRequest.EmptyInput")
    if not isinstance(inp, dict):
        raise invalid("input must be an object.")
    return inp


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    params = body.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise invalid("parameters must be an object.")
    return params


def _job(name: str, model: Model, prompt: Any, negative: Any, params: dict[str, Any],
         with_images: bool) -> Drawing:
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("The prompt (text) must not be empty.")
    if negative is None:
        negative = ""
    if not isinstance(negative, str):
        raise invalid("negative_prompt must be a string.")
    if not model.negative and negative.strip():
        raise invalid(f"Model {name} does not support negative_prompt.")
    n = _integer(params, "n", 1)
    if model.max_n == 1 and n != 1:
        raise invalid(rules.N_MUST_BE_1)
    if not 1 <= n <= model.max_n:
        raise invalid(f"n must be between 1 and {model.max_n}.")
    seed = _integer(params, "seed", None)
    if seed is None:
        seed = random.randint(0, rules.SEED_MAX)
    elif not 0 <= seed <= rules.SEED_MAX:
        raise invalid(f"seed must be in [0, {rules.SEED_MAX}].")
    extend = _boolean(params, "prompt_extend", True) if model.prompt_extend else False
    if model.thinking:
        _check_thinking(params, with_images)
    job = Drawing(name, prompt, negative, n=n, seed=seed, prompt_extend=extend,
              watermark=_boolean(params, "watermark", False))
    for attr, limit in (("prompt", model.prompt_max), ("negative_prompt", model.negative_max)):
        text = getattr(job, attr)
        if limit is not None and len(text) > limit:  # cut silently; the note tells tests
            setattr(job, attr, text[:limit])
            job.notes.append(f"{attr} truncated from {len(text)} to {limit} characters")
    return job


def _check_thinking(params: dict[str, Any], with_images: bool) -> None:
    """3.0's rewriting options: the mode's values, agent only for text to image."""
    mode = params.get("prompt_extend_mode")
    if mode is not None and mode not in rules.EXTEND_MODES:
        raise invalid(f"prompt_extend_mode must be one of {', '.join(rules.EXTEND_MODES)}.")
    if mode == "agent" and with_images:
        raise invalid("prompt_extend_mode agent is not supported for requests with images; "
                      "use direct.")
    _boolean(params, "enable_thinking", True)


def _integer(params: dict[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None:  # the SDK sends null for kwargs given as None
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer.")
    return value


def _boolean(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean.")
    return value


def _inspect(job: Drawing) -> None:
    if rules.UNSAFE_MARKER in job.prompt or rules.UNSAFE_MARKER in job.negative_prompt:
        raise ApiError("DataInspectionFailed")
