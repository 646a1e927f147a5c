"""Every input rule of the vendor's reference, checked before any request is sent.

``validate(request)`` raises ``ValidationError(parameter, problem, allowed=...)`` on the
first broken rule and otherwise returns notes for the caller to show. It sends nothing,
decodes no pixels (Pillow reads image headers only), and is fast enough for ComfyUI's
``VALIDATE_INPUTS``.

Over-long prompts are refused rather than sent: the service silently cuts a prompt after
800 characters (a negative prompt after 500) and bills the image made from the rest, so
the user would pay for a picture of a prompt they did not write. The message gives the
length, the limit and how many characters to remove. Characters are counted as Python
counts them (code points): the reference counts each Chinese character, letter, digit or
symbol as one.

Edit inputs given as http(s) URLs are passed through unchecked (the service fetches
them); ``oss://`` names get a note (they need the Beijing temporary storage). A model id
that is not in the table is checked only against its family's common rules
(``models.spec_for``) and gets a note.
"""
from __future__ import annotations

import base64
import binascii
import re

from .errors import ValidationError
from .models import (
    EDIT_CUSTOM_SIZE_RANGE,
    EDIT_IMAGES_MAX,
    EDIT_IMAGES_MIN,
    EDIT_INPUT_FORMATS,
    EDIT_INPUT_MAX_BYTES,
    EDIT_INPUT_SIDE_MAX,
    EDIT_INPUT_SIDE_MIN,
    IMAGE_EDIT,
    NEGATIVE_PROMPT_MAX_CHARS,
    PROMPT_MAX_CHARS,
    SEED_MAX,
    SEED_MIN,
    TEXT_TO_IMAGE,
    ModelSpec,
    spec_for,
)

_SIZE_PATTERN = re.compile(r"^(\d+)\*(\d+)$")
_DATA_URI_PATTERN = re.compile(r"^data:([^;,]+);base64,", re.IGNORECASE)

_FORMAT_NAMES = "JPG/JPEG, PNG, BMP, TIFF, WEBP"


def validate(request) -> list[str]:
    """Check a ``TextToImageRequest`` or ``ImageEditRequest``; return notes, raise on error."""
    spec = spec_for(request.model, request.family)
    notes: list[str] = []
    if not spec.known:
        notes.append(
            f"model {request.model!r} is not in the pack's table; its limits (sizes, number "
            "of images, rate limits) and price are unknown, so only the rules common to "
            f"{spec.family} models were checked and the service decides the rest")
    _check_text("prompt", request.prompt, PROMPT_MAX_CHARS, required=True)
    _check_text("negative_prompt", request.negative_prompt, NEGATIVE_PROMPT_MAX_CHARS,
                required=False)
    _check_n(request.n, spec)
    _check_seed(request.seed)
    _check_flag("watermark", request.watermark, optional=False)
    _check_prompt_extend(request.prompt_extend, spec, notes,
                         optional=request.family == IMAGE_EDIT)
    if request.family == TEXT_TO_IMAGE:
        _check_text_to_image_size(request.size, spec)
    else:
        _check_edit_size(request.size, request.n, spec)
        notes.extend(_check_images(request.images))
    return notes


