"""DashScopeQwenImageEdit: Qwen-Image edit (1-3 input images) on Alibaba Cloud DashScope."""
from __future__ import annotations

from ..api.errors import ValidationError
from ..api.models import (
    DEFAULT_MODEL,
    EDIT_CUSTOM_SIZE_RANGE,
    IMAGE_EDIT,
    INPUT_TRANSPORTS,
    REQUEST_BODY_TARGET,
    models_of,
    spec_for,
)
from ..api.schema import ImageEditRequest
from . import outputs, runner, widgets
from .comfy_bridge import Comfy

NODE_ID = "DashScopeQwenImageEdit"
DISPLAY_NAME = "Qwen-Image Edit (DashScope)"
MODELS = models_of(IMAGE_EDIT)
AUTO, CUSTOM = "auto", "custom"
N_MAX = max(spec_for(m, IMAGE_EDIT).max_images for m in MODELS)
SIZE_MIN, SIZE_MAX = EDIT_CUSTOM_SIZE_RANGE
# Stands in for the images at queue time, when only widget values are known; a URL is
# passed by validation without being fetched.
_PLACEHOLDER_IMAGE = "https://example.invalid/queued.png"
_IMAGE_INPUTS = ("image", "image2", "image3")


def _size(size, width, height):
    return f"{width}*{height}" if size == CUSTOM else None


def _prompt_extend(model: str, prompt_extend: bool) -> bool:
    # For a model the table says does not take it, False: never sent, and validation adds
    # the note that says so to 'info'.
    return prompt_extend if spec_for(model, IMAGE_EDIT).prompt_extend else False


def _pair_batches(batches: dict[str, int]) -> int:
    """The number of edits: image's batch size; image2/image3 have 1 (shared) or the same."""
    count = batches["image"]
    for name, size in batches.items():
        if size not in (1, count):
            shown = ", ".join(f"{k} has {v}" for k, v in batches.items())
            raise ValidationError(
                name, f"batch sizes do not match ({shown})",
                hint=f"Give {name} a batch of 1 (used for every edit) or of {count} (one per "
                     "image of 'image').")
    return count


