"""Shared helpers of the client tests (their fixtures are in conftest.py).

Everything runs over real loopback HTTP against the emulator; nothing is mocked.
"""
import io
import os
import time

from PIL import Image

from qwen_image_dashscope.api.client import QwenImageClient
from qwen_image_dashscope.api.config import Config
from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY
from qwen_image_dashscope.api.service.retry import RetryPolicy

SG, BJ = "ap-southeast-1", "cn-beijing"
KEYS = {SG: SINGAPORE_KEY, BJ: BEIJING_KEY}
FAST_RETRY = RetryPolicy(attempts=4, base=0.05, cap=0.2, total=10.0)
# Seconds a lost task creation is looked for in the task list: a quarter of a second, not
# the real service's two minutes (conftest's quick_recovery lets it have several looks).
RECOVERY_GRACE = 0.25
SYNC_PATH = "/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "/services/aigc/text2image/image-synthesis"


def roomy_rate(*models, per_second=10):
    """Emulator options for an account that takes ``per_second`` calls a second of each of
    ``models`` (its quotas API says so and the client follows): for tests about calls,
    failures and images rather than the rate, whose third call within a second (retries
    included) would otherwise wait for the rate window."""
    return {"quotas": {model: {"request_limit": per_second} for model in models}}


def make_client(emulator, region=SG, *, key=None, store=None, timeout=300.0,
                retry=FAST_RETRY, key_region=None):
    # The test's own HOME (conftest) holds the journal; a lost task creation is looked for
    # in the task list for RECOVERY_GRACE seconds.
    environ = {"HOME": os.environ["HOME"], "QWEN_IMAGE_RECOVERY_GRACE": str(RECOVERY_GRACE)}
    config = Config.resolve(region, api_key=key or KEYS[key_region or region],
                            base_url=emulator.base_url(region), environ=environ,
                            timeout=timeout)
    return QwenImageClient(config, store=store, retry=retry)


def png_bytes(width=512, height=512, colour=(200, 30, 30), fmt="PNG", mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, fmt)
    return buffer.getvalue()


def api_requests(emulator, path_part, method=None):
    return [r for r in emulator.requests
            if path_part in r.path and (method is None or r.method == method)]


def wait_until(predicate, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
