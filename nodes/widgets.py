"""The widget vocabulary both nodes share: choices, tooltips, shared inputs, what the
widget values mean (model id, region, size, n), which inputs each model takes, and the
queue-time check.

Imports neither torch nor the HTTP client: ComfyUI lists the nodes from ``INPUT_TYPES``
without running them, and the command line imports the pack without torch.
"""
from __future__ import annotations

import re

from ..api.catalog.models import spec_for
from ..api.catalog.pricing import usd_price
from ..api.catalog.regions import REGIONS, SINGAPORE
from ..api.catalog.specs import (
    IMAGE_EDIT,
    NEGATIVE_PROMPT_MAX_CHARS,
    PARAMETER_DEFAULTS,
    PROMPT_EXTEND_MODES,
    PROMPT_MAX_CHARS,
    SEED_MAX,
    ModelSpec,
)
from ..api.catalog.validation import check_model_id, validate
from ..api.errors import ValidationError
from .comfy_bridge import STORE_DIR_ENV
from .prices import cost_table

CATEGORY = "api node/image/Qwen-Image (DashScope)"

REGION_DEFAULT = "default"
REGION_CHOICES = {REGION_DEFAULT: None,
                  **{f"{region.id} ({region.name})": region.id for region in REGIONS.values()}}
AUTO, CUSTOM = "auto", "custom"  # size choices: the model's default; width*height below
MATCH = "match input"  # edit size choice: image 1's exact size (api.fitting)
# Width and height widgets accept every size some model could take; the chosen model's own
# rules (sides, area, aspect) are checked from the table when the prompt is queued.
SIDE_MIN, SIDE_MAX, SIDE_STEP, SIDE_DEFAULT = 128, 8192, 16, 1024
FAIL = "fail"
RETURN_SUCCESSFUL = "return successful"

TOOLTIPS = {
    "prompt": "What to make. Chinese and English work best.",
    "prompt_limits": f" Models with a limit of {PROMPT_MAX_CHARS} characters refuse a longer "
                     "prompt (the service would silently cut it and still bill); the newer "
                     "models count tokens (help page).",
    "negative_prompt": f"What to keep out of the picture (up to {NEGATIVE_PROMPT_MAX_CHARS} "
                       "characters). May be empty.",
    "model": "The model. Unified models make images from text and edit them. Inputs the "
             "model does not take are hidden and not sent; the help page lists each model's "
             "sizes, number of images and price.",
    "n": " each billed, up to {n_max} on the models that make several; the others make 1 "
         "and ignore it.",
    "width": "Output width in pixels with size = custom. The model's own range is checked "
             "when the prompt is queued (help page).",
    "height": "Output height in pixels with size = custom. The model's own range is checked "
              "when the prompt is queued (help page).",
    "prompt_extend_mode": "How prompt_extend rewrites the prompt (qwen-image-3.0 models): "
                          "direct rewrites it; agent plans the picture first (text to image "
                          "only; refused with input images).",
    "enable_thinking": "Let the rewriting model think before it rewrites (qwen-image-3.0 "
                       "models, with prompt_extend on): slower, often better for complex "
                       "prompts.",
    "custom_model": "A model id that is not in the list (e.g. a newer snapshot). Overrides "
                    "'model' when not empty; sent as written. Its limits and price are unknown "
                    "to the pack, so the service has the last word and the cost estimate is empty.",
    "seed": "Random seed 0-2147483647. A fixed seed makes results repeatable (roughly: the "
            "service does not promise identical images) and lets 'reuse_stored' serve an "
            "identical request from disk.",
    "prompt_extend": "Let the service rewrite the prompt with a language model first (better "
                     "results for short prompts, 3-4 s slower). The rewritten prompt comes out "
                     "of 'prompt_used'.",
    "watermark": "Add the 'Qwen-Image' watermark in the lower right corner.",
    "region": "Which DashScope region to call. 'default' follows the configuration "
              "(DASHSCOPE_API_REGION, else Singapore), so a shared workflow runs for whoever "
              "opens it. Each region needs its own API key (DASHSCOPE_API_KEY or "
              "DASHSCOPE_API_KEY_AP_SOUTHEAST_1 / _CN_BEIJING; never typed into a widget).",
    "reuse_stored": "With a fixed seed, serve an identical earlier request (same model, region, "
                    "prompts, parameters and input pixels) from the result store instead of a "
                    f"new billed call. Results are kept in ComfyUI's output/qwen-image folder "
                    f"(or ${STORE_DIR_ENV}).",
    "on_partial_failure": "When some of this node's calls fail: 'fail' stops the run with the "
                          "first error (queued calls are cancelled); 'return successful' "
                          "returns the images that worked and lists the failures in 'info'.",
}


