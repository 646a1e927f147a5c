"""The types of the model table: one ``ModelSpec`` per model, with its size, input, text,
rate and price rules.

The rows are in ``table``, the lookups in ``models``. Every fact in a spec's fields is
official: the two seed references ("通義千問-文生圖API參考", "通義千問-影像編輯API參考"),
or a Model Studio page named where the fact is used. Limits that only third parties
report, or measurements that disagree with a page, sit in ``ModelSpec.reported``:
validation turns a breach of them into a note, never a refusal, and the service decides.
``ModelSpec.unconfirmed`` says the same in words, for ``info`` and the command line.

A model id that is not in the table is still usable: ``spec_for`` builds a spec holding
only the rules every documented model shares, marked ``known=False``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ValidationError

TEXT_TO_IMAGE = "text-to-image"
IMAGE_EDIT = "image-edit"
UNIFIED = "unified"  # text to image without input images, editing with them

SYNC = "sync"  # POST /services/aigc/multimodal-generation/generation, every model
ASYNC = "async"  # a task on the model's ``async_path``, then GET /tasks/{id}
INTERFACES = (SYNC, ASYNC)
TEXT2IMAGE_PATH = "/services/aigc/text2image/image-synthesis"  # qwen-image(-plus) tasks
IMAGE_GENERATION_PATH = "/services/aigc/image-generation/generation"  # 3.0 tasks


# The optional parameters a body may carry (``n`` is always sent), and the value each
# means when it is left out; a value equal to it is not worth a note when a model does
# not take the parameter.
OPTIONAL_PARAMETERS = ("negative_prompt", "size", "prompt_extend", "prompt_extend_mode",
                       "enable_thinking", "watermark", "seed")
PARAMETER_DEFAULTS = {"negative_prompt": None, "size": None, "prompt_extend": True,
                      "prompt_extend_mode": "direct", "enable_thinking": True,
                      "watermark": False, "seed": None}
PROMPT_EXTEND_MODES = ("direct", "agent")

# The seed references' text-to-image sizes with their aspect ratios (nodes and the command
# line list these); newer pages spell 4:3 and 3:4 as 1472*1104 and 1104*1472.
TEXT_TO_IMAGE_SIZES = {"1664*928": "16:9", "1472*1140": "4:3", "1328*1328": "1:1",
                       "1140*1472": "3:4", "928*1664": "9:16"}
TEXT_TO_IMAGE_SIZE_ALIASES = {"1472*1104": "4:3", "1104*1472": "3:4"}

# The seeds' limits for the models they describe (the table's rows use them too).
PROMPT_MAX_CHARS = 800
NEGATIVE_PROMPT_MAX_CHARS = 500
SEED_MIN, SEED_MAX = 0, 2147483647  # every documented model
EDIT_IMAGES_MIN, EDIT_IMAGES_MAX = 1, 3
EDIT_INPUT_SIDE_MIN, EDIT_INPUT_SIDE_MAX = 384, 3072
EDIT_INPUT_MAX_BYTES = 10 * 1024 * 1024  # per image, and per data-URI item (every model)
EDIT_INPUT_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")  # Pillow's names for JPG/JPEG, ...
EDIT_CUSTOM_SIZE_RANGE = (512, 2048)  # each side of an edit-plus/edit-max output size

# The service documents no request body limit, but its gateway refuses bodies over 6 MiB
# (413 BadRequest.TooLarge, seen in public reports). The client keeps every body at or
# under REQUEST_BODY_TARGET, leaving half a MiB for headers and a stricter proxy.
REQUEST_BODY_LIMIT = 6 * 1024 * 1024
REQUEST_BODY_TARGET = REQUEST_BODY_LIMIT - 512 * 1024
# How edit inputs travel (QwenImageClient.edit_image): "auto" picks per request, "data_uri"
# never uploads (inputs are shrunk to fit), "upload" always uses the temporary storage.
INPUT_TRANSPORTS = ("auto", "data_uri", "upload")
# Temporary storage (Beijing only): a file lives 48 h, bound to the model and the account.
TEMPORARY_FILE_TTL = 48 * 3600

# What the limiter assumes where no limit is published: the seeds' figures for the models
# they describe (2 requests per second, 2 in progress at once).
FALLBACK_REQUESTS_PER_SECOND = 2.0
FALLBACK_CONCURRENT = 2


@dataclass(frozen=True)
class SizeRule:
    """The output sizes a model takes in one mode (text to image, or editing).

    Either a fixed list (``sizes``, older spellings in ``aliases``) or free ``W*H`` within
    an area, aspect and side range; unset bounds are not checked.
    """

    sizes: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)  # old spelling -> size sent
    min_area: int | None = None
    max_area: int | None = None
    max_aspect: float | None = None  # longer side over shorter side
    side: tuple[int, int] | None = None  # each side within this range
    multiple: int | None = None  # the service rounds each side to the nearest multiple
    default: str | None = None  # the documented size when omitted; None: the model picks
    default_text: str = ""  # the default in words, when it is not one size

    @property
    def fixed(self) -> bool:
        return bool(self.sizes)

    def describe(self) -> str:
        """The sizes allowed, in words."""
        if self.fixed:
            return ", ".join(self.sizes)
        parts = []
        if self.side:
            parts.append(f"both sides from {self.side[0]} to {self.side[1]}")
        if self.min_area or self.max_area:
            largest = area_text(self.max_area) if self.max_area else "any"
            parts.append(f"an area from {area_text(self.min_area or 1)} to {largest}")
        if self.max_aspect:
            parts.append(f"an aspect ratio up to {self.max_aspect:g}:1")
        return "width*height" + (" with " + ", ".join(parts) if parts else "")


def area_text(pixels: int) -> str:
    """``2048*2048`` for a square number of pixels, else ``4,000,000 pixels``."""
    side = math.isqrt(pixels)
    return f"{side}*{side}" if side * side == pixels else f"{pixels:,} pixels"


@dataclass(frozen=True)
class TextLimit:
    """A prompt limit: characters are refused beyond it, tokens only noted (estimated)."""

    limit: int
    unit: str = "characters"  # or "tokens"
    cut: bool = True  # the service drops the excess; False: a recommendation only


@dataclass(frozen=True)
class InputRule:
    """Input images of an edit (image-to-image) request."""

    count: tuple[int, int | None] = (EDIT_IMAGES_MIN, EDIT_IMAGES_MAX)  # None: no maximum
    side: tuple[int, int] | None = None  # each side of each input
    side_required: bool = False  # False: the page only recommends ``side`` (a note)
    formats: tuple[str, ...] = EDIT_INPUT_FORMATS  # Pillow's names
    max_bytes: int = EDIT_INPUT_MAX_BYTES


@dataclass(frozen=True)
class Price:
    """One region's price per image, in the currency of its source page."""

    currency: str  # "USD" or "CNY" (pricing converts)
    output: float  # per generated image; the 1K tier where there are tiers
    output_2k: float | None = None  # above 2,250,000 output pixels; None: one price
    input: float = 0.0  # per input image


