"""Encoded image helpers: identify the real format, build data URIs, fit the size limits.

Pillow reads only the header here (``Image.open`` is lazy), so checking an input costs
microseconds whatever its size; pixels are decoded only when ``fit_encoding`` or
``shrink_to_fit`` must re-encode an image that is too large to send.
"""
from __future__ import annotations

import base64
import io
import math

from PIL import Image, UnidentifiedImageError

from .models import EDIT_INPUT_MAX_BYTES, EDIT_INPUT_SIDE_MIN

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
        flat = _flatten(image)
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


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
