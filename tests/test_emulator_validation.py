"""The emulator's validation of synchronous requests: every refusal with its status, code
and message, the edge values it accepts, and the limits on body and data-URI sizes."""
import pytest
import requests

from qwen_image_dashscope.api.emulator import Emulator
from support.emulator_http import (
    GENERATION,
    SG,
    SMALL,
    STANDARD_EMULATOR,
    assert_error,
    auth,
    data_uri,
    edit_body,
    generate,
    png,
    t2i_body,
)

EMULATOR = STANDARD_EMULATOR  # the options of this module's ``emulator``/``emu``


def _many(count):
    return [SMALL] * count


VALIDATION_CASES = {  # id: (body, extra headers, status, code, message part)
    "t2i n=2": (t2i_body(n=2), {}, 400, "InvalidParameter", "num_images_per_prompt must be 1"),
    "t2i n string": (t2i_body(n="1"), {}, 400, "InvalidParameter", "n must be an integer"),
    "t2i free size": (t2i_body(size="1024*1024"), {}, 400, "InvalidParameter", "1024*1024"),
    "t2i size not a string": (t2i_body(size=[1328, 1328]), {}, 400, "InvalidParameter", "size"),
    "t2i with image": (
        edit_body([SMALL], model="qwen-image-plus"), {}, 400, "InvalidParameter", "image"),
    "t2i two texts": ({"model": "qwen-image", "input": {"messages": [{"role": "user", "content": [
        {"text": "a"}, {"text": "b"}]}]}}, {}, 400, "InvalidParameter", "exactly one text"),
    "t2i no text": ({"model": "qwen-image", "input": {"messages": [{"role": "user", "content": [
        {"image": SMALL}]}]}}, {}, 400, "InvalidParameter", None),
    "empty text": (t2i_body("  "), {}, 400, "InvalidParameter", "empty"),
    "two messages": ({"model": "qwen-image", "input": {"messages": [
        {"role": "user", "content": [{"text": "a"}]}] * 2}}, {}, 400, "InvalidParameter",
        "one message"),
    "assistant role": ({"model": "qwen-image", "input": {"messages": [
        {"role": "assistant", "content": [{"text": "a"}]}]}}, {}, 400, "InvalidParameter", "user"),
    "content as string": ({"model": "qwen-image", "input": {"messages": [
        {"role": "user", "content": "a cat"}]}}, {}, 400, "InvalidParameter", None),
    "seed negative": (t2i_body(seed=-1), {}, 400, "InvalidParameter", "seed"),
    "seed too large": (t2i_body(seed=2147483648), {}, 400, "InvalidParameter", "seed"),
    "seed boolean": (t2i_body(seed=True), {}, 400, "InvalidParameter", "seed"),
    "prompt_extend string": (
        t2i_body(prompt_extend="yes"), {}, 400, "InvalidParameter", "prompt_extend"),
    "watermark number": (t2i_body(watermark=1), {}, 400, "InvalidParameter", "watermark"),
    "unknown model": (
        t2i_body(model="qwen-image-max-ultra"), {}, 400, "InvalidParameter", "Model not exist."),
    "missing model": ({"input": {"messages": []}}, {}, 400, "BadRequest.EmptyModel", None),
    "missing input": ({"model": "qwen-image-plus"}, {}, 400, "BadRequest.EmptyInput", None),
    "empty input": (
        {"model": "qwen-image-plus", "input": {}}, {}, 400, "BadRequest.EmptyInput", None),
    "parameters not an object": (
        {**t2i_body(), "parameters": [1]}, {}, 400, "InvalidParameter", None),
    "unsafe prompt": (t2i_body("a [[unsafe]] scene"), {}, 400, "DataInspectionFailed",
                      "Input or output data may contain inappropriate content."),
    "unsafe negative prompt": (
        t2i_body(negative_prompt="[[unsafe]]"), {}, 400, "DataInspectionFailed", None),
    "edit without image": (edit_body([]), {}, 400, "InvalidParameter", "1 to 3"),
    "edit with four images": (edit_body(_many(4)), {}, 400, "InvalidParameter", "1 to 3"),
    "edit without text": ({"model": "qwen-image-edit-plus", "input": {"messages": [
        {"role": "user", "content": [{"image": SMALL}]}]}}, {}, 400, "InvalidParameter", "text"),
    "edit-plus n=7": (edit_body([SMALL], n=7), {}, 400, "InvalidParameter", "between 1 and 6"),
    "edit-plus n=0": (edit_body([SMALL], n=0), {}, 400, "InvalidParameter", "between 1 and 6"),
    "edit-plus size with n=2": (
        edit_body([SMALL], n=2, size="1024*1024"), {}, 400, "InvalidParameter", "n is 1"),
    "edit-plus size too small": (
        edit_body([SMALL], size="511*1024"), {}, 400, "InvalidParameter", "[512, 2048]"),
    "edit-plus size too large": (
        edit_body([SMALL], size="1024*2049"), {}, 400, "InvalidParameter", None),
    "edit-plus size garbled": (
        edit_body([SMALL], size="1024x1024"), {}, 400, "InvalidParameter", None),
    "edit n=2": (edit_body([SMALL], model="qwen-image-edit", n=2), {}, 400, "InvalidParameter",
                 "num_images_per_prompt must be 1"),
    "edit with size": (edit_body([SMALL], model="qwen-image-edit", size="1024*1024"), {}, 400,
                       "InvalidParameter", "size"),
    "gif mime": (edit_body([data_uri(png(fmt="GIF"), "image/gif")]), {}, 400,
                 "InvalidParameter", "image/gif"),
    "gif bytes under a png mime": (edit_body([data_uri(png(fmt="GIF"))]), {}, 400,
                                   "InvalidParameter", "not supported"),
    "not an image": (
        edit_body([data_uri(b"hello world")]), {}, 400, "InvalidParameter", "not supported"),
    "truncated png": (edit_body([data_uri(png()[:200])]), {}, 400, "InvalidParameter", None),
    "bad base64": (
        edit_body(["data:image/png;base64,@@@@"]), {}, 400, "InvalidParameter", "base64"),
    "data uri without base64": (
        edit_body(["data:image/png,abc"]), {}, 400, "InvalidParameter", None),
    "side below 384": (
        edit_body([data_uri(png((383, 500)))]), {}, 400, "InvalidParameter", "383*500"),
    "side above 3072": (
        edit_body([data_uri(png((3073, 400)))]), {}, 400, "InvalidParameter", "3073*400"),
    "foreign url": (edit_body(["https://help-static-aliyun-doc.aliyuncs.com/x/image36.webp"]),
                    {}, 400, "InvalidURL", "download failed"),
    "file path": (edit_body(["/tmp/cat.png"]), {}, 400, "InvalidParameter", None),
    "oss without resolve header": (edit_body(["oss://dashscope-instant/x/cat.png"]), {}, 400,
                                   "InvalidURL", "X-DashScope-OssResourceResolve"),
    "oss never uploaded": (edit_body(["oss://dashscope-instant/x/cat.png"]),
                           {"X-DashScope-OssResourceResolve": "enable"}, 400, "InvalidURL",
                           "download failed"),
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
    for case in (
        t2i_body(seed=0),
        t2i_body(seed=2147483647),
        edit_body([data_uri(png((384, 3072)))], size="512*2048"),
        edit_body([SMALL, SMALL, SMALL], n=6),
        edit_body(
            [
                data_uri(png(fmt="JPEG"), "image/jpeg"),
                data_uri(png(fmt="WEBP"), "image/webp"),
                data_uri(png(fmt="BMP"), "image/bmp"),
            ]
        ),
        edit_body(
            [data_uri(png(fmt="TIFF"), "image/tiff")], model="qwen-image-edit-plus-2025-10-30"
        ),
    ):
        assert generate(emu, case).status_code == 200


def test_data_uri_items_over_10485760_bytes_are_refused():
    with Emulator(latency=0, rate_limits=False, body_limit=0) as emu:
        prefix = "data:image/png;base64,"
        fits = (10485760 - len(prefix)) // 4 * 4  # base64 characters that fit, in whole quads
        over = prefix + "A" * (fits + 4)  # valid base64, 10485762 characters in all
        assert_error(generate(emu, edit_body([over])), 400, "InvalidParameter",
                     "Exceeded limit on max bytes per data-uri item")
        # Within the limit it is no longer the size that is refused but the bytes (not an image).
        body = assert_error(
            generate(emu, edit_body([prefix + "A" * fits])), 400, "InvalidParameter"
        )
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
