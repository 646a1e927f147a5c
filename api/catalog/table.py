"""The model table: one ``ModelSpec`` per Qwen-Image id Model Studio serves (late 2026).

Sources (Model Studio's pages, by title): the seed references "通義千問-文生圖API參考" and
"通義千問-影像編輯API參考" (Nov/Dec 2025) for qwen-image, qwen-image-plus and the
qwen-image-edit family; the zh "千问-文生图" and "千问-图像编辑" pages; the intl "Qwen-Image
API", "Qwen-Image edit", "Text-to-image" and "Qwen-Image edit API" pages; "Qwen-Image
generation and editing API reference" (3.0); and the zh "模型调用价格" (pricing, Aug 2026).
Prices are kept in the currency of their page: Singapore in USD (the pricing page's exact
figures), the other regions in CNY; ``pricing`` converts.

Where the seeds and newer pages disagree about a seed model, the seeds win for that id
(800/500 characters, size 1328*1328 by default, inputs 384-3072 px without GIF); the newer
ids follow the newer pages. ``qwen-image-2.1-turbo`` is in Alibaba's Model Studio model
index (family "Qwen-Image-2.1") without an API page: only the parameters third parties
report for it are sent, and every limit is left to the service.
"""
from __future__ import annotations

from dataclasses import replace

from .regions import BEIJING, FRANKFURT, REGIONS, SINGAPORE, TOKYO
from .specs import (
    EDIT_CUSTOM_SIZE_RANGE,
    EDIT_INPUT_FORMATS,
    EDIT_INPUT_SIDE_MAX,
    EDIT_INPUT_SIDE_MIN,
    IMAGE_EDIT,
    IMAGE_GENERATION_PATH,
    NEGATIVE_PROMPT_MAX_CHARS,
    OPTIONAL_PARAMETERS,
    PROMPT_MAX_CHARS,
    TEXT2IMAGE_PATH,
    TEXT_TO_IMAGE,
    TEXT_TO_IMAGE_SIZE_ALIASES,
    TEXT_TO_IMAGE_SIZES,
    UNIFIED,
    InputRule,
    ModelSpec,
    Price,
    RateLimits,
    Reported,
    SizeRule,
    TextLimit,
)

BJ_SG = frozenset({BEIJING, SINGAPORE})
ALL_REGIONS = frozenset(REGIONS)

BASIC = frozenset({"negative_prompt", "size", "prompt_extend", "watermark", "seed"})
ALL_PARAMETERS = frozenset(OPTIONAL_PARAMETERS)  # 3.0: adds prompt_extend_mode, enable_thinking

SEED_CHARS = TextLimit(PROMPT_MAX_CHARS)
NEGATIVE_CHARS = TextLimit(NEGATIVE_PROMPT_MAX_CHARS)
# 千问-文生图 / 千问-图像编辑: "other models 800 Token; the excess is cut"
TOKENS_800 = TextLimit(800, "tokens")

SEED_INPUTS = InputRule(side=(EDIT_INPUT_SIDE_MIN, EDIT_INPUT_SIDE_MAX), side_required=True)
PAGE_INPUTS = InputRule(side=(EDIT_INPUT_SIDE_MIN, EDIT_INPUT_SIDE_MAX),
                        formats=EDIT_INPUT_FORMATS + ("GIF",))  # 千问-图像编辑: sides "recommended"

# Text to image: the seeds' five sizes (default 1:1) with the newer spellings taken as they
# are; the newer pages' five (default 16:9) with the old spellings sent as the new ones.
SEED_SIZES = SizeRule(sizes=tuple(TEXT_TO_IMAGE_SIZES) + tuple(TEXT_TO_IMAGE_SIZE_ALIASES),
                      default="1328*1328")
PAGE_SIZES = SizeRule(sizes=("1664*928", "1472*1104", "1328*1328", "1104*1472", "928*1664"),
                      aliases={"1472*1140": "1472*1104", "1140*1472": "1104*1472"},
                      default="1664*928")
_AREA = dict(min_area=512 * 512, max_area=2048 * 2048)
_NEAR_1024 = "about 1024*1024 at the aspect ratio of the last input image"
V2_T2I_SIZES = SizeRule(**_AREA, default="2048*2048")
V2_EDIT_SIZES = SizeRule(**_AREA, multiple=16, default_text=_NEAR_1024)
EDIT_SIDES = SizeRule(side=EDIT_CUSTOM_SIZE_RANGE, multiple=16, default_text=_NEAR_1024)
# 3.0: officially 512*512 to 2048*2048; the service accepts up to 2560*2560 (measured), so
# only beyond that is refused and 2048*2048 is a reported limit (a note).
V3_SIZES = SizeRule(min_area=512 * 512, max_area=2560 * 2560, max_aspect=8.0,
                    default_text="the model picks a size from the prompt")
V3_OFFICIAL_SIZES = replace(V3_SIZES, max_area=2048 * 2048)

_THIRD_PARTIES = ("Only third parties report this limit, so the request is sent as it is "
                  "and the service decides.")
