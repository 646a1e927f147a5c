"""DashScopeQwenImageTextToImage: Qwen-Image text to image on Alibaba Cloud DashScope."""
from __future__ import annotations

from dataclasses import replace

from ..api.catalog.models import DEFAULT_MODEL, models_of, spec_for
from ..api.catalog.specs import TEXT_TO_IMAGE, TEXT_TO_IMAGE_SIZES
from ..api.schema import TextToImageRequest
from . import outputs, runner, widgets
from .comfy_bridge import Comfy

NODE_ID = "DashScopeQwenImageTextToImage"
DISPLAY_NAME = "Qwen-Image Text to Image (DashScope)"
MODELS = models_of(TEXT_TO_IMAGE)
_DEFAULT_SPEC = spec_for(DEFAULT_MODEL[TEXT_TO_IMAGE], TEXT_TO_IMAGE)
# The sizes of the fixed-size models, which are aspect presets for the free-size ones.
PRESETS = {f"{size} ({aspect})": size for size, aspect in TEXT_TO_IMAGE_SIZES.items()}
SIZES = [*PRESETS, widgets.AUTO, widgets.CUSTOM]
DEFAULT_SIZE = next(label for label, size in PRESETS.items()
                    if size == _DEFAULT_SPEC.default_size(TEXT_TO_IMAGE))
# Every interface a model of the table offers, the default model's default first.
INTERFACES = sorted({i for m in MODELS for i in spec_for(m, TEXT_TO_IMAGE).interfaces},
                    key=lambda interface: (interface != _DEFAULT_SPEC.default_interface,
                                           interface))
N_MAX = max(spec_for(m, TEXT_TO_IMAGE).n_max or 1 for m in MODELS)
BATCH_MAX = 16
FIRST_RELEASE_LAST = "region"  # the inputs after it were added later


def _request(prompt, negative_prompt, model, size, width, height, n, seed, prompt_extend,
             watermark, prompt_extend_mode, enable_thinking):
    """The request the widget values stand for (one call), and notes on ignored inputs."""
    spec = spec_for(model, TEXT_TO_IMAGE)
    n, prompt_extend_mode, notes = widgets.left_out(spec, TEXT_TO_IMAGE, n, prompt_extend_mode)
    return TextToImageRequest(
        prompt=prompt, model=model, negative_prompt=negative_prompt,
        size=widgets.size_value(size, width, height, PRESETS), n=n,
        prompt_extend=prompt_extend, watermark=watermark, seed=seed,
        prompt_extend_mode=prompt_extend_mode, enable_thinking=enable_thinking), notes


