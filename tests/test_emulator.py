"""The DashScope emulator against plain HTTP clients (requests, http.client) on loopback."""
import base64
import hashlib
import http.client
import io
import json
import math
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageOps

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator

SG, BJ = "ap-southeast-1", "cn-beijing"
GENERATION = "/services/aigc/multimodal-generation/generation"
SYNTHESIS = "/services/aigc/text2image/image-synthesis"
OTHER_SG_KEY = "sk-emulator-second-account"
T2I_SIZES = ["1664*928", "1472*1140", "1328*1328", "1140*1472", "928*1664", "1472*1104", "1104*1472"]
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
    return {"model": model, "input": {"messages": [{"role": "user", "content": [{"text": prompt}]}]},
            "parameters": parameters}


def edit_body(images, prompt="make it blue", model="qwen-image-edit-plus", **parameters):
    content = [{"image": image} for image in images] + [{"text": prompt}]
    return {"model": model, "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters}


def task_body(prompt="a dog", model="qwen-image-plus", **parameters):
    return {"model": model, "input": {"prompt": prompt}, "parameters": parameters}


def generate(emu, body, key=SINGAPORE_KEY, region=SG, headers=None, session=requests):
    return session.post(emu.base_url(region) + GENERATION, json=body, headers={**auth(key), **(headers or {})})


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
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone(timedelta(hours=8)))


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


@pytest.fixture
def emu():
    with Emulator(latency=0.05, rate_limits=False, keys={
        SINGAPORE_KEY: SG, OTHER_SG_KEY: SG, BEIJING_KEY: BJ,
    }) as running:
        yield running


# -- keys and regions -------------------------------------------------------------------------


def test_each_key_works_in_its_own_region_only(emu):
    assert emu.base_url(SG) == f"{emu.url}/ap-southeast-1/api/v1"
    assert emu.base_url(BJ) == f"{emu.url}/cn-beijing/api/v1"
    assert query(emu, "x", SINGAPORE_KEY, SG).json()["output"]["task_status"] == "UNKNOWN"
    assert query(emu, "x", BEIJING_KEY, BJ).json()["output"]["task_status"] == "UNKNOWN"
    for key, region in ((BEIJING_KEY, SG), (SINGAPORE_KEY, BJ), ("sk-unknown-key-1234", SG)):
        assert_error(generate(emu, t2i_body(), key, region), 401, "InvalidApiKey", "Invalid API-key provided.")
        assert_error(query(emu, "x", key, region), 401, "InvalidApiKey")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic c2stZW11bGF0b3I=", SINGAPORE_KEY])
def test_missing_or_garbled_authorization_is_401(emu, header):
    headers = {} if header is None else {"Authorization": header}
    response = requests.post(emu.base_url(SG) + GENERATION, json=t2i_body(), headers=headers)
    assert_error(response, 401, "InvalidApiKey")
    assert emu.stats["images_billed"] == 0


def test_unknown_paths_are_404(emu):
    assert_error(requests.get(emu.base_url(SG) + "/nothing/here", headers=auth()), 404, "NotFound")
    assert_error(requests.get(f"{emu.url}/eu-west-1/api/v1/tasks/x", headers=auth()), 404, "NotFound")
    # Authentication comes first, as at the service's gateway.
    assert_error(requests.get(emu.base_url(SG) + "/nothing", headers=auth(BEIJING_KEY)), 401, "InvalidApiKey")


# -- synchronous generation ---------------------------------------------------------------------


def test_text_to_image_answer_has_the_reference_shape(emu):
    started = time.monotonic()
    response = generate(emu, t2i_body(seed=7, negative_prompt="", prompt_extend=True, watermark=False,
                                      result_format="message"))
    assert time.monotonic() - started >= 0.05  # the configured latency
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"output", "usage", "request_id"}
    uuid.UUID(body["request_id"])
    assert body["usage"] == {"width": 1328, "height": 1328, "image_count": 1}
    assert body["output"]["task_metric"] == {"TOTAL": 1, "FAILED": 0, "SUCCEEDED": 1}
    (choice,) = body["output"]["choices"]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    (url,) = image_urls(response)
    assert re.fullmatch(rf"{emu.url}/results/[0-9a-f]{{32}}\.png\?Expires=\d+&OSSAccessKeyId=\w+&Signature=\S+", url)
    img, data = download(url)
    assert (img.format, img.size) == ("PNG", (1328, 1328))
    assert emu.served_images[url] == data


def test_every_text_to_image_size_gives_an_image_of_that_size(emu):
    for size in T2I_SIZES:
        response = generate(emu, t2i_body(size=size, seed=1))
        assert "%(width)d*%(height)d" % response.json()["usage"] == size
        img, _ = download(image_urls(response)[0])
        assert "%d*%d" % img.size == size


def test_text_to_image_is_a_deterministic_function_of_the_request(emu):
    def image(**changes):
        options = {"prompt": "a red boat", "seed": 42, "size": "1664*928"} | changes
        prompt = options.pop("prompt")
        return download(image_urls(generate(emu, t2i_body(prompt, **options)))[0])[1]

    first = image()
    assert image() == first  # same request, same bytes (under a new URL)
    assert len(emu.served_images) == 2
    assert image(seed=43) != first
    assert image(prompt="a blue boat") != first
    assert image(negative_prompt="fog") != first
    assert image(model="qwen-image") != first
    # No seed: the service picks a random one.
    assert image(seed=None) != image(seed=None)


