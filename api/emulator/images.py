"""Result images: deterministic Pillow drawings (same request, same bytes; no seed in the
request: a random seed).

Text to image: a pattern from sha256(json.dumps([model, prompt, negative_prompt, W, H, seed,
index], ensure_ascii=False)) (prompts after cutting): two crossing gradients (drawn at 256 x
256 and resized to W x H with BICUBIC) and four discs, exactly W x H.

Edit: output size (W, H) = the requested size (catalog.py: some models round it), else
fit_size(last input, area A) with A = 1048576 unless the model says otherwise (3.0 and
2.1-pro: 2048*2048): r = w/h, W = round(sqrt(A*r)/16)*16, H = round(sqrt(A/r)/16)*16
(Python's round; rounded down instead where that would pass the model's largest area). Then
    out = ImageOps.invert(last.convert("RGB").resize((W, H), Image.Resampling.BICUBIC))
    every other input i (in order, 0-based) is pasted un-inverted as
        other.convert("RGB").resize((W // 6, H // 6), BICUBIC) at (8 + i * (W // 6 + 8), 8)
    output k (0-based) gets a 16x16 mark: box (16k, H-16)-(16k+15, H-1) filled with
        sha256(f"{seed}:{k}").digest()[:3] (mark_colour)
With watermark true, "Qwen-Image" in white on black near the bottom-right corner.

RGBA results (Emulator(rgba=True), ``qwen-image emulator --rgba``; the Qwen-Image 2.1 family
makes transparent images): the same colours with an alpha channel (rgba_alpha): 255 inside
the ellipse inscribed in the box (W/8, H/8)-(7W/8, 7H/8), elsewhere a left-to-right ramp
from 0 to 127 (Image.linear_gradient("L") rotated by 90 degrees, resized to W x H with BICUBIC,
halved).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ..images import fast_png
from . import rules

if TYPE_CHECKING:  # validate imports this module
    from .validate import Drawing

BICUBIC = Image.Resampling.BICUBIC
Size = tuple[int, int]


def png_bytes(img: Image.Image, rgba: bool = False) -> bytes:
    if not rgba and img.mode == "RGB":
        # The pack's own fast PNG writer: Pillow's encoder spends most of its time choosing a
        # filter per row, and tests make many of these. Clients decode them with Pillow.
        return fast_png(np.asarray(img))
    if rgba:
        img = img.copy()
        img.putalpha(rgba_alpha(img.size))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)  # speed over size
    return buf.getvalue()


def open_image(data: bytes) -> Image.Image:
    """Decode *data* far enough to know its format and size; ValueError if it is no image."""
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises several types for garbage
        raise ValueError("not an image") from exc
    if img.format not in rules.IMAGE_FORMATS:
        raise ValueError(f"unsupported image format {img.format}")
    return img


def edit_size(width: int, height: int) -> Size:
    """Default edit output size: the input's ratio, area near 1024*1024, sides multiples of 16."""
    return fit_size(width, height, rules.EDIT_AREA)


def fit_size(width: int, height: int, area: int, max_area: int = 0) -> Size:
    """The ratio of width:height at about *area*, sides rounded to multiples of 16; if that
    is over *max_area* (0: no cap), the sides are rounded down instead."""
    ratio, unit = width / height, rules.EDIT_MULTIPLE
    sides = math.sqrt(area * ratio) / unit, math.sqrt(area / ratio) / unit
    size = tuple(max(1, round(side)) * unit for side in sides)
    if max_area and size[0] * size[1] > max_area:
        size = tuple(max(1, math.floor(side)) * unit for side in sides)
    return size[0], size[1]


def rgba_alpha(size: Size) -> Image.Image:
    """The alpha channel of an RGBA result of *size* (see the module docstring)."""
    width, height = size
    ramp = Image.linear_gradient("L").rotate(90)
    alpha = ramp.resize(size, BICUBIC).point(lambda v: v // 2)
    ImageDraw.Draw(alpha).ellipse((width // 8, height // 8, 7 * width // 8, 7 * height // 8),
                                  fill=255)
    return alpha


def text_to_image(model: str, prompt: str, negative_prompt: str, size: Size, seed: int,
                  index: int, watermark: bool = False, rgba: bool = False) -> bytes:
    key = json.dumps([model, prompt, negative_prompt, size[0], size[1], seed, index],
                     ensure_ascii=False)
    digest = hashlib.sha256(key.encode()).digest()
    width, height = size
    ramp = Image.linear_gradient("L")
    small = ramp.size  # the gradients are linear: drawn small and resized, W*H costs once
    img = Image.composite(Image.new("RGB", small, tuple(digest[0:3])),
                          Image.new("RGB", small, tuple(digest[3:6])), ramp)
    img = Image.composite(img, Image.new("RGB", small, tuple(digest[6:9])), ramp.rotate(90))
    img = img.resize(size, BICUBIC)
    draw, unit = ImageDraw.Draw(img), min(width, height)
    for i in range(4):
        b = digest[9 + 5 * i : 14 + 5 * i]
        x, y, r = b[0] * width // 255, b[1] * height // 255, (b[2] % 64 + 32) * unit // 512
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(b[3], b[4], b[2]))
    if watermark:
        _watermark(img)
    return png_bytes(img, rgba)


def edit_base(inputs: list[Image.Image], size: Size) -> Image.Image:
    """The part of every edit output that does not depend on the output index."""
    width, height = size
    img = ImageOps.invert(inputs[-1].convert("RGB").resize(size, BICUBIC))
    thumb = (width // 6, height // 6)
    for i, other in enumerate(inputs[:-1]):
        img.paste(other.convert("RGB").resize(thumb, BICUBIC), (8 + i * (thumb[0] + 8), 8))
    return img


def mark_colour(seed: int, index: int) -> tuple[int, int, int]:
    r, g, b = hashlib.sha256(f"{seed}:{index}".encode()).digest()[:3]
    return r, g, b


def edit_output(base: Image.Image, seed: int, index: int, watermark: bool = False,
                rgba: bool = False) -> bytes:
    img = base.copy()
    height = img.height
    ImageDraw.Draw(img).rectangle(
        (16 * index, height - 16, 16 * index + 15, height - 1), fill=mark_colour(seed, index)
    )
    if watermark:
        _watermark(img)
    return png_bytes(img, rgba)


def render(job: Drawing, rgba: bool = False) -> list[bytes]:
    """PNG bytes of every output of a validated job (RGBA ones with *rgba*)."""
    if not job.inputs:
        return [text_to_image(job.model, job.prompt, job.negative_prompt, job.size, job.seed, k,
                              job.watermark, rgba) for k in range(job.n)]
    base = edit_base(job.inputs, job.size)
    return [edit_output(base, job.seed, k, job.watermark, rgba) for k in range(job.n)]


def enlarge(png: bytes, size: Size) -> bytes:
    """*png* blown up to *size* (the oversized fault: more pixels than asked for)."""
    img = Image.open(io.BytesIO(png))
    return png_bytes(img.resize(size, Image.Resampling.NEAREST))


def _watermark(img: Image.Image) -> None:
    draw, text = ImageDraw.Draw(img), "Qwen-Image"
    left, top, right, bottom = draw.textbbox((0, 0), text)
    x, y = img.width - (right - left) - 12, img.height - (bottom - top) - 12
    draw.rectangle((x - 4, y - 4, img.width - 8, img.height - 8), fill=(0, 0, 0))
    draw.text((x - left, y - top), text, fill=(255, 255, 255))
