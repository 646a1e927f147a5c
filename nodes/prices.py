"""The facts web/model_inputs.js needs to show a node's cost before it runs, from the model
table: each model's price per region in USD (``api.pricing``), what its sizes weigh in
pixels (the tier), the region choices and the region "default" stands for.

The frontend only multiplies these by n, batch and the connected input images, so a price
is never typed twice.
"""
from __future__ import annotations

from ..api.catalog.models import spec_for
from ..api.catalog.pricing import TIER_1K_MAX_PIXELS, usd_price
from ..api.catalog.regions import DEFAULT_REGION, REGIONS
from ..api.catalog.specs import IMAGE_EDIT
from ..api.catalog.validation import normalize_size
from ..api.config import configured_region
from ..api.errors import QwenImageError
from ..api.fitting import area_range, needs_n1


def _pixels(size: str | None) -> int | None:
    size = normalize_size(size)
    if size is None:
        return None
    width, height = size.split("*")
    return int(width) * int(height)


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def default_region() -> str | None:
    """The region the "default" choice runs in (no key needed); None when
    DASHSCOPE_API_REGION holds no region (the run will say so)."""
    try:
        return configured_region()
    except QwenImageError:
        return None


def cost_table(family: str, models: list[str], region_choices: dict, custom: str,
               presets: dict[str, str], match: str | None = None) -> dict:
    """``cost`` of the model combo's option: ``prices`` {model: {region: {output, output_2k,
    input}}} (regions with a published price), ``auto_pixels`` {model: pixels of its
    default size, None when it picks one}, ``sizes`` {size choice: pixels}, ``custom`` (the
    choice that means width*height), ``regions`` {region choice: id}, ``region_names``,
    ``default_region`` (None: unknown, show ``fallback_region``'s) and ``tier_max_pixels``
    (larger outputs are billed at the upper price, as is a size the model picks). Edits
    also have ``match``: the choice that fits image 1 (``match``), per model the output
    areas it may ask (``areas``: [smallest, largest], None where it asks no size) and the
    models that ask none with n > 1 (``n1_only``), as ``api.fitting.asked_size`` does."""
    prices, auto = {}, {}
    for model in models:
        spec = spec_for(model, family)
        prices[model] = {}
        for region in REGIONS:
            price = usd_price(spec, region)
            if price is not None:
                prices[model][region] = {"output": _usd(price.output),
                                         "output_2k": _usd(price.output_2k),
                                         "input": _usd(price.input)}
        auto[model] = _pixels(spec.default_size(family))
    return {
        "prices": prices,
        "auto_pixels": auto,
        "sizes": {label: _pixels(size) for label, size in presets.items()},
        "custom": custom,
        "regions": {label: region for label, region in region_choices.items() if region},
        "region_names": {region.id: region.name for region in REGIONS.values()},
        "default_region": default_region(),
        "fallback_region": DEFAULT_REGION,
        "tier_max_pixels": TIER_1K_MAX_PIXELS,
        "match": None if family != IMAGE_EDIT else {
            "choice": match,
            "areas": {model: area_range(spec_for(model, family)) for model in models},
            "n1_only": [model for model in models if needs_n1(spec_for(model, family))],
        },
    }
