"""Encoded image helpers: identify the real format, build data URIs, fit the size limits,
encode RGB pixel arrays losslessly and decode results to their colour channels and alpha.

Pillow reads only the header when checking (``Image.open`` is lazy), so checking an input
costs microseconds whatever its size; pixels are decoded only when an image must be
re-encoded. numpy is imported by the pixel functions only: the client and the command line
never need it.
"""
from __future__ import annotations

import base64
import io
import logging
import math
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from .catalog.specs import EDIT_INPUT_MAX_BYTES, EDIT_INPUT_SIDE_MAX, EDIT_INPUT_SIDE_MIN
from .errors import ValidationError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# The formats the edit models take, with the media type the reference pairs with each.
# Pillow names a multi-picture JPEG (from many cameras) "MPO"; it is a JPEG file.
MIME_BY_FORMAT = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "WEBP": "image/webp",
}
_FORMAT_BY_MIME = {"image/jpg": "JPEG", **{m: f for f, m in MIME_BY_FORMAT.items() if f != "MPO"}}

# JPEG qualities tried, best first, when an image has to shrink to fit the size limit.
_JPEG_QUALITIES = (95, 90, 85, 80, 70, 60)

# Stronger lossless codings ``shrink_to_fit`` tries first, each only when the data URI is at
# most ``reach`` times the room: zlib's top level saves a few percent over a default PNG and
# lossless WebP up to about a third, while WebP costs seconds on a large image.
_LOSSLESS_LADDER = (
    ("PNG", {"compress_level": 9}, 1.1, "maximally compressed PNG"),
    ("WEBP", {"lossless": True, "quality": 25, "method": 1}, 1.5, "lossless WebP"),
)
_SHRINK_JPEG_QUALITY = 95


# Decoded results above this many pixels are kept as sent but never decoded (not returned,
# not reused from the store, no preview): 16 MP covers the largest outputs measured (3.0:
# 2560x2560 = 6.6 MP; edits without a size: 1520x2736 = 4.2 MP) with a wide margin.
MAX_RESULT_PIXELS = 16 * 1024 * 1024


