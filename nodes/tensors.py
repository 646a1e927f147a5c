"""ComfyUI IMAGE tensors <-> uint8 RGB pixels, exactly.

The tensor half of the conversion; encoding the pixels for the service (resizing to its
384-3072 px sides, the fast lossless PNG, the lossless ladder within its 10 MB limit) and
decoding results to RGB are ``api.images``'s, which needs no torch.

Decisions (each is visible to the user as a note in the node's info output and the log):

- In: an IMAGE is float [B, H, W, C] in 0..1. Each value becomes ``round(clip(x, 0, 1) * 255)``;
  NaN becomes 0 and values outside 0..1 are clipped (noted when that changes a pixel, i.e.
  a value lies more than half a step outside 0..1). C = 1 (greyscale) is repeated to RGB.
  C = 4 (RGBA) and C = 2 (grey + alpha) are composited over white, as ``api.images.flatten``
  does for encoded images: dropping alpha would expose whatever colour hides under
  transparent pixels.
- Out: every result becomes RGB float32 [B, H, W, 3] with value v/255 (float32 division),
  the colour channels as served (never composited: the Qwen-Image 2.1 family makes
  transparent images), and a MASK [B, H, W] of 1 - alpha/255 as ComfyUI's LoadImage makes
  it (zeros for opaque results and for padding).
  For every v in 0..255, ``np.clip(255. * x, 0, 255).astype(np.uint8)`` (ComfyUI's SaveImage)
  gives v back, so saving an output stores the very pixels the service returned
  (tests/test_tensors.py checks all 256 values). Results of one output that differ in size
  share the batch padded to the largest (``decode_images``; the store keeps the files).

Speed and memory (benchmarks/run.py measures them):

- Tensor -> uint8 runs frame by frame through a small reused buffer: no float copy of the
  batch, and the caller's tensor is never modified.
- PNG -> IMAGE allocates the output tensor once (its pages mapped in one call where the
  system allows it) and decodes each image straight into its slice, so the peak is the
  output plus one decoded image.
"""
from __future__ import annotations

import functools
import logging
import math
import mmap
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..api.errors import DownloadError, ValidationError
from ..api.images import MAX_RESULT_PIXELS, decode_pixels, inspect_image, over_pixel_cap

log = logging.getLogger(__name__)

_HALF_STEP = 0.5 / 255  # a value further than this outside 0..1 changes its pixel when clipped


def to_uint8_rgb(images, name: str) -> tuple[np.ndarray, list[str]]:
    """IMAGE tensor [B, H, W, C] -> uint8 array [B, H, W, 3], with notes on what was changed.

    The tensor itself is left as it is (it may be another node's cached output).
    """
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim == 3:  # a single image without its batch axis
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4) or 0 in images.shape:
        raise ValidationError(name, "expected an IMAGE tensor [batch, height, width, 1-4 "
                                    f"channels], got shape {tuple(images.shape)}")
    images = images.detach()
    if images.shape[-1] in (1, 3) and _in_range(images):
        return _plain_to_uint8(images), []
    x = images.to("cpu", torch.float32)
    notes = []
    nan = torch.isnan(x)
    if bool(nan.any()):
        notes.append(f"{name}: {int(nan.sum())} NaN values were set to 0.")
        x = torch.nan_to_num(x, nan=0.0)
    outside = (x < -_HALF_STEP) | (x > 1 + _HALF_STEP)
    if bool(outside.any()):
        notes.append(f"{name}: {int(outside.sum())} values outside 0..1 "
                     f"(min {float(x.min()):.3g}, max {float(x.max()):.3g}) were clipped.")
    x = x.clamp(0.0, 1.0)  # a new tensor: the caller's is not touched
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


def _in_range(images: torch.Tensor) -> bool:
    """No NaN and nothing that clipping would change: the common case, needing no notes.

    One reduction, no temporary the size of the batch; compared in float32 like the slow
    path, so both agree on every value.
    """
    if not images.is_floating_point():
        return False
    low, high = (v.to(torch.float32) for v in torch.aminmax(images))  # NaN propagates
    return bool((low >= -_HALF_STEP) & (high <= 1 + _HALF_STEP))