def test_long_prompts_are_truncated_silently_and_the_record_says_so(emu):
    long_prompt, long_negative = "p" * 900 + "[[unsafe]]", "n" * 600
    response = create_task(emu, {"model": "qwen-image-plus", "input": {
        "prompt": long_prompt, "negative_prompt": long_negative}, "parameters": {"seed": 3}})
    assert response.status_code == 200  # the marker beyond 800 characters is cut away unseen
    output = wait_for(emu, response.json()["output"]["task_id"])
    assert output["results"][0]["orig_prompt"] == "p" * 800
    record = emu.requests[0]
    assert record.notes == ["prompt truncated from 910 to 800 characters",
                            "negative_prompt truncated from 600 to 500 characters"]
    assert emu.stats["prompts_truncated"] == 1
    # Same image as the already-short request: the model saw the same text.
    short = generate(emu, t2i_body("p" * 800, seed=3, negative_prompt="n" * 500))
    long = generate(emu, t2i_body(long_prompt, seed=3, negative_prompt=long_negative))
    assert download(image_urls(short)[0])[1] == download(image_urls(long)[0])[1]


def test_unknown_parameters_are_ignored_and_newer_size_spellings_accepted(emu):
    response = generate(emu, t2i_body(size="1472*1104", style="<auto>", stream=None, n=None))
    assert response.status_code == 200
    assert response.json()["usage"] == {"width": 1472, "height": 1104, "image_count": 1}
    # qwen-image-edit ignores prompt_extend, whatever its value.
    assert generate(emu, edit_body([SMALL], model="qwen-image-edit", prompt_extend="garbage")).status_code == 200


def _many(count):
    return [SMALL] * count


VALIDATION_CASES = {  # id: (body, extra headers, status, code, message part)
    "t2i n=2": (t2i_body(n=2), {}, 400, "InvalidParameter", "num_images_per_prompt must be 1"),
    "t2i n string": (t2i_body(n="1"), {}, 400, "InvalidParameter", "n must be an integer"),
    "t2i free size": (t2i_body(size="1024*1024"), {}, 400, "InvalidParameter", "1024*1024"),
    "t2i size not a string": (t2i_body(size=[1328, 1328]), {}, 400, "InvalidParameter", "size"),
    "t2i with image": (edit_body([SMALL], model="qwen-image-plus"), {}, 400, "InvalidParameter", "image"),
    "t2i two texts": ({"model": "qwen-image", "input": {"messages": [{"role": "user", "content": [
        {"text": "a"}, {"text": "b"}]}]}}, {}, 400, "InvalidParameter", "exactly one text"),
    "t2i no text": ({"model": "qwen-image", "input": {"messages": [{"role": "user", "content": [
        {"image": SMALL}]}]}}, {}, 400, "InvalidParameter", None),
    "empty text": (t2i_body("  "), {}, 400, "InvalidParameter", "empty"),
    "two messages": ({"model": "qwen-image", "input": {"messages": [
        {"role": "user", "content": [{"text": "a"}]}] * 2}}, {}, 400, "InvalidParameter", "one message"),
    "assistant role": ({"model": "qwen-image", "input": {"messages": [
        {"role": "assistant", "content": [{"text": "a"}]}]}}, {}, 400, "InvalidParameter", "user"),
    "content as string": ({"model": "qwen-image", "input": {"messages": [
        {"role": "user", "content": "a cat"}]}}, {}, 400, "InvalidParameter", None),
    "seed negative": (t2i_body(seed=-1), {}, 400, "InvalidParameter", "seed"),
    "seed too large": (t2i_body(seed=2147483648), {}, 400, "InvalidParameter", "seed"),
    "seed boolean": (t2i_body(seed=True), {}, 400, "InvalidParameter", "seed"),
    "prompt_extend string": (t2i_body(prompt_extend="yes"), {}, 400, "InvalidParameter", "prompt_extend"),
    "watermark number": (t2i_body(watermark=1), {}, 400, "InvalidParameter", "watermark"),
    "unknown model": (t2i_body(model="qwen-image-max-ultra"), {}, 400, "InvalidParameter", "Model not exist."),
    "missing model": ({"input": {"messages": []}}, {}, 400, "BadRequest.EmptyModel", None),
    "missing input": ({"model": "qwen-image-plus"}, {}, 400, "BadRequest.EmptyInput", None),
    "empty input": ({"model": "qwen-image-plus", "input": {}}, {}, 400, "BadRequest.EmptyInput", None),
    "parameters not an object": ({**t2i_body(), "parameters": [1]}, {}, 400, "InvalidParameter", None),
    "unsafe prompt": (t2i_body("a [[unsafe]] scene"), {}, 400, "DataInspectionFailed",
                      "Input or output data may contain inappropriate content."),
    "unsafe negative prompt": (t2i_body(negative_prompt="[[unsafe]]"), {}, 400, "DataInspectionFailed", None),
    "edit without image": (edit_body([]), {}, 400, "InvalidParameter", "1 to 3"),
    "edit with four images": (edit_body(_many(4)), {}, 400, "InvalidParameter", "1 to 3"),
    "edit without text": ({"model": "qwen-image-edit-plus", "input": {"messages": [{"role": "user", "content": [
        {"image": SMALL}]}]}}, {}, 400, "InvalidParameter", "text"),
    "edit-plus n=7": (edit_body([SMALL], n=7), {}, 400, "InvalidParameter", "between 1 and 6"),
    "edit-plus n=0": (edit_body([SMALL], n=0), {}, 400, "InvalidParameter", "between 1 and 6"),
    "edit-plus size with n=2": (edit_body([SMALL], n=2, size="1024*1024"), {}, 400, "InvalidParameter", "n is 1"),
    "edit-plus size too small": (edit_body([SMALL], size="511*1024"), {}, 400, "InvalidParameter", "[512, 2048]"),
    "edit-plus size too large": (edit_body([SMALL], size="1024*2049"), {}, 400, "InvalidParameter", None),
    "edit-plus size garbled": (edit_body([SMALL], size="1024x1024"), {}, 400, "InvalidParameter", None),
    "edit n=2": (edit_body([SMALL], model="qwen-image-edit", n=2), {}, 400, "InvalidParameter",
                 "num_images_per_prompt must be 1"),
    "edit with size": (edit_body([SMALL], model="qwen-image-edit", size="1024*1024"), {}, 400,
                       "InvalidParameter", "size"),
    "gif mime": (edit_body([data_uri(png(fmt="GIF"), "image/gif")]), {}, 400, "InvalidParameter", "image/gif"),
    "gif bytes under a png mime": (edit_body([data_uri(png(fmt="GIF"))]), {}, 400, "InvalidParameter",
                                   "not supported"),
    "not an image": (edit_body([data_uri(b"hello world")]), {}, 400, "InvalidParameter", "not supported"),
    "truncated png": (edit_body([data_uri(png()[:200])]), {}, 400, "InvalidParameter", None),
    "bad base64": (edit_body(["data:image/png;base64,@@@@"]), {}, 400, "InvalidParameter", "base64"),
    "data uri without base64": (edit_body(["data:image/png,abc"]), {}, 400, "InvalidParameter", None),
    "side below 384": (edit_body([data_uri(png((383, 500)))]), {}, 400, "InvalidParameter", "383*500"),
    "side above 3072": (edit_body([data_uri(png((3073, 400)))]), {}, 400, "InvalidParameter", "3073*400"),
    "foreign url": (edit_body(["https://help-static-aliyun-doc.aliyuncs.com/x/image36.webp"]), {}, 400,
                    "InvalidURL", "download failed"),
    "file path": (edit_body(["/tmp/cat.png"]), {}, 400, "InvalidParameter", None),
    "oss without resolve header": (edit_body(["oss://dashscope-instant/x/cat.png"]), {}, 400, "InvalidURL",
                                   "X-DashScope-OssResourceResolve"),
    "oss never uploaded": (edit_body(["oss://dashscope-instant/x/cat.png"]),
                           {"X-DashScope-OssResourceResolve": "enable"}, 400, "InvalidURL", "download failed"),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES), ids=list(VALIDATION_CASES))
