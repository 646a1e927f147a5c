"""Edits that fit back into image 1: size = "match input" and the ``mask`` input.

- match input: each edit asks for image 1's aspect at about its area (``api.fitting.
  asked_size``), and each result is fitted to image 1's exact size (cover and centre-crop
  where the aspect differs, never stretched).
- mask: each edit sends the region around its mask (``api.fitting.context_box``: the
  mask's bounding box with the soft edge and context) in place of image 1, scaled up to at
  least ``api.fitting.GOOD_AREA`` so a small mask still gets the model's resolution; the
  result is fitted back to the region and blended into image 1 across the soft edge
  (``masks.soft_weights``). Where the weight is 0 the output is image 1's tensor, bit for
  bit; inside the mask it is the edit. With size = match input the region's aspect is asked
  for (at least ``GOOD_AREA``), with auto nothing, with custom width*height.

The output always has image 1's size, so a batch never needs padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..api.catalog.specs import ModelSpec
from ..api.fitting import GOOD_AREA, asked_size, context_box, fit_exact, size_text
from ..api.images import decode_pixels
from . import masks as mask_ops
from .tensors import alpha_mask, to_float
from .widgets import MATCH


@dataclass
class Plan:
    """One edit: what it asks and sends, and what its results are fitted to."""

    target: tuple[int, int]  # each result is fitted to this W, H (image 1's, or the region's)
    size: str | None  # the request's size
    box: tuple[int, int, int, int] | None = None  # the region (mask), right/bottom exclusive
    send: tuple[int, int] | None = None  # the region is sent at this W, H


class Placement:
    """The plans of every edit of a run, and ``compose`` for ``outputs.assemble``."""

    def __init__(self, spec: ModelSpec, image, n: int, size_choice: str, request_size,
                 mask, soft_edge: int, count: int):
        self.image = image if image.ndim == 4 else image.unsqueeze(0)
        height, width = int(self.image.shape[1]), int(self.image.shape[2])
        self.soft_edge = soft_edge
        self.masks = None if mask is None else mask_ops.prepare(mask, count, height, width)
        self.plans = []
        for index in range(count):
            if self.masks is None:
                asked = asked_size(spec, width, height, n)
                self.plans.append(Plan((width, height), size_text(asked)))
                continue
            box = context_box(mask_ops.bounding_box(self.masks[index]), width, height,
                              soft_edge)
            region = (box[2] - box[0], box[3] - box[1])
            scale = max(1.0, math.sqrt(GOOD_AREA / (region[0] * region[1])))
            send = (round(region[0] * scale), round(region[1] * scale))
            if size_choice == MATCH:
                asked = size_text(asked_size(spec, *region, n, area=send[0] * send[1]))
            else:
                asked = request_size
            self.plans.append(Plan(region, asked, box, send))

    def plan(self, edit: int) -> Plan:
        return self.plans[edit if len(self.plans) > 1 else 0]

    def image_1(self, edit: int, pixels: np.ndarray) -> np.ndarray:
        """The uint8 pixels sent as image 1 of ``edit``: the region, scaled, with a mask."""
        plan = self.plan(edit)
        if plan.box is None:
            return pixels
        left, top, right, bottom = plan.box
        crop = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right]))
        return np.asarray(crop.resize(plan.send, Image.Resampling.LANCZOS))

    def compose(self, succeeded: list) -> tuple[torch.Tensor, torch.Tensor, dict, list[str]]:
        """IMAGE and MASK at image 1's size from the (call, result) pairs, with facts per
        request for ``info``."""
        total = sum(len(result.images) for _, result in succeeded)
        height, width = int(self.image.shape[1]), int(self.image.shape[2])
        images = torch.empty(total, height, width, 3)
        out_masks = torch.zeros(total, height, width)
        facts, slot = {}, 0
        for call, result in succeeded:
            edit = call.first // call.n
            plan = self.plan(edit)
            hows = []
            for image in result.images:
                rgb, alpha = decode_pixels(image.data)
                rgb, alpha, how = fit_exact(rgb, alpha, *plan.target)
                hows.append(how)
                if plan.box is None:
                    to_float(rgb, images[slot].numpy())
                    if alpha is not None:
                        out_masks[slot].copy_(alpha_mask(alpha))
                else:
                    self._stitch(images[slot], out_masks[slot], edit, plan, rgb, alpha)
                slot += 1
            facts[call.first] = {"fit": self._facts(plan, hows)}
        return images, out_masks, facts, []

    def _stitch(self, out: torch.Tensor, out_mask: torch.Tensor, edit: int, plan: Plan,
                rgb: np.ndarray, alpha: np.ndarray | None) -> None:
        out.copy_(_colour(self.image[edit if self.image.shape[0] > 1 else 0]))
        left, top, right, bottom = plan.box
        weights = mask_ops.soft_weights(self.masks[edit][top:bottom, left:right],
                                        self.soft_edge)
        edited = torch.from_numpy(to_float(rgb))
        region = out[top:bottom, left:right]
        w = weights.unsqueeze(-1)
        # Where the weight is 0, image 1's values stay as they are, bit for bit.
        region.copy_(torch.where(w > 0, region * (1 - w) + edited * w, region))
        if alpha is not None:
            out_mask[top:bottom, left:right] = weights * alpha_mask(alpha)

    def _facts(self, plan: Plan, hows: list[str]) -> dict:
        facts = {"asked": plan.size or "no size (the model's default)",
                 "fitted_to": size_text(plan.target), "how": hows}
        if plan.box is not None:
            left, top, right, bottom = plan.box
            facts["region"] = {"x": left, "y": top, "width": right - left,
                               "height": bottom - top, "sent_as": size_text(plan.send),
                               "soft_edge": self.soft_edge}
        return facts


def _colour(frame: torch.Tensor) -> torch.Tensor:
    """An IMAGE frame's colour channels as float32 [H, W, 3] on the CPU (grey repeated)."""
    frame = frame.detach().to("cpu", torch.float32)
    channels = frame.shape[-1]
    if channels in (1, 2):
        return frame[..., :1].expand(*frame.shape[:-1], 3)
    return frame[..., :3]