class DashScopeQwenImageTextToImage(widgets.QwenImageNode):
    DESCRIPTION = (
        "Makes images from a prompt with Alibaba Cloud's Qwen-Image models (DashScope / "
        "Model Studio), strong at rendering text in Chinese and English. Billed per image "
        f"({widgets.price_text(DEFAULT_MODEL[TEXT_TO_IMAGE], TEXT_TO_IMAGE)}; every model's "
        "price is on the help page); the API key comes from the environment "
        "(DASHSCOPE_API_KEY), never from a widget. Every image is saved to ComfyUI's "
        "output/qwen-image folder the moment it arrives.")
    FUNCTION = "generate"
    OUTPUT_TOOLTIPS = widgets.output_tooltips(
        "generated images", "the n images of call 1, then those of call 2, ...")

    @classmethod
    def INPUT_TYPES(cls):
        # New inputs go last: saved workflows hold widget values by position.
        types = {
            "required": {
                "prompt": widgets.prompt_input(widgets.TOOLTIPS["prompt"]),
                "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                               "tooltip": widgets.TOOLTIPS["negative_prompt"]}),
                "model": (MODELS, {"default": DEFAULT_MODEL[TEXT_TO_IMAGE],
                                   "tooltip": widgets.TOOLTIPS["model"]}),
                "size": (SIZES, {"default": DEFAULT_SIZE,
                                 "tooltip": "Output width*height in pixels (aspect ratio): the "
                                            "sizes of the fixed-size models, which are presets "
                                            "for the others. auto: the model's default (some "
                                            "pick a size from the prompt). custom: width and "
                                            "height below (free-size models)."}),
                "seed": widgets.seed_input(" With batch > 1, call i uses seed + i."),
                "batch": ("INT", {"default": 1, "min": 1, "max": BATCH_MAX,
                                  "tooltip": "Calls per run, run concurrently within the "
                                             "account's limits, with seeds seed, seed+1, ... "
                                             "Each makes n images; each image is billed."}),
                "prompt_extend": ("BOOLEAN", {"default": True,
                                              "tooltip": widgets.TOOLTIPS["prompt_extend"]}),
                "watermark": ("BOOLEAN", {"default": False,
                                          "tooltip": widgets.TOOLTIPS["watermark"]}),
                "interface": (INTERFACES, {
                    "default": _DEFAULT_SPEC.default_interface,
                    "tooltip": "async: a task that can be cancelled while queued (ComfyUI's "
                               "Cancel cancels it) and polled again after a dropped connection, "
                               "so a lost answer never means paying twice. sync: one long "
                               "request; a dropped connection leaves the outcome unknown. "
                               "Models without tasks always use sync."}),
                **widgets.shared_tail_inputs(),
            },
            "optional": {
                **widgets.shared_optional_inputs(),
                # A combo first: see widgets.rewriting_mode.
                **widgets.rewriting_inputs(),
                "n": widgets.n_input(N_MAX, "Images per call,", " The output holds batch x n "
                                                                "images."),
                "width": widgets.side_input("width"),
                "height": widgets.side_input("height"),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }
        return widgets.with_frontend_options(types, TEXT_TO_IMAGE, MODELS, FIRST_RELEASE_LAST,
                                             PRESETS)

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None, negative_prompt=None, model=None, size=None, seed=None,
                        prompt_extend=None, watermark=None, custom_model=None, region=None,
                        n=None, width=None, height=None, prompt_extend_mode=None,
                        enable_thinking=None):
        # ComfyUI skips its own list and range checks for the inputs named here; these
        # rules (api.validation's) cover them. Linked inputs arrive as None.
        if size is not None and size not in SIZES:
            return f"size: {size!r} is not in the list. Allowed: {', '.join(SIZES)}."
        if size == widgets.CUSTOM and (width is None or height is None):
            size = widgets.AUTO  # judged when the linked side is known
        return widgets.queue_time_check(MODELS, model, custom_model, region, lambda: _request(
            "x" if prompt is None else prompt, negative_prompt,
            widgets.model_id(model or DEFAULT_MODEL[TEXT_TO_IMAGE], custom_model),
            size or DEFAULT_SIZE, width, height, 1 if n is None else n, seed, prompt_extend,
            watermark, prompt_extend_mode, enable_thinking)[0])

    async def generate(self, prompt, negative_prompt, model, size, seed, batch, prompt_extend,
                       watermark, interface, reuse_stored, on_partial_failure,
                       custom_model="", region=widgets.REGION_DEFAULT, n=1,
                       width=widgets.SIDE_DEFAULT, height=widgets.SIDE_DEFAULT,
                       prompt_extend_mode=None, enable_thinking=None, unique_id=None):
        comfy = Comfy()
        model = widgets.model_id(model, custom_model)
        region = widgets.region_id(region)
        request, notes = _request(prompt, negative_prompt, model, size, width, height, n, seed,
                                  prompt_extend, watermark, prompt_extend_mode, enable_thinking)
        # Calls differ only in seed: the client validates each before sending it, so an
        # invalid request is refused before any is sent.
        calls = [runner.Call(replace(request, seed=runner.seed_for(seed, i)),
                             first=i * request.n, n=request.n)
                 for i in range(batch)]
        client = runner.make_client(region, comfy)

        def start(call, after, on_done):
            return client.start_text_to_image(call.request, interface=interface,
                                              reuse=reuse_stored, after=after, on_done=on_done)

        memory = runner.OutputMemory()
        outcomes = await runner.run_calls(calls, start, comfy=comfy, node_id=unique_id,
                                          fail_fast=on_partial_failure == widgets.FAIL,
                                          memory=memory)
        return await runner.in_thread(comfy, outputs.assemble, NODE_ID, model, TEXT_TO_IMAGE,
                                      calls, outcomes, notes, None, memory)
