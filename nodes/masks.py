"""MASK inputs as ComfyUI treats them, and the soft edge of a masked edit.

ComfyUI's conventions (nodes.py LoadImage, comfy_extras/nodes_mask.py): a MASK is float
[B, H, W] in 0..1 where 1 marks the region to change; LoadImage's is 1 - alpha, and 64x64
zeros for a picture without alpha; a mask of another size than the image is resized with
``torch.nn.functional.interpolate(..., mode="bilinear")``; a batch of 1 serves every image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..api.errors import ValidationError


def batch_size(mask) -> int:
    return 1 if mask.ndim == 2 else int(mask.shape[0])


def prepare(mask, count: int, height: int, width: int) -> torch.Tensor:
    """``mask`` as float32 [count, height, width] in 0..1 on the CPU; refuses an empty one.

    Every frame must mark something (a value above 0): an empty mask, also LoadImage's 64x64
    zeros for a picture without alpha, would pay for edits that change nothing.
    """
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3 or 0 in m.shape:
        raise ValidationError("mask", f"expected a MASK tensor [batch, height, width], got "
                                      f"shape {tuple(m.shape)}")
    m = torch.nan_to_num(m.detach().to("cpu", torch.float32), nan=0.0).clamp(0.0, 1.0)
    if tuple(m.shape[1:]) != (height, width):
        m = F.interpolate(m.reshape(-1, 1, *m.shape[1:]), size=(height, width),
                          mode="bilinear").squeeze(1)
    empty = [index + 1 for index in range(m.shape[0]) if not bool((m[index] > 0).any())]
    if empty:
        which = "" if m.shape[0] == 1 else f" (mask {', '.join(map(str, empty))} of "
        which += "" if m.shape[0] == 1 else f"{m.shape[0]})"
        raise ValidationError(
            "mask", f"is empty{which}: it marks no pixel, so nothing would be edited and "
                    "nothing was sent",
            hint="Paint the region to change (1 = change) in the mask editor, or give a "
                 "picture whose transparency marks it: LoadImage's mask of a picture without "
                 "alpha is all zeros. Disconnect 'mask' to edit the whole image.")
    return m.expand(count, -1, -1) if m.shape[0] == 1 else m


def bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), right and bottom exclusive, of the pixels above 0."""
    rows = torch.nonzero(mask.gt(0).any(dim=1)).flatten()
    columns = torch.nonzero(mask.gt(0).any(dim=0)).flatten()
    return (int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)


def soft_weights(mask: torch.Tensor, soft_edge: int) -> torch.Tensor:
    """[H, W] weights of the edit: the mask itself inside, falling from 1 at its border to 0
    at ``soft_edge`` px outside it, and exactly 0 beyond.

    A dilation by ceil(s/2) (a separable max filter) and then a box blur of half-width
    floor(s/2): the blur never reaches past the dilated area's border by more than its
    half-width, and inside the original mask it averages ones only (exactly 1).
    """
    x = mask[None, None]
    grow, blur = math.ceil(soft_edge / 2), soft_edge // 2
    if grow:
        x = F.max_pool2d(x, (2 * grow + 1, 1), stride=1, padding=(grow, 0))
        x = F.max_pool2d(x, (1, 2 * grow + 1), stride=1, padding=(0, grow))
    if blur:
        x = F.avg_pool2d(x, (2 * blur + 1, 1), stride=1, padding=(blur, 0))
        x = F.avg_pool2d(x, (1, 2 * blur + 1), stride=1, padding=(0, blur))
    return torch.maximum(x[0, 0], mask)