def over_pixel_cap(width: int, height: int) -> bool:
    """Whether an image of ``width`` x ``height`` is too large to decode safely."""
    return width * height > MAX_RESULT_PIXELS


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` from the header of encoded image bytes.

    ``format`` is Pillow's name (``"PNG"``, ``"JPEG"``, ...; MPO is reported as JPEG).
    Raises ``ValueError`` naming the problem when the bytes are not an image Pillow knows.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, width, height = image.format, image.width, image.height
    except Image.DecompressionBombError as exc:
        raise ValueError(f"the image is too large to open safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        start = bytes(data[:16])
        raise ValueError(f"not an image Pillow can read ({len(data)} bytes starting "
                         f"{start!r}: {exc})") from None
    return ("JPEG" if fmt == "MPO" else fmt), width, height


def mime_type(fmt: str) -> str:
    try:
        return MIME_BY_FORMAT[fmt]
    except KeyError:
        raise ValueError(f"{fmt} images cannot be sent; use "
                         f"{', '.join(f for f in MIME_BY_FORMAT if f != 'MPO')}") from None


def format_of_mime(mime: str) -> str | None:
    return _FORMAT_BY_MIME.get(mime.strip().lower())


def data_uri_length(byte_count: int, mime: str) -> int:
    """Length of ``data:<mime>;base64,<...>`` for ``byte_count`` bytes, without building it."""
    return len(f"data:{mime};base64,") + 4 * math.ceil(byte_count / 3)


def to_data_uri(image_bytes: bytes) -> str:
    """``data:<mime>;base64,...`` with the media type of the bytes' real format."""
    fmt, _, _ = inspect_image(image_bytes)
    encoded = base64.b64encode(image_bytes).decode("ascii")
    return f"data:{mime_type(fmt)};base64,{encoded}"


def fits(image_bytes: bytes, max_bytes: int = EDIT_INPUT_MAX_BYTES) -> bool:
    """Whether the bytes and their data URI both stay within ``max_bytes``."""
    fmt, _, _ = inspect_image(image_bytes)
    return (len(image_bytes) <= max_bytes
            and data_uri_length(len(image_bytes), mime_type(fmt)) <= max_bytes)


def fit_encoding(image_bytes: bytes, max_bytes: int = EDIT_INPUT_MAX_BYTES) -> bytes:
    """The image itself if it fits the per-item limit, else a JPEG at the best quality that does.

    The service refuses a data URI over 10485760 bytes, and base64 adds a third: a PNG of
    a large photo easily crosses it. JPEG keeps the pixel size (so the side limits still
    hold) and the composition; transparency is flattened onto white, as JPEG has none.
    Raises ``ValueError`` when even the lowest quality tried is too large.
    """
    if fits(image_bytes, max_bytes):
        return image_bytes
    with Image.open(io.BytesIO(image_bytes)) as image:
        flat = flatten(image)
    for quality in _JPEG_QUALITIES:
        candidate = _encoded(flat, "JPEG", quality=quality, optimize=True)
        if data_uri_length(len(candidate), "image/jpeg") <= max_bytes:
            return candidate
    raise ValueError(f"the image does not fit in {max_bytes} bytes even as a JPEG of quality "
                     f"{_JPEG_QUALITIES[-1]}; make it smaller or pass an http(s) URL")


def shrink_to_fit(image_bytes: bytes, max_uri_bytes: int) -> tuple[bytes, str]:
    """Bytes whose data URI takes at most ``max_uri_bytes``, and what was done to them.

    The description is empty when the image already fits. Lossless first (a maximally
    compressed PNG, then lossless WebP: the pixels are kept), then downscaling with Lanczos,
    aspect ratio kept, as PNG, or as JPEG (quality 95) for a JPEG, whose pixels are lossy
    already. Raises ``ValueError`` when a side would have to go below the service's minimum.
    """
    fmt, width, height = inspect_image(image_bytes)
    length = data_uri_length(len(image_bytes), mime_type(fmt))
    if length <= max_uri_bytes:
        return image_bytes, ""
    with Image.open(io.BytesIO(image_bytes)) as opened:
        source = _plain_mode(opened)
    if fmt != "JPEG":
        for out_fmt, options, reach, described in _LOSSLESS_LADDER:
            if length > reach * max_uri_bytes:
                continue
            data = _encoded(source, out_fmt, **options)
            if data_uri_length(len(data), mime_type(out_fmt)) <= max_uri_bytes:
                return data, f"re-encoded as {described} ({len(data)} bytes), pixels unchanged"
    out_fmt = "JPEG" if fmt == "JPEG" else "PNG"
    options = {"quality": _SHRINK_JPEG_QUALITY} if out_fmt == "JPEG" else {}
    size = (width, height)
    while length > max_uri_bytes:
        # The byte count scales roughly with the pixel count; 0.95 leaves room for noise.
        scale = math.sqrt(max_uri_bytes / length) * 0.95
        size = (int(size[0] * scale), int(size[1] * scale))
        if min(size) < EDIT_INPUT_SIDE_MIN:
            raise ValueError(f"it cannot be made small enough ({max_uri_bytes} bytes as a data "
                             f"URI) without a side below {EDIT_INPUT_SIDE_MIN} px")
        data = _encoded(source.resize(size, Image.Resampling.LANCZOS), out_fmt, **options)
        length = data_uri_length(len(data), mime_type(out_fmt))
    return data, (f"downscaled from {width}x{height} to {size[0]}x{size[1]} px "
                  f"({out_fmt}, {len(data)} bytes)")


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _plain_mode(image: Image.Image) -> Image.Image:
    """The decoded image in a mode every encoder and ``resize`` takes (L, LA, RGB, RGBA)."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image.copy()
    transparent = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if transparent else "RGB")


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white: the service documents no
    transparency handling, and white is what a cut-out on a page or product shot expects."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def decode_pixels(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """Encoded image bytes -> (uint8 [H, W, 3], uint8 alpha [H, W] or None).

    The colour channels as served, never composited: a transparent result (the Qwen-Image
    2.1 family makes RGBA images) keeps the colours under its transparent pixels, and its
    alpha comes back separately; None when the file has no transparency. ``ValueError``
    before decoding anything over ``MAX_RESULT_PIXELS``.
    """
    import numpy as np

    image = Image.open(io.BytesIO(data))
    if over_pixel_cap(*image.size):
        raise ValueError(f"the image is {image.width}x{image.height}, over the "
                         f"{MAX_RESULT_PIXELS}-pixel cap; it is not decoded")
    if image.mode == "RGB":
        return np.asarray(image), None  # no extra copy
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        pixels = np.asarray(image.convert("RGBA"))
        return pixels[..., :3], pixels[..., 3]
    return np.asarray(image.convert("RGB")), None


# -- RGB pixels -> an input the service accepts ---------------------------------------------

@dataclass
class Encoded:
    data: bytes
    format: str  # "PNG" or "WEBP"
    width: int
    height: int
    notes: list[str] = field(default_factory=list)


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


_ITEM_LIMIT = "the service's 10 MB data-URI limit"


def encode_image(pixels: np.ndarray, name: str, *,
                 max_uri_bytes: int = EDIT_INPUT_MAX_BYTES) -> Encoded:
    """One uint8 [H, W, 3] image -> PNG (or lossless WebP) bytes the service accepts.

    Sides outside 384-3072 px are resized (Lanczos, aspect kept). The fast PNG first; only
    when its data URI is over ``max_uri_bytes`` does ``shrink_to_fit``'s ladder start, from
    Pillow's smaller default PNG: stronger lossless codings, then downscaling. Never JPEG,
    which ``fit_encoding`` would fall back to and which changes every pixel. Each change
    is a note (and a log line) naming ``name``.
    """
    import numpy as np

    notes: list[str] = []
    height, width = pixels.shape[:2]
    size = fit_sides(width, height, name)
    if size != (width, height):
        notes.append(f"{name}: resized from {width}x{height} to {size[0]}x{size[1]} "
                     f"px (the service takes {EDIT_INPUT_SIDE_MIN}-{EDIT_INPUT_SIDE_MAX} px per "
                     "side).")
        pixels = np.asarray(Image.fromarray(pixels, "RGB").resize(size, Image.LANCZOS))
        width, height = size
    data, fmt = fast_png(pixels), "PNG"
    if data_uri_length(len(data), mime_type(fmt)) > max_uri_bytes:
        first = _encoded(Image.fromarray(pixels, "RGB"), "PNG")
        try:
            data, done = shrink_to_fit(first, max_uri_bytes)
        except ValueError as error:
            raise ValidationError(name, f"cannot be encoded within {_ITEM_LIMIT}: {error}",
                                  hint="Send a smaller or less detailed image.") from None
        if done:
            notes.append(f"{name}: its PNG ({len(first)} bytes) is over {_ITEM_LIMIT}; {done}.")
        fmt, width, height = inspect_image(data)
    for note in notes:
        log.info(note)
    return Encoded(data, fmt, width, height, notes)


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
    works without the GIL). The file is an ordinary 8-bit RGB PNG, lossless like any.
    """
    import numpy as np

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