def _check_text(name: str, value, limit: int, *, required: bool) -> None:
    if not isinstance(value, str):
        raise ValidationError(name, f"must be text, not {type(value).__name__}")
    if required and not value.strip():
        raise ValidationError(name, "is empty", hint="Describe the image you want.")
    length = len(value)
    if length > limit:
        excess = length - limit
        raise ValidationError(
            name, f"is {length} characters long, over the limit of {limit} (the service would "
                  f"silently drop the last {excess} and bill an image of the rest)",
            hint=f"Shorten it by at least {excess} characters; every Chinese character, "
                 "letter, digit, space or symbol counts as one.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_n(n, spec: ModelSpec) -> None:
    allowed = f"1 to {spec.max_images}" if spec.max_images > 1 else "1"
    if not _is_int(n) or not 1 <= n <= spec.max_images:
        hint = ""
        if spec.family == IMAGE_EDIT and spec.max_images == 1:
            hint = "qwen-image-edit-plus makes up to 6 images per call."
        elif spec.family == TEXT_TO_IMAGE:
            hint = "Run the request several times (with different seeds) for more images."
        raise ValidationError("n", f"{n!r} images asked for; {spec.id} makes {allowed} per call",
                              allowed=allowed, hint=hint)


def _check_seed(seed) -> None:
    if seed is None:
        return
    if not _is_int(seed) or not SEED_MIN <= seed <= SEED_MAX:
        raise ValidationError("seed", f"{seed!r} is out of range",
                              allowed=f"a whole number from {SEED_MIN} to {SEED_MAX}, or None "
                                      "for a random seed")


def _check_flag(name: str, value, *, optional: bool) -> None:
    if isinstance(value, bool) or (optional and value is None):
        return
    raise ValidationError(name, f"must be true or false, not {value!r}")


def _check_prompt_extend(value, spec: ModelSpec, notes: list[str], *, optional: bool) -> None:
    _check_flag("prompt_extend", value, optional=optional)
    if spec.prompt_extend or value is None:
        return
    if value:
        raise ValidationError(
            "prompt_extend", f"{spec.id} does not take prompt rewriting",
            allowed="None (not sent) or false",
            hint="Use qwen-image-edit-plus for prompt rewriting.")
    notes.append(f"prompt_extend is not sent: {spec.id} does not take it")


def _parse_size(name: str, size) -> tuple[int, int]:
    match = _SIZE_PATTERN.match(size) if isinstance(size, str) else None
    if not match:
        raise ValidationError(name, f"{size!r} is not written as width*height",
                              allowed="e.g. 1024*1536 (an asterisk between the numbers)")
    return int(match.group(1)), int(match.group(2))


def _check_text_to_image_size(size, spec: ModelSpec) -> None:
    if not spec.sizes:
        _parse_size("size", size)
        return
    if size not in spec.sizes:
        raise ValidationError("size", f"{size!r} is not one of {spec.id}'s output sizes",
                              allowed=list(spec.sizes))


def _check_edit_size(size, n, spec: ModelSpec) -> None:
    if size is None:
        return
    if not spec.custom_size:
        raise ValidationError(
            "size", f"{spec.id} does not take an output size; it keeps the last input "
                    "image's aspect ratio near 1024*1024",
            allowed="None (not sent)", hint="Use qwen-image-edit-plus to choose the size.")
    width, height = _parse_size("size", size)
    low, high = EDIT_CUSTOM_SIZE_RANGE
    if not (low <= width <= high and low <= height <= high):
        raise ValidationError("size", f"{size} has a side outside {low}-{high} pixels",
                              allowed=f"width*height with both from {low} to {high}")
    if n != 1:
        raise ValidationError(
            "size", f"can be set only when n is 1 (the service refuses it otherwise); n is {n}",
            hint="Set n to 1, or leave size empty to keep the input's aspect ratio.")


def _check_images(images) -> list[str]:
    if isinstance(images, (str, bytes, bytearray)) or not isinstance(images, (list, tuple)):
        raise ValidationError("images", "must be a list of 1 to 3 images",
                              allowed=f"{EDIT_IMAGES_MIN} to {EDIT_IMAGES_MAX} images")
    if not EDIT_IMAGES_MIN <= len(images) <= EDIT_IMAGES_MAX:
        raise ValidationError("images", f"{len(images)} images given",
                              allowed=f"{EDIT_IMAGES_MIN} to {EDIT_IMAGES_MAX} images")
    notes: list[str] = []
    for index, item in enumerate(images, start=1):
        name = f"image {index}"
        if isinstance(item, (bytes, bytearray, memoryview)):
            _check_image_bytes(name, bytes(item))
        elif isinstance(item, str):
            notes.extend(_check_image_string(name, item))
        else:
            raise ValidationError(name, f"is a {type(item).__name__}",
                                  allowed="encoded image bytes, an http(s) URL, a data: URI "
                                          "or an oss:// name")
    return notes


def _check_image_string(name: str, value: str) -> list[str]:
    lowered = value[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return []
    if lowered.startswith("oss://"):
        return [f"{name} is an oss:// name: it works only in the Beijing region, with the "
                "model it was uploaded for, within 48 hours of the upload"]
    match = _DATA_URI_PATTERN.match(value)
    if not match:
        raise ValidationError(
            name, "is text that is not an http(s) URL, a data:<mime>;base64 URI or an oss:// name",
            hint="Pass the image file's bytes instead; the pack encodes them.")
    if len(value) > EDIT_INPUT_MAX_BYTES:
        raise ValidationError(
            name, f"is a data URI of {len(value)} bytes, over the service's limit of "
                  f"{EDIT_INPUT_MAX_BYTES} bytes per data-URI item",
            hint="Re-encode the image smaller (images.fit_encoding makes a JPEG that fits) or "
                 "pass an http(s) URL.")
    try:
        data = base64.b64decode(value[match.end():], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(name, "is a data URI whose base64 part is not valid") from None
    fmt = _check_image_bytes(name, data)
    from .images import format_of_mime

    declared = format_of_mime(match.group(1))
    if declared != fmt:
        raise ValidationError(
            name, f"is a data URI that says {match.group(1)} but holds a {fmt} image",
            hint="Build it with images.to_data_uri, which takes the type from the bytes.")
    return []


def _check_image_bytes(name: str, data: bytes) -> str:
    from .images import MIME_BY_FORMAT, data_uri_length, inspect_image

    try:
        fmt, width, height = inspect_image(data)
    except ValueError as exc:
        raise ValidationError(name, str(exc), allowed=_FORMAT_NAMES) from None
    if fmt not in EDIT_INPUT_FORMATS:
        raise ValidationError(name, f"is a {fmt} image", allowed=_FORMAT_NAMES,
                              hint="Convert it to PNG or JPEG.")
    if not (EDIT_INPUT_SIDE_MIN <= width <= EDIT_INPUT_SIDE_MAX
            and EDIT_INPUT_SIDE_MIN <= height <= EDIT_INPUT_SIDE_MAX):
        raise ValidationError(
            name, f"is {width}x{height} pixels; each side must be from {EDIT_INPUT_SIDE_MIN} "
                  f"to {EDIT_INPUT_SIDE_MAX}",
            hint="Resize it (keeping its aspect ratio) before sending.")
    if len(data) > EDIT_INPUT_MAX_BYTES:
        raise ValidationError(
            name, f"is {len(data)} bytes, over the 10 MB limit ({EDIT_INPUT_MAX_BYTES} bytes)",
            hint="Re-encode it as JPEG or WEBP (images.fit_encoding does it), or pass an "
                 "http(s) URL.")
    uri_length = data_uri_length(len(data), MIME_BY_FORMAT[fmt])
    if uri_length > EDIT_INPUT_MAX_BYTES:
        raise ValidationError(
            name, f"is {len(data)} bytes; as a data URI (base64 adds a third) it would be "
                  f"{uri_length} bytes, over the service's limit of {EDIT_INPUT_MAX_BYTES} "
                  "bytes per data-URI item",
            hint="Re-encode it as JPEG or WEBP (images.fit_encoding does it), or pass an "
                 "http(s) URL.")
    return fmt
