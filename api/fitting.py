"""Edits that fit back into the picture: the size to ask a model for, the region around a
mask to edit, and fitting a result to an exact size.

- ``asked_size``: the output size to ask for so a result fits a picture of W x H: its
  aspect at about its own area (or at least ``GOOD_AREA`` for a masked region), within the
  model's size rule (the official one narrowed by what third parties report, so nothing
  sent needs the service's benefit of the doubt), sides multiples of 16, and never in a
  higher price tier than that area needs ("Model Studio: model pricing" bills 3.0 outputs
  above 2,250,000 pixels at the upper tier). None: ask without a size (the model takes
  none, or only with n = 1).
- ``context_box``: the region of a picture a masked edit sends, the mask's bounding box
  with its soft edge and context around it (as local inpaint crop-and-stitch nodes do).
- ``fit_exact``: a result at exactly W x H. A result of another aspect is scaled to cover
  W x H and centre-cropped, never stretched; Lanczos in both directions; colour and alpha
  resized apart, so the colours under transparent pixels are kept.

Pillow and numpy only (no torch), imported by ``fit_exact`` alone: the nodes' widgets read
the size rules when ComfyUI lists them, and importing the pack must stay light.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from .catalog.pricing import TIER_1K_MAX_PIXELS
from .catalog.specs import IMAGE_EDIT, ModelSpec, SizeRule

if TYPE_CHECKING:
    import numpy as np

SIDE_STEP = 16  # several models round output sides to multiples of 16; asking so avoids it
GOOD_AREA = 1024 * 1024  # a masked region is asked at least at this area (the edit default)
CONTEXT_SHARE = 0.5  # context around a mask: half its bounding box's longer side, each way
CONTEXT_MIN = 64  # px of context at least, each way
REGION_MAX_ASPECT = 2.0  # a narrow region is widened (within the picture) to this aspect


def needs_n1(spec: ModelSpec) -> bool:
    """Whether a size is sent only with n = 1 (officially, or as a third party reports)."""
    return spec.needs_n1 or any(r.changes.get("needs_n1") for r in spec.reported)


def size_rule(spec: ModelSpec, family: str = IMAGE_EDIT) -> SizeRule | None:
    """The model's size rule for ``family``, narrowed by every stricter reported one."""
    rule = spec.size_rule(family)
    if rule is None:
        return None
    key = "edit_size" if family == IMAGE_EDIT else "t2i_size"
    for reported in spec.reported:
        other = reported.changes.get(key)
        if not isinstance(other, SizeRule):
            continue
        rule = dataclasses.replace(
            rule,
            sizes=rule.sizes or other.sizes,
            min_area=max(filter(None, (rule.min_area, other.min_area)), default=None),
            max_area=min(filter(None, (rule.max_area, other.max_area)), default=None),
            max_aspect=min(filter(None, (rule.max_aspect, other.max_aspect)), default=None),
            side=rule.side or other.side,
            multiple=rule.multiple or other.multiple)
    return rule


def asked_size(spec: ModelSpec, width: int, height: int, n: int,
               area: int | None = None) -> tuple[int, int] | None:
    """The edit output size to ask for a picture of ``width`` x ``height`` (see the module
    docstring); ``area``: the area to aim at instead of the picture's own."""
    rule = size_rule(spec)
    if rule is None or "size" not in spec.takes_in(IMAGE_EDIT) or (n != 1 and needs_n1(spec)):
        return None
    if rule.fixed:  # the listed size of the nearest aspect
        return min((tuple(int(v) for v in s.split("*")) for s in rule.sizes),
                   key=lambda s: abs(math.log(s[0] / s[1] * height / width)))
    aspect = width / height
    low_side, high_side = rule.side or (SIDE_STEP, None)
    widest = min(filter(None, (rule.max_aspect,
                               high_side / low_side if high_side else None)), default=None)
    if widest:
        aspect = min(max(aspect, 1 / widest), widest)
    target = area or width * height
    target = max(target, rule.min_area or 0)
    if rule.max_area:
        target = min(target, rule.max_area)
    w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
    scale = max(1.0, low_side / min(w, h))  # sides into the rule's range, aspect kept
    if high_side:
        scale = min(scale, high_side / max(w, h))
    w, h = w * scale, h * scale
    upper_tier = w * h > TIER_1K_MAX_PIXELS

    def fits(size: tuple[int, int]) -> bool:
        sw, sh = size
        pixels = sw * sh
        return (min(sw, sh) >= low_side and (not high_side or max(sw, sh) <= high_side)
                and pixels >= (rule.min_area or 0) and pixels <= (rule.max_area or pixels)
                and (upper_tier or pixels <= TIER_1K_MAX_PIXELS))

    step = SIDE_STEP
    options = [(a * step, b * step)
               for a in {math.floor(w / step), math.ceil(w / step)}
               for b in {math.floor(h / step), math.ceil(h / step)} if a and b]
    valid = [s for s in options if fits(s)] or options
    return min(valid, key=lambda s: (abs(math.log(s[0] / s[1] / aspect)),
                                     abs(s[0] * s[1] - w * h)))