class QwenImageNode:
    """What both nodes share as ComfyUI node classes: their menu and their four outputs
    (``mask`` came later: appended, so saved workflows keep their links)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING", "STRING", "MASK")
    RETURN_NAMES = ("images", "prompt_used", "info", "mask")


def output_tooltips(images: str, order: str, fitted: str = "",
                    mask: str = "") -> tuple[str, str, str, str]:
    """The outputs' tooltips: ``images`` names the node's images, ``order`` their order,
    ``fitted`` and ``mask`` what a node changes in them."""
    return (f"The {images}, RGB, exactly the pixels the service returned (the colour "
            f"channels as served; transparency is in 'mask'): {order} Images of different "
            f"sizes share the batch padded to the largest ('info' says how).{fitted}",
            OUTPUT_TOOLTIPS_PROMPT, OUTPUT_TOOLTIPS_INFO,
            "1 - alpha of each image, as LoadImage gives a picture's MASK: 1 where a result "
            f"is transparent, 0 where it is opaque; zeros for opaque results and for padding."
            f"{mask}")


OUTPUT_TOOLTIPS_PROMPT = ("The prompt each image was made from, one line per image: the "
                          "service's rewritten prompt when prompt_extend rewrote it, else "
                          "your prompt (line breaks inside a prompt become spaces).")
OUTPUT_TOOLTIPS_INFO = ("JSON about the run: request and task ids, seeds, sizes, usage, "
                        "estimated cost in USD, region, which images came from the result "
                        "store, notes and failures.")


def price_text(model: str, family: str) -> str:
    """"about $0.03 for <model> in Singapore", from the table, for a node's description."""
    price = usd_price(spec_for(model, family), SINGAPORE)
    return f"about ${price.output:g} for {model} in Singapore"


def seed_input(extra_tooltip: str = "") -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                    "tooltip": TOOLTIPS["seed"] + extra_tooltip})


def prompt_input(tooltip: str) -> tuple:
    return ("STRING", {"multiline": True, "default": "",
                       "tooltip": tooltip + TOOLTIPS["prompt_limits"]})


def n_input(n_max: int, what: str, extra_tooltip: str = "") -> tuple:
    return ("INT", {"default": 1, "min": 1, "max": n_max,
                    "tooltip": what + TOOLTIPS["n"].format(n_max=n_max) + extra_tooltip})


def side_input(name: str, extra_tooltip: str = "") -> tuple:
    return ("INT", {"default": SIDE_DEFAULT, "min": SIDE_MIN, "max": SIDE_MAX, "step": SIDE_STEP,
                    "tooltip": TOOLTIPS[name] + extra_tooltip})


def rewriting_inputs() -> dict:
    """3.0's prompt_extend_mode and enable_thinking, defaulting to what leaving them out means.

    Appended before the other new inputs: a combo takes a stray string (see
    ``left_out``) where ComfyUI would refuse to queue an INT."""
    return {
        "prompt_extend_mode": (list(PROMPT_EXTEND_MODES), {
            "default": PARAMETER_DEFAULTS["prompt_extend_mode"],
            "tooltip": TOOLTIPS["prompt_extend_mode"]}),
        "enable_thinking": ("BOOLEAN", {"default": PARAMETER_DEFAULTS["enable_thinking"],
                                        "tooltip": TOOLTIPS["enable_thinking"]}),
    }


def shared_optional_inputs() -> dict:
    return {
        "custom_model": ("STRING", {"default": "", "tooltip": TOOLTIPS["custom_model"]}),
        "region": (list(REGION_CHOICES),
                   {"default": REGION_DEFAULT, "tooltip": TOOLTIPS["region"]}),
    }


def shared_tail_inputs() -> dict:
    return {
        "reuse_stored": ("BOOLEAN", {"default": True, "tooltip": TOOLTIPS["reuse_stored"]}),
        "on_partial_failure": ([FAIL, RETURN_SUCCESSFUL],
                               {"default": FAIL, "tooltip": TOOLTIPS["on_partial_failure"]}),
    }


def model_id(model: str, custom_model: str | None) -> str:
    """custom_model when it is not empty (refused unless written as a model id), else
    ``model``; checked at queue time and again at run time, for a linked value."""
    custom = (custom_model or "").strip()
    return check_model_id(custom, "custom_model") if custom else model


def region_id(choice: str | None) -> str | None:
    """None means "as configured"; an unknown label is refused with the choices."""
    if choice is None or choice == REGION_DEFAULT:
        return None
    try:
        return REGION_CHOICES[choice]
    except KeyError:
        raise ValidationError("region", f"{choice!r} is not a region choice",
                              allowed=list(REGION_CHOICES)) from None


def size_value(choice: str, width: int, height: int, presets: dict[str, str]) -> str | None:
    """The request's size: a preset's W*H, None for auto (the model's default) and for
    match input (the edit node asks per edit), W*H of the width and height widgets for
    custom. Anything else (a label from an older list, a plain W*H) is passed on for
    validation to judge."""
    if choice == CUSTOM:
        return f"{width}*{height}"
    if choice in (AUTO, MATCH):
        return None
    return presets.get(choice, choice)


# -- which inputs each model takes -----------------------------------------------------------
# A test on the model's spec for the node's family, per input whose use depends on the
# model. The frontend extension (web/model_inputs.js) hides the inputs whose test fails;
# the parameters among them are left out of the request by validation, with a note.

