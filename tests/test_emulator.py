"""The DashScope emulator against plain HTTP clients (requests, http.client) on loopback:
keys and regions, synchronous generation and its validation, the edit pixel rule. The
helpers and the ``emu`` fixture here serve the other test_emulator_* modules too."""
import base64
import hashlib
import io
import math
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests
from PIL import Image, ImageOps

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator

SG, BJ = "ap-southeast-1", "cn-beijing"
GENERATION = "/services/aigc/multimodal-generation/generation"
SYNTHESIS = "/services/aigc/text2image/image-synthesis"
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


def standard_emulator():
    """The emulator most tests use: fast, no rate limits, a second Singapore account."""
    return Emulator(latency=0.05, rate_limits=False, keys={
        SINGAPORE_KEY: SG, OTHER_SG_KEY: SG, BEIJING_KEY: BJ,
    })


@pytest.fixture
def emu():
    with standard_emulator() as running:
        yield running


# -- keys and regions --------------------------------------------------------------------------


def test_each_key_works_in_its_own_region_only(emu):
    assert emu.base_url(SG) == f"{emu.url}/ap-southeast-1/api/v1"
    assert emu.base_url(BJ) == f"{emu.url}/cn-beijing/api/v1"
    assert query(emu, "x", SINGAPORE_KEY, SG).json()["output"]["task_status"] == "UNKNOWN"
    assert query(emu, "x", BEIJING_KEY, BJ).json()["output"]["task_status"] == "UNKNOWN"
    for key, region in ((BEIJING_KEY, SG), (SINGAPORE_KEY, BJ), ("sk-unknown-key-1234", SG)):
        assert_error(generate(emu, t2i_body(), key, region), 401, "InvalidApiKey",
                     "Invalid API-key provided.")
        assert_error(query(emu, "x", key, region), 401, "InvalidApiKey")


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic c2stZW11bGF0b3I=", SINGAPORE_KEY]
)
def test_missing_or_garbled_authorization_is_401(emu, header):
    headers = {} if header is None else {"Authorization": header}
    response = requests.post(emu.base_url(SG) + GENERATION, json=t2i_body(), headers=headers)
    assert_error(response, 401, "InvalidApiKey")
    assert emu.stats["images_billed"] == 0


def test_unknown_paths_are_404(emu):
    assert_error(requests.get(emu.base_url(SG) + "/nothing/here", headers=auth()), 404, "NotFound")
    assert_error(
        requests.get(f"{emu.url}/eu-west-1/api/v1/tasks/x", headers=auth()), 404, "NotFound"
    )
    # Authentication comes first, as at the service's gateway.
    assert_error(
        requests.get(emu.base_url(SG) + "/nothing", headers=auth(BEIJING_KEY)), 401, "InvalidApiKey"
    )


# -- synchronous generation --------------------------------------------------------------------


def test_text_to_image_answer_has_the_reference_shape(emu):
    started = time.monotonic()
    response = generate(
        emu,
        t2i_body(
            seed=7, negative_prompt="", prompt_extend=True, watermark=False, result_format="message"
        ),
    )
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
    assert re.fullmatch(
        rf"{emu.url}/results/[0-9a-f]{{32}}\.png\?Expires=\d+&OSSAccessKeyId=\w+&Signature=\S+", url
    )
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
    body = edit_body([SMALL], model="qwen-image-edit", prompt_extend="garbage")
    assert generate(emu, body).status_code == 200


# -- the edit pixel rule -----------------------------------------------------------------------


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


def test_edit_output_follows_the_documented_pixel_rule(emu):
    first, second, last = (
        pattern_png((640, 480)),
        png((500, 500), (10, 200, 90)),
        pattern_png((600, 900)),
    )
    response = generate(emu, edit_body([data_uri(d) for d in (first, second, last)], seed=11, n=3))
    assert response.status_code == 200
    # Last input 600x900: r = 2/3, W = round(sqrt(1048576 * 2/3) / 16) * 16 = 832, H = 1248.
    size = (
        round(math.sqrt(1048576 * 600 / 900) / 16) * 16,
        round(math.sqrt(1048576 * 900 / 600) / 16) * 16,
    )
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
    assert (
        out.tobytes()
        == expected_edit([Image.open(io.BytesIO(source))], (1024, 512), 5, 0).tobytes()
    )
    # The reference's own example: a 3:2 input gives 1248*832 by default.
    response = generate(emu, edit_body([data_uri(png((768, 512)))], model="qwen-image-edit"))
    assert response.json()["usage"] == {"width": 1248, "height": 832, "image_count": 1}


def test_edit_accepts_the_emulators_own_result_urls_and_the_same_request_gives_the_same_bytes(emu):
    result_url = image_urls(generate(emu, t2i_body(size="928*1664", seed=2)))[0]
    first = generate(emu, edit_body([result_url], seed=9))
    assert first.json()["usage"]["width"] * 1664 == pytest.approx(
        first.json()["usage"]["height"] * 928, rel=0.03
    )
    again = generate(emu, edit_body([result_url], seed=9))
    assert download(image_urls(first)[0])[1] == download(image_urls(again)[0])[1]
    # input_images resolves the URL item to the very bytes the emulator served.
    edit_record = [r for r in emu.requests if r.path.endswith(GENERATION)][-1]
    assert emu.input_images(edit_record) == [emu.served_images[result_url]]


def test_watermark_changes_only_the_bottom_right_corner(emu):
    plain = download(image_urls(generate(emu, t2i_body(seed=4)))[0])[0].convert("RGB")
    marked = download(image_urls(generate(emu, t2i_body(seed=4, watermark=True)))[0])[0].convert(
        "RGB"
    )
    assert plain.crop((0, 0, 1328, 1200)).tobytes() == marked.crop((0, 0, 1328, 1200)).tobytes()
    assert (
        plain.crop((1100, 1250, 1328, 1328)).tobytes()
        != marked.crop((1100, 1250, 1328, 1328)).tobytes()
    )
