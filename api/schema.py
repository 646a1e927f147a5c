"""What callers send and get back: plain dataclasses, no HTTP and no torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .models import DEFAULT_MODEL, DEFAULT_TEXT_TO_IMAGE_SIZE, IMAGE_EDIT, TEXT_TO_IMAGE

# An edit input: encoded image bytes (PNG, JPEG, ... as a file holds them), or a string
# that is already an http(s) URL, a data: URI or an oss:// name.
ImageInput = Union[bytes, str]


@dataclass(frozen=True)
class TextToImageRequest:
    prompt: str
    model: str = DEFAULT_MODEL[TEXT_TO_IMAGE]
    negative_prompt: str = ""
    size: str = DEFAULT_TEXT_TO_IMAGE_SIZE
    n: int = 1
    prompt_extend: bool = True
    watermark: bool = False
    seed: int | None = None  # None: the service picks one

    family = TEXT_TO_IMAGE


@dataclass(frozen=True)
class ImageEditRequest:
    prompt: str
    images: tuple[ImageInput, ...]
    model: str = DEFAULT_MODEL[IMAGE_EDIT]
    negative_prompt: str = ""
    size: str | None = None  # "W*H"; None keeps the last image's aspect near 1024*1024
    n: int = 1
    prompt_extend: bool | None = True  # None: not sent (qwen-image-edit does not take it)
    watermark: bool = False
    seed: int | None = None

    family = IMAGE_EDIT


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
