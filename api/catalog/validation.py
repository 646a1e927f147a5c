"""Every official input rule of the model table, checked before any request is sent.

``validate(request, region=None)`` raises ``ValidationError(parameter, problem,
allowed=..., hint=...)`` on the first broken rule and otherwise returns ``Checked``: the
model's spec, the request as it should be sent, and notes for the caller to show. It
sends nothing, decodes no pixels (Pillow reads image headers only), and is fast enough for
ComfyUI's ``VALIDATE_INPUTS``.

Only official rules refuse. A limit only third parties report (``ModelSpec.reported``)
gives a note and the service decides; where a page and measurements disagree, the looser
value refuses and the stricter one notes. A parameter the model does not take is left out
of ``Checked.request``, with a note when it was set to anything but its default. Token
limits are never refusals (the count here is an estimate); character limits are: the
service silently cuts a longer prompt and bills an image of the rest.

Edit inputs given as http(s) URLs pass unchecked (the service fetches them); ``oss://``
names get a note (they need the Beijing temporary storage).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError
from .models import spec_for
from .regions import REGIONS
from .specs import (
    IMAGE_EDIT,
    PARAMETER_DEFAULTS,
    PROMPT_EXTEND_MODES,
    SEED_MAX,
    SEED_MIN,
    ModelSpec,
    area_text,
)

_MODEL_ID = re.compile(r"[A-Za-z0-9._-]+")
MODEL_ID_CHARS = "letters, digits, '.', '_' and '-'"
_SIZE_PATTERN = re.compile(r"^(\d+)\*(\d+)$")
_LOOSE_SIZE = re.compile(r"^\s*(\d+)\s*[*xX×]\s*(\d+)\s*$")
_DATA_URI_PATTERN = re.compile(r"^data:([^;,]+);base64,", re.IGNORECASE)
_SHRINK_HINT = ("Re-encode it as JPEG or WEBP (images.fit_encoding makes one that fits), or "
                "pass an http(s) URL.")
_SIZE_HINT = "Choose a size within these limits, or leave size empty for the model's default."
# Han, kana, hangul and full-width forms: about one token each; other text about four
# characters a token.
_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]")


@dataclass
class Checked:
    """A request that passed: ``spec``, ``request`` (as it should be sent) and ``notes``.

    ``request`` has whole numbers as ``int``, sizes as the model documents them, and
    ``None`` for every parameter the model does not take.
    """

    spec: ModelSpec
    request: Any
    notes: list[str] = field(default_factory=list)


def normalize_size(text: str | None) -> str | None:
    """``"W*H"`` from ``W*H``, ``WxH``, ``W X H`` or ``W×H``; None from None, "" or "auto"
    (the model's default). Raises ``ValidationError`` for anything else."""
    if text is None or not str(text).strip() or str(text).strip().lower() == "auto":
        return None
    match = _LOOSE_SIZE.match(str(text))
    if not match:
        raise ValidationError("size", f"{text!r} is not a size",
                              allowed="width*height, e.g. 1024*1536, 1024x1536 or auto")
    return f"{int(match.group(1))}*{int(match.group(2))}"


def check_model_id(model, parameter: str = "model") -> str:
    """``model`` if it is written as a model id is, else ``ValidationError`` naming
    ``parameter``: every id on Model Studio's model list is made of letters, digits, dots,
    underscores and dashes, and the id is shown in status lines, file names and logs. The
    message names the characters by code point, never echoing the text."""
    if isinstance(model, str) and _MODEL_ID.fullmatch(model):
        return model
    if not isinstance(model, str) or not model:
        problem = f"must be a model id, not {type(model).__name__ if model != '' else 'empty'}"
    else:
        odd = sorted({char for char in model if not _MODEL_ID.fullmatch(char)})
        shown = ", ".join(f"U+{ord(char):04X}" for char in odd[:6])
        problem = (f"holds {len(odd)} kind{'s' if len(odd) != 1 else ''} of character a model "
                   f"id never has ({shown}{', ...' if len(odd) > 6 else ''})")
    raise ValidationError(parameter, problem, allowed=MODEL_ID_CHARS,
                          hint="Copy the id from the model list of Model Studio.")


def estimate_tokens(text: str) -> int:
    """A rough token count: one per CJK character, one per four other characters."""
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


def validate(request, region: str | None = None) -> Checked:
    """Check a ``TextToImageRequest`` or ``ImageEditRequest`` (for ``region`` when given)."""
    family = request.family
    check_model_id(request.model)
    spec = spec_for(request.model, family)
    notes: list[str] = []
    if not spec.known:
        notes.append(
            f"model {request.model!r} is not in the pack's table; its limits (sizes, number "
            "of images, rate limits) and price are unknown, so only the rules common to "
            f"{family} models were checked and the service decides the rest")
    elif not spec.documented:
        notes.append(f"{spec.id}: only some of its limits are official, so the others "
                     "(listed in its unconfirmed facts) were not enforced and the service "
                     "decides them")
    if region is not None:
        _check_region(spec, region)
    request = dataclasses.replace(request, n=_whole("n", request.n),
                                  seed=None if request.seed is None
                                  else _whole("seed", request.seed))
    for rule in _RULES:
        rule(spec, request, notes)
    if family == IMAGE_EDIT:
        for index, item in enumerate(request.images, start=1):
            notes.extend(_check_image(f"image {index}", item, spec))
    notes.extend(_reported_notes(spec, request))
    return Checked(spec, _to_send(spec, request, notes), notes)


def _check_region(spec: ModelSpec, region: str) -> None:
    if spec.regions is None or region in spec.regions or region not in REGIONS:
        return
    offered = [info.label for r, info in REGIONS.items() if r in spec.regions]
    raise ValidationError(
        "region", f"{spec.id} is not offered in {REGIONS[region].label}: no "
                  "official page lists it there", allowed=offered,
        hint=f"Use a key of one of those regions (DASHSCOPE_API_REGION or the node's region), "
             f"or a model offered in {REGIONS[region].name}.")


def _whole(name: str, value) -> int:
    """``value`` as an int when it is a whole number of any numeric type (numpy ints, 1.0)."""
    if not isinstance(value, bool):
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
    raise ValidationError(name, f"must be a whole number, not {value!r} "
                                f"({type(value).__name__})", allowed="a whole number, e.g. 1",
                          hint="1.0 and numpy integers are taken as the whole number they are.")


def _set(request, name: str) -> bool:
    """Whether the caller set ``name`` to something other than its default."""
    value = getattr(request, name, None)
    if name == "negative_prompt":
        return isinstance(value, str) and bool(value.strip())
    return value is not None and value != PARAMETER_DEFAULTS[name]


def _not_taken(spec: ModelSpec, request) -> list[str]:
    taken = spec.takes_in(request.family)
    return [name for name in PARAMETER_DEFAULTS if name not in taken and _set(request, name)]


# -- the rules: each raises on an official breach and may add notes --------------------


def _check_prompts(spec: ModelSpec, request, notes: list[str]) -> None:
    prompt = request.prompt
    if not isinstance(prompt, str):
        raise ValidationError("prompt", f"must be text, not {type(prompt).__name__}")
    if not prompt.strip():
        raise ValidationError("prompt", "is empty", hint="Describe the image you want.")
    negative = request.negative_prompt
    if negative is not None and not isinstance(negative, str):
        raise ValidationError("negative_prompt", f"must be text, not {type(negative).__name__}")
    for name, text, limit in (("prompt", prompt, spec.prompt),
                              ("negative_prompt", negative, spec.negative_prompt)):
        if text is None or limit is None or name not in ("prompt", *spec.takes):
            continue
        if limit.unit == "characters":
            excess = len(text) - limit.limit
            if excess > 0:
                raise ValidationError(
                    name, f"is {len(text)} characters long, over the limit of {limit.limit} "
                          f"(the service would silently drop the last {excess} and bill an "
                          "image of the rest)",
                    hint=f"Shorten it by at least {excess} characters; every Chinese "
                         "character, letter, digit, space or symbol counts as one.")
        elif (tokens := estimate_tokens(text)) > limit.limit:
            what = ("the limit: the service drops the excess" if limit.cut
                    else "the most its page recommends")
            notes.append(f"{name} is roughly {tokens} tokens (an estimate), over {spec.id}'s "
                         f"{limit.limit} tokens, {what}; shorten it if its end matters")


def _check_numbers(spec: ModelSpec, request, notes: list[str]) -> None:
    n = request.n
    if n < 1 or (spec.n_max is not None and n > spec.n_max):
        allowed = "1" if spec.n_max == 1 else (f"1 to {spec.n_max}" if spec.n_max else "1 or more")
        hint = ""
        if spec.n_max == 1 and spec.kind == IMAGE_EDIT:
            hint = "qwen-image-edit-plus makes up to 6 images per call."
        elif spec.n_max == 1:
            hint = ("Run the request several times (with different seeds) for more images, or "
                    "use qwen-image-2.0 or qwen-image-3.0, which make up to 6 per call.")
        raise ValidationError("n", f"{n!r} images asked for; {spec.id} makes {allowed} per call",
                              allowed=allowed, hint=hint)
    seed = request.seed
    if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
        raise ValidationError("seed", f"{seed!r} is out of range",
                              allowed=f"a whole number from {SEED_MIN} to {SEED_MAX}, or None "
                                      "for a random seed")


def _check_switches(spec: ModelSpec, request, notes: list[str]) -> None:
    for name in ("prompt_extend", "enable_thinking", "watermark"):
        value = getattr(request, name)
        if value is not None and not isinstance(value, bool):
            raise ValidationError(name, f"must be true or false, not {value!r}",
                                  allowed="true, false, or None for the model's default")
    mode = request.prompt_extend_mode
    if mode is not None and mode not in PROMPT_EXTEND_MODES:
        raise ValidationError("prompt_extend_mode", f"{mode!r} is not a rewriting mode",
                              allowed=list(PROMPT_EXTEND_MODES))
    taken = spec.takes_in(request.family)
    if (mode == "agent" and request.family == IMAGE_EDIT and not spec.agent_with_images
            and "prompt_extend_mode" in taken):
        raise ValidationError(
            "prompt_extend_mode", f"'agent' cannot be used with input images ({spec.id} "
                                  "refuses it)", allowed="direct, or None",
            hint="Use 'direct' to edit; 'agent' rewriting is for text to image only.")
    if (request.enable_thinking and request.prompt_extend is False
            and {"enable_thinking", "prompt_extend"} <= taken):
        notes.append("enable_thinking has no effect: it works only with prompt_extend on")


def _check_size(spec: ModelSpec, request, notes: list[str]) -> None:
    size, rule = request.size, spec.size_rule(request.family)
    if size is None or rule is None or "size" not in spec.takes:
        return  # nothing to check, or left out with a note (_to_send)
    match = _SIZE_PATTERN.match(size) if isinstance(size, str) else None
    if not match:
        raise ValidationError("size", f"{size!r} is not written as width*height",
                              allowed="e.g. 1024*1536 (an asterisk between the numbers)",
                              hint="normalize_size() turns 1024x1536 into 1024*1536.")
    if rule.fixed:
        if size not in rule.sizes and size not in rule.aliases:
            raise ValidationError("size", f"{size!r} is not one of {spec.id}'s output sizes",
                                  allowed=[*rule.sizes, *rule.aliases],
                                  hint=f"Pick one, or leave size empty for {rule.default}.")
        return
    width, height = int(match.group(1)), int(match.group(2))
    area, ratio = width * height, max(width, height) / max(1, min(width, height))
    problem = ""
    if rule.side and not all(rule.side[0] <= side <= rule.side[1] for side in (width, height)):
        problem = f"{size} has a side outside {rule.side[0]}-{rule.side[1]} pixels"
    elif rule.min_area and area < rule.min_area:
        problem = f"{size} is {area:,} pixels, below the smallest area of "
        problem += area_text(rule.min_area)
    elif rule.max_area and area > rule.max_area:
        problem = f"{size} is {area:,} pixels, over the largest area of "
        problem += area_text(rule.max_area)
    elif rule.max_aspect and ratio > rule.max_aspect:
        problem = f"{size} has an aspect ratio of {ratio:.2f}:1, over {rule.max_aspect:g}:1"
    if problem:
        raise ValidationError("size", problem, allowed=rule.describe(), hint=_SIZE_HINT)
    if spec.needs_n1 and request.n != 1:
        raise ValidationError(
            "size", f"can be set only when n is 1 (the service refuses it otherwise); n is "
                    f"{request.n}",
            hint="Set n to 1, or leave size empty to keep the input's aspect ratio.")
    if rule.multiple and (width % rule.multiple or height % rule.multiple):
        step = rule.multiple
        notes.append(f"size {size}: the service rounds each side to the nearest multiple of "
                     f"{step}, so the output will be {round(width / step) * step}*"
                     f"{round(height / step) * step}")


def _check_image_count(spec: ModelSpec, request, notes: list[str]) -> None:
    if request.family != IMAGE_EDIT:
        return
    low, high = spec.inputs.count
    allowed = f"{low} to {high} images" if high else f"at least {low} image"
    images = request.images
    if isinstance(images, (str, bytes, bytearray)) or not isinstance(images, (list, tuple)):
        raise ValidationError("images", f"must be a list of {allowed}", allowed=allowed)
    if len(images) < low or (high is not None and len(images) > high):
        raise ValidationError("images", f"{len(images)} images given", allowed=allowed)


_RULES = (_check_prompts, _check_numbers, _check_switches, _check_size, _check_image_count)


def _reported_notes(spec: ModelSpec, request) -> list[str]:
    """Notes for the limits in ``spec.reported`` that the request breaks (never refusals)."""
    notes: list[str] = []
    hard_not_taken = set(_not_taken(spec, request))
    for reported in spec.reported:
        stricter = dataclasses.replace(spec, **reported.changes)
        for rule in _RULES:
            try:
                rule(stricter, request, [])
            except ValidationError as error:
                notes.append(f"Unconfirmed limit: {error.detail} {reported.why}")
        for name in _not_taken(stricter, request):
            if name not in hard_not_taken:
                notes.append(f"Unconfirmed limit: {name}: {spec.id} may ignore or refuse it. "
                             f"{reported.why}")
    return list(dict.fromkeys(notes))


def _to_send(spec: ModelSpec, request, notes: list[str]):
    """``request`` as sent: blank and untaken parameters None, old size spellings renamed."""
    changes: dict[str, Any] = {}
    if isinstance(request.negative_prompt, str) and not request.negative_prompt.strip():
        changes["negative_prompt"] = None
    for name in _not_taken(spec, request):
        notes.append(f"{name} is not sent: {spec.id} does not take it")
    for name in PARAMETER_DEFAULTS:
        if name not in spec.takes_in(request.family) and getattr(request, name) is not None:
            changes[name] = None
    rule = spec.size_rule(request.family)
    if rule is not None and request.size in rule.aliases and "size" not in changes:
        changes["size"] = rule.aliases[request.size]
        notes.append(f"size {request.size} is sent as {changes['size']}, the spelling "
                     f"{spec.id} documents")
    return dataclasses.replace(request, **changes) if changes else request


# -- input images ------------------------------------------------------------------------


def _format_names(formats) -> str:
    return ", ".join("JPG/JPEG" if fmt == "JPEG" else fmt for fmt in formats)


def _check_image(name: str, item, spec: ModelSpec) -> list[str]:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _check_image_bytes(name, bytes(item), spec)[1]
    if not isinstance(item, str):
        raise ValidationError(name, f"is a {type(item).__name__}",
                              allowed="encoded image bytes, an http(s) URL, a data: URI or an "
                                      "oss:// name")
    lowered = item[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return []
    if lowered.startswith("oss://"):
        return [f"{name} is an oss:// name: it works only in the Beijing region, with the "
                "model it was uploaded for, within 48 hours of the upload"]
    match = _DATA_URI_PATTERN.match(item)
    if not match:
        raise ValidationError(
            name, "is text that is not an http(s) URL, a data:<mime>;base64 URI or an oss:// name",
            hint="Pass the image file's bytes instead; the pack encodes them.")
    limit = spec.inputs.max_bytes
    if len(item) > limit:
        raise ValidationError(
            name, f"is a data URI of {len(item)} bytes, over the service's limit of {limit} "
                  "bytes per data-URI item",
            hint=_SHRINK_HINT)
    try:
        data = base64.b64decode(item[match.end():], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(name, "is a data URI whose base64 part is not valid") from None
    fmt, notes = _check_image_bytes(name, data, spec)
    from ..images import format_of_mime

    if format_of_mime(match.group(1)) != fmt:
        raise ValidationError(
            name, f"is a data URI that says {match.group(1)} but holds a {fmt} image",
            hint="Build it with images.to_data_uri, which takes the type from the bytes.")
    return notes


def _check_image_bytes(name: str, data: bytes, spec: ModelSpec) -> tuple[str, list[str]]:
    from ..images import MIME_BY_FORMAT, data_uri_length, inspect_image

    rule = spec.inputs
    sendable = [fmt for fmt in rule.formats if fmt in MIME_BY_FORMAT]
    try:
        fmt, width, height = inspect_image(data)
    except ValueError as exc:
        raise ValidationError(name, str(exc), allowed=_format_names(sendable)) from None
    if fmt not in sendable:  # GIF: taken by newer models, not yet encoded by the pack
        but = f", which {spec.id} takes but the pack cannot send yet" if fmt in rule.formats else ""
        raise ValidationError(name, f"is a {fmt} image{but}", allowed=_format_names(sendable),
                              hint="Convert it to PNG or JPEG.")
    notes = []
    low, high = rule.side or (0, math.inf)
    if not (low <= width <= high and low <= height <= high):
        problem = f"is {width}x{height} pixels; each side must be from {low} to {high}"
        if rule.side_required:
            raise ValidationError(name, problem,
                                  hint="Resize it (keeping its aspect ratio) before sending.")
        notes.append(f"{name} is {width}x{height} pixels; {spec.id}'s page recommends sides "
                     f"from {low} to {high}, so the service may refuse or resize it")
    if len(data) > rule.max_bytes:
        raise ValidationError(
            name, f"is {len(data)} bytes, over the 10 MB limit ({rule.max_bytes} bytes)",
            hint=_SHRINK_HINT)
    uri_length = data_uri_length(len(data), MIME_BY_FORMAT[fmt])
    if uri_length > rule.max_bytes:
        raise ValidationError(
            name, f"is {len(data)} bytes; as a data URI (base64 adds a third) it would be "
                  f"{uri_length} bytes, over the service's limit of {rule.max_bytes} bytes "
                  "per data-URI item",
            hint=_SHRINK_HINT)
    return fmt, notes