def test_validation_errors(emu, case):
    body, headers, status, code, message = VALIDATION_CASES[case]
    assert_error(generate(emu, body, headers=headers), status, code, message)
    assert emu.stats["images_billed"] == 0
    assert emu.stats["errors"] == {code: 1}
    assert emu.requests[-1].status == status


def test_bodies_that_are_not_json_objects_are_refused(emu):
    for data in (b"{not json", b"[1, 2]", b""):
        response = requests.post(emu.base_url(SG) + GENERATION, data=data, headers=auth())
        assert_error(response, 400, "InvalidParameter", "JSON object")


def test_the_edge_values_are_accepted(emu):
    for case in (t2i_body(seed=0), t2i_body(seed=2147483647),
                 edit_body([data_uri(png((384, 3072)))], size="512*2048"),
                 edit_body([SMALL, SMALL, SMALL], n=6),
                 edit_body([data_uri(png(fmt="JPEG"), "image/jpeg"), data_uri(png(fmt="WEBP"), "image/webp"),
                            data_uri(png(fmt="BMP"), "image/bmp")]),
                 edit_body([data_uri(png(fmt="TIFF"), "image/tiff")], model="qwen-image-edit-plus-2025-10-30")):
        assert generate(emu, case).status_code == 200


def test_data_uri_items_over_10485760_bytes_are_refused():
    with Emulator(latency=0, rate_limits=False, body_limit=0) as emu:
        prefix = "data:image/png;base64,"
        fits = (10485760 - len(prefix)) // 4 * 4  # base64 characters that fit, in whole quads
        over = prefix + "A" * (fits + 4)  # valid base64, 10485762 characters in all
        assert_error(generate(emu, edit_body([over])), 400, "InvalidParameter",
                     "Exceeded limit on max bytes per data-uri item")
        # Within the limit it is no longer the size that is refused but the bytes (not an image).
        body = assert_error(generate(emu, edit_body([prefix + "A" * fits])), 400, "InvalidParameter")
        assert "not supported" in body["message"]


def test_bodies_over_the_limit_get_413_before_being_read():
    with Emulator(latency=0, rate_limits=False) as limited:
        session = requests.Session()
        big = edit_body([data_uri(b"\0" * (5 * 1024 * 1024))])  # about 6.7 MB once encoded
        response = generate(limited, big, session=session)
        assert_error(response, 413, "BadRequest.TooLarge")
        assert response.headers["Connection"] == "close"
        record = limited.requests[-1]
        assert (record.status, record.body, record.json) == (413, b"", None)
        # The session recovers on a new connection.
        assert generate(limited, t2i_body(), session=session).status_code == 200
    # Without a limit the same body is read and judged on its content.
    with Emulator(latency=0, rate_limits=False, body_limit=0) as unlimited:
        assert_error(generate(unlimited, big), 400, "InvalidParameter", "not supported")


# -- the edit pixel rule --------------------------------------------------------------------------


def expected_edit(inputs, size, seed, index):
    """The documented rule, written out independently of the emulator's code."""
    width, height = size
    out = ImageOps.invert(inputs[-1].convert("RGB").resize(size, Image.Resampling.BICUBIC))
    thumb = (width // 6, height // 6)
    for i, other in enumerate(inputs[:-1]):
        out.paste(other.convert("RGB").resize(thumb, Image.Resampling.BICUBIC), (8 + i * (thumb[0] + 8), 8))
    colour = tuple(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:3])
    out.paste(colour, (16 * index, height - 16, 16 * index + 16, height))
    return out


