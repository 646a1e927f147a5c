"""The Qwen-Image models the pack knows, as data.

Every limit and price here comes from the vendor's API reference (text to image and image
edit pages, "計費與限流"). A new model is one new row. A model id that is not in the table
is still usable: ``spec_for`` builds a spec from the rules common to its family and marks it
``known=False`` so callers can say that its limits are unknown to the pack.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TEXT_TO_IMAGE = "text-to-image"
IMAGE_EDIT = "image-edit"

SYNC = "sync"  # POST /services/aigc/multimodal-generation/generation
ASYNC = "async"  # POST /services/aigc/text2image/image-synthesis + GET /tasks/{id}

SINGAPORE = "ap-southeast-1"
BEIJING = "cn-beijing"

# Text-to-image output sizes of the reference, with the aspect ratio it names for each.
TEXT_TO_IMAGE_SIZES = {
    "1664*928": "16:9",
    "1472*1140": "4:3",
    "1328*1328": "1:1",
    "1140*1472": "3:4",
    "928*1664": "9:16",
}
DEFAULT_TEXT_TO_IMAGE_SIZE = "1328*1328"
# Newer vendor pages spell the 4:3 and 3:4 sizes this way; the service takes both.
TEXT_TO_IMAGE_SIZE_ALIASES = {"1472*1104": "4:3", "1104*1472": "3:4"}

PROMPT_MAX_CHARS = 800
NEGATIVE_PROMPT_MAX_CHARS = 500
SEED_MIN, SEED_MAX = 0, 2147483647

EDIT_IMAGES_MIN, EDIT_IMAGES_MAX = 1, 3
EDIT_INPUT_SIDE_MIN, EDIT_INPUT_SIDE_MAX = 384, 3072
EDIT_INPUT_MAX_BYTES = 10 * 1024 * 1024  # per image, and per data-URI item
EDIT_INPUT_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")  # Pillow's names for JPG/JPEG, PNG, ...
EDIT_CUSTOM_SIZE_RANGE = (512, 2048)  # width and height of a custom edit output size

# The service documents no request body limit, but its gateway refuses bodies over 6 MiB
# (413 BadRequest.TooLarge, seen in public reports). The client keeps every body at or
# under REQUEST_BODY_TARGET, leaving half a MiB for headers and a stricter proxy.
REQUEST_BODY_LIMIT = 6 * 1024 * 1024
REQUEST_BODY_TARGET = REQUEST_BODY_LIMIT - 512 * 1024
# How edit inputs travel (QwenImageClient.edit_image): "auto" picks per request, "data_uri"
# never uploads (inputs are shrunk to fit), "upload" always uses the temporary storage.
INPUT_TRANSPORTS = ("auto", "data_uri", "upload")
# Temporary storage (Beijing only): a file lives 48 h, bound to the model and the account.
TEMPORARY_FILE_TTL = 48 * 3600


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    interfaces: tuple[str, ...]
    max_images: int  # n allowed is 1..max_images
    sizes: tuple[str, ...] = ()  # a fixed list of output sizes (text to image)
    custom_size: bool = False  # free W*H within EDIT_CUSTOM_SIZE_RANGE, only with n == 1
    prompt_extend: bool = True  # whether the model takes the prompt_extend parameter
    price_usd: dict[str, float] = field(default_factory=dict)  # region -> price per image
    requests_per_second: float = 2.0
    concurrent_tasks: int = 2
    known: bool = True

    @property
    def default_interface(self) -> str:
        # The asynchronous interface is the default where it exists: a task can be
        # cancelled while queued and polled again after a dropped connection, so a lost
        # answer never means paying twice.
        return ASYNC if ASYNC in self.interfaces else SYNC

    def price(self, region: str) -> float | None:
        return self.price_usd.get(region)


_T2I = dict(family=TEXT_TO_IMAGE, interfaces=(SYNC, ASYNC), max_images=1,
            sizes=tuple(TEXT_TO_IMAGE_SIZES) + tuple(TEXT_TO_IMAGE_SIZE_ALIASES))
_EDIT_PLUS = dict(family=IMAGE_EDIT, interfaces=(SYNC,), max_images=6, custom_size=True)

MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec("qwen-image-plus", **_T2I, price_usd={SINGAPORE: 0.03, BEIJING: 0.028671}),
        ModelSpec("qwen-image", **_T2I, price_usd={SINGAPORE: 0.035, BEIJING: 0.035}),
        ModelSpec("qwen-image-edit-plus", **_EDIT_PLUS,
                  price_usd={SINGAPORE: 0.03, BEIJING: 0.028671}),
        ModelSpec("qwen-image-edit-plus-2025-10-30", **_EDIT_PLUS,
                  price_usd={SINGAPORE: 0.03, BEIJING: 0.028671}),
        ModelSpec("qwen-image-edit", family=IMAGE_EDIT, interfaces=(SYNC,), max_images=1,
                  prompt_extend=False, price_usd={SINGAPORE: 0.045, BEIJING: 0.043}),
    )
}

DEFAULT_MODEL = {TEXT_TO_IMAGE: "qwen-image-plus", IMAGE_EDIT: "qwen-image-edit-plus"}


def models_of(family: str) -> list[str]:
    return [m for m, spec in MODELS.items() if spec.family == family]


def spec_for(model: str, family: str) -> ModelSpec:
    """The spec of ``model``; for an id not in the table, the family's common rules.

    An unknown id is taken at the user's word: its n, size and price limits are not known,
    so only what every model of the family shares is checked (prompt lengths, seed range,
    input images), and the service has the last word on the rest.
    """
    spec = MODELS.get(model)
    if spec is not None:
        if spec.family != family:
            from .errors import ValidationError

            raise ValidationError(
                "model", f"{model!r} is an {spec.family} model, not {family}",
                allowed=models_of(family))
        return spec
    if family == TEXT_TO_IMAGE:
        return ModelSpec(model, family, interfaces=(SYNC, ASYNC), max_images=1, known=False)
    return ModelSpec(model, family, interfaces=(SYNC,), max_images=6, custom_size=True,
                     known=False)
