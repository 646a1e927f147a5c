"""ComfyUI IMAGE tensors <-> encoded images, losslessly where the service allows it.

Decisions (each is visible to the user as a note in the node's info output and the log):

- In: an IMAGE is float [B, H, W, C] in 0..1. Each value becomes ``round(clip(x, 0, 1) * 255)``;
  NaN becomes 0 and values outside 0..1 are clipped (noted when that changes a pixel, i.e.
  a value lies more than half a step outside 0..1). C = 1 (greyscale) is repeated to RGB.
  C = 4 (RGBA) and C = 2 (grey + alpha) are composited over white: the service documents
  no transparency handling, and white is what a cut-out on a page or product shot expects,
  whereas dropping alpha would expose whatever colour hides under transparent pixels.
- Sides outside the service's 384-3072 px are resized with Lanczos, aspect kept; an aspect
  beyond 3072:384 (8:1) cannot fit and is refused with a message saying so.
- PNG first (lossless, exact pixels); when its data URI would exceed the 10 MB item limit,
  stronger PNG compression, then lossless WebP (each only where it can plausibly close
  the gap), then downscaling (Lanczos, PNG) until it fits. The client would otherwise fall
  back to JPEG (api.images.fit_encoding), which changes every pixel.
- Out: every result becomes RGB float32 [B, H, W, 3] with value v/255 (float32 division).
  For every v in 0..255, ``np.clip(255. * x, 0, 255).astype(np.uint8)`` (ComfyUI's SaveImage)
  gives v back, so saving an output stores the very pixels the service returned
  (tests/test_tensors.py checks all 256 values). Alpha in a result is composited over
  white as on input.
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..api.errors import ValidationError
from ..api.images import data_uri_length, mime_type
from ..api.models import EDIT_INPUT_MAX_BYTES, EDIT_INPUT_SIDE_MAX, EDIT_INPUT_SIDE_MIN

log = logging.getLogger(__name__)

_HALF_STEP = 0.5 / 255  # a value further than this outside 0..1 changes its pixel when clipped


@dataclass
class Encoded:
    data: bytes
    format: str  # "PNG" or "WEBP"
    width: int
    height: int
    notes: list[str] = field(default_factory=list)


def _uri_length(data: bytes, fmt: str) -> int:
    return data_uri_length(len(data), mime_type(fmt))


def to_uint8_rgb(images, name: str) -> tuple[np.ndarray, list[str]]:
    """IMAGE tensor [B, H, W, C] -> uint8 array [B, H, W, 3], with notes on what was changed."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim == 3:  # a single image without its batch axis
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4) or 0 in images.shape:
        raise ValidationError(name, "expected an IMAGE tensor [batch, height, width, 1-4 "
                                    f"channels], got shape {tuple(images.shape)}")
    x = images.detach().to("cpu", torch.float32)
    notes = []
    nan = torch.isnan(x)
    if bool(nan.any()):
        notes.append(f"{name}: {int(nan.sum())} NaN values were set to 0.")
        x = torch.nan_to_num(x, nan=0.0)
    outside = (x < -_HALF_STEP) | (x > 1 + _HALF_STEP)
    if bool(outside.any()):
        notes.append(f"{name}: {int(outside.sum())} values outside 0..1 "
                     f"(min {float(x.min()):.3g}, max {float(x.max()):.3g}) were clipped.")
    x = x.clamp_(0.0, 1.0)
    channels = x.shape[-1]
    if channels in (2, 4):
        alpha = x[..., -1:]
        x = x[..., :-1] * alpha + (1.0 - alpha)
        notes.append(f"{name}: the alpha channel was composited over white.")
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    pixels = x.mul(255.0).round_().to(torch.uint8).numpy()
    for note in notes:
        log.info(note)
    return pixels, notes


def fit_sides(width: int, height: int, name: str) -> tuple[int, int]:
    """The size within the service's 384-3072 px per side, aspect kept; unchanged if it fits."""
    lo, hi = EDIT_INPUT_SIDE_MIN, EDIT_INPUT_SIDE_MAX
    short, long_ = min(width, height), max(width, height)
    if short >= lo and long_ <= hi:
        return width, height
    if long_ * lo > hi * short:
        raise ValidationError(
            name, f"{width}x{height} px has an aspect ratio of {long_ / short:.2f}:1, but the "
                  f"service takes {lo}-{hi} px per side, so at most {hi // lo}:1",
            hint="Crop or pad the image to a less extreme aspect ratio first.")
    scale = lo / short if short < lo else hi / long_
    return (min(hi, max(lo, round(width * scale))), min(hi, max(lo, round(height * scale))))


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def encode_image(pixels: np.ndarray, name: str, *,
                 max_uri_bytes: int = EDIT_INPUT_MAX_BYTES) -> Encoded:
    """One uint8 [H, W, 3] image -> PNG (or lossless WebP) bytes the service accepts."""
    image = Image.fromarray(pixels, "RGB")
    notes: list[str] = []
    size = fit_sides(image.width, image.height, name)
    if size != image.size:
        notes.append(f"{name}: resized from {image.width}x{image.height} to {size[0]}x{size[1]} "
                     f"px (the service takes {EDIT_INPUT_SIDE_MIN}-{EDIT_INPUT_SIDE_MAX} px per "
                     "side).")
        image = image.resize(size, Image.LANCZOS)

    data, fmt, image = _fit_limit(image, name, max_uri_bytes, notes)
    for note in notes:
        log.info(note)
    return Encoded(data, fmt, image.width, image.height, notes)


