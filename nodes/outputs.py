"""The four outputs of a node run: IMAGE, prompt_used, the info JSON and MASK."""
from __future__ import annotations

import json
import os

from ..api.catalog.models import spec_for
from ..api.catalog.pricing import usd_price
from ..api.config import budget_settings
from ..api.errors import QwenImageError
from .runner import Call
from .status import total_cost


def one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _budget() -> dict | None:
    """Today's state of the spend guard the clients use (from the same environment)."""
    from ..api.storage.budget import SpendGuard

    guard = SpendGuard.from_settings(budget_settings(os.environ))
    return guard.status().as_dict() if guard is not None else None


def _dedupe(notes: list[str]) -> list[str]:
    return list(dict.fromkeys(notes))


def _take_pixels(call: Call, count: int, position: int) -> list:
    """The pixels the run's decoder made of the call's images (None each where it did not),
    handed over: the call keeps no reference, so the output frees each image as soon as it
    holds it. ``position``: the output index of the call's first image; pixels written into
    the frame of another index (``call.first``: an earlier call gave fewer or more images
    than asked) are decoded again."""
    decoded, call.decoded = call.decoded, None
    if decoded is None:
        return [None] * count
    return [None if done.written and position != call.first else done.pixels
            for done in decoded]


def assemble(node_id: str, model: str, family: str, calls: list[Call], outcomes: list,
             notes: list[str], compose=None, memory=None):
    """(IMAGE, prompt_used, info, MASK) from the results; raises the first error if none
    worked. ``compose(succeeded)``, when given, makes IMAGE and MASK from the (call, result)
    pairs instead of decoding the results as they are, and returns ``(images, masks,
    {call.first: facts for that request's info}, notes)`` (nodes/placement.py).
    ``memory``: the IMAGE tensor's memory, mapped while the calls ran (``runner.OutputMemory``).
    """
    from .tensors import decode_images

    succeeded = [(call, result) for call, result in zip(calls, outcomes, strict=False)
                 if not isinstance(result, QwenImageError)]
    if not succeeded:
        raise next(result for result in outcomes if isinstance(result, QwenImageError))
    total = sum(call.n for call in calls)
    datas, files, prompts, requests_info, pixels = [], [], [], [], []
    for call, result in succeeded:
        used = one_line(result.actual_prompt or call.request.prompt)
        for image, given in zip(result.images,
                                _take_pixels(call, len(result.images), len(datas)), strict=True):
            datas.append(image.data)
            pixels.append(given)
            files.append(image.saved_path or image.url.split("?", 1)[0])  # no signature
            prompts.append(used)
        notes.extend(result.notes)
        requests_info.append({
            "outputs": call.label(total),
            "seed": result.seed if result.seed is not None else call.request.seed,
            "request_id": result.request_id,
            "task_id": result.task_id,
            "interface": result.interface,
            "from_store": result.from_store,
            "sizes": [f"{image.width}*{image.height}" for image in result.images],
            "usage": result.usage,
            "cost_usd": result.cost_usd,  # 0 when served from the store
            "files": [image.saved_path for image in result.images if image.saved_path],
            **({"doubt": result.doubt} if result.doubt else {}),
            **({"actual_prompt": result.actual_prompt}
               if result.actual_prompt and result.actual_prompt != call.request.prompt else {}),
        })
    if compose is None:
        images, masks, padded = decode_images(
            datas, files, pixels, memory.take() if memory is not None else None)
        fitted = {}
    else:
        (images, masks, fitted, composed), padded = compose(succeeded), []
        notes.extend(composed)
    for (call, _), facts in zip(succeeded, requests_info, strict=False):
        facts.update(fitted.get(call.first, {}))
    # Not masks.any(): measured in benchmark 4, it left 24 MiB (6 masks of 2048x2048) resident.
    if bool(masks.count_nonzero()):
        notes.append("A result has transparency: 'images' holds its colour channels as "
                     "served and 'mask' its 1 - alpha, as LoadImage gives them (input images "
                     "are still composited over white before they are sent).")
    height, width = images.shape[1:3]
    if padded:
        notes.append(
            f"The results differ in size, so they share the batch at {width}*{height}, each "
            "smaller one centred on black with its pixels unchanged: "
            + "; ".join(f"image {p.index + 1} ({p.width}*{p.height}) at x={p.x}, y={p.y}"
                        for p in padded)
            + ". The result store keeps every exact file.")
    spec = spec_for(model, family)
    region = succeeded[0][1].region
    price = usd_price(spec, region)
    failures = [{"outputs": call.label(total), "seed": call.request.seed,
                 "error": type(result).__name__, "message": str(result)}
                for call, result in zip(calls, outcomes, strict=False)
                if isinstance(result, QwenImageError)]
    info = {
        "node": node_id,
        "model": model,
        "model_known": spec.known,
        "region": region,
        "images": len(datas),
        "batch": {"size": f"{width}*{height}",
                  "padded": [{"image": p.index + 1, "size": f"{p.width}*{p.height}",
                              "x": p.x, "y": p.y} for p in padded]},
        "estimated_cost_usd": total_cost(result for _, result in succeeded),
        # The model's price list in this region (None: none published), per image.
        "price_usd": None if price is None else {
            "output": price.output, "output_above_2k": price.output_2k, "input": price.input},
        "requests": requests_info,
        "failures": failures,
        "budget": _budget(),  # None: no daily limit is set
        "notes": _dedupe(notes),
    }
    return (images, "\n".join(prompts), json.dumps(info, ensure_ascii=False, indent=2),
            masks)
