"""A plain Python client for Qwen-Image on Alibaba Cloud DashScope (requests + Pillow).

The public names are imported on first use, so ``import qwen_image_dashscope.api`` stays
fast (ComfyUI imports every pack at start-up) and pulls in neither requests nor Pillow.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "QwenImageClient": "client",
    "Progress": "client",
    "Config": "config",
    "KeySource": "config",
    "REGIONS": "config",
    "normalize_region": "config",
    "TextToImageRequest": "schema",
    "ImageEditRequest": "schema",
    "GenerationResult": "schema",
    "GeneratedImage": "schema",
    "MODELS": "models",
    "ModelSpec": "models",
    "spec_for": "models",
    "SINGAPORE": "models",
    "BEIJING": "models",
    "validate": "validation",
    "ResultStore": "store",
    "StoredImage": "store",
    "request_fingerprint": "store",
    "RetryPolicy": "transport",
    "SpendGuard": "budget",
    "to_data_uri": "images",
    "inspect_image": "images",
    "fit_encoding": "images",
    "redact": "errors",
    "QwenImageError": "errors",
    "ConfigurationError": "errors",
    "MissingApiKeyError": "errors",
    "ValidationError": "errors",
    "ApiError": "errors",
    "AuthenticationError": "errors",
    "AccessDeniedError": "errors",
    "InvalidParameterError": "errors",
    "ContentModerationError": "errors",
    "RateLimitError": "errors",
    "QuotaExhaustedError": "errors",
    "ModelNotFoundError": "errors",
    "ServerError": "errors",
    "TaskError": "errors",
    "TaskFailedError": "errors",
    "TaskCanceledError": "errors",
    "TaskUnknownError": "errors",
    "AmbiguousRequestError": "errors",
    "TransportError": "errors",
    "DownloadError": "errors",
    "CancelledError": "errors",
    "BudgetExceededError": "errors",
}

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