def test_edit_output_follows_the_documented_pixel_rule(emu):
    first, second, last = pattern_png((640, 480)), png((500, 500), (10, 200, 90)), pattern_png((600, 900))
    response = generate(emu, edit_body([data_uri(d) for d in (first, second, last)], seed=11, n=3))
    assert response.status_code == 200
    # Last input 600x900: r = 2/3, W = round(sqrt(1048576 * 2/3) / 16) * 16 = 832, H = 1248.
    size = (round(math.sqrt(1048576 * 600 / 900) / 16) * 16, round(math.sqrt(1048576 * 900 / 600) / 16) * 16)
    assert size == (832, 1248)
    assert response.json()["usage"] == {"width": 832, "height": 1248, "image_count": 3}
    assert "task_metric" not in response.json()["output"]
    inputs = [Image.open(io.BytesIO(d)) for d in (first, second, last)]
    outputs = [download(url)[0].convert("RGB") for url in image_urls(response)]
    for k, out in enumerate(outputs):
        assert out.size == size
        assert out.tobytes() == expected_edit(inputs, size, 11, k).tobytes(), f"output {k}"
    # The outputs differ from each other only by their marks.
    assert outputs[0].tobytes() != outputs[1].tobytes()
    strip = (48, 0, 832, 1232)
    assert outputs[0].crop(strip).tobytes() == outputs[2].crop(strip).tobytes()


def test_edit_with_a_requested_size_and_the_reference_example_ratio(emu):
    source = pattern_png((900, 600))
    response = generate(emu, edit_body([data_uri(source)], seed=5, size="1024*512"))
    out = download(image_urls(response)[0])[0].convert("RGB")
    assert out.size == (1024, 512)
    assert out.tobytes() == expected_edit([Image.open(io.BytesIO(source))], (1024, 512), 5, 0).tobytes()
    # The reference's own example: a 3:2 input gives 1248*832 by default.
    response = generate(emu, edit_body([data_uri(png((768, 512)))], model="qwen-image-edit"))
    assert response.json()["usage"] == {"width": 1248, "height": 832, "image_count": 1}


def test_edit_accepts_the_emulators_own_result_urls_and_the_same_request_gives_the_same_bytes(emu):
    result_url = image_urls(generate(emu, t2i_body(size="928*1664", seed=2)))[0]
    first = generate(emu, edit_body([result_url], seed=9))
    assert first.json()["usage"]["width"] * 1664 == pytest.approx(first.json()["usage"]["height"] * 928, rel=0.03)
    again = generate(emu, edit_body([result_url], seed=9))
    assert download(image_urls(first)[0])[1] == download(image_urls(again)[0])[1]
    # input_images resolves the URL item to the very bytes the emulator served.
    edit_record = [r for r in emu.requests if r.path.endswith(GENERATION)][-1]
    assert emu.input_images(edit_record) == [emu.served_images[result_url]]


def test_watermark_changes_only_the_bottom_right_corner(emu):
    plain = download(image_urls(generate(emu, t2i_body(seed=4)))[0])[0].convert("RGB")
    marked = download(image_urls(generate(emu, t2i_body(seed=4, watermark=True)))[0])[0].convert("RGB")
    assert plain.crop((0, 0, 1328, 1200)).tobytes() == marked.crop((0, 0, 1328, 1200)).tobytes()
    assert plain.crop((1100, 1250, 1328, 1328)).tobytes() != marked.crop((1100, 1250, 1328, 1328)).tobytes()


# -- async tasks ---------------------------------------------------------------------------------


def test_task_life_cycle_timing_and_documents():
    with Emulator(latency=0.3, rate_limits=False) as emu:
        created_at = datetime.now(timezone.utc)
        response = create_task(emu, task_body("a dog", size="1664*928", seed=8))
        assert response.elapsed.total_seconds() < 0.2  # answered at once
        body = response.json()
        assert set(body) == {"request_id", "output"}
        task_id = body["output"]["task_id"]
        assert body["output"] == {"task_id": task_id, "task_status": "PENDING"}

        running = query(emu, task_id).json()
        assert running["output"]["task_status"] == "RUNNING"
        assert "end_time" not in running["output"] and "results" not in running["output"]
        assert "usage" not in running
        submitted = parse_utc8(running["output"]["submit_time"])
        assert abs(submitted - created_at) < timedelta(seconds=2)  # UTC+8 wall clock

        done = wait_for(emu, task_id)
        assert done["task_status"] == "SUCCEEDED"
        scheduled, ended = parse_utc8(done["scheduled_time"]), parse_utc8(done["end_time"])
        assert submitted <= scheduled < submitted + timedelta(seconds=0.1)
        assert timedelta(seconds=0.29) <= ended - scheduled < timedelta(seconds=0.6)
        (result,) = done["results"]
        assert result["orig_prompt"] == "a dog"
        assert result["actual_prompt"].startswith("a dog") and result["actual_prompt"] != "a dog"
        assert done["task_metrics"] == {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}
        full = query(emu, task_id).json()
        assert full["usage"] == {"image_count": 1}
        assert download(result["url"])[0].size == (1664, 928)
        assert emu.stats["tasks_created"] == 1 and emu.stats["images_billed"] == 1
        (task,) = emu.tasks
        assert (task["id"], task["status"], task["request"]["input"]["prompt"]) == (task_id, "SUCCEEDED", "a dog")


def test_tasks_without_prompt_extend_have_no_actual_prompt(emu):
    task_id = create_task(emu, task_body("plain", prompt_extend=False)).json()["output"]["task_id"]
    (result,) = wait_for(emu, task_id)["results"]
    assert result["orig_prompt"] == "plain" and "actual_prompt" not in result


