"""What a request costs, in USD, from the model table's prices.

Singapore prices are the vendor's USD figures as they are. Every other region's price is
published in CNY and converted at ``CNY_PER_USD``. A model or region without an official
price has an unknown cost: None, never a guess.

qwen-image-3.0 and -3.0-pro bill by output tier (an output of at most 2,250,000 pixels is
1K, a larger one 2K) plus a price per input image. Before the call the tier is known only
when the size is: an omitted size is booked at the upper tier (the spend guard books that
and settles from what the service reports). After the call ``cost_usd`` reads the tier the
service reported, else the output's size.
"""
from __future__ import annotations

import re

from ..schema import Usage
from .specs import ModelSpec, Price

# The rate the seed references imply: Beijing's qwen-image-plus is 0.2 CNY there and
# "$0.028671" in the text-to-image reference (about 6.976 CNY per USD).
CNY_PER_USD = 0.2 / 0.028671
TIER_1K_MAX_PIXELS = 2_250_000
_SIZE = re.compile(r"^\s*(\d+)\s*[*xX×]\s*(\d+)\s*$")


def usd_price(spec: ModelSpec, region: str) -> Price | None:
    """``spec``'s price in ``region`` converted to USD; None where none is published."""
    price = spec.prices.get(region)
    if price is None or price.currency == "USD":
        return price
    if price.currency != "CNY":
        raise ValueError(f"{spec.id}: a price in {price.currency} cannot be converted")

    def usd(cny: float | None) -> float | None:
        return None if cny is None else cny / CNY_PER_USD

    return Price("USD", usd(price.output), usd(price.output_2k), usd(price.input))


def _per_output(price: Price, upper: bool) -> float:
    return price.output_2k if upper and price.output_2k is not None else price.output


def _upper(pixels: int | None) -> bool:
    """Whether an output of ``pixels`` (None: unknown) is billed at the upper tier."""
    return pixels is None or pixels > TIER_1K_MAX_PIXELS


def _pixels(size: str | None) -> int | None:
    match = _SIZE.match(size) if isinstance(size, str) else None
    return int(match.group(1)) * int(match.group(2)) if match else None


def estimate_usd(spec: ModelSpec, region: str, n: int, size: str | None = None,
                 input_images: int = 0) -> float | None:
    """The cost of ``n`` outputs of ``size`` (None: the model's choice) from
    ``input_images`` inputs, before sending; None when no price is published."""
    price = usd_price(spec, region)
    if price is None:
        return None
    output = _per_output(price, _upper(_pixels(size)))
    return round(output * n + price.input * input_images, 6)


def cost_usd(spec: ModelSpec, region: str, usage: Usage, url_count: int,
             input_images: int = 0) -> float | None:
    """The cost of a finished call from what the service reported.

    Billed images: ``usage``'s output count, else the URLs returned. Input images: the
    count the service reported, else ``input_images``. Tier: the reported tier, else the
    reported size, else the upper tier.
    """
    price = usd_price(spec, region)
    if price is None:
        return None
    outputs = usage.output_images if usage.output_images is not None else url_count
    inputs = usage.input_images if usage.input_images is not None else input_images
    tier = usage.output_tier if isinstance(usage.output_tier, str) else ""
    if tier.endswith(("_1k", "_2k")):  # qima_output_1k / qima_output_2k
        upper = tier.endswith("_2k")
    elif usage.width is not None and usage.height is not None:
        upper = _upper(usage.width * usage.height)
    else:
        upper = True
    return round(_per_output(price, upper) * outputs + price.input * inputs, 6)