_CHUNK_BYTES = 1 << 20  # float32 scratch per step: stays in the CPU cache


def _plain_to_uint8(images: torch.Tensor) -> np.ndarray:
    """round(clip(x, 0, 1) * 255) of a batch in range, in float32 as the slow path computes it."""
    batch, height, width, channels = images.shape
    out = np.empty((batch, height, width, 3), np.uint8)
    rows = max(1, _CHUNK_BYTES // (width * channels * 4))
    scratch = np.empty((rows, width, channels), np.float32)
    for index in range(batch):
        # One frame at a time: a half-precision or GPU batch is never copied whole.
        frame = images[index].to("cpu", torch.float32).numpy()
        for top in range(0, height, rows):
            part = frame[top:top + rows]
            buffer = scratch[:len(part)]
            np.clip(part, 0.0, 1.0, out=buffer)
            np.multiply(buffer, np.float32(255), out=buffer)
            np.rint(buffer, out=buffer)  # half to even, like torch.round
            out[index, top:top + rows] = buffer  # exact integers; C = 1 broadcasts to RGB
    return out


@dataclass
class Placement:
    """Where a result smaller than the batch sits: its size and top-left corner."""

    index: int  # 0-based, in the output batch
    width: int
    height: int
    x: int
    y: int


# The batch tensors' budget: 10 GiB of float32 RGB and MASK holds 96 images (16 calls of 6)
# of 2560x2560, the largest size measured; padding frames of mixed shapes to their common
# size may not take a frame past the pixel cap either.
BATCH_TENSOR_BYTES = 10 << 30


def decode_images(datas: list[bytes], files: list[str] | None = None,
                  decoded: list | None = None, out: np.ndarray | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, list[Placement]]:
    """Encoded images of one output -> IMAGE [B, H, W, 3] float32 (v/255 exactly), MASK
    [B, H, W] (``alpha_mask``; zeros where a result has no alpha) and the padded ones.

    One IMAGE shares H and W (a ComfyUI rule). Results normally do. When they differ, the
    batch takes the largest width and the largest height, and each smaller image keeps its
    exact pixels, centred on black: resizing would change every pixel, and the store keeps
    the original files. The third value lists those smaller images (empty when none).
    ``decoded[i]``: the pixels of ``datas[i]`` as ``decode_pixels`` gave them already (None:
    decoded here; ``(None, alpha)``: the colour pixels are in ``out[i]`` already); each is
    taken out of the list once copied, so that its memory can go before the next image is
    decoded. ``out``: memory for the IMAGE tensor (``new_output``), used when its shape is
    the batch's (else what was written into it is decoded again).

    A batch whose frame would be over the pixel cap, or whose tensors over
    ``BATCH_TENSOR_BYTES``, is refused before anything is decoded (``DownloadError``
    naming the sizes and ``files``, where each image is kept).
    """
    sizes = [inspect_image(data)[1:] for data in datas]  # headers only; nothing decoded yet
    width, height = max(w for w, _ in sizes), max(h for _, h in sizes)
    _check_budget(sizes, width, height, files)
    shape = (len(datas), height, width, 3)
    reused = out is not None and out.shape == shape
    if not reused:
        out = None  # let it go before mapping the right one
        out = new_output(shape)
    # calloc'd (numpy's zeros, unlike torch's, writes nothing): untouched pages cost nothing
    masks = torch.from_numpy(np.zeros(shape[:3], np.float32))
    placed = [Placement(i, w, h, (width - w) // 2, (height - h) // 2)
              for i, (w, h) in enumerate(sizes) if (w, h) != (width, height)]
    corners = {p.index: (p.x, p.y) for p in placed}
    # One after the other: Pillow decodes in 64 KiB steps, each taking the GIL back, so
    # threads here wait on each other more than they gain (measured: 3x slower on 2 CPUs).
    for index, data in enumerate(datas):
        given = None
        if decoded is not None:  # let go of each as it is copied: the peak stays low
            given, decoded[index] = decoded[index], None
        if given is not None and given[0] is None and not reused:  # written into another
            given = None
        array, alpha = given if given is not None else decode_pixels(data)
        target, mask = out[index], masks[index]
        if array is None:  # in its frame already, which has the batch's size
            if alpha is not None:
                mask.copy_(alpha_mask(alpha))
            continue
        if index in corners:
            target[:] = 0
            x, y = corners[index]
            target = target[y:y + array.shape[0], x:x + array.shape[1]]
            mask = mask[y:y + array.shape[0], x:x + array.shape[1]]
        to_float(array, target)
        if alpha is not None:
            mask.copy_(alpha_mask(alpha))
    return torch.from_numpy(out), masks, placed


def to_float(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 pixels -> float32 v/255: exactly the value that survives SaveImage's 255*x
    truncation (float32 division)."""
    return np.divide(pixels, np.float32(255), out=out, dtype=np.float32)


def alpha_mask(alpha: np.ndarray) -> torch.Tensor:
    """uint8 alpha [H, W] -> MASK values 1 - alpha/255, computed as ComfyUI's LoadImage does."""
    return 1.0 - torch.from_numpy(alpha.astype(np.float32) / 255.0)


def _check_budget(sizes: list[tuple[int, int]], width: int, height: int,
                  files: list[str] | None) -> None:
    tensor_bytes = len(sizes) * width * height * (3 + 1) * 4  # IMAGE and MASK
    if not over_pixel_cap(width, height) and tensor_bytes <= BATCH_TENSOR_BYTES:
        return
    problem = (f"padded to one size they would be {width}x{height}, over the "
               f"{MAX_RESULT_PIXELS}-pixel cap" if over_pixel_cap(width, height) else
               f"together they would take {tensor_bytes / 2**30:.1f} GiB, over the "
               f"{BATCH_TENSOR_BYTES / 2**30:g} GiB budget of one batch")
    shown = ", ".join(f"{w}x{h}" for w, h in sizes[:8]) + (", ..." if len(sizes) > 8 else "")
    kept = f" They are kept: {', '.join(files)}." if files else ""
    raise DownloadError(f"The {len(sizes)} results ({shown}) cannot share one IMAGE batch: "
                        f"{problem}; nothing was decoded.{kept}",
                        hint="Run the sizes in separate nodes (or fewer images per run), "
                             "or open the stored files with an image viewer.")


_POPULATE_BYTES = 16 << 20  # smaller outputs (under one 1328x1328 image) as usual


def new_output(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array for a new IMAGE tensor, its memory mapped in one go.

    Fresh memory is otherwise mapped one 4 KiB page at a time as it is first written: a
    fault each, 0.7 s for eight 1328x1328 images on a virtual machine measured here.
    MAP_POPULATE (Linux) maps it all in one call; elsewhere, or if it fails, np.empty.
    """
    size = math.prod(shape) * 4
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is None or size < _POPULATE_BYTES:
        return np.empty(shape, np.float32)
    try:
        region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    except (OSError, ValueError):
        return np.empty(shape, np.float32)
    # The array (and the tensor made from it) keeps the mapping alive; it is unmapped when
    # the last of them goes.
    return np.frombuffer(region, np.float32).reshape(shape)


def return_freed_memory() -> None:
    """Hand freed buffers back to the system now (glibc only; elsewhere nothing to do).

    glibc keeps what a thread frees in that thread's arena, and after the first large free
    it serves buffers of an image's size from the arenas instead of fresh mappings: the
    run's decoder thread (``runner.Decoder``) would keep the freed buffers of its decodes
    resident. Benchmark 4 (6 images of 2048x2048): the peak 1.55 x the output without this,
    1.33-1.38 with it. Well under a millisecond once trimmed.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # another C library (musl): nothing to trim
        return None
