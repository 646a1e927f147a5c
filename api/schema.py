"""What callers send and get back: plain dataclasses, no HTTP and no torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .catalog.models import DEFAULT_MODEL
from .catalog.specs import IMAGE_EDIT, TEXT_TO_IMAGE

# An edit input: encoded image bytes (PNG, JPEG, ... as a file holds them), or a string
# that is already an http(s) URL, a data: URI or an oss:// name.
ImageInput = Union[bytes, str]

# Optional fields are None by default: "the model's default", so a request with only the
# required fields is valid for every model of the table, and nothing a model does not take
# is sent (validation notes a value it leaves out). New fields come last, so positional
# calls written before them keep their meaning.


@dataclass(frozen=True)
class TextToImageRequest:
    prompt: str
    model: str = DEFAULT_MODEL[TEXT_TO_IMAGE]
    negative_prompt: str | None = None
    size: str | None = None  # "W*H"; None: the model's default (models.SizeRule.default)
    n: int = 1
    prompt_extend: bool | None = None  # None: the model's default (on, where it rewrites)
    watermark: bool | None = None  # None: no watermark
    seed: int | None = None  # None: the service picks one
    prompt_extend_mode: str | None = None  # "direct" or "agent" (3.0); None: "direct"
    enable_thinking: bool | None = None  # 3.0, with prompt_extend only; None: on

    family = TEXT_TO_IMAGE


@dataclass(frozen=True)
class ImageEditRequest:
    prompt: str
    images: tuple[ImageInput, ...]
    model: str = DEFAULT_MODEL[IMAGE_EDIT]
    negative_prompt: str | None = None
    size: str | None = None  # "W*H"; None: the model's default (near the last input's aspect)
    n: int = 1
    prompt_extend: bool | None = None
    watermark: bool | None = None
    seed: int | None = None
    prompt_extend_mode: str | None = None  # "direct" only: "agent" is refused with images
    enable_thinking: bool | None = None

    family = IMAGE_EDIT


@dataclass(frozen=True)
class Usage:
    """What the service reported using, from either answer shape (``wire`` reads it).

    Older models report ``usage.{width, height, image_count}``; 3.0 reports
    ``usage.{output_width, output_height, output_image_count, output_image_type,
    input_image_count, input_image_type}`` with tiers ``qima_output_1k``/``_2k`` and
    ``qima_input_1k``/``_2k``. A field the answer lacks is None.
    """

    output_images: int | None = None  # billed outputs
    input_images: int | None = None  # billed inputs (3.0)
    width: int | None = None  # of the outputs
    height: int | None = None
    output_tier: str | None = None  # e.g. "qima_output_2k"
    input_tier: str | None = None  # e.g. "qima_input_1k"


@dataclass
class GeneratedImage:
    data: bytes = field(repr=False)  # the PNG exactly as downloaded
    url: str  # expires 24 h after generation
    width: int
    height: int
    saved_path: str | None = None  # where the result store wrote it, if one is configured


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    model: str
    region: str
    interface: str  # "sync" or "async"
    request_id: str | None = None
    task_id: str | None = None
    orig_prompt: str | None = None
    actual_prompt: str | None = None  # the rewritten prompt when prompt_extend was on
    usage: dict = field(default_factory=dict)
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    seed: int | None = None
    cost_usd: float | None = None  # from the reference's price table; None if unknown
    notes: list[str] = field(default_factory=list)  # e.g. "limits of model X unknown"
    from_store: bool = False  # served from the result store: nothing was sent or billed
    doubt: str = ""  # why the task may be another call's: a lost answer recovery could not tell