NO_RATE = "rate limits: none published (GET /api/v1/quotas tells an account's own)"
EDIT_SIZE_WITH_N = Reported(
    {"needs_n1": True},
    "The Dec 2025 reference refuses size with n > 1 for qwen-image-edit-plus; no page says "
    "so for this model, so the request is sent as it is and the service decides.")
# (A third party's 4:1 aspect limit for these models follows from the side range.)
EDIT_UNCONFIRMED = (
    "size omitted: officially about 1024*1024; measured about a 2K area (third party)",)


def _row(ids: tuple[str, ...], **facts) -> list[ModelSpec]:
    # A model and its dated snapshots share every fact.
    return [ModelSpec(model, **facts) for model in ids]


def _sg_bj(usd: float, cny: float) -> dict[str, Price]:
    return {SINGAPORE: Price("USD", usd), BEIJING: Price("CNY", cny)}


def _v3_prices(usd: tuple[float, float], cny: tuple[float, float]) -> dict[str, Price]:
    # 模型调用价格: input images 0.02 CNY ($0.003); Frankfurt and Tokyo ("全球") at the Beijing CNY.
    mainland = Price("CNY", cny[0], cny[1], input=0.02)
    return {SINGAPORE: Price("USD", usd[0], usd[1], input=0.003), BEIJING: mainland,
            FRANKFURT: mainland, TOKYO: mainland}


_SEED_T2I = dict(kind=TEXT_TO_IMAGE, async_path=TEXT2IMAGE_PATH, t2i_size=SEED_SIZES,
                 prompt=SEED_CHARS, negative_prompt=NEGATIVE_CHARS, takes=BASIC,
                 rate=RateLimits(2, 1.0, 2, sync_limited=True), regions=BJ_SG)
_PAGE_T2I = dict(kind=TEXT_TO_IMAGE, t2i_size=PAGE_SIZES, prompt=TOKENS_800,
                 negative_prompt=NEGATIVE_CHARS, takes=BASIC, regions=BJ_SG)
_V2 = dict(kind=UNIFIED, n_max=6, t2i_size=V2_T2I_SIZES, edit_size=V2_EDIT_SIZES,
           prompt=TextLimit(1300, "tokens"), negative_prompt=NEGATIVE_CHARS, takes=BASIC,
           inputs=PAGE_INPUTS, regions=BJ_SG,
           unconfirmed=(NO_RATE, "aspect ratio: no limit published, only the area"))
_SEED_EDIT = dict(kind=IMAGE_EDIT, n_max=6, edit_size=EDIT_SIDES, needs_n1=True,
                  prompt=SEED_CHARS, negative_prompt=NEGATIVE_CHARS, takes=BASIC,
                  inputs=SEED_INPUTS, rate=RateLimits(2, 1.0, None, sync_limited=False),
                  regions=BJ_SG, unconfirmed=EDIT_UNCONFIRMED)
_PAGE_EDIT = dict(kind=IMAGE_EDIT, n_max=6, edit_size=EDIT_SIDES, prompt=TOKENS_800,
                  negative_prompt=NEGATIVE_CHARS, takes=BASIC, inputs=PAGE_INPUTS,
                  regions=BJ_SG, reported=(EDIT_SIZE_WITH_N,),
                  unconfirmed=EDIT_UNCONFIRMED + (
                      "size with n > 1: refused for qwen-image-edit-plus by the Dec 2025 "
                      "reference; not stated for this model", NO_RATE))
_V3 = dict(
    kind=UNIFIED, async_path=IMAGE_GENERATION_PATH, n_max=6, t2i_size=V3_SIZES,
    edit_size=V3_SIZES, prompt=TextLimit(4500, "tokens", cut=False), takes=ALL_PARAMETERS,
    inputs=InputRule(side=(384, 2048), formats=EDIT_INPUT_FORMATS + ("GIF",)),
    agent_with_images=False, regions=ALL_REGIONS,
    reported=(
        Reported({"t2i_size": V3_OFFICIAL_SIZES, "edit_size": V3_OFFICIAL_SIZES},
                 "2048*2048 is the official largest area, but the service has been "
                 "measured to accept up to 2560*2560, so the request is sent and the "
                 "service decides."),
        Reported({"edit_size": None},
                 "Third parties saw the size ignored when input images are given (the "
                 "output came out 2048*2048); it is sent anyway."),
    ))
_V3_UNCONFIRMED = (
    "largest area: 2048*2048 officially; up to 2560*2560 accepted (third-party measurement)",
    "size with input images: ignored, output 2048*2048 (third-party measurement)",
    "size omitted: the model picks one; measured 2048*2048, billed 2K (third party)",
    "regions: Frankfurt and Tokyo prices are published; Virginia and Hong Kong prices not")