def test_task_creation_rules(emu):
    no_async = requests.post(emu.base_url(SG) + SYNTHESIS, json=task_body(), headers=auth())
    assert_error(no_async, 403, "AccessDenied", "current user api does not support synchronous calls")
    assert_error(create_task(emu, task_body(model="qwen-image-edit-plus")), 400, "InvalidParameter",
                 "Model not exist.")
    assert_error(create_task(emu, {"model": "qwen-image", "input": {"negative_prompt": "x"}}), 400,
                 "InvalidParameter", "prompt")
    assert_error(create_task(emu, task_body(n=2)), 400, "InvalidParameter", "num_images_per_prompt must be 1")
    assert_error(create_task(emu, task_body(size="1024*1024")), 400, "InvalidParameter")
    assert_error(create_task(emu, task_body("[[unsafe]]")), 400, "DataInspectionFailed")
    assert emu.stats["tasks_created"] == 0


def test_two_tasks_per_key_and_model_run_at_once_and_the_rest_wait_in_order():
    keys = {SINGAPORE_KEY: SG, OTHER_SG_KEY: SG}
    with Emulator(latency=0.3, rate_limits=False, keys=keys) as emu:
        ids = [create_task(emu, task_body(f"t{i}", model="qwen-image")).json()["output"]["task_id"]
               for i in range(4)]
        other_model = create_task(emu, task_body("m")).json()["output"]["task_id"]
        other_key = create_task(emu, task_body("k", model="qwen-image"), key=OTHER_SG_KEY)
        statuses = [query(emu, i).json()["output"]["task_status"] for i in ids]
        assert statuses == ["RUNNING", "RUNNING", "PENDING", "PENDING"]
        pending = query(emu, ids[2]).json()["output"]
        assert "scheduled_time" not in pending
        # Limits are per (key, model): these start at once.
        assert query(emu, other_model).json()["output"]["task_status"] == "RUNNING"
        other_id = other_key.json()["output"]["task_id"]
        assert query(emu, other_id, key=OTHER_SG_KEY).json()["output"]["task_status"] == "RUNNING"

        done = [wait_for(emu, i) for i in ids]
        assert [d["task_status"] for d in done] == ["SUCCEEDED"] * 4
        ends = [parse_utc8(d["end_time"]) for d in done]
        starts = [parse_utc8(d["scheduled_time"]) for d in done]
        assert starts[2] >= min(ends[:2]) and starts[3] >= sorted(ends[:2])[1]  # queue order, slot by slot
        key_id = emu.requests[0].key_id
        stats = emu.stats
        assert stats["max_concurrent_tasks"][(key_id, "qwen-image")] == 2
        assert stats["max_outstanding_tasks"][(key_id, "qwen-image")] == 4
        assert stats["max_concurrent_tasks"][(key_id, "qwen-image-plus")] == 1


def test_cancel_only_pending_tasks():
    with Emulator(latency=0.3, rate_limits=False) as emu:
        ids = [create_task(emu).json()["output"]["task_id"] for _ in range(3)]
        cancel = requests.post(f"{emu.base_url(SG)}/tasks/{ids[2]}/cancel", headers=auth())
        assert cancel.status_code == 200
        assert set(cancel.json()) == {"request_id"}
        assert query(emu, ids[2]).json()["output"]["task_status"] == "CANCELED"
        for task_id in (ids[0], ids[2], "no-such-task"):  # running, already canceled, unknown
            again = requests.post(f"{emu.base_url(SG)}/tasks/{task_id}/cancel", headers=auth())
            assert_error(again, 400, "UnsupportedOperation",
                         "Failed to cancel the task, please confirm if the task is in PENDING status.")
        # Another key cannot cancel it either.
        fourth = create_task(emu).json()["output"]["task_id"]
        assert_error(requests.post(f"{emu.base_url(BJ)}/tasks/{fourth}/cancel", headers=auth(BEIJING_KEY)), 400,
                     "UnsupportedOperation")
        assert [wait_for(emu, i)["task_status"] for i in ids] == ["SUCCEEDED", "SUCCEEDED", "CANCELED"]
        assert wait_for(emu, fourth)["task_status"] == "SUCCEEDED"  # the canceled one freed its place
        assert emu.stats["images_billed"] == 3


