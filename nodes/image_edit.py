"""DashScopeQwenImageEdit: Qwen-Image edit (input images and an instruction) on DashScope."""
from __future__ import annotations

from dataclasses import replace

from ..api.catalog.models import DEFAULT_MODEL, models_of, spec_for
from ..api.catalog.specs import (
    EDIT_INPUT_SIDE_MAX,
    EDIT_INPUT_SIDE_MIN,
    IMAGE_EDIT,
    INPUT_TRANSPORTS,
    REQUEST_BODY_TARGET,
)
from ..api.errors import ValidationError
from ..api.schema import ImageEditRequest
from . import outputs, runner, widgets
from .comfy_bridge import Comfy

NODE_ID = "DashScopeQwenImageEdit"
DISPLAY_NAME = "Qwen-Image Edit (DashScope)"
MODELS = models_of(IMAGE_EDIT)
N_MAX = max(spec_for(m, IMAGE_EDIT).n_max or 1 for m in MODELS)
# One socket per input image the most generous model of the table takes.
IMAGES_MAX = max(spec_for(m, IMAGE_EDIT).inputs.count[1] or 1 for m in MODELS)
IMAGE_INPUTS = ("image", *(f"image{k}" for k in range(2, IMAGES_MAX + 1)))
# Stands in for the images at queue time, when only widget values are known; a URL is
# passed by validation without being fetched.
_PLACEHOLDER_IMAGE = "https://example.invalid/queued.png"
FIRST_RELEASE_LAST = "input_transport"  # the inputs after it were added later
SIZES = [widgets.AUTO, widgets.CUSTOM, widgets.MATCH]
SOFT_EDGE_DEFAULT, SOFT_EDGE_MAX = 16, 256  # px, the mask_soft_edge widget
_IMAGE_NOTE = (f" Inputs are sent as lossless PNG; sides outside {EDIT_INPUT_SIDE_MIN}-"
               f"{EDIT_INPUT_SIDE_MAX} px are resized (aspect kept), transparency is "
               "composited over white.")


def _request(prompt, negative_prompt, model, images, size, width, height, n, seed,
             prompt_extend, watermark, prompt_extend_mode, enable_thinking):
    """The request the widget values stand for (one edit), and notes on ignored inputs."""
    spec = spec_for(model, IMAGE_EDIT)
    n, prompt_extend_mode, notes = widgets.left_out(spec, IMAGE_EDIT, n, prompt_extend_mode)
    return ImageEditRequest(
        prompt=prompt, images=images, model=model, negative_prompt=negative_prompt,
        size=widgets.size_value(size, width, height, {}), n=n, prompt_extend=prompt_extend,
        watermark=watermark, seed=seed, prompt_extend_mode=prompt_extend_mode,
        enable_thinking=enable_thinking), notes


def _connected(images: dict) -> dict:
    """The connected image inputs, which must be the first ones: the service numbers the
    inputs by position, so a gap would renumber every image after it."""
    given = {name: tensor for name, tensor in images.items() if tensor is not None}
    for expected, name in zip(IMAGE_INPUTS, given, strict=False):
        if name != expected:
            raise ValidationError(name, f"is connected but {expected} is not",
                                  hint=f"Connect {expected} first: the service numbers the "
                                       f"inputs by position, so this image would be its "
                                       f"image {IMAGE_INPUTS.index(expected) + 1}.")
    return given


def _pair_batches(batches: dict[str, int]) -> int:
    """The number of edits: image's batch size; the others have 1 (shared) or the same."""
    count = batches["image"]
    for name, size in batches.items():
        if size not in (1, count):
            shown = ", ".join(f"{k} has {v}" for k, v in batches.items())
            raise ValidationError(
                name, f"batch sizes do not match ({shown})",
                hint=f"Give {name} a batch of 1 (used for every edit) or of {count} (one per "
                     "image of 'image').")
    return count


def _image_input(number: int) -> tuple:
    if number == 1:
        tooltip = "Image 1 (圖1 in a Chinese prompt). A batch of B images gives B separate edits."
    else:
        tooltip = (f"Image {number} (圖{number}), optional; needs the inputs before it. Batch "
                   "of 1 (used for every edit) or the same batch size as 'image'.")
        if number > 3:
            tooltip += " For the models that take more than 3 images (help page)."
    return ("IMAGE", {"tooltip": tooltip + _IMAGE_NOTE})


