"""A local stand-in for Alibaba Cloud DashScope's Qwen-Image service, over real HTTP.

It implements the service's behaviour from the vendor's API reference and the wire notes
(/work/shared), independently of the pack's client code, so that testing the client
against it proves something. Standard library and Pillow only. Loopback addresses only.

    with Emulator(latency=0.1) as emu:
        base = emu.base_url("ap-southeast-1")   # f"{emu.url}/ap-southeast-1/api/v1"
        ...                                     # Bearer SINGAPORE_KEY there, BEIJING_KEY in cn-beijing

Regions and keys
    Paths live under /ap-southeast-1/api/v1 and /cn-beijing/api/v1. ``keys`` maps each key
    to its one region (default: SINGAPORE_KEY and BEIJING_KEY). A key used in the other
    region, an unknown key, or a missing or non-Bearer Authorization: 401 InvalidApiKey.
    Authentication comes before routing: an unknown API path with a valid key is 404 NotFound.
    Error bodies are {"request_id", "code", "message"}; statuses follow rules.STATUS.

Synchronous generation: POST {base}/services/aigc/multimodal-generation/generation
    Model table: rules.MODELS. Unknown model (or one not served at the endpoint, e.g. an
    edit model on image-synthesis): 400 InvalidParameter "Model not exist.". Missing model:
    400 BadRequest.EmptyModel. Missing or empty input: 400 BadRequest.EmptyInput. Other
    violations: 400 InvalidParameter (one user message; t2i: exactly one text and no image;
    edit: 1-3 images and one text; n: t2i and qwen-image-edit "num_images_per_prompt must
    be 1", edit-plus 1-6; size: t2i one of rules.T2I_SIZES (default 1328*1328), edit-plus
    W*H in [512, 2048] and only with n == 1, qwen-image-edit refuses size; seed in
    [0, 2147483647]; prompt_extend/watermark booleans; null counts as absent; unknown
    parameters are ignored; qwen-image-edit ignores prompt_extend).
    Image items: data:{mime};base64,... (rules.IMAGE_MIMES; an item longer than 10485760
    characters: "Exceeded limit on max bytes per data-uri item"), the emulator's own result
    URLs (any other URL: 400 InvalidURL "download failed: ..."), or oss://{key} (needs the
    header X-DashScope-OssResourceResolve: enable, else 400 InvalidURL; resolves only files
    uploaded by the same key for the same model within 48 h, else 400 InvalidURL "download
    failed"). Decoded images must be JPEG/PNG/BMP/TIFF/WEBP, at most 10 MB, each side in
    [384, 3072], else 400 InvalidParameter.
    Prompts over 800 characters and negative prompts over 500 are cut silently; the
    recorded request's .notes says so and stats["prompts_truncated"] counts it.
    A prompt or negative prompt (after cutting) containing "[[unsafe]]": 400
    DataInspectionFailed "Input or output data may contain inappropriate content.".
    The answer comes after ``latency`` seconds: output.choices[0].message.content holds n
    {"image": url}; t2i models add output.task_metric; usage is {width, height, image_count}.

Async tasks: POST {base}/services/aigc/text2image/image-synthesis (t2i models)
    Without X-DashScope-Async: enable: 403 AccessDenied "current user api does not support
    synchronous calls". Body {"model", "input": {"prompt", "negative_prompt"},
    "parameters": {...}}; same rules as above. Answer {"request_id", "output": {"task_id",
    "task_status": "PENDING"}}. At most 2 tasks per (key, model) run at once, always (it is
    queueing, not an error); later ones stay PENDING in submission order. A task runs
    ``latency`` seconds (the value when it starts), then SUCCEEDED or FAILED.
    GET {base}/tasks/{id}: {"request_id", "output": {task_id, task_status, submit_time,
    scheduled_time (once started), end_time (once ended), results (SUCCEEDED: [{url,
    orig_prompt, actual_prompt}], actual_prompt only with prompt_extend and equal to
    orig_prompt + rules.EXTEND_SUFFIX), code/message (FAILED), task_metrics {TOTAL,
    SUCCEEDED, FAILED}}, "usage": {"image_count"} (SUCCEEDED only)}. Times are UTC+8
    "YYYY-MM-DD HH:mm:ss.SSS". Another key's task, another region's, an unknown id, or a task
    ended more than ``result_ttl`` ago: 200 with task_status "UNKNOWN".
    POST {base}/tasks/{id}/cancel: a PENDING task becomes CANCELED, 200 {"request_id"};
    anything else (including unknown ids): 400 UnsupportedOperation "Failed to cancel the
    task, please confirm if the task is in PENDING status.".

Rate limits (``rate_limits=True``; sliding 1 s windows; 429 Throttling.RateQuota "Requests
    rate limit exceeded, please try again later." with Retry-After: 1)
    generation and task-creating POSTs: 2 per (key, model), checked once the model is known
    and before the input is validated; task queries: 20 per key; upload policies: 100 per
    (key, model). Refused requests do not count in the window. stats
    ["max_requests_per_second"] counts every authenticated generation/creation attempt that
    names a known model, per (key, model), refused or not: it judges the client even when
    limits are off.

Result images: {url}/results/{id}.png?Expires=...&OSSAccessKeyId=...&Signature=...
    No Authorization needed. PNG with Content-Type image/png and Content-Length. After
    ``result_ttl`` seconds: 403 with an OSS XML body (Code AccessDenied, Message "Request has
    expired."); a bad signature: 403 SignatureDoesNotMatch; no such id: 404 NoSuchKey.

Image rules (same request, same bytes; no seed in the request: a random seed)
    Text to image: a pattern from sha256(json.dumps([model, prompt, negative_prompt, W, H,
    seed, index], ensure_ascii=False)) (prompts after cutting): two crossing gradients and
    four discs, exactly W x H.
    Edit (images.edit_base / edit_output), output size (W, H) = the requested size, else
    images.edit_size(last input): r = w/h, W = round(sqrt(1048576*r)/16)*16,
    H = round(sqrt(1048576/r)/16)*16 (Python's round). Then
      out = ImageOps.invert(last.convert("RGB").resize((W, H), Image.Resampling.BICUBIC))
      every other input i (in order, 0-based) is pasted un-inverted as
        other.convert("RGB").resize((W // 6, H // 6), BICUBIC) at (8 + i * (W // 6 + 8), 8)
      output k (0-based) gets a 16x16 mark: box (16k, H-16)-(16k+15, H-1) filled with
        sha256(f"{seed}:{k}").digest()[:3] (images.mark_colour)
    With watermark true, "Qwen-Image" in white on black near the bottom-right corner.

Faults: emu.inject(kind, count=1, path=None, **details), consumed first in, first out by
    the next matching request; ``path`` is a substring of the request path; without it a
    fault matches any API request (not downloads or uploads), except as noted.
    http_error   answer status (500), code ("InternalError"), message, retry_after (None:
                 no Retry-After header) instead of processing
    drop         read the request, close the connection, answer nothing, process nothing
    drop_after   process in full (task created, images made and billed), then close
                 without answering
    non_json     answer status (502) with body ("<html>Bad Gateway</html>") and
                 content_type ("text/html")
    truncate     result downloads (by default any): announce the full Content-Length,
                 send half, close
    task_failed  the next created task ends FAILED with code ("InternalError.Algo") and
                 message, after running like any task

Temporary uploads (cn-beijing only; in ap-southeast-1 GET uploads is 404 NotFound)
    GET {base}/uploads?action=getPolicy&model=M -> {"request_id", "data": {policy,
    signature, upload_dir, upload_host ({url}/oss-upload), oss_access_key_id,
    x_oss_object_acl, x_oss_forbid_overwrite, expire_in_seconds (172800),
    max_file_size_mb, capacity_limit_mb}}. A multipart POST to upload_host with the issued
    OSSAccessKeyId, Signature and policy, a key under upload_dir and a file stores it;
    success_action_status 200/201 is answered as such, else 204; failures answer OSS XML
    (403 InvalidAccessKeyId / SignatureDoesNotMatch / AccessDenied, 400 InvalidArgument /
    EntityTooLarge, 409 FileAlreadyExists). Uploads are recorded in emu.requests too.

Request bodies on API paths over ``body_limit`` bytes (None: 6 MiB; 0: no limit) are
    answered 413 BadRequest.TooLarge from the headers alone; the body is then drained and
    the connection closed. HTTP/1.1 keep-alive; every answer carries Content-Length.

Inspection: emu.requests (RecordedRequest: method, path, query, region, headers with the
    Authorization redacted to "Bearer sk-…last4", body, json, time, key_id = sha256(key)[:8],
    status, notes), emu.input_images(recorded) (ValueError for an item it cannot resolve),
    emu.served_images {url: png},
    emu.tasks, emu.stats {requests, tasks_created, images_billed, rate_limited (429s
    answered), task_queries, uploads, faults_fired, prompts_truncated, errors {code: n},
    max_concurrent_tasks, max_outstanding_tasks, max_requests_per_second (these three keyed
    by (key_id, model))}, emu.faults, emu.reset_stats(), emu.clear_faults(),
    emu.set_latency(seconds).
"""
import logging
import time

from .rules import BEIJING_KEY, DEFAULT_KEYS, REGIONS, SINGAPORE_KEY
from .server import Emulator, RecordedRequest

__all__ = ["BEIJING_KEY", "SINGAPORE_KEY", "Emulator", "RecordedRequest", "serve"]

log = logging.getLogger(__name__)


def serve(host="127.0.0.1", port=8765, **options):
    """Run an emulator until Ctrl-C; options are Emulator's (latency, rate_limits, ...)."""
    emu = Emulator(host=host, port=port, **options)  # refuses a non-loopback host
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with emu:
        keys = options.get("keys") or DEFAULT_KEYS
        for region in REGIONS:
            # Keys of the emulator only (the defaults are published in rules.py), not secrets.
            region_keys = ", ".join(k for k, r in keys.items() if r == region) or "(none)"
            log.info("DashScope emulator %s: base URL %s  key %s", region, emu.base_url(region), region_keys)
        log.info("Ctrl-C stops it.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("DashScope emulator stopped.")