_V21_SIZES = SizeRule(min_area=262_144, max_area=4_194_304, max_aspect=8.0)
_V21_PRO = ModelSpec(
    "qwen-image-2.1-pro", UNIFIED, n_max=None, t2i_size=SizeRule(), edit_size=SizeRule(),
    takes=ALL_PARAMETERS, inputs=InputRule(count=(1, 10)), documented=False,
    reported=(
        Reported({"n_max": 6}, _THIRD_PARTIES),
        Reported({"t2i_size": _V21_SIZES, "edit_size": _V21_SIZES}, _THIRD_PARTIES),
        Reported({"takes": ALL_PARAMETERS - {"negative_prompt"}}, _THIRD_PARTIES),
        Reported({"agent_with_images": False}, _THIRD_PARTIES),
    ),
    unconfirmed=(
        "official: the model exists, takes up to 10 reference images; nothing else",
        "n: 1-6 (third party)",
        "size: area 262,144-4,194,304 px, aspect up to 8:1, omitted = the model picks "
        "(third party)",
        "negative_prompt: not taken (third parties)",
        "prompt_extend_mode agent with reference images: refused (third party)",
        "enable_thinking: reports disagree on whether it is taken",
        "interfaces: synchronous; an asynchronous image-generation task is reported by a "
        "third party only",
        "price: none published",
        "regions: none listed; reported working in Beijing",
        NO_RATE,
    ))

# Model Studio's model index lists it in the 2.1 family (transparent RGBA images, several
# references); a third party reports its parameters (negative_prompt up to 500 characters,
# prompt_extend, watermark, seed; size as 2.1-pro). No price, region or limit is published.
_V21_TURBO = ModelSpec(
    "qwen-image-2.1-turbo", UNIFIED, n_max=None, t2i_size=SizeRule(), edit_size=SizeRule(),
    takes=BASIC, inputs=InputRule(count=(1, None)), documented=False,
    reported=(
        Reported({"negative_prompt": NEGATIVE_CHARS}, _THIRD_PARTIES),
        Reported({"t2i_size": _V21_SIZES, "edit_size": _V21_SIZES}, _THIRD_PARTIES),
    ),
    unconfirmed=(
        "official: listed in Model Studio's model index (Qwen-Image-2.1 family); no API page",
        "parameters: negative_prompt (up to 500 characters), prompt_extend, watermark, seed "
        "(third party); size as 2.1-pro (third party)",
        "size: area 262,144-4,194,304 px, aspect up to 8:1 (third party, for 2.1)",
        "n, input images, prompt length, interfaces: not published",
        "price: none published",
        "regions: none listed",
        NO_RATE,
    ))

MODELS: dict[str, ModelSpec] = {spec.id: spec for spec in [
    *_row(("qwen-image-3.0-pro",), **_V3, prices=_v3_prices((0.04, 0.075), (0.25, 0.5)),
          unconfirmed=_V3_UNCONFIRMED + (
              NO_RATE, "rate: 1 request per minute (third party)")),
    *_row(("qwen-image-3.0",), **_V3, prices=_v3_prices((0.03, 0.03), (0.18, 0.18)),
          unconfirmed=_V3_UNCONFIRMED + (NO_RATE,)),
    _V21_PRO,
    _V21_TURBO,
    *_row(("qwen-image-2.0-pro", "qwen-image-2.0-pro-2026-06-22",
           "qwen-image-2.0-pro-2026-04-22", "qwen-image-2.0-pro-2026-03-03"),
          **_V2, prices=_sg_bj(0.075, 0.5)),
    *_row(("qwen-image-2.0", "qwen-image-2.0-2026-03-03"), **_V2, prices=_sg_bj(0.035, 0.2)),
    *_row(("qwen-image-max", "qwen-image-max-2025-12-30"), **_PAGE_T2I,
          prices=_sg_bj(0.075, 0.5), rate=RateLimits(2, 60.0),
          unconfirmed=("rate: 2 per minute is the quotas page's example value; an "
                       "account's own limit may differ", "tasks at once: none published")),
    *_row(("qwen-image-plus",), **_SEED_T2I, prices=_sg_bj(0.03, 0.2)),
    *_row(("qwen-image-plus-2026-01-09",), **_PAGE_T2I, prices=_sg_bj(0.03, 0.2),
          unconfirmed=(NO_RATE,)),
    *_row(("qwen-image",), **_SEED_T2I, prices=_sg_bj(0.035, 0.25)),
    *_row(("qwen-image-edit-max", "qwen-image-edit-max-2026-01-16"), **_PAGE_EDIT,
          prices=_sg_bj(0.075, 0.5)),
    *_row(("qwen-image-edit-plus", "qwen-image-edit-plus-2025-10-30"), **_SEED_EDIT,
          prices=_sg_bj(0.03, 0.2)),
    *_row(("qwen-image-edit-plus-2025-12-15",), **_PAGE_EDIT, prices=_sg_bj(0.03, 0.2)),
    ModelSpec("qwen-image-edit", IMAGE_EDIT, prompt=SEED_CHARS, negative_prompt=NEGATIVE_CHARS,
              takes=frozenset({"negative_prompt", "watermark", "seed"}), inputs=SEED_INPUTS,
              prices=_sg_bj(0.045, 0.3), rate=RateLimits(2, 1.0, None, sync_limited=False),
              regions=BJ_SG),
]}