class DashScopeQwenImageEdit(widgets.QwenImageNode):
    DESCRIPTION = (
        f"Edits images with Alibaba Cloud's Qwen-Image edit and unified models (DashScope / "
        f"Model Studio): change text in the picture, add, remove or move objects, change "
        f"poses, transfer styles, combine subjects. Takes 1-3 input images, up to "
        f"{IMAGES_MAX} on some models; refer to them as image 1, image 2, ... (圖1, 圖2, ...) "
        f"in the prompt. A batch of B images gives B edits, each with n outputs. Billed per "
        f"output image ({widgets.price_text(DEFAULT_MODEL[IMAGE_EDIT], IMAGE_EDIT)}; every model's "
        f"price is on the help page); the API key comes from the environment "
        f"(DASHSCOPE_API_KEY), never from a widget.")
    FUNCTION = "edit"
    OUTPUT_TOOLTIPS = widgets.output_tooltips(
        "edited images", "the n outputs of edit 1, then those of edit 2, ...",
        " With size = match input or a mask, every image has image 1's exact size: fitted "
        "(cover and centre-crop, never stretched) or stitched into image 1.",
        " With a mask: only inside the edited region.")

    @classmethod
    def INPUT_TYPES(cls):
        # New inputs go last: saved workflows hold widget values by position.
        types = {
            "required": {
                "image": _image_input(1),
                "prompt": widgets.prompt_input("The edit instruction. With several inputs, name "
                                               "them image 1, image 2, image 3 (圖1, 圖2, 圖3)."),
                "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                               "tooltip": widgets.TOOLTIPS["negative_prompt"]}),
                "model": (MODELS, {"default": DEFAULT_MODEL[IMAGE_EDIT],
                                   "tooltip": widgets.TOOLTIPS["model"]}),
                "n": widgets.n_input(N_MAX, "Outputs per edit,"),
                "size": (SIZES, {
                    "default": widgets.AUTO,
                    "tooltip": "auto: the model's default (most keep the last input image's "
                               "aspect ratio; some pick a size). custom: width*height below, "
                               "within the model's range (edit-plus models: n = 1 only). "
                               "match input: every output has image 1's exact width and "
                               "height; image 1's aspect is asked for at about its area, "
                               "within the model's range and price tier (no size for models "
                               "that take none, or edit-plus with n > 1), and the result is "
                               "fitted (Lanczos; cover and centre-crop where the aspect "
                               "differs, never stretched). 'info' says what was asked and "
                               "how it was fitted."}),
                "width": widgets.side_input("width"),
                "height": widgets.side_input("height"),
                "seed": widgets.seed_input(" With a batch of B images, edit i uses seed + i."),
                "prompt_extend": ("BOOLEAN", {"default": True,
                                              "tooltip": widgets.TOOLTIPS["prompt_extend"]}),
                "watermark": ("BOOLEAN", {"default": False,
                                          "tooltip": widgets.TOOLTIPS["watermark"]}),
                **widgets.shared_tail_inputs(),
            },
            "optional": {
                "image2": _image_input(2),
                "image3": _image_input(3),
                **widgets.shared_optional_inputs(),
                "input_transport": (list(INPUT_TRANSPORTS), {
                    "default": INPUT_TRANSPORTS[0],
                    "tooltip": "How the input images travel. auto: inside the request while it "
                               f"stays under {REQUEST_BODY_TARGET / 2**20:g} MiB; larger "
                               "requests upload the images to "
                               "DashScope's temporary storage in Beijing (free, kept 48 h, each "
                               "image uploaded once), and elsewhere, where there is no such "
                               "storage, re-encode them to fit (lossless first, then "
                               "downscaled; 'info' says what was done). data_uri: never "
                               "upload. upload: always upload (Beijing only)."}),
                # A combo first: see widgets.rewriting_mode.
                **widgets.rewriting_inputs(),
                **{name: _image_input(k) for k, name in enumerate(IMAGE_INPUTS, 1) if k > 3},
                "mask": ("MASK", {
                    "tooltip": "Optional: only this region of image 1 changes (1 = change, as "
                               "LoadImage's mask of a picture's transparency or the mask "
                               "editor give it). The region around the mask, with context, "
                               "is sent in place of image 1 at a good resolution, and the "
                               "result is stitched back: outside the mask and its soft edge "
                               "the output is image 1, bit for bit, at image 1's size. A "
                               "batch of masks pairs with the images; one mask serves every "
                               "image; another size is resized. An empty mask is refused "
                               "before anything is sent."}),
                "mask_soft_edge": ("INT", {
                    "default": SOFT_EDGE_DEFAULT, "min": 0, "max": SOFT_EDGE_MAX,
                    "tooltip": "With a mask: how many pixels outside the mask the edit fades "
                               "into image 1 (0: a hard edge)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }
        return widgets.with_frontend_options(types, IMAGE_EDIT, MODELS, FIRST_RELEASE_LAST)

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None, negative_prompt=None, model=None, n=None, size=None,
                        width=None, height=None, seed=None, prompt_extend=None, watermark=None,
                        custom_model=None, region=None, prompt_extend_mode=None,
                        enable_thinking=None):
        # ComfyUI skips its own list and range checks for the inputs named here; these
        # rules (api.validation's) cover them. Linked inputs arrive as None.
        if size is not None and size not in SIZES:
            return f"size: {size!r} is not in the list. Allowed: {', '.join(SIZES)}."
        if width is None or height is None or size == widgets.MATCH:
            # A custom size is judged when the linked side is known; match input's, once
            # image 1's size is.
            size = widgets.AUTO
        return widgets.queue_time_check(MODELS, model, custom_model, region, lambda: _request(
            "x" if prompt is None else prompt, negative_prompt,
            widgets.model_id(model or DEFAULT_MODEL[IMAGE_EDIT], custom_model),
            (_PLACEHOLDER_IMAGE,), size, width, height, 1 if n is None else n, seed,
            prompt_extend, watermark, prompt_extend_mode, enable_thinking)[0])

    async def edit(self, image, prompt, negative_prompt, model, n, size, width, height, seed,
                   prompt_extend, watermark, reuse_stored, on_partial_failure, image2=None,
                   image3=None, custom_model="", region=widgets.REGION_DEFAULT,
                   input_transport=INPUT_TRANSPORTS[0], prompt_extend_mode=None,
                   enable_thinking=None, unique_id=None, mask=None,
                   mask_soft_edge=SOFT_EDGE_DEFAULT, **more_images):
        # more_images: image4, image5, ... (IMAGE_INPUTS), as ComfyUI passes them by name.
        comfy = Comfy()
        model = widgets.model_id(model, custom_model)
        region = widgets.region_id(region)
        given = _connected({"image": image, "image2": image2, "image3": image3,
                            **{name: more_images.get(name) for name in IMAGE_INPUTS[3:]}})
        batches = {name: _batch_size(tensor) for name, tensor in given.items()}
        if mask is not None:
            batches["mask"] = 1 if mask.ndim == 2 else int(mask.shape[0])
        count = _pair_batches(batches)
        if not (isinstance(mask_soft_edge, int) and 0 <= mask_soft_edge <= SOFT_EDGE_MAX):
            raise ValidationError("mask_soft_edge", f"{mask_soft_edge!r} is not a width in px",
                                  allowed=f"a whole number from 0 to {SOFT_EDGE_MAX}")
        request, ignored = _request(prompt, negative_prompt, model, (), size, width, height, n,
                                    seed, prompt_extend, watermark, prompt_extend_mode,
                                    enable_thinking)
        placement = None
        if mask is not None or size == widgets.MATCH:
            from .placement import Placement

            # Refuses an empty mask here, before anything is encoded or sent.
            placement = await runner.in_thread(
                comfy, Placement, spec_for(model, IMAGE_EDIT), image, request.n, size,
                request.size, mask, mask_soft_edge, count)
        encoded, notes = await runner.in_thread(comfy, _encode_inputs, given, placement, count)
        notes.extend(ignored)
        # Edits differ only in seed, in input images the node encoded to fit and (fitted
        # back) in size: the client validates each before sending it, so an invalid request
        # is refused before any is sent.
        calls = [runner.Call(replace(
                     request, seed=runner.seed_for(seed, i),
                     size=request.size if placement is None else placement.plan(i).size,
                     images=tuple(batch[i if len(batch) > 1 else 0]
                                  for batch in encoded.values())),
                     first=i * request.n, n=request.n)
                 for i in range(count)]
        client = runner.make_client(region, comfy)

        def start(call, after, on_done):
            # The client keeps the request body within the service's limit (uploads or
            # re-encodes the inputs as needed), so a body is never refused as too large.
            return client.start_edit_image(call.request, input_transport=input_transport,
                                           reuse=reuse_stored, after=after, on_done=on_done)

        # Composed outputs (placement) are made at image 1's size, not the results'.
        memory = runner.OutputMemory() if placement is None else None
        outcomes = await runner.run_calls(calls, start, comfy=comfy, node_id=unique_id,
                                          fail_fast=on_partial_failure == widgets.FAIL,
                                          memory=memory)
        return await runner.in_thread(comfy, outputs.assemble, NODE_ID, model, IMAGE_EDIT, calls,
                                      outcomes, notes,
                                      None if placement is None else placement.compose, memory)


def _batch_size(tensor) -> int:
    return 1 if tensor.ndim == 3 else int(tensor.shape[0])


def _encode_inputs(given: dict, placement, count: int) -> tuple[dict[str, list[bytes]], list[str]]:
    """Each input's frames as the service takes them; with a mask, image 1 of each of the
    ``count`` edits is the region around its mask (``placement``)."""
    from ..api.images import encode_image
    from .tensors import to_uint8_rgb

    encoded, notes = {}, []
    for name, tensor in given.items():
        pixels, pixel_notes = to_uint8_rgb(tensor, name)
        notes.extend(pixel_notes)
        if name == "image" and placement is not None and placement.masks is not None:
            pixels = [placement.image_1(i, pixels[i if len(pixels) > 1 else 0])
                      for i in range(count)]
        encoded[name] = []
        for i, frame in enumerate(pixels):
            label = name if len(pixels) == 1 else f"{name}[{i}]"
            result = encode_image(frame, label)
            notes.extend(result.notes)
            encoded[name].append(result.data)
    return encoded, notes