def area_range(spec: ModelSpec) -> tuple[int | None, int | None] | None:
    """The smallest and largest edit output area ``asked_size`` may ask for (None: no bound);
    None when it asks for no size at all."""
    rule = size_rule(spec)
    if rule is None or "size" not in spec.takes_in(IMAGE_EDIT):
        return None
    low, high = rule.side or (None, None)
    return (max(filter(None, (rule.min_area, low and low * low)), default=None),
            min(filter(None, (rule.max_area, high and high * high)), default=None))


def context_box(box: tuple[int, int, int, int], width: int, height: int,
                soft_edge: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the region a masked edit sends: the mask's bounding
    ``box`` (right and bottom exclusive) grown by the soft edge and context, widened to at
    most ``REGION_MAX_ASPECT``, within the picture of ``width`` x ``height``."""
    left, top, right, bottom = box
    margin = soft_edge + max(CONTEXT_MIN, round(CONTEXT_SHARE * max(right - left,
                                                                     bottom - top)))
    left, top, right, bottom = left - margin, top - margin, right + margin, bottom + margin
    side_w, side_h = right - left, bottom - top
    if side_w < side_h / REGION_MAX_ASPECT:
        grow = math.ceil(side_h / REGION_MAX_ASPECT) - side_w
        left, right = left - grow // 2, right + grow - grow // 2
    elif side_h < side_w / REGION_MAX_ASPECT:
        grow = math.ceil(side_w / REGION_MAX_ASPECT) - side_h
        top, bottom = top - grow // 2, bottom + grow - grow // 2
    # Slid back inside the picture where that keeps its size, else cut at the border.
    left, right = _within(left, right, width)
    top, bottom = _within(top, bottom, height)
    return left, top, right, bottom


def _within(start: int, end: int, limit: int) -> tuple[int, int]:
    if start < 0:
        start, end = 0, end - start
    if end > limit:
        start, end = max(0, start - (end - limit)), limit
    return start, end


def fit_exact(rgb: np.ndarray, alpha: np.ndarray | None, width: int,
              height: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``rgb`` (uint8 [h, w, 3]) and ``alpha`` ([h, w] or None) at exactly ``width`` x
    ``height``, and how that was done, in words."""
    import numpy as np
    from PIL import Image

    h0, w0 = rgb.shape[:2]
    if (w0, h0) == (width, height):
        return rgb, alpha, "unchanged (returned at that size)"
    scale = max(width / w0, height / h0)
    # The source box of the target's aspect: one side whole, the other centred within.
    if width / w0 >= height / h0:
        box_w, box_h = w0, min(h0, height * w0 / width)
    else:
        box_w, box_h = min(w0, width * h0 / height), h0
    left, top = (w0 - box_w) / 2, (h0 - box_h) / 2
    box = (left, top, left + box_w, top + box_h)

    def resized(array: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(array).resize(
            (width, height), Image.Resampling.LANCZOS, box=box))

    how = f"{'scaled up' if scale > 1 else 'scaled down'} (Lanczos)"
    cut_w, cut_h = round(w0 - box_w), round(h0 - box_h)
    if cut_w or cut_h:
        how += (f" to cover {width}*{height}, then centre-cropped "
                f"({cut_w} px of the width, {cut_h} px of the height cut at the returned size)")
    else:
        how += f" to {width}*{height} (the same aspect)"
    return resized(rgb), None if alpha is None else resized(alpha), how


def size_text(size: tuple[int, int] | None) -> str | None:
    return None if size is None else f"{size[0]}*{size[1]}"
