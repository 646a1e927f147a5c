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

Speed and memory (tests/benchmarks.py measures them):

- The first PNG of an input is written here, not by Pillow: every row filtered with PNG's
  "Up" filter (one vectorised subtraction) and deflated at level 1, in bands compressed on
  several cores at once. Each band uses run-length matching (what photographs compress
  best with, and far faster) unless a sample of it compresses better with ordinary
  matching (drawings, text, repeated patterns). It is a standard PNG, lossless like any;
  only when it is over the limit does the slower, stronger ladder below start, from
  Pillow's default PNG, exactly as before.
- Tensor -> uint8 runs frame by frame through a small reused buffer: no float copy of the
  batch, and the caller's tensor is never modified.
- PNG -> IMAGE allocates the output tensor once (its pages mapped in one call where the
  system allows it) and decodes each image straight into its slice, so the peak is the
  output plus one decoded image.
"""
from __future__ import annotations

import io
import logging
import math
import mmap
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..api.errors import ValidationError
from ..api.images import data_uri_length, inspect_image, mime_type, shrink_to_fit
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
    notes: list[str] = []
    height, width = pixels.shape[:2]
    size = fit_sides(width, height, name)
    if size != (width, height):
        notes.append(f"{name}: resized from {width}x{height} to {size[0]}x{size[1]} "
                     f"px (the service takes {EDIT_INPUT_SIDE_MIN}-{EDIT_INPUT_SIDE_MAX} px per "
                     "side).")
        pixels = np.asarray(Image.fromarray(pixels, "RGB").resize(size, Image.LANCZOS))

    data, fmt, (width, height) = _fit_limit(pixels, name, max_uri_bytes, notes)
    for note in notes:
        log.info(note)
    return Encoded(data, fmt, width, height, notes)


_ITEM_LIMIT = "the service's 10 MB data-URI limit"


def _fit_limit(pixels: np.ndarray, name: str, max_uri_bytes: int, notes: list[str]):
    """(data, format, (width, height)) of an RGB uint8 image whose data URI fits
    ``max_uri_bytes``: lossless if at all possible (api.images.shrink_to_fit's ladder)."""
    fast = fast_png(pixels)
    if _uri_length(fast, "PNG") <= max_uri_bytes:
        return fast, "PNG", (pixels.shape[1], pixels.shape[0])
    # Over the limit (rare): from Pillow's PNG, smaller than the fast one, the client's
    # stronger codings and, failing those, a downscale.
    first = _encode(Image.fromarray(pixels, "RGB"), "PNG")
    try:
        data, done = shrink_to_fit(first, max_uri_bytes)
    except ValueError as error:
        raise ValidationError(name, f"cannot be encoded within {_ITEM_LIMIT}: {error}",
                              hint="Send a smaller or less detailed image.") from None
    if done:
        notes.append(f"{name}: its PNG ({len(first)} bytes) is over {_ITEM_LIMIT}; {done}.")
    fmt, width, height = inspect_image(data)
    return data, fmt, (width, height)


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
    with Image.open(io.BytesIO(datas[0])) as first:
        width, height = first.size  # from the header; nothing decoded yet
    out = _new_output((len(datas), height, width, 3))

    def decode_into(index: int) -> str | None:
        array = _decode_rgb(datas[index])
        note = None
        if array.shape[:2] != (height, width):
            note = (f"result image {index + 1} is {array.shape[1]}x{array.shape[0]} px; resized "
                    f"to {width}x{height} px to share a batch with image 1 (the original is in "
                    "the result store).")
            array = np.asarray(Image.fromarray(array).resize((width, height), Image.LANCZOS))
        # float32 division: exactly the v/255 that survives SaveImage's 255*x truncation.
        np.divide(array, np.float32(255), out=out[index], dtype=np.float32)
        return note

    # One after the other: Pillow decodes in 64 KiB steps, each taking the GIL back, so
    # threads here wait on each other more than they gain (measured: 3x slower on 2 CPUs).
    notes = [note for note in map(decode_into, range(len(datas))) if note]
    for note in notes:
        log.warning(note)
    return torch.from_numpy(out), notes


_POPULATE_BYTES = 16 << 20  # smaller outputs (under one 1328x1328 image) as usual


def _new_output(shape: tuple[int, ...]) -> np.ndarray:
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


# -- fast lossless PNG ------------------------------------------------------------------------

def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers)
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


