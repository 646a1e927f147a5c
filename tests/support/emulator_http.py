"""Plain-HTTP helpers for the emulator tests: request bodies, calls, downloads, error checks,
the edit pixel rule written out independently of the emulator, and the emulator options
most of those tests use (``STANDARD_EMULATOR``, read by the ``emulator`` fixture)."""
import base64
import hashlib
import io
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import requests
from PIL import Image, ImageOps

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator

SG, BJ = "ap-southeast-1", "cn-beijing"
GENERATION = "/services/aigc/multimodal-generation/generation"
SYNTHESIS = "/services/aigc/text2image/image-synthesis"
IMAGE_GENERATION = "/services/aigc/image-generation/generation"
OTHER_SG_KEY = "sk-emulator-second-account"
T2I_SIZES = ["1664*928", "1472*1140", "1328*1328", "1140*1472", "928*1664", "1472*1104",
             "1104*1472"]
TIME_FORMAT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")


def png(size=(400, 400), colour=(200, 30, 30), fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def pattern_png(size):
    """An image with structure, so that resizing and pasting are visible in the pixels."""
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    img.paste((20, 160, 240), (0, 0, size[0] // 3, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def data_uri(data, mime="image/png"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


SMALL = data_uri(png())


def auth(key=SINGAPORE_KEY):
    return {"Authorization": f"Bearer {key}"}


def t2i_body(prompt="a cat on a sofa", model="qwen-image-plus", **parameters):
    return {
        "model": model,
        "input": {"messages": [{"role": "user", "content": [{"text": prompt}]}]},
        "parameters": parameters,
    }


def edit_body(images, prompt="make it blue", model="qwen-image-edit-plus", **parameters):
    content = [{"image": image} for image in images] + [{"text": prompt}]
    return {"model": model, "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters}


def task_body(prompt="a dog", model="qwen-image-plus", **parameters):
    return {"model": model, "input": {"prompt": prompt}, "parameters": parameters}


def generate(emu, body, key=SINGAPORE_KEY, region=SG, headers=None, session=requests):
    return session.post(
        emu.base_url(region) + GENERATION, json=body, headers={**auth(key), **(headers or {})}
    )


def create_task(emu, body=None, key=SINGAPORE_KEY, region=SG):
    return requests.post(emu.base_url(region) + SYNTHESIS, json=body or task_body(),
                         headers={**auth(key), "X-DashScope-Async": "enable"})


def query(emu, task_id, key=SINGAPORE_KEY, region=SG):
    return requests.get(f"{emu.base_url(region)}/tasks/{task_id}", headers=auth(key))


def wait_for(emu, task_id, statuses=("SUCCEEDED", "FAILED", "CANCELED"), timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = query(emu, task_id).json()["output"]
        if output["task_status"] in statuses:
            return output
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} still {output['task_status']}")


def image_urls(response):
    return [item["image"] for item in response.json()["output"]["choices"][0]["message"]["content"]]


def download(url):
    response = requests.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    assert int(response.headers["Content-Length"]) == len(response.content)
    return Image.open(io.BytesIO(response.content)), response.content


def parse_utc8(text):
    assert TIME_FORMAT.fullmatch(text), text
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(
        tzinfo=timezone(timedelta(hours=8))
    )


def assert_error(response, status, code, message=None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"request_id", "code", "message"}
    uuid.UUID(body["request_id"])
    assert body["code"] == code
    if message is not None:
        assert message in body["message"]
    return body


def get_policy(emu, model="qwen-image-edit-plus", key=BEIJING_KEY, region=BJ):
    return requests.get(
        f"{emu.base_url(region)}/uploads",
        params={"action": "getPolicy", "model": model},
        headers=auth(key),
    )


def upload(info, filename, data, **overrides):
    """The form the SDK posts to upload_host, with some fields overridden."""
    fields = {
        "OSSAccessKeyId": info["oss_access_key_id"], "Signature": info["signature"],
        "policy": info["policy"], "key": f"{info['upload_dir']}/{filename}",
        "x-oss-object-acl": info["x_oss_object_acl"],
        "x-oss-forbid-overwrite": info["x_oss_forbid_overwrite"],
        "success_action_status": "200", "x-oss-content-type": "image/png",
    } | overrides
    return requests.post(info["upload_host"], data=fields, files={"file": (filename, data)})


# The emulator most tests use: fast, no rate limits, a second Singapore account. A test
# module sets ``EMULATOR = STANDARD_EMULATOR`` for its ``emulator``/``emu`` fixtures.
STANDARD_EMULATOR = {"latency": 0.05, "rate_limits": False,
                     "keys": {SINGAPORE_KEY: SG, OTHER_SG_KEY: SG, BEIJING_KEY: BJ}}


def standard_emulator():
    """A running-to-be emulator with the standard options (``with standard_emulator() as e``)."""
    return Emulator(**STANDARD_EMULATOR)


def create_generation_task(emu, body, key=SINGAPORE_KEY, region=SG, asynchronous=True):
    headers = {**auth(key), **({"X-DashScope-Async": "enable"} if asynchronous else {})}
    return requests.post(emu.base_url(region) + IMAGE_GENERATION, json=body, headers=headers)


def wait_until(emu, task_id, statuses=("SUCCEEDED", "FAILED", "CANCELED")):
    for _ in range(400):
        answer = query(emu, task_id).json()
        if answer["output"]["task_status"] in statuses:
            return answer
    raise AssertionError(f"task {task_id} never reached {statuses}")


def expected_edit(inputs, size, seed, index):
    """The documented rule, written out independently of the emulator's code."""
    width, height = size
    out = ImageOps.invert(inputs[-1].convert("RGB").resize(size, Image.Resampling.BICUBIC))
    thumb = (width // 6, height // 6)
    for i, other in enumerate(inputs[:-1]):
        out.paste(
            other.convert("RGB").resize(thumb, Image.Resampling.BICUBIC),
            (8 + i * (thumb[0] + 8), 8),
        )
    colour = tuple(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:3])
    out.paste(colour, (16 * index, height - 16, 16 * index + 16, height))
    return out