class DashScopeQwenImageEdit:
    DESCRIPTION = (
        "Edits 1-3 images with Alibaba Cloud's Qwen-Image edit models (DashScope / Model "
        "Studio): change text in the picture, add, remove or move objects, change poses, "
        "transfer styles, combine subjects. Refer to the inputs as image 1-3 (圖1-圖3) in the "
        "prompt. A batch of B images gives B edits, each with n outputs. Billed per output "
        "image (about $0.03 for qwen-image-edit-plus in Singapore); the API key comes from "
        "the environment (DASHSCOPE_API_KEY), never from a widget.")
    CATEGORY = widgets.CATEGORY
    FUNCTION = "edit"
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("images", "prompt_used", "info")
    OUTPUT_TOOLTIPS = ("The edited images, RGB, exactly the pixels the service returned: the n "
                       "outputs of edit 1, then those of edit 2, ...",
                       widgets.OUTPUT_TOOLTIPS_PROMPT, widgets.OUTPUT_TOOLTIPS_INFO)

    @classmethod
    def INPUT_TYPES(cls):
        image_note = (" Inputs are sent as lossless PNG; sides outside 384-3072 px are resized "
                      "(aspect kept), transparency is composited over white.")
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Image 1 (圖1 in a Chinese prompt). A batch of B "
                                               "images gives B separate edits." + image_note}),
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "The edit instruction (up to 800 characters). "
                                                 "With several inputs, name them image 1, "
                                                 "image 2, image 3 (圖1, 圖2, 圖3)."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                               "tooltip": widgets.TOOLTIPS["negative_prompt"]}),
                "model": (MODELS, {"default": DEFAULT_MODEL[IMAGE_EDIT],
                                   "tooltip": "qwen-image-edit-plus (and its 2025-10-30 "
                                              "snapshot): 1-6 outputs, custom size, prompt "
                                              "rewriting. qwen-image-edit: 1 output, no size, "
                                              "no prompt rewriting."}),
                "n": ("INT", {"default": 1, "min": 1, "max": N_MAX,
                              "tooltip": "Outputs per edit: 1-6 for the edit-plus models, 1 "
                                         "for qwen-image-edit. Each output is billed."}),
                "size": ([AUTO, CUSTOM], {"default": AUTO,
                                          "tooltip": "auto: the last input image's aspect ratio "
                                                     "at about 1024*1024. custom: width*height "
                                                     "below (edit-plus models, n = 1 only)."}),
                "width": ("INT", {"default": 1024, "min": SIZE_MIN, "max": SIZE_MAX, "step": 16,
                                  "tooltip": f"Output width with size = custom "
                                             f"({SIZE_MIN}-{SIZE_MAX})."}),
                "height": ("INT", {"default": 1024, "min": SIZE_MIN, "max": SIZE_MAX, "step": 16,
                                   "tooltip": f"Output height with size = custom "
                                              f"({SIZE_MIN}-{SIZE_MAX})."}),
                "seed": widgets.seed_input(" With a batch of B images, edit i uses seed + i."),
                "prompt_extend": ("BOOLEAN", {
                    "default": True,
                    "tooltip": widgets.TOOLTIPS["prompt_extend"] + " Not sent for "
                               "qwen-image-edit, which does not take it ('info' says so)."}),
                "watermark": ("BOOLEAN", {"default": False,
                                          "tooltip": widgets.TOOLTIPS["watermark"]}),
                **widgets.shared_tail_inputs(),
            },
            "optional": {
                "image2": ("IMAGE", {"tooltip": "Image 2 (圖2), optional. Batch of 1 (used for "
                                                "every edit) or the same batch size as 'image'."
                                                + image_note}),
                "image3": ("IMAGE", {"tooltip": "Image 3 (圖3), optional; needs image2. Batch of 1 "
                                                "or the same as 'image'. With size = auto the "
                                                "output keeps the aspect ratio of the last input."
                                                + image_note}),
                **widgets.shared_optional_inputs(),
                "input_transport": (list(INPUT_TRANSPORTS), {
                    "default": INPUT_TRANSPORTS[0],
                    "tooltip": "How the input images travel. auto: inside the request while it "
                               f"stays under {REQUEST_BODY_TARGET / 2**20:g} MiB; larger "
                               "requests upload the images to "
                               "DashScope's temporary storage in Beijing (free, kept 48 h, each "
                               "image uploaded once), and in Singapore, which has no such "
                               "storage, re-encode them to fit (lossless first, then "
                               "downscaled; 'info' says what was done). data_uri: never "
                               "upload. upload: always upload (Beijing only)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None, negative_prompt=None, model=None, n=None, size=None,
                        width=None, height=None, seed=None, custom_model=None):
        # ComfyUI skips its own list and range checks for the inputs named here; these
        # rules (api.validation's) cover them. Linked inputs arrive as None.
        if size is not None and size not in (AUTO, CUSTOM):
            return f"size: {size!r} is not in the list. Allowed: {AUTO}, {CUSTOM}."
        chosen = widgets.model_id(model or DEFAULT_MODEL[IMAGE_EDIT], custom_model)
        custom = size == CUSTOM and width is not None and height is not None
        return widgets.queue_time_check(MODELS, model, custom_model, lambda: ImageEditRequest(
            prompt="x" if prompt is None else prompt,
            images=(_PLACEHOLDER_IMAGE,),
            negative_prompt=negative_prompt or "",
            model=chosen,
            size=_size(size, width, height) if custom else None,
            n=1 if n is None else n,
            prompt_extend=_prompt_extend(chosen, True),
            seed=seed))

    async def edit(self, image, prompt, negative_prompt, model, n, size, width, height, seed,
                   prompt_extend, watermark, reuse_stored, on_partial_failure, image2=None,
                   image3=None, custom_model="", region=widgets.REGION_DEFAULT,
                   input_transport=INPUT_TRANSPORTS[0], unique_id=None):
        comfy = Comfy()
        model = widgets.model_id(model, custom_model)
        region = widgets.region_id(region)
        if image3 is not None and image2 is None:
            raise ValidationError("image3", "is connected but image2 is not",
                                  hint="Connect image2 first: the service numbers the inputs by "
                                       "position, so this image would be its image 2.")
        given = {name: tensor for name, tensor in zip(_IMAGE_INPUTS, (image, image2, image3))
                 if tensor is not None}
        count = _pair_batches({name: _batch_size(tensor) for name, tensor in given.items()})
        encoded, notes = await runner.in_thread(comfy, _encode_inputs, given)
        jobs = [runner.Job(ImageEditRequest(
                    prompt=prompt,
                    images=tuple(batch[i if len(batch) > 1 else 0] for batch in encoded.values()),
                    model=model, negative_prompt=negative_prompt, size=_size(size, width, height),
                    n=n, prompt_extend=_prompt_extend(model, prompt_extend), watermark=watermark,
                    seed=runner.seed_for(seed, i)), first=i * n, n=n)
                for i in range(count)]
        # The client validates each request before sending it (the edits differ only in
        # seed and in input images the node encoded to fit: one invalid is invalid for all).
        client = runner.make_client(region, comfy)

        def call(job, on_progress, cancel_event):
            # The client keeps the request body within the service's limit (uploads or
            # re-encodes the inputs as needed), so a body is never refused as too large.
            return client.edit_image(job.request, input_transport=input_transport,
                                     on_progress=on_progress, cancel_event=cancel_event,
                                     reuse=reuse_stored)

        outcomes = await runner.run_jobs(jobs, call, comfy=comfy, node_id=unique_id,
                                         fail_fast=on_partial_failure == widgets.FAIL)
        return await runner.in_thread(comfy, outputs.assemble, NODE_ID, model, IMAGE_EDIT, jobs,
                                      outcomes, notes)


def _batch_size(tensor) -> int:
    return 1 if tensor.ndim == 3 else int(tensor.shape[0])


def _encode_inputs(given: dict) -> tuple[dict[str, list[bytes]], list[str]]:
    from ..api.images import encode_image
    from .tensors import to_uint8_rgb

    encoded, notes = {}, []
    for name, tensor in given.items():
        pixels, pixel_notes = to_uint8_rgb(tensor, name)
        notes.extend(pixel_notes)
        encoded[name] = []
        for i, frame in enumerate(pixels):
            label = name if len(pixels) == 1 else f"{name}[{i}]"
            result = encode_image(frame, label)
            notes.extend(result.notes)
            encoded[name].append(result.data)
    return encoded, notes