_WORKERS = max(1, min(8, _cpu_count()))  # threads for PNG coding
_BAND_BYTES = 2 << 20  # filtered rows deflated as one piece, at most
_PARALLEL_BYTES = 256 << 10  # below this, starting threads costs more than it saves
_IDAT_BYTES = 1 << 20  # PNG data chunk size (any size is valid; this is what most tools do)
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" level


def _chunk(tag: bytes, data) -> bytes:
    return (struct.pack(">I", len(data)) + tag + bytes(data)
            + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag))))


def _deflate_band(band: memoryview, last: bool) -> bytes:
    """Raw deflate of one band; every band but the last ends on a byte boundary, unfinished,
    so that the bands joined are one valid deflate stream (as pigz does)."""
    # Run-length matching suits photographs (1 byte back: the filtered rows are residues);
    # ordinary matching finds the repeats of drawings, text and patterns. A sample decides.
    # Four slices spread over the band, 1/64 of it in all: a blank stretch alone misleads.
    step, size = len(band) // 4, max(1024, len(band) // 256)
    samples = [band[k * step + step // 2:k * step + step // 2 + size] for k in range(4)]
    sizes = {}
    for strategy in (zlib.Z_RLE, zlib.Z_DEFAULT_STRATEGY):
        probe = zlib.compressobj(1, zlib.DEFLATED, -15, 9, strategy)
        sizes[strategy] = sum(len(probe.compress(sample)) for sample in samples) \
            + len(probe.flush())
    strategy = zlib.Z_RLE if sizes[zlib.Z_RLE] <= 1.1 * sizes[zlib.Z_DEFAULT_STRATEGY] \
        else zlib.Z_DEFAULT_STRATEGY
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15, 9, strategy)
    return compressor.compress(band) + compressor.flush(zlib.Z_FINISH if last
                                                        else zlib.Z_SYNC_FLUSH)


def fast_png(pixels: np.ndarray) -> bytes:
    """RGB uint8 [H, W, 3] -> PNG bytes, about ten times faster than Pillow's default.

    Every row uses filter type 2 (Up: the difference to the row above, row 0 against
    zeros); the filtered rows are deflated at level 1 in bands on several threads (zlib
    works without the GIL). The file is an ordinary 8-bit RGB PNG.
    """
    height, width, _ = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), np.uint8)
    filtered[:, 0] = 2
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # wraps modulo 256, as PNG wants
    data = memoryview(filtered).cast("B")
    row_bytes = filtered.shape[1]
    count = math.ceil(len(data) / _BAND_BYTES)
    if _WORKERS > 1 and len(data) >= _PARALLEL_BYTES:
        count = math.ceil(count / _WORKERS) * _WORKERS  # the same share for every thread
    band_rows = math.ceil(height / min(count, height))
    starts = list(range(0, height, band_rows))
    bands = [(data[s * row_bytes:min(height, s + band_rows) * row_bytes], s == starts[-1])
             for s in starts]
    if len(bands) > 1:
        with ThreadPoolExecutor(min(len(bands), _WORKERS),
                                thread_name_prefix="qwenimg-png") as pool:
            checksum = pool.submit(zlib.adler32, data)
            parts = list(pool.map(lambda band: _deflate_band(*band), bands))
            checksum = checksum.result()
    else:
        parts, checksum = [_deflate_band(*bands[0])], zlib.adler32(data)
    stream = b"".join([_ZLIB_HEADER, *parts, struct.pack(">I", checksum)])
    view = memoryview(stream)
    return b"".join([
        _SIGNATURE,
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
        *(_chunk(b"IDAT", view[i:i + _IDAT_BYTES]) for i in range(0, len(view), _IDAT_BYTES)),
        _chunk(b"IEND", b""),
    ])