@dataclass(frozen=True)
class RateLimits:
    """Per account and model; None where no official figure is published."""

    requests: int | None = None  # per ``period`` seconds
    period: float = 1.0  # 1: per second, 60: per minute
    concurrent_tasks: int | None = None  # tasks processing at once
    sync_limited: bool | None = None  # whether synchronous calls count against it too


@dataclass(frozen=True)
class Reported:
    """Stricter values of some ``ModelSpec`` fields that are not official: a request that
    breaks them is sent anyway, with a note ending in ``why``."""

    changes: Mapping[str, object]
    why: str


@dataclass(frozen=True)
class ModelSpec:
    """One model id: its official facts in the fields, stricter unofficial ones in
    ``reported`` (notes only), and the open questions in words in ``unconfirmed``."""

    id: str
    kind: str  # TEXT_TO_IMAGE, IMAGE_EDIT or UNIFIED
    async_path: str | None = None  # the task path under /api/v1; None: synchronous only
    n_max: int | None = 1  # n is 1..n_max; None: no official limit
    t2i_size: SizeRule | None = None  # None: no text to image, or no size parameter
    edit_size: SizeRule | None = None  # None: no editing, or no size parameter
    needs_n1: bool = False  # size only with n == 1 (edit-plus, per the seed reference)
    prompt: TextLimit | None = None
    negative_prompt: TextLimit | None = None
    takes: frozenset[str] = frozenset()  # of OPTIONAL_PARAMETERS
    inputs: InputRule | None = None  # None: no input images
    agent_with_images: bool = True  # False: prompt_extend_mode "agent" is refused with them
    prices: Mapping[str, Price] = field(default_factory=dict)  # region -> price
    rate: RateLimits = RateLimits()
    regions: frozenset[str] | None = None  # where an official page lists it; None: unknown
    reported: tuple[Reported, ...] = ()
    unconfirmed: tuple[str, ...] = ()  # in words, for ``info``
    documented: bool = True  # False: only some facts are official (see ``unconfirmed``)
    known: bool = True  # False: not in the table

    def accepts(self, family: str) -> bool:
        """Whether requests of ``family`` (TEXT_TO_IMAGE or IMAGE_EDIT) may use it."""
        return self.kind in (family, UNIFIED)

    def size_rule(self, family: str) -> SizeRule | None:
        return self.t2i_size if family == TEXT_TO_IMAGE else self.edit_size

    def default_size(self, family: str) -> str | None:
        """The size the model uses when none is sent; None: it picks one itself."""
        rule = self.size_rule(family)
        return rule.default if rule is not None else None

    def takes_in(self, family: str) -> frozenset[str]:
        """``takes`` for one mode: "size" only where the mode has a size rule."""
        if self.size_rule(family) is None:
            return self.takes - {"size"}
        return self.takes

    @property
    def interfaces(self) -> tuple[str, ...]:
        return INTERFACES if self.async_path else (SYNC,)

    @property
    def default_interface(self) -> str:
        # The asynchronous interface is the default where it exists: a task can be
        # cancelled while queued and polled again after a dropped connection, so a lost
        # answer never means paying twice.
        return ASYNC if self.async_path else SYNC

    def resolve_interface(self, requested: str | None) -> tuple[str, str | None]:
        """The interface to use for ``requested`` (None: the default), and a note when it
        differs. An asynchronous request to a synchronous-only model runs synchronously."""
        if requested is None:
            return self.default_interface, None
        if requested not in INTERFACES:
            raise ValidationError("interface", f"{requested!r} is not an interface",
                                  allowed=list(INTERFACES))
        if requested == ASYNC and not self.async_path:
            return SYNC, (f"{self.id} has no asynchronous interface, so the synchronous one "
                          "was used (it cannot be cancelled once sent)")
        return requested, None

    @property
    def concurrent_tasks(self) -> int:
        """For the limiter: the published figure, else the seeds' 2 (``rate`` says
        whether it is published and whether synchronous calls count)."""
        return self.rate.concurrent_tasks or FALLBACK_CONCURRENT
