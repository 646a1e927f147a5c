"""Helpers for running the node classes as ComfyUI would and checking their pixels."""
from __future__ import annotations

import asyncio
import io
import time

import numpy as np
from PIL import Image


def widget_defaults(node_class) -> dict:
    """The value every widget input has on a fresh node, as the frontend would send it."""
    values = {}
    types = node_class.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 else {}
            if isinstance(kind, list):
                values[name] = options.get("default", kind[0])
            elif "default" in options:
                values[name] = options["default"]
    return values


def run_node(node_class, timing: dict | None = None, **inputs):
    """Call the node's FUNCTION with its widget defaults overridden by ``inputs``.

    Like ComfyUI's prompt worker, it runs the coroutine with ``asyncio.run``, which waits
    for work left in the default executor before it returns; ``timing["ended"]`` is the
    moment the node itself returned or raised (when ComfyUI reports the outcome).
    """
    arguments = {**widget_defaults(node_class), "unique_id": "17", **inputs}

    async def node():
        try:
            return await getattr(node_class(), node_class.FUNCTION)(**arguments)
        finally:
            if timing is not None:
                timing["ended"] = time.monotonic()

    return asyncio.run(node())


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def saved_pixels(images) -> np.ndarray:
    """What ComfyUI's SaveImage writes for an IMAGE tensor (nodes.py, SaveImage.save_images)."""
    return np.clip(255. * images.cpu().numpy(), 0, 255).astype(np.uint8)


def pixels_sent(images) -> np.ndarray:
    """round(clip(x, 0, 1) * 255) in the tensor's float32: the contract for input tensors."""
    x = np.clip(images.cpu().numpy().astype(np.float32), 0, 1)
    return np.round(x * np.float32(255)).astype(np.uint8)
