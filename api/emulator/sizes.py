"""parameters.size under a model's size rule (catalog.SizeRule): the output size, or 400.

    fixed    one of rules.T2I_SIZES; none given: the rule's default
    sides    "W*H" with each side in [low, high]; n1_only: only with n 1
    area     "W*H" with low <= W*H <= high and, with an aspect cap, each side at most
             aspect times the other; a bad format: "Expected format: '<width>*<height>'"
    none     a size is refused
    ignored  any string is accepted and not used
Edits without a size (or where it is ignored) get images.fit_size(last input,
default_area); with round16 a requested edit size is rounded to the nearest multiples of
16 (1033*1032 gives 1040*1024).
"""
from __future__ import annotations

import math
import re
from typing import Any

from PIL import Image

from . import rules
from .catalog import SizeRule
from .errors import invalid
from .images import fit_size

_SIZE = re.compile(r"(\d+)\*(\d+)")


def output_size(value: Any, name: str, rule: SizeRule, n: int,
                inputs: list[Image.Image]) -> tuple[int, int]:
    """The output size for *value* (None: not given) under *rule*; inputs: edit images."""
    if value is not None and not isinstance(value, str):
        raise invalid("size must be a string W*H.")
    if rule.kind == "fixed":
        value = value or rule.default
        if value not in rules.T2I_SIZES:
            sizes = ", ".join(rules.T2I_SIZES)
            raise invalid(f"The size {value} is not supported; use one of {sizes}.")
        return _parse(value)
    if value is None or rule.kind == "ignored":
        if not inputs:
            return _parse(rule.default)
        cap = rule.high if rule.kind == "area" else 0
        return fit_size(*inputs[-1].size, rule.default_area, cap)
    if rule.kind == "none":
        raise invalid(f"Model {name} does not support the size parameter.")
    if rule.n1_only and n != 1:
        raise invalid("size can only be set when n is 1.")
    match = _SIZE.fullmatch(value)
    if rule.kind == "sides":
        if not match or not all(rule.low <= int(side) <= rule.high for side in match.groups()):
            raise invalid(f"size must be W*H with W and H in [{rule.low}, {rule.high}], "
                          f"got {value!r}.")
    else:
        _check_area(value, match, rule)
    width, height = _parse(value)
    if rule.round16:
        unit = rules.EDIT_MULTIPLE  # Python's round: 1032 / 16 = 64.5 gives 64
        width, height = (max(1, round(side / unit)) * unit for side in (width, height))
    return width, height


def _check_area(value: str, match: re.Match[str] | None, rule: SizeRule) -> None:
    if not match:
        raise invalid(f"Invalid size {value!r}. Expected format: '<width>*<height>'.")
    width, height = (int(side) for side in match.groups())
    if not rule.low <= width * height <= rule.high:
        raise invalid(f"The size {value} is out of range{rule.scope}: width*height must be "
                      f"between {_square(rule.low)} and {_square(rule.high)}.")
    if rule.aspect and max(width, height) > rule.aspect * min(width, height):
        raise invalid(f"The size {value} is out of range{rule.scope}: the aspect ratio must "
                      f"be between 1:{rule.aspect} and {rule.aspect}:1.")


def _square(area: int) -> str:
    side = math.isqrt(area)
    return f"{area} ({side}*{side})" if side * side == area else str(area)


def _parse(value: str) -> tuple[int, int]:
    width, height = value.split("*")
    return int(width), int(height)