# Stronger lossless codings, each tried only when the default PNG's data URI is at most
# ``reach`` times the limit: zlib's top level saves a few percent over PNG's default and
# lossless WebP up to about a third, while WebP costs seconds on a large image.
_LOSSLESS_LADDER = (
    ("PNG", {"compress_level": 9}, 1.1, "maximally compressed PNG"),
    ("WEBP", {"lossless": True, "quality": 25, "method": 1}, 1.5, "lossless WebP"),
)

_ITEM_LIMIT = "the service's 10 MB data-URI limit"


def _fit_limit(image: Image.Image, name: str, max_uri_bytes: int, notes: list[str],
               limit: str = _ITEM_LIMIT):
    """(data, format, image) whose data URI fits ``max_uri_bytes``: lossless if at all possible.

    ``limit`` names the limit in notes and errors.
    """
    first = _encode(image, "PNG")
    first_length = _uri_length(first, "PNG")
    if first_length <= max_uri_bytes:
        return first, "PNG", image
    for fmt, options, reach, described in _LOSSLESS_LADDER:
        if first_length > reach * max_uri_bytes:
            continue
        data = _encode(image, fmt, **options)
        if _uri_length(data, fmt) <= max_uri_bytes:
            notes.append(f"{name}: its PNG ({len(first)} bytes) is over {limit}; sent as "
                         f"{described} ({len(data)} bytes), pixels unchanged.")
            return data, fmt, image
    original, data, length = image.size, first, first_length
    while length > max_uri_bytes:
        # The byte count scales roughly with the pixel count; 0.95 leaves room for noise.
        scale = math.sqrt(max_uri_bytes / length) * 0.95
        target = (int(image.width * scale), int(image.height * scale))
        if min(target) < EDIT_INPUT_SIDE_MIN:
            raise ValidationError(
                name, f"cannot be encoded within {limit} without going below "
                      f"{EDIT_INPUT_SIDE_MIN} px per side",
                hint="Send a smaller or less detailed image.")
        image = image.resize(target, Image.LANCZOS)
        data = _encode(image, "PNG")
        length = _uri_length(data, "PNG")
    notes.append(f"{name}: no lossless coding fits {limit}; downscaled from "
                 f"{original[0]}x{original[1]} to {image.width}x{image.height} px "
                 f"(PNG, {len(data)} bytes).")
    return data, "PNG", image


def fit_total(datas, names, budget: int) -> tuple[tuple[bytes, ...], list[str]]:
    """Encoded images re-encoded so that their data URIs together stay within ``budget``.

    Each gets an equal share; one that already fits its share is kept as it is.
    """
    share = budget // len(datas)
    fitted, notes = [], []
    for data, name in zip(datas, names, strict=False):
        fmt = Image.open(io.BytesIO(data)).format
        if _uri_length(data, fmt) <= share:
            fitted.append(data)
            continue
        image = Image.fromarray(_decode_rgb(data), "RGB")
        data, _, _ = _fit_limit(image, name, share, notes,
                                limit=f"its share ({share} bytes) of a request body the "
                                      "service accepts (it refused the first one as too large; "
                                      "nothing was billed)")
        fitted.append(data)
    for note in notes:
        log.info(note)
    return tuple(fitted), notes


def _decode_rgb(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def decode_images(datas: list[bytes]) -> tuple[torch.Tensor, list[str]]:
    """Encoded images of one output -> IMAGE [B, H, W, 3] float32, v/255 exactly.

    One output shares H and W (a ComfyUI rule). Results normally do; when one differs it is
    resized (Lanczos) to the first image's size and a note says so: the images are paid
    for, and the originals stay in the result store.
    """
    arrays = [_decode_rgb(d) for d in datas]
    height, width = arrays[0].shape[:2]
    notes = []
    for i, array in enumerate(arrays):
        if array.shape[:2] != (height, width):
            notes.append(f"result image {i + 1} is {array.shape[1]}x{array.shape[0]} px; resized "
                         f"to {width}x{height} px to share a batch with image 1 (the original is "
                         "in the result store).")
            log.warning(notes[-1])
            arrays[i] = np.asarray(Image.fromarray(array).resize((width, height), Image.LANCZOS))
    out = np.empty((len(arrays), height, width, 3), np.float32)
    for i, array in enumerate(arrays):
        # float32 division: exactly the v/255 that survives SaveImage's 255*x truncation.
        np.divide(array, np.float32(255), out=out[i], dtype=np.float32)
    return torch.from_numpy(out), notes