def _takes(parameter: str):
    return lambda spec, family: parameter in spec.takes_in(family)


def _free_size(spec: ModelSpec, family: str) -> bool:
    rule = spec.size_rule(family)
    return rule is not None and not rule.fixed and "size" in spec.takes_in(family)


MODEL_DEPENDENT = {
    "negative_prompt": _takes("negative_prompt"),
    # Edits: shown for every model, for "match input" (the node fits the result itself).
    "size": lambda spec, family: family == IMAGE_EDIT or "size" in spec.takes_in(family),
    "width": _free_size,
    "height": _free_size,
    "n": lambda spec, family: spec.n_max != 1,
    "prompt_extend": _takes("prompt_extend"),
    "prompt_extend_mode": _takes("prompt_extend_mode"),
    "enable_thinking": _takes("enable_thinking"),
    "watermark": _takes("watermark"),
    "seed": _takes("seed"),
    "interface": lambda spec, family: len(spec.interfaces) > 1,
}


_IMAGE_INPUT = re.compile(r"^image(\d*)$")  # image, image2, image3, ...


def _test(name: str):
    """The test of an input whose use depends on the model, or None."""
    match = _IMAGE_INPUT.match(name)
    if match:  # the k-th input image: for models that take k images or more
        number = int(match.group(1) or 1)
        return lambda spec, family: spec.inputs is not None and (
            spec.inputs.count[1] is None or number <= spec.inputs.count[1])
    return MODEL_DEPENDENT.get(name)


def applies(spec: ModelSpec, family: str, name: str) -> bool:
    return _test(name)(spec, family)


def _model_inputs(family: str, models: list[str], inputs) -> tuple[list, dict]:
    """``depends``, the inputs that some model does not take, and ``applies``: per model,
    those of them it takes."""
    tested = [name for name in inputs if _test(name)]
    taken = {model: [name for name in tested if applies(spec_for(model, family), family, name)]
             for model in models}
    depends = [name for name in tested if any(name not in names for names in taken.values())]
    return depends, {model: [name for name in names if name in depends]
                     for model, names in taken.items()}


_WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def with_frontend_options(types: dict, family: str, models: list[str], first_release_last: str,
                          presets: dict[str, str] | None = None):
    """``types`` with the option web/model_inputs.js reads on the model combo.

    ``depends`` / ``applies``: which inputs (widgets, and sockets for input images) to hide
    for which model. ``first_release_values``: how many widget values the first release
    saved, up to ``first_release_last``; the frontend gives a workflow's values to the
    widgets by position, and one saved after a run by then also holds the status text,
    which would land in the first newer widget. ``cost``: the prices and sizes the cost
    shown before a run is made of (``prices.cost_table``; ``presets``: the size choices
    that stand for a W*H).
    """
    inputs = {**types["required"], **types.get("optional", {})}
    saved = 0
    for name, (kind, options) in inputs.items():
        if isinstance(kind, list) or kind in _WIDGET_TYPES:
            saved += 2 if options.get("control_after_generate") else 1
        if name == first_release_last:
            break
    depends, taken = _model_inputs(family, models, inputs)
    types["required"]["model"][1]["qwen_image"] = {
        "depends": depends, "applies": taken, "first_release_values": saved,
        "cost": cost_table(family, models, REGION_CHOICES, CUSTOM, presets or {}, MATCH)}
    return types


def left_out(spec: ModelSpec, family: str, n: int, mode) -> tuple[int, str | None, list[str]]:
    """n and prompt_extend_mode as sent, with notes on values left out.

    A model that makes 1 image per call has its n input hidden in the frontend, so a value
    left there is ignored rather than refused. A prompt_extend_mode that is not a mode is
    what the frontend, without the pack's extension, restores from a workflow an older
    version saved after a run (its status text, e.g. "done", in the first position added
    since): the model's default is used.
    """
    notes = []
    if n != 1 and not applies(spec, family, "n"):
        notes.append(f"n = {n} was ignored: {spec.id} makes 1 image per call")
        n = 1
    if mode is not None and mode not in PROMPT_EXTEND_MODES:
        notes.append(f"prompt_extend_mode {mode!r} is not a mode (an older workflow's saved "
                     "status text?); the model's default was used")
        mode = None
    return n, mode, notes


def queue_time_check(model_choices: list[str], model, custom_model, region, build) -> bool | str:
    """VALIDATE_INPUTS body: True, or the first broken rule as one message.

    Inputs that come from a link arrive as None at queue time; ``build`` substitutes a
    neutral value for them, and the run checks them again once they are known. ``region``
    is the widget's choice: a pinned region is checked too (is the model offered there).
    """
    try:
        if not (custom_model or "").strip() and model is not None and model not in model_choices:
            raise ValidationError("model", f"{model!r} is not in the list", allowed=model_choices,
                                  hint="Or write the id into custom_model.")
        validate(build(), region_id(region))
    except ValidationError as error:
        return str(error)
    return True