def test_tasks_of_other_keys_and_regions_are_unknown(emu):
    task_id = create_task(emu).json()["output"]["task_id"]
    for key, region in ((OTHER_SG_KEY, SG), (BEIJING_KEY, BJ)):
        response = query(emu, task_id, key, region)
        assert response.status_code == 200
        assert response.json()["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
    assert query(emu, task_id).json()["output"]["task_status"] in ("RUNNING", "SUCCEEDED")


# -- rate limits ---------------------------------------------------------------------------------------


def test_two_generating_requests_per_second_per_key_and_model():
    with Emulator(latency=0.3) as emu:
        started = time.monotonic()
        first, second, third = (create_task(emu) for _ in range(3))
        assert time.monotonic() - started < 0.9  # all three inside one second
        assert first.status_code == second.status_code == 200
        body = assert_error(third, 429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
        assert third.headers["Retry-After"] == "1"
        assert body["code"] == "Throttling.RateQuota"
        # Sync calls share the window; other models have their own.
        assert generate(emu, t2i_body()).status_code == 429
        assert generate(emu, t2i_body(model="qwen-image")).status_code == 200
        time.sleep(max(0.0, started + 0.6 - time.monotonic()))
        assert create_task(emu).status_code == 429  # a sliding window: the first two still count
        time.sleep(max(0.0, started + 1.05 - time.monotonic()))
        assert create_task(emu).status_code == 200
        stats = emu.stats
        assert stats["rate_limited"] == 3 and stats["tasks_created"] == 3
        key_id = emu.requests[0].key_id
        assert stats["max_requests_per_second"][(key_id, "qwen-image-plus")] == 5  # attempts, refused included
        assert stats["errors"] == {"Throttling.RateQuota": 3}


def test_task_queries_are_limited_to_20_per_second_per_key():
    with Emulator(latency=0.05) as emu:
        session = requests.Session()
        started = time.monotonic()
        statuses = [session.get(f"{emu.base_url(SG)}/tasks/x", headers=auth()).status_code for _ in range(21)]
        assert time.monotonic() - started < 0.9
        assert statuses == [200] * 20 + [429]
        # Another key has its own budget.
        assert session.get(f"{emu.base_url(BJ)}/tasks/x", headers=auth(BEIJING_KEY)).status_code == 200


def test_without_rate_limits_nothing_is_refused_but_the_attempts_are_counted(emu):
    statuses = [create_task(emu).status_code for _ in range(5)]
    assert statuses == [200] * 5
    key_id = emu.requests[0].key_id
    assert emu.stats["max_requests_per_second"][(key_id, "qwen-image-plus")] == 5
    assert emu.stats["rate_limited"] == 0
    emu.reset_stats()
    assert emu.stats["max_requests_per_second"] == {} and emu.stats["tasks_created"] == 0


# -- faults ---------------------------------------------------------------------------------------------


def test_http_error_faults_fire_in_order_and_once(emu):
    emu.inject("http_error", status=503, code="ModelUnavailable", message="busy", retry_after=2)
    emu.inject("non_json")
    first = generate(emu, t2i_body())
    assert_error(first, 503, "ModelUnavailable", "busy")
    assert first.headers["Retry-After"] == "2"
    second = generate(emu, t2i_body())
    assert second.status_code == 502
    assert second.headers["Content-Type"] == "text/html"
    assert second.text == "<html>Bad Gateway</html>"
    assert generate(emu, t2i_body()).status_code == 200
    assert emu.stats["images_billed"] == 1 and emu.stats["faults_fired"] == 2
    assert emu.faults == []


def test_faults_match_the_path_and_count(emu):
    emu.inject("http_error", path="/tasks/", count=2)
    assert emu.faults == [("http_error", 2, "/tasks/")]
    assert generate(emu, t2i_body()).status_code == 200  # not a task path: untouched
    assert_error(query(emu, "a"), 500, "InternalError")
    last = query(emu, "b")
    assert_error(last, 500, "InternalError")
    assert "Retry-After" not in last.headers
    assert query(emu, "c").status_code == 200
    emu.inject("drop", count=3)
    emu.clear_faults()
    assert emu.faults == [] and query(emu, "d").status_code == 200


def test_drop_closes_without_answer_and_processes_nothing(emu):
    emu.inject("drop")
    with pytest.raises(requests.ConnectionError):
        create_task(emu)
    assert emu.stats["tasks_created"] == 0 and emu.tasks == []
    assert emu.requests[-1].status is None and emu.requests[-1].json["model"] == "qwen-image-plus"
    assert create_task(emu).status_code == 200


def test_drop_after_processes_in_full_then_closes(emu):
    emu.inject("drop_after", path=SYNTHESIS)
    with pytest.raises(requests.ConnectionError):
        create_task(emu)
    (task,) = emu.tasks
    assert wait_for(emu, task["id"])["task_status"] == "SUCCEEDED"  # created and run
    emu.inject("drop_after")
    with pytest.raises(requests.ConnectionError):
        generate(emu, t2i_body())
    assert emu.stats["images_billed"] == 2  # both billed though never answered
    assert emu.requests[-1].status is None


def test_truncate_cuts_result_downloads_in_half(emu):
    url = image_urls(generate(emu, t2i_body()))[0]
    emu.inject("truncate")
    assert generate(emu, t2i_body()).status_code == 200  # API requests are not its target
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        requests.get(url)
    raw = requests.get(url, stream=True)  # nothing queued now: complete
    assert len(raw.content) == int(raw.headers["Content-Length"]) == len(emu.served_images[url])
    # Seen from a raw socket: full Content-Length announced, half sent.
    emu.inject("truncate")
    conn = http.client.HTTPConnection("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))
    conn.request("GET", url[len(emu.url):])
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    assert len(info.value.partial) == len(emu.served_images[url]) // 2
    conn.close()


def test_task_failed_fault_ends_the_next_task_failed(emu):
    emu.inject("task_failed", code="InternalError.Algo", message="inference crashed")
    failed_id = create_task(emu).json()["output"]["task_id"]
    ok_id = create_task(emu).json()["output"]["task_id"]
    wait_for(emu, failed_id)
    failed = query(emu, failed_id)
    assert failed.status_code == 200 and "usage" not in failed.json()
    output = failed.json()["output"]
    assert (output["task_status"], output["code"], output["message"]) == ("FAILED", "InternalError.Algo",
                                                                         "inference crashed")
    assert "results" not in output and "end_time" in output
    assert wait_for(emu, ok_id)["task_status"] == "SUCCEEDED"
    assert emu.stats["images_billed"] == 1


def test_inject_refuses_unknown_kinds_and_details(emu):
    with pytest.raises(ValueError):
        emu.inject("explode")
    with pytest.raises(ValueError):
        emu.inject("http_error", stauts=500)
    with pytest.raises(ValueError):
        emu.inject("drop", count=0)


# -- result URLs ------------------------------------------------------------------------------------------


def test_result_urls_expire_and_need_their_signature():
    with Emulator(latency=0, rate_limits=False, result_ttl=0.4) as emu:
        response = generate(emu, t2i_body())
        url = image_urls(response)[0]
        expires = int(re.search(r"Expires=(\d+)", url).group(1))
        assert time.time() < expires <= time.time() + 1.5
        download(url)
        tampered = re.sub(r"Signature=[^&]+", "Signature=AAAA", url)
        forged = requests.get(tampered)
        assert forged.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in forged.text
        assert requests.get(url.split("?")[0]).status_code == 403  # unsigned
        assert requests.get(f"{emu.url}/results/{'0' * 32}.png").status_code == 404
        head = requests.head(url)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(emu.served_images[url])
        task_id = create_task(emu).json()["output"]["task_id"]
        assert wait_for(emu, task_id)["task_status"] == "SUCCEEDED"
        time.sleep(0.5)
        expired = requests.get(url)
        assert expired.status_code == 403
        assert expired.headers["Content-Type"] == "application/xml"
        assert "<Code>AccessDenied</Code>" in expired.text and "<Message>Request has expired.</Message>" in expired.text
        # The service forgets the task and cannot download the URL either.
        assert query(emu, task_id).json()["output"]["task_status"] == "UNKNOWN"
        assert_error(generate(emu, edit_body([url])), 400, "InvalidURL", "download failed")


# -- recording ---------------------------------------------------------------------------------------------


def test_requests_are_recorded_with_the_key_redacted(emu):
    image = png((500, 450), (1, 2, 3))
    generate(emu, edit_body([data_uri(image), SMALL], seed=1), headers={"X-Custom": "yes"})
    query(emu, "abc", BEIJING_KEY, BJ)
    record, task_query = emu.requests
    assert (record.method, record.path, record.region, record.status) == ("POST", f"/{SG}/api/v1{GENERATION}", SG, 200)
    assert record.headers["Authorization"] == "Bearer sk-…pore"
    assert record.headers["authorization"] == record.headers["AUTHORIZATION"]  # any case
    assert record.headers["X-Custom"] == "yes"
    assert record.json["parameters"] == {"seed": 1}
    assert json.loads(record.body) == record.json
    assert re.fullmatch(r"[0-9a-f]{8}", record.key_id) and record.key_id != task_query.key_id
    assert SINGAPORE_KEY not in repr(record) and SINGAPORE_KEY not in repr(emu.stats)
    assert emu.input_images(record) == [image, png()]
    assert (task_query.method, task_query.region, task_query.query) == ("GET", BJ, "")
    assert task_query.headers["Authorization"] == "Bearer sk-…jing"
    assert emu.input_images(task_query) == []
    assert record.time <= task_query.time


def test_keep_alive_connections_are_reused_across_answers(emu):
    conn = http.client.HTTPConnection("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))
    sockets = set()
    requests_made = [
        ("POST", GENERATION, json.dumps(t2i_body()), auth(), 200),
        ("GET", "/tasks/x", None, auth(), 200),
        ("POST", GENERATION, json.dumps(t2i_body(n=3)), auth(), 400),
        ("POST", GENERATION, json.dumps(t2i_body()), auth(BEIJING_KEY), 401),
        ("POST", "/tasks/x/cancel", "", auth(), 400),
    ]
    for method, path, body, headers, status in requests_made:
        conn.request(method, f"/{SG}/api/v1{path}", body=body, headers={**headers, "Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == status
        assert int(response.getheader("Content-Length")) == len(response.read())
        sockets.add(conn.sock.getsockname())
    url = next(iter(emu.served_images))
    conn.request("GET", url[len(emu.url):])
    response = conn.getresponse()
    assert response.status == 200 and len(response.read()) == int(response.getheader("Content-Length"))
    sockets.add(conn.sock.getsockname())
    assert len(sockets) == 1  # one connection (one client port) throughout
    conn.close()


def test_chunked_request_bodies_are_read_and_limited(emu):
    payload = json.dumps(t2i_body()).encode()
    response = requests.post(emu.base_url(SG) + GENERATION, headers=auth(),
                             data=iter([payload[:10], payload[10:]]))  # a generator: chunked coding
    assert response.status_code == 200
    assert emu.requests[-1].json == t2i_body()
    big = iter([b"x" * (3 * 1024 * 1024)] * 3)
    too_large = requests.post(emu.base_url(SG) + GENERATION, headers=auth(), data=big)
    assert_error(too_large, 413, "BadRequest.TooLarge")


def test_latency_can_be_changed_while_running(emu):
    emu.set_latency(0.3)
    assert emu.latency == 0.3
    started = time.monotonic()
    assert generate(emu, t2i_body()).status_code == 200
    assert time.monotonic() - started >= 0.3


# -- temporary uploads -----------------------------------------------------------------------------------------


def get_policy(emu, model="qwen-image-edit-plus", key=BEIJING_KEY, region=BJ):
    return requests.get(f"{emu.base_url(region)}/uploads", params={"action": "getPolicy", "model": model},
                        headers=auth(key))


def upload(info, filename, data, **overrides):
    """The form the SDK posts to upload_host, with some fields overridden."""
    fields = {
        "OSSAccessKeyId": info["oss_access_key_id"], "Signature": info["signature"],
        "policy": info["policy"], "key": f"{info['upload_dir']}/{filename}",
        "x-oss-object-acl": info["x_oss_object_acl"], "x-oss-forbid-overwrite": info["x_oss_forbid_overwrite"],
        "success_action_status": "200", "x-oss-content-type": "image/png",
    } | overrides
    return requests.post(info["upload_host"], data=fields, files={"file": (filename, data)})


def test_upload_then_use_as_oss_resource(emu):
    response = get_policy(emu)
    assert response.status_code == 200
    policy = response.json()["data"]
    assert set(policy) == {"policy", "signature", "upload_dir", "upload_host", "oss_access_key_id",
                           "x_oss_object_acl", "x_oss_forbid_overwrite", "expire_in_seconds",
                           "max_file_size_mb", "capacity_limit_mb"}
    assert policy["upload_host"] == f"{emu.url}/oss-upload" and policy["expire_in_seconds"] == 172800
    image = pattern_png((640, 640))
    uploaded = upload(policy, "cat.png", image)
    assert uploaded.status_code == 200 and uploaded.content == b""
    oss = f"oss://{policy['upload_dir']}/cat.png"
    resolve = {"X-DashScope-OssResourceResolve": "enable"}
    response = generate(emu, edit_body([oss], seed=1), BEIJING_KEY, BJ, headers=resolve)
    assert response.status_code == 200
    out = download(image_urls(response)[0])[0].convert("RGB")
    assert out.tobytes() == expected_edit([Image.open(io.BytesIO(image))], (1024, 1024), 1, 0).tobytes()
    record = emu.requests[-2]  # the generation; the download came after it
    assert record.path.endswith(GENERATION) and emu.input_images(record) == [image]
    upload_record = next(r for r in emu.requests if r.path == "/oss-upload")
    assert upload_record.method == "POST" and upload_record.status == 200 and image in upload_record.body
    assert emu.stats["uploads"] == 1

    # Bound to the model of the policy, and needs the header.
    assert_error(generate(emu, edit_body([oss], model="qwen-image-edit"), BEIJING_KEY, BJ, headers=resolve), 400,
                 "InvalidURL", "download failed")
    assert_error(generate(emu, edit_body([oss]), BEIJING_KEY, BJ), 400, "InvalidURL")


def test_uploads_are_bound_to_the_account():
    other_bj = "sk-emulator-beijing-two"
    with Emulator(latency=0, rate_limits=False, keys={BEIJING_KEY: BJ, other_bj: BJ}) as emu:
        policy = get_policy(emu).json()["data"]
        assert upload(policy, "a.png", png()).status_code == 200
        body = edit_body([f"oss://{policy['upload_dir']}/a.png"])
        resolve = {"X-DashScope-OssResourceResolve": "enable"}
        assert generate(emu, body, BEIJING_KEY, BJ, headers=resolve).status_code == 200
        assert_error(generate(emu, body, other_bj, BJ, headers=resolve), 400, "InvalidURL", "download failed")


def test_upload_policy_and_form_are_checked(emu):
    assert_error(get_policy(emu, key=SINGAPORE_KEY, region=SG), 404, "NotFound", "cn-beijing")
    assert_error(get_policy(emu, model="no-such-model"), 400, "InvalidParameter", "Model not exist.")
    assert_error(requests.get(f"{emu.base_url(BJ)}/uploads", params={"action": "list"}, headers=auth(BEIJING_KEY)),
                 400, "InvalidParameter")
    policy = get_policy(emu).json()["data"]
    cases = [
        ({"Signature": "bad"}, 403, "SignatureDoesNotMatch"),
        ({"OSSAccessKeyId": "LTAI-other"}, 403, "InvalidAccessKeyId"),
        ({"policy": base64.b64encode(b"{}").decode()}, 403, "InvalidAccessKeyId"),
        ({"key": "elsewhere/a.png"}, 403, "AccessDenied"),
    ]
    for overrides, status, code in cases:
        response = upload(policy, "a.png", png(), **overrides)
        assert response.status_code == status, overrides
        assert f"<Code>{code}</Code>" in response.text
    assert upload(policy, "a.png", png()).status_code == 200
    again = upload(policy, "a.png", png())
    assert again.status_code == 409 and "<Code>FileAlreadyExists</Code>" in again.text
    assert upload(policy, "b.png", png(), success_action_status="204").status_code == 204
    not_multipart = requests.post(policy["upload_host"], data=b"raw", headers={"Content-Type": "image/png"})
    assert not_multipart.status_code == 400
    assert emu.stats["uploads"] == 2


# -- construction and serve() -------------------------------------------------------------------------------------


def test_only_loopback_hosts_are_accepted():
    from qwen_image_dashscope.api.emulator import serve

    for host in ("0.0.0.0", "192.168.1.10", "example.com", ""):
        with pytest.raises(ValueError):
            Emulator(host=host)
        with pytest.raises(ValueError):
            serve(host=host, port=0)
    with pytest.raises(ValueError):
        Emulator(keys={"sk-x": "us-east-1"})
    with pytest.raises(RuntimeError):
        Emulator().url  # no port before start()


def test_serve_runs_until_interrupted_and_logs_urls_and_keys(tmp_path):
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import conftest\n"
        "from qwen_image_dashscope.api.emulator import serve\n"
        "serve(port=0, latency=0)\n"
    )
    with subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent)],
                          stderr=subprocess.PIPE, text=True) as process:
        try:
            lines = []
            for _ in range(20):  # tolerate unrelated lines (warnings) before the two we want
                line = process.stderr.readline()
                lines += [line] if "base URL" in line else []
                if len(lines) == 2 or not line:
                    break
            urls = [re.search(r"base URL (\S+)", line).group(1) for line in lines]
            assert urls[0].endswith("/ap-southeast-1/api/v1") and urls[1].endswith("/cn-beijing/api/v1")
            assert SINGAPORE_KEY in lines[0] and BEIJING_KEY in lines[1]
            response = requests.get(urls[1] + "/tasks/x", headers=auth(BEIJING_KEY))
            assert response.json()["output"]["task_status"] == "UNKNOWN"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
