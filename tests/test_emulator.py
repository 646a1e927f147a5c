"""The DashScope emulator against plain HTTP clients (requests, http.client) on loopback:
keys and regions, synchronous generation and its validation, the edit pixel rule."""
import io
import math
import re
import time
import uuid

import pytest
import requests
from PIL import Image

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY
from support.emulator_http import (
    BJ,
    GENERATION,
    SG,
    SMALL,
    STANDARD_EMULATOR,
    T2I_SIZES,
    assert_error,
    auth,
    create_task,
    data_uri,
    download,
    edit_body,
    expected_edit,
    generate,
    image_urls,
    pattern_png,
    png,
    query,
    t2i_body,
    wait_for,
)

EMULATOR = STANDARD_EMULATOR  # the options of this module's ``emulator``/``emu``

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
