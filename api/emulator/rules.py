"""The service's rules as data: regions, keys, sizes, limits and error codes (the model
table is catalog.py).

Values come from the vendor's public API reference pages and wire captures of the official
SDK; where they disagree the API reference wins (default text-to-image size 1328*1328).
"""
from datetime import timedelta, timezone

REGIONS = ("ap-southeast-1", "cn-beijing")
UPLOAD_REGIONS = ("cn-beijing",)  # temporary file storage exists in Beijing only
UTC8 = timezone(timedelta(hours=8))  # the service's clock for task times and upload dirs

SINGAPORE_KEY = "sk-emulator-singapore"
BEIJING_KEY = "sk-emulator-beijing"
DEFAULT_KEYS = {SINGAPORE_KEY: "ap-southeast-1", BEIJING_KEY: "cn-beijing"}

# The reference's five sizes, plus the spellings newer pages use for 4:3 and 3:4.
T2I_SIZES = ("1664*928", "1472*1140", "1328*1328", "1140*1472", "928*1664",
             "1472*1104", "1104*1472")
EDIT_AREA, EDIT_MULTIPLE = 1024 * 1024, 16  # default edit output: last input's ratio, ~1 Mpx
QIMA_1K_AREA = 2250000  # 3.0 billing tier: output area up to this is "1k", above it "2k"
EXTEND_MODES = ("direct", "agent")  # 3.0 prompt_extend_mode; agent for text to image only

SEED_MAX = 2147483647
INPUT_SIDE = (384, 3072)
INPUT_MAX_BYTES = 10 * 1024 * 1024
DATA_URI_MAX = 10485760
IMAGE_MIMES = ("image/jpeg", "image/png", "image/bmp", "image/tiff", "image/webp")
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP")  # Pillow names; MPO is camera JPEG
EXTEND_SUFFIX = " Rich details, balanced composition, soft natural light, sharp focus."
UNSAFE_MARKER = "[[unsafe]]"  # stands in for content the real inspection would refuse

RPS = 2  # default task-creating and generating POSTs per second per (key, model)
CONCURRENT = 2  # default async tasks processing at once per (key, model); later ones wait
QUERY_QPS = 20  # task queries and task lists per key
POLICY_QPS = 100  # upload policies per (key, model)
BODY_LIMIT = 6 * 1024 * 1024  # API request bodies (and any other route but the upload host)
UPLOAD_BODY_LIMIT = 101 * 1024 * 1024  # upload host bodies: a 100 MB file and its form
TASK_WINDOW = 24 * 3600  # the task list's longest start_time..end_time span, seconds
TASK_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")

UPLOAD_TTL = 172800  # seconds an uploaded file lives
POLICY_TTL = 3600  # seconds an upload policy may be used
UPLOAD_MAX_MB, UPLOAD_CAPACITY_MB = 100, 999999999
UPLOAD_ACCESS_KEY = "LTAI5tEmulatorUploadKey"  # fake OSS ids: shape only, no secret
RESULT_ACCESS_KEY = "LTAI5tEmulatorResultKey"

STATUS = {  # HTTP status of each error code (the service's status-code page)
    "InvalidParameter": 400,
    "DataInspectionFailed": 400,
    "BadRequest.EmptyInput": 400,
    "BadRequest.EmptyModel": 400,
    "InvalidURL": 400,
    "UnsupportedOperation": 400,
    "InvalidApiKey": 401,
    "AccessDenied": 403,
    "NotFound": 404,
    "BadRequest.TooLarge": 413,
    "Throttling": 429,
    "Throttling.RateQuota": 429,
    "InternalError": 500,
    "InternalError.Algo": 500,
}

MESSAGES = {  # fixed texts; other messages are written where the error is raised
    "InvalidApiKey": "Invalid API-key provided.",
    "DataInspectionFailed": "Input or output data may contain inappropriate content.",
    "BadRequest.EmptyInput": "Required input parameter missing from request.",
    "BadRequest.EmptyModel": 'Required parameter "model" missing from request.',
    "UnsupportedOperation": (
        "Failed to cancel the task, please confirm if the task is in PENDING status."
    ),
    "BadRequest.TooLarge": "Request body is too large.",
    "Throttling.RateQuota": "Requests rate limit exceeded, please try again later.",
    "InternalError": (
        "An internal error has occured, please try again later or contact service support."),
    "InternalError.Algo": "An internal error occurred during model inference.",
}
MODEL_NOT_EXIST = "Model not exist."
CONCURRENCY_EXCEEDED = "Request concurrency limit exceeded, please try again later."
QUEUE_FULL = "Too many tasks are waiting in the queue of this model, please try again later."
N_MUST_BE_1 = "num_images_per_prompt must be 1"
