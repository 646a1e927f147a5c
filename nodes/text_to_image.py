"""DashScopeQwenImageTextToImage: Qwen-Image text to image on Alibaba Cloud DashScope."""
from __future__ import annotations

from ..api.models import (
    DEFAULT_MODEL,
    DEFAULT_TEXT_TO_IMAGE_SIZE,
    TEXT_TO_IMAGE,
    TEXT_TO_IMAGE_SIZES,
    models_of,
    spec_for,
)
from ..api.schema import TextToImageRequest
from . import outputs, runner, widgets
from .comfy_bridge import Comfy

NODE_ID = "DashScopeQwenImageTextToImage"
DISPLAY_NAME = "Qwen-Image Text to Image (DashScope)"
MODELS = models_of(TEXT_TO_IMAGE)
SIZES = {f"{size} ({aspect})": size for size, aspect in TEXT_TO_IMAGE_SIZES.items()}
DEFAULT_SIZE = next(label for label, size in SIZES.items() if size == DEFAULT_TEXT_TO_IMAGE_SIZE)
# Every interface a model of the table offers, the default model's default first.
_DEFAULT_INTERFACE = spec_for(DEFAULT_MODEL[TEXT_TO_IMAGE], TEXT_TO_IMAGE).default_interface
INTERFACES = sorted({i for m in MODELS for i in spec_for(m, TEXT_TO_IMAGE).interfaces},
                    key=lambda interface: (interface != _DEFAULT_INTERFACE, interface))
BATCH_MAX = 16


def _size(label):
    # A label from an older list or a plain "W*H" is passed on for validation to judge.
    return SIZES.get(label, label)


class DashScopeQwenImageTextToImage:
    DESCRIPTION = (
        "Makes images from a prompt with Alibaba Cloud's Qwen-Image models (DashScope / "
        "Model Studio), strong at rendering text in Chinese and English. Billed per image "
        "(about $0.03 for qwen-image-plus in Singapore); the API key comes from the "
        "environment (DASHSCOPE_API_KEY), never from a widget. Every image is saved to "
        "ComfyUI's output/qwen-image folder the moment it arrives.")
    CATEGORY = widgets.CATEGORY
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("images", "prompt_used", "info")
    OUTPUT_TOOLTIPS = ("The generated images, RGB, exactly the pixels the service returned.",
                       widgets.OUTPUT_TOOLTIPS_PROMPT, widgets.OUTPUT_TOOLTIPS_INFO)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": widgets.TOOLTIPS["prompt"]}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                               "tooltip": widgets.TOOLTIPS["negative_prompt"]}),
                "model": (MODELS, {"default": DEFAULT_MODEL[TEXT_TO_IMAGE],
                                   "tooltip": "qwen-image-plus and qwen-image draw alike; "
                                              "qwen-image-plus costs less."}),
                "size": (list(SIZES), {"default": DEFAULT_SIZE,
                                       "tooltip": "Output width*height in pixels (aspect ratio)."}),
                "seed": widgets.seed_input(" With batch > 1, image i uses seed + i."),
                "batch": ("INT", {"default": 1, "min": 1, "max": BATCH_MAX,
                                  "tooltip": "Images per run: one call each, run concurrently "
                                             "within the account's limits, with seeds seed, "
                                             "seed+1, ... Each image is billed."}),
                "prompt_extend": ("BOOLEAN", {"default": True,
                                              "tooltip": widgets.TOOLTIPS["prompt_extend"]}),
                "watermark": ("BOOLEAN", {"default": False,
                                          "tooltip": widgets.TOOLTIPS["watermark"]}),
                "interface": (INTERFACES, {
                    "default": _DEFAULT_INTERFACE,
                    "tooltip": "async: a task that can be cancelled while queued (ComfyUI's "
                               "Cancel cancels it) and polled again after a dropped connection, "
                               "so a lost answer never means paying twice. sync: one long "
                               "request; a dropped connection leaves the outcome unknown."}),
                **widgets.shared_tail_inputs(),
            },
            "optional": widgets.shared_optional_inputs(),
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None, negative_prompt=None, model=None, size=None, seed=None,
                        custom_model=None):
        # ComfyUI skips its own list and range checks for the inputs named here; these
        # rules (api.validation's) cover them. Linked inputs arrive as None.
        if size is not None and size not in SIZES:
            return f"size: {size!r} is not in the list. Allowed: {', '.join(SIZES)}."
        return widgets.queue_time_check(MODELS, model, custom_model, lambda: TextToImageRequest(
            prompt="x" if prompt is None else prompt,
            negative_prompt=negative_prompt or "",
            model=widgets.model_id(model or DEFAULT_MODEL[TEXT_TO_IMAGE], custom_model),
            size=_size(size or DEFAULT_SIZE),
            seed=seed))

    async def generate(self, prompt, negative_prompt, model, size, seed, batch, prompt_extend,
                       watermark, interface, reuse_stored, on_partial_failure,
                       custom_model="", region=widgets.REGION_DEFAULT, unique_id=None):
        comfy = Comfy()
        model = widgets.model_id(model, custom_model)
        region = widgets.region_id(region)
        jobs = [runner.Job(TextToImageRequest(
                    prompt=prompt, negative_prompt=negative_prompt, model=model, size=_size(size),
                    prompt_extend=prompt_extend, watermark=watermark,
                    seed=runner.seed_for(seed, i)), first=i, n=1)
                for i in range(batch)]
        # The client validates each request before sending it (the calls differ only in
        # seed, so an invalid one is invalid for all: nothing is sent).
        client = runner.make_client(region, comfy)

        def call(job, on_progress, cancel_event):
            return client.text_to_image(job.request, interface=interface, on_progress=on_progress,
                                        cancel_event=cancel_event, reuse=reuse_stored)

        outcomes = await runner.run_jobs(jobs, call, comfy=comfy, node_id=unique_id,
                                         fail_fast=on_partial_failure == widgets.FAIL)
        return await runner.in_thread(comfy, outputs.assemble, NODE_ID, model, TEXT_TO_IMAGE,
                                      jobs, outcomes, [])
