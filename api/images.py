"""Encoded image helpers: identify the real format, build data URIs, fit the size limit.

Pillow reads only the header here (``Image.open`` is lazy), so checking an input costs
microseconds whatever its size; pixels are decoded only when ``fit_encoding`` must
re-encode an image that is too large to send.
"""
from __future__ import annotations

import base64
import io
import math

from PIL import Image, UnidentifiedImageError

from .models import EDIT_INPUT_MAX_BYTES

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
        buffer = io.BytesIO()
        flat.save(buffer, "JPEG", quality=quality, optimize=True)
        candidate = buffer.getvalue()
        if data_uri_length(len(candidate), "image/jpeg") <= max_bytes:
            return candidate
    raise ValueError(f"the image does not fit in {max_bytes} bytes even as a JPEG of quality "
                     f"{_JPEG_QUALITIES[-1]}; make it smaller or pass an http(s) URL")


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
