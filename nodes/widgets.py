"""The widget vocabulary both nodes share: choices, tooltips, shared inputs, and what the
widget values mean (model id, region, the queue-time check).

Imports neither torch nor the HTTP client: ComfyUI lists the nodes from ``INPUT_TYPES``
without running them, and the command line imports the pack without torch.
"""
from __future__ import annotations

from ..api.errors import ValidationError
from ..api.models import BEIJING, SEED_MAX, SINGAPORE
from ..api.validation import validate
from .comfy_bridge import STORE_DIR_ENV

CATEGORY = "api node/image/Qwen-Image (DashScope)"

REGION_DEFAULT = "default"
REGION_CHOICES = {
    REGION_DEFAULT: None,
    f"{SINGAPORE} (Singapore)": SINGAPORE,
    f"{BEIJING} (Beijing)": BEIJING,
}
FAIL = "fail"
RETURN_SUCCESSFUL = "return successful"

TOOLTIPS = {
    "prompt": "What to make (up to 800 characters; longer prompts are refused, because the "
              "service would silently cut them and still bill). Chinese and English work best.",
    "negative_prompt": "What to keep out of the picture (up to 500 characters). May be empty.",
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
OUTPUT_TOOLTIPS_PROMPT = ("The prompt each image was made from, one line per image: the "
                          "service's rewritten prompt when prompt_extend rewrote it, else "
                          "your prompt (line breaks inside a prompt become spaces).")
OUTPUT_TOOLTIPS_INFO = ("JSON about the run: request and task ids, seeds, sizes, usage, "
                        "estimated cost in USD, region, which images came from the result "
                        "store, notes and failures.")


def seed_input(extra_tooltip: str = "") -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                    "tooltip": TOOLTIPS["seed"] + extra_tooltip})


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
    custom = (custom_model or "").strip()
    return custom or model


def region_id(choice: str | None) -> str | None:
    """None means "as configured"; an unknown label is refused with the choices."""
    if choice is None or choice == REGION_DEFAULT:
        return None
    try:
        return REGION_CHOICES[choice]
    except KeyError:
        raise ValidationError("region", f"{choice!r} is not a region choice",
                              allowed=list(REGION_CHOICES)) from None


def queue_time_check(model_choices: list[str], model, custom_model, build) -> bool | str:
    """VALIDATE_INPUTS body: True, or the first broken rule as one message.

    Inputs that come from a link arrive as None at queue time; ``build`` substitutes a
    neutral value for them, and the run checks them again once they are known.
    """
    try:
        if not (custom_model or "").strip() and model is not None and model not in model_choices:
            raise ValidationError("model", f"{model!r} is not in the list", allowed=model_choices,
                                  hint="Or write the id into custom_model.")
        validate(build())
    except ValidationError as error:
        return str(error)
    return True
