"""The models the emulator serves, in both regions, and how each treats a request.

Families (the vendor's model pages; where a fact is only a third-party report it says so):

    qwen-image, qwen-image-plus        text to image; n 1 ("num_images_per_prompt must be
                                       1"); five sizes, default 1328*1328 (the reference);
                                       also async on text2image/image-synthesis
    qwen-image-plus-2026-01-09,        the same, default 1664*928, synchronous only
    qwen-image-max(-2025-12-30)
    qwen-image-edit                    edit, 1-3 images, n 1, no size, no prompt_extend
    qwen-image-edit-plus(-2025-10-30)  edit, n 1-6, size sides 512-2048 only with n 1
    qwen-image-edit-plus-2025-12-15,   edit, n 1-6, size sides 512-2048 at any n, output
    qwen-image-edit-max(-2026-01-16)   sides rounded to multiples of 16
    qwen-image-2.0(-2026-03-03),       unified (text only: text to image; 1-3 images and
    qwen-image-2.0-pro(-2026-06-22,    text: edit); n 1-6; text to image: area 512*512 to
    -2026-04-22, -2026-03-03)          2048*2048, default 2048*2048; edit: the same area,
                                       sides rounded to multiples of 16, default ~1024*1024
                                       at the last image's ratio; no task_metric; prompts
                                       over 1300 characters cut (the page counts tokens)
    qwen-image-3.0, qwen-image-3.0-pro unified; n 1-6; text to image: area 512*512 to
                                       2560*2560 as measured (the page says 2048*2048),
                                       aspect 1:8 to 8:1, default 2048*2048; edit: size
                                       ignored (measured), the output keeps the last image's
                                       ratio at ~2048*2048; prompt_extend_mode direct|agent
                                       (agent only without images), enable_thinking; the
                                       "qima" answer; also async on image-generation
    qwen-image-2.1-pro                 unified, up to 10 references; third-party reports
                                       only: area 262144 to 4194304, aspect to 8:1, n 1-6,
                                       no negative_prompt; answered like 3.0, async like 3.0
    qwen-image-2.1-turbo               Model Studio's model index lists it (2.1 family), no
                                       API page: as 2.1-pro (assumed) but with what a third
                                       party reports for it: negative_prompt (500
                                       characters), no prompt_extend_mode/enable_thinking
"""
from __future__ import annotations

from typing import NamedTuple

from .rules import EDIT_AREA


class SizeRule(NamedTuple):
    """How a model treats parameters.size for one kind of request (text to image, edit)."""

    kind: str  # "fixed": one of T2I_SIZES; "sides": each side in [low, high]; "area": W*H in
    # [low, high]; "none": refused; "ignored": accepted and not used
    low: int = 0
    high: int = 0
    default: str = ""  # text to image: the size when none is given
    default_area: int = EDIT_AREA  # edit without a size: the output area, last input's ratio
    aspect: int = 0  # "area": the long side at most this many times the short one (0: any)
    round16: bool = False  # edit: output sides rounded to the nearest multiple of 16
    n1_only: bool = False  # a size only when n is 1
    scope: str = ""  # how size errors name the request kind, e.g. " for t2i requests"


class Model(NamedTuple):
    kind: str  # "t2i": text only; "edit": images plus one text; "unified": either
    max_n: int  # n above 1 is refused with rules.N_MUST_BE_1 when this is 1
    t2i: SizeRule | None  # the size rule without input images
    edit: SizeRule | None  # the size rule with input images
    max_images: int = 3
    prompt_extend: bool = True  # False: the parameter is ignored, the prompt never rewritten
    thinking: bool = False  # prompt_extend_mode and enable_thinking are checked
    negative: bool = True  # False: a negative_prompt that is not blank is refused
    prompt_max: int | None = 800  # characters; longer prompts are cut silently
    negative_max: int | None = 500
    answer: str = "v1"  # "v1": usage {width, height, image_count}, task_metric for "t2i";
    # "v2": the same without task_metric; "qima": the 3.0 usage and rewrite_status
    async_api: str | None = None  # "image-synthesis" or "image-generation": served there too


_LEGACY_T2I = Model("t2i", 1, SizeRule("fixed", default="1328*1328"), None,
                    async_api="image-synthesis")
_T2I = Model("t2i", 1, SizeRule("fixed", default="1664*928"), None)
_EDIT = Model("edit", 1, None, SizeRule("none"), prompt_extend=False)
_EDIT_PLUS = Model("edit", 6, None, SizeRule("sides", 512, 2048, n1_only=True))
_EDIT_MAX = Model("edit", 6, None, SizeRule("sides", 512, 2048, round16=True))
_V2 = Model("unified", 6, SizeRule("area", 512 * 512, 2048 * 2048, default="2048*2048"),
            SizeRule("area", 512 * 512, 2048 * 2048, round16=True), prompt_max=1300,
            answer="v2")
_V3 = Model("unified", 6,
            SizeRule("area", 512 * 512, 2560 * 2560, default="2048*2048", aspect=8,
                     scope=" for t2i requests"),
            SizeRule("ignored", default_area=2048 * 2048), thinking=True, prompt_max=None,
            negative_max=None, answer="qima", async_api="image-generation")
_V21 = Model("unified", 6, SizeRule("area", 262144, 4194304, default="2048*2048", aspect=8),
             SizeRule("area", 262144, 4194304, default_area=2048 * 2048, aspect=8),
             max_images=10, thinking=True, negative=False, prompt_max=None, negative_max=None,
             answer="qima", async_api="image-generation")

_V21_TURBO = _V21._replace(thinking=False, negative=True, negative_max=500)

MODELS: dict[str, Model] = {
    "qwen-image-plus": _LEGACY_T2I,
    "qwen-image": _LEGACY_T2I,
    "qwen-image-plus-2026-01-09": _T2I,
    "qwen-image-max": _T2I,
    "qwen-image-max-2025-12-30": _T2I,
    "qwen-image-edit": _EDIT,
    "qwen-image-edit-plus": _EDIT_PLUS,
    "qwen-image-edit-plus-2025-10-30": _EDIT_PLUS,
    "qwen-image-edit-plus-2025-12-15": _EDIT_MAX,
    "qwen-image-edit-max": _EDIT_MAX,
    "qwen-image-edit-max-2026-01-16": _EDIT_MAX,
    "qwen-image-2.0": _V2,
    "qwen-image-2.0-2026-03-03": _V2,
    "qwen-image-2.0-pro": _V2,
    "qwen-image-2.0-pro-2026-06-22": _V2,
    "qwen-image-2.0-pro-2026-04-22": _V2,
    "qwen-image-2.0-pro-2026-03-03": _V2,
    "qwen-image-3.0": _V3,
    "qwen-image-3.0-pro": _V3,
    "qwen-image-2.1-pro": _V21,
    "qwen-image-2.1-turbo": _V21_TURBO,
}
