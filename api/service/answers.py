"""DashScope's error answers as the pack's exceptions, each with its fix.

``api_error`` maps an error answer (HTTP status + ``code``; the codes of Model Studio's
"Status codes" and "Error messages" pages) to a class of ``errors`` and a hint naming what to
do; ``task_error`` does the same for a task that ended without images. The tables are the
vendor's codes.
"""
from __future__ import annotations

from ..catalog.regions import other_region, region_env_suffix, region_name
from ..catalog.specs import REQUEST_BODY_TARGET
from ..errors import (
    AccessDeniedError,
    ApiError,
    AuthenticationError,
    ContentModerationError,
    InvalidParameterError,
    ModelNotFoundError,
    QuotaExhaustedError,
    QwenImageError,
    RateLimitError,
    ServerError,
    TaskCanceledError,
    TaskFailedError,
    TaskUnknownError,
)

_RATE_CODES = {"Throttling", "Throttling.RateQuota", "LimitRequests"}
_QUOTA_HINTS = {
    "Throttling.AllocationQuota": (
        "The quota or free tier of this model is used up for this account, or the "
        "'stop when the free quota is used up' switch is on. Retrying will not help: turn "
        "that switch off or buy quota in the Model Studio console, or use another model."),
    "AllocationQuota.FreeTierOnly": (
        "The account is set to use only the free tier, and it is used up. Turn off 'stop "
        "when the free quota is used up' (免費額度用完即停) in the Model Studio console to pay "
        "as you go. Retrying will not help."),
    "Arrearage": (
        "The Alibaba Cloud account has an overdue payment. Top up in the Billing console, "
        "then run again. Retrying before that will not help."),
    "PrepaidBillOverdue": (
        "A prepaid bill of the account is overdue. Settle it in the Billing console, then "
        "run again. Retrying before that will not help."),
    "PostpaidBillOverdue": (
        "A pay-as-you-go bill of the account is overdue. Settle it in the Billing console, "
        "then run again. Retrying before that will not help."),
    "CommodityNotPurchased": (
        "Model Studio is not activated (purchased) for this account in this region. "
        "Activate it in the Model Studio console, then run again."),
}
_PARAMETER_HINTS = {
    "InvalidURL": "An input image URL is not valid or not reachable by the service; use a "
                  "public http(s) URL (URL-encode non-ASCII characters) or pass the image "
                  "itself. oss:// names work only in Beijing, within 48 hours of upload.",
    "BadRequest.InputDownloadFailed": "The service could not download an input image URL; "
                                      "make sure it is public, or pass the image itself.",
    "BadRequest.UnsupportedFileFormat": "An input image is not JPG, PNG, BMP, TIFF or WEBP.",
    "UnsupportedOperation": "Only a task still queued (PENDING) can be cancelled; a running "
                            "task finishes, and is billed if it succeeds.",
    "BadRequest.TooLarge": "The request body is too large for the service or a proxy in "
                           "between, although the pack keeps it under "
                           f"{REQUEST_BODY_TARGET / 2**20:g} MiB: a proxy may have a lower "
                           "limit. Pass the input images as http(s) URLs, or use Beijing "
                           "(input_transport 'upload').",
}

def _authentication_hint(region: str) -> str:
    other = other_region(region)
    return (f"Check the API key used for {region_name(region)}: DASHSCOPE_API_KEY_"
            f"{region_env_suffix(region)}, else DASHSCOPE_API_KEY, else the key file. "
            f"Keys work in one region only: a key created in the {region_name(other)} "
            f"console fails here with this error. If it is a {region_name(other)} key, set "
            f"DASHSCOPE_API_REGION={other} (or move it to DASHSCOPE_API_KEY_"
            f"{region_env_suffix(other)}). `qwen-image doctor` tells which region a key "
            "belongs to.")


def api_error(status: int | None, code: str | None, message: str, request_id: str | None,
              *, region: str, retry_after: float | None = None) -> ApiError:
    """The ``errors`` class and fix for a DashScope error answer (Model Studio: "Error
    messages")."""
    code = code or None
    args = (status, code, message, request_id)
    if code == "InvalidApiKey" or status == 401:
        return AuthenticationError(*args, hint=_authentication_hint(region))
    if code in _QUOTA_HINTS:
        return QuotaExhaustedError(*args, hint=_QUOTA_HINTS[code])
    if code in _RATE_CODES or status == 429:
        return RateLimitError(
            *args, retry_after=retry_after,
            hint="Too many requests for this model on this account (other programs using "
                 "the same key count too). Wait a little and run again.")
    if code in ("DataInspectionFailed", "InvalidParameter.DataInspection") or (
            code and "DataInspection" in code):
        return ContentModerationError(
            *args, hint="The prompt, an input image or the generated image was judged "
                        "inappropriate by the content check. Rephrase the prompt or change "
                        "the input images. Nothing was billed.")
    if status == 403:
        return AccessDeniedError(
            *args, hint=f"This key has no access to the model in {region_name(region)}: "
                        "activate the model in the Model Studio console of that region, check "
                        "the RAM user's permissions and the workspace, or use another model.")
    if status == 404:
        return ModelNotFoundError(
            *args, hint=f"Check the model id; the model may not exist in "
                        f"{region_name(region)} (some models are offered in one region only).")
    if status == 408 or (status is not None and status >= 500):
        return ServerError(
            *args, retry_after=retry_after,
            hint="A temporary problem at DashScope; failed calls are not billed. Run again "
                 "in a moment; if it persists, report the request id to Alibaba Cloud.")
    if status is not None and 400 <= status < 500:
        hint = _PARAMETER_HINTS.get(code or "", (
            "The service refused a parameter; its message says which. Fix it and run again; "
            "nothing was billed."))
        return InvalidParameterError(*args, hint=hint)
    return ApiError(*args, hint="Unexpected answer from DashScope; nothing was billed.")


_TASK_HINTS = {
    "DataInspectionFailed": "The content check refused the prompt or the generated image. "
                            "Rephrase the prompt. Failed tasks are not billed.",
    "InvalidParameter": "The service refused a parameter (see the message). Failed tasks are "
                        "not billed.",
}


def task_error(task_id: str, status: str | None, code: str | None, message: str,
               request_id: str | None, region: str) -> QwenImageError:
    """The error of a task that ended FAILED, CANCELED or UNKNOWN."""
    if status == "FAILED":
        return TaskFailedError(
            f"Task {task_id} failed: {code}: {message}",
            task_id=task_id, status=status, code=code, request_id=request_id,
            hint=_TASK_HINTS.get(code or "", "Failed tasks are not billed. Run again; if it "
                                             "keeps failing, report the task id."))
    if status == "CANCELED":
        return TaskCanceledError(
            f"Task {task_id} was cancelled (while queued); nothing was billed.",
            task_id=task_id, status=status, request_id=request_id,
            hint="Run again to generate the image.")
    return TaskUnknownError(
        f"DashScope does not know task {task_id} (status UNKNOWN).", task_id=task_id,
        status=str(status), request_id=request_id,
        hint=f"Tasks are kept for 24 hours, and a task created with a key of "
             f"{region_name(other_region(region))} cannot be seen from "
             f"{region_name(region)}. Check the id and the region.")
