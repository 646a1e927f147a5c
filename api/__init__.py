"""A plain Python client for Qwen-Image on Alibaba Cloud DashScope (requests + Pillow).

    from qwen_image_dashscope.api import QwenImageClient, TextToImageRequest, ResultStore

The names below are what callers use, grouped by module. They are imported on first use
(PEP 562), so ``import qwen_image_dashscope.api`` stays fast (ComfyUI imports every pack at
start-up) and pulls in neither requests nor Pillow; the ``TYPE_CHECKING`` block gives type
checkers and IDEs the same names.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import errors as _errors  # small, standard library only: its names are listed below
from .version import VERSION as __version__

_GROUPS = {
    "client": ("QwenImageClient",),
    "call.waiting": ("Progress",),
    "config": ("Config", "KeySource"),
    "catalog.regions": ("REGIONS", "Region", "normalize_region", "SINGAPORE", "BEIJING"),
    "schema": ("TextToImageRequest", "ImageEditRequest", "GenerationResult", "GeneratedImage",
               "Usage"),
    "catalog.models": ("MODELS", "spec_for"),
    "catalog.specs": ("ModelSpec",),
    "catalog.validation": ("validate", "Checked", "normalize_size"),
    "catalog.pricing": ("estimate_usd", "cost_usd"),
    "storage.store": ("ResultStore", "StoredImage", "request_fingerprint"),
    "service.retry": ("RetryPolicy",),
    "storage.budget": ("SpendGuard", "BudgetStatus"),
    "state": ("ProcessState", "PROCESS_STATE"),
    "images": ("to_data_uri", "inspect_image", "fit_encoding"),
    "errors": tuple(_errors.__all__),
}
_EXPORTS = {name: module for module, names in _GROUPS.items() for name in names}

if TYPE_CHECKING:
    from .call.waiting import Progress as Progress
    from .catalog.models import (
        MODELS as MODELS,
        spec_for as spec_for,
    )
    from .catalog.pricing import (
        cost_usd as cost_usd,
        estimate_usd as estimate_usd,
    )
    from .catalog.regions import (
        BEIJING as BEIJING,
        REGIONS as REGIONS,
        SINGAPORE as SINGAPORE,
        Region as Region,
        normalize_region as normalize_region,
    )
    from .catalog.specs import ModelSpec as ModelSpec
    from .catalog.validation import (
        Checked as Checked,
        normalize_size as normalize_size,
        validate as validate,
    )
    from .client import QwenImageClient as QwenImageClient
    from .config import (
        Config as Config,
        KeySource as KeySource,
    )
    from .errors import *  # noqa: F403 - the names of errors.__all__
    from .images import (
        fit_encoding as fit_encoding,
        inspect_image as inspect_image,
        to_data_uri as to_data_uri,
    )
    from .schema import (
        GeneratedImage as GeneratedImage,
        GenerationResult as GenerationResult,
        ImageEditRequest as ImageEditRequest,
        TextToImageRequest as TextToImageRequest,
        Usage as Usage,
    )
    from .service.retry import RetryPolicy as RetryPolicy
    from .state import (
        PROCESS_STATE as PROCESS_STATE,
        ProcessState as ProcessState,
    )
    from .storage.budget import (
        BudgetStatus as BudgetStatus,
        SpendGuard as SpendGuard,
    )
    from .storage.store import (
        ResultStore as ResultStore,
        StoredImage as StoredImage,
        request_fingerprint as request_fingerprint,
    )

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
