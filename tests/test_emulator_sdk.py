"""The official dashscope SDK (2.0.2) against the emulator: it must parse every answer as
it parses the service's. This is what makes the emulator a credible stand-in."""
import base64
import io
import os
import time

import pytest
import requests
from PIL import Image

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator

dashscope = pytest.importorskip("dashscope")
from dashscope import ImageSynthesis, MultiModalConversation  # noqa: E402
from dashscope.aigc.image_generation import ImageGeneration  # noqa: E402
from dashscope.common.error import UploadFileException  # noqa: E402

SG, BJ = "ap-southeast-1", "cn-beijing"
EMULATOR = {"latency": 0.05, "rate_limits": False}  # the options of ``emulator``/``emu``


@pytest.fixture(autouse=True)
def clean_sdk_environment(monkeypatch, tmp_path):
    """The SDK reads DASHSCOPE_* at import and ~/.dashscope/api_key on calls: neutralise both."""
    for name in [n for n in os.environ if n.startswith("DASHSCOPE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(dashscope, "api_key", None)
    # A call that forgets to set it fails loudly.
    monkeypatch.setattr(dashscope, "base_http_api_url", "http://127.0.0.1:9/unset/api/v1")


class _QuickerClock:
    """``time`` for the SDK's task waits: its sleeps between task queries (1 s, doubling up
    to 5 s, for a service whose tasks take seconds) a tenth as long; the emulator's tasks
    take a twentieth of a second. Everything else is the real ``time``."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        time.sleep(seconds / 10)


@pytest.fixture(autouse=True)
def quick_sdk_waits(monkeypatch):
    from dashscope.client import base_api

    monkeypatch.setattr(base_api, "time", _QuickerClock())


@pytest.fixture(autouse=True)
def sdk_calls_the_emulator(request, monkeypatch):
    """A test using ``emu`` has the SDK pointed at that emulator's Singapore endpoint."""
    if "emu" in request.fixturenames:
        emu = request.getfixturevalue("emu")
        monkeypatch.setattr(dashscope, "base_http_api_url", emu.base_url(SG))


def fetch_png(url):
    response = requests.get(url)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def png_data_uri(size, colour):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_image_synthesis_call_waits_for_the_task_and_the_url_downloads(emu):
    rsp = ImageSynthesis.call(api_key=SINGAPORE_KEY, model="qwen-image-plus", prompt="a lighthouse",
                              n=1, size="1664*928", prompt_extend=True, watermark=False)
    assert rsp.status_code == 200
    assert rsp.code is None and rsp.message == ""  # what the SDK makes of a task query answer
    assert rsp.output.task_status == "SUCCEEDED"
    (result,) = rsp.output.results
    assert result.orig_prompt == "a lighthouse" and result.actual_prompt.startswith("a lighthouse")
    assert rsp.usage.image_count == 1
    assert fetch_png(result.url).size == (1664, 928)
    sent = emu.requests[0]
    assert sent.headers["X-DashScope-Async"] == "enable"
    assert (
        sent.json["parameters"]["size"] == "1664*928"
        and sent.json["input"]["prompt"] == "a lighthouse"
    )


def test_async_call_fetch_and_wait(emu):
    emu.set_latency(0.3)
    created = ImageSynthesis.async_call(api_key=SINGAPORE_KEY, model="qwen-image", prompt="a fox",
                                        prompt_extend=False, seed=12)
    assert created.status_code == 200 and created.code == ""
    assert created.output.task_status == "PENDING" and created.output.results == []
    fetched = ImageSynthesis.fetch(created, api_key=SINGAPORE_KEY)
    assert fetched.status_code == 200 and fetched.output.task_status in ("PENDING", "RUNNING")
    assert fetched.output.task_id == created.output.task_id
    done = ImageSynthesis.wait(created, api_key=SINGAPORE_KEY)
    assert done.output.task_status == "SUCCEEDED"
    (result,) = done.output.results
    assert "actual_prompt" not in result  # prompt_extend was off
    assert fetch_png(result.url).size == (1328, 1328)
    assert emu.tasks[0]["seed"] == 12


def test_cancel_a_pending_task(emu):
    emu.set_latency(0.5)
    running = [
        ImageSynthesis.async_call(api_key=SINGAPORE_KEY, model="qwen-image-plus", prompt=f"p{i}")
        for i in range(2)
    ]
    third = ImageSynthesis.async_call(api_key=SINGAPORE_KEY, model="qwen-image-plus", prompt="p3")
    assert ImageSynthesis.fetch(third, api_key=SINGAPORE_KEY).output.task_status == "PENDING"
    canceled = ImageSynthesis.cancel(third, api_key=SINGAPORE_KEY)
    assert canceled.status_code == 200 and canceled.output == {}
    assert ImageSynthesis.fetch(third, api_key=SINGAPORE_KEY).output.task_status == "CANCELED"
    refused = ImageSynthesis.cancel(running[0], api_key=SINGAPORE_KEY)
    assert (refused.status_code, refused.code) == (400, "UnsupportedOperation")
    assert "PENDING" in refused.message
    cancel_request = emu.requests[-1]
    assert cancel_request.body == b"" and cancel_request.path.endswith("/cancel")


def test_multimodal_text_to_image(emu):
    messages = [{"role": "user", "content": [{"text": "a poster that says hello"}]}]
    rsp = MultiModalConversation.call(
        api_key=SINGAPORE_KEY,
        model="qwen-image-plus",
        messages=messages,
        result_format="message",
        stream=False,
        watermark=False,
        prompt_extend=True,
        negative_prompt="",
        size="928*1664",
    )
    assert rsp.status_code == 200 and rsp.code == ""
    assert rsp.output.task_metric == {"TOTAL": 1, "FAILED": 0, "SUCCEEDED": 1}
    assert (rsp.usage.width, rsp.usage.height, rsp.usage.image_count) == (928, 1664, 1)
    (item,) = rsp.output.choices[0].message.content
    assert fetch_png(item["image"]).size == (928, 1664)


def test_multimodal_edit_with_a_data_uri_and_two_outputs(emu):
    image = png_data_uri((800, 600), (250, 200, 10))
    messages = [{"role": "user", "content": [{"image": image}, {"text": "make it night"}]}]
    rsp = MultiModalConversation.call(
        api_key=SINGAPORE_KEY,
        model="qwen-image-edit-plus",
        messages=messages,
        n=2,
        negative_prompt=" ",
        prompt_extend=True,
        watermark=False,
        seed=3,
    )
    assert rsp.status_code == 200
    assert (rsp.usage.width, rsp.usage.height, rsp.usage.image_count) == (1184, 880, 2)
    urls = [item["image"] for item in rsp.output.choices[0].message.content]
    assert len(urls) == 2
    for url in urls:
        img = fetch_png(url).convert("RGB")
        assert img.size == (1184, 880)
        assert img.getpixel((592, 440)) == (5, 55, 245)  # the input's colour, inverted
    recorded = [r for r in emu.requests if r.path.endswith("/generation")][-1]
    assert recorded.json["input"]["messages"][0]["content"][0]["image"] == image  # sent as is
    assert emu.input_images(recorded) == [base64.b64decode(image.split(",", 1)[1])]


def test_error_answers_are_parsed_into_status_code_and_message(emu, monkeypatch):
    messages = [{"role": "user", "content": [{"text": "a cat"}]}]
    wrong_region = MultiModalConversation.call(
        api_key=BEIJING_KEY, model="qwen-image-plus", messages=messages
    )
    assert (wrong_region.status_code, wrong_region.code) == (401, "InvalidApiKey")
    assert wrong_region.message == "Invalid API-key provided." and wrong_region.request_id
    two = MultiModalConversation.call(
        api_key=SINGAPORE_KEY, model="qwen-image-plus", messages=messages, n=2
    )
    assert (two.status_code, two.code, two.message) == (
        400, "InvalidParameter", "num_images_per_prompt must be 1")
    assert two.output is None
    task = ImageSynthesis.async_call(api_key=BEIJING_KEY, model="qwen-image-plus", prompt="x")
    assert (task.status_code, task.code) == (401, "InvalidApiKey")
    # The Beijing key is good in Beijing.
    monkeypatch.setattr(dashscope, "base_http_api_url", emu.base_url(BJ))
    ok = MultiModalConversation.call(
        api_key=BEIJING_KEY, model="qwen-image-plus", messages=messages
    )
    assert ok.status_code == 200


def test_rate_limit_answers_reach_the_sdk_as_429(monkeypatch):
    with Emulator(latency=0.05) as emu:
        monkeypatch.setattr(dashscope, "base_http_api_url", emu.base_url(SG))
        answers = [
            ImageSynthesis.async_call(api_key=SINGAPORE_KEY, model="qwen-image-plus", prompt="x")
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].code == "Throttling.RateQuota"
        assert answers[2].message == "Requests rate limit exceeded, please try again later."


def test_a_dropped_connection_is_retried_once_by_the_sdk(emu):
    emu.inject("drop")
    messages = [{"role": "user", "content": [{"text": "a cat"}]}]
    rsp = MultiModalConversation.call(
        api_key=SINGAPORE_KEY, model="qwen-image-plus", messages=messages
    )
    assert rsp.status_code == 200
    assert [r.status for r in emu.requests if r.path.endswith("/generation")] == [None, 200]


def test_the_sdk_uploads_local_files_in_beijing(monkeypatch, tmp_path):
    path = tmp_path / "input.png"
    Image.new("RGB", (512, 768), (0, 128, 255)).save(path)
    with Emulator(latency=0.05, rate_limits=False) as emu:
        monkeypatch.setattr(dashscope, "base_http_api_url", emu.base_url(BJ))
        messages = [
            {"role": "user", "content": [{"image": f"file://{path}"}, {"text": "add a moon"}]}
        ]
        rsp = MultiModalConversation.call(
            api_key=BEIJING_KEY, model="qwen-image-edit-plus", messages=messages
        )
        assert rsp.status_code == 200, rsp
        policy, upload, generation = emu.requests[:3]
        assert policy.path == "/cn-beijing/api/v1/uploads" and "action=getPolicy" in policy.query
        assert upload.path == "/oss-upload" and upload.status == 200 and upload.key_id is None
        image_item = generation.json["input"]["messages"][0]["content"][0]["image"]
        assert image_item.startswith("oss://dashscope-instant/") and image_item.endswith(
            "/input.png"
        )
        assert generation.headers["X-DashScope-OssResourceResolve"] == "enable"
        assert emu.input_images(generation) == [path.read_bytes()]
        assert fetch_png(rsp.output.choices[0].message.content[0]["image"]).size == (832, 1248)

        # Singapore offers no temporary storage: the SDK gives up at the policy request.
        monkeypatch.setattr(dashscope, "base_http_api_url", emu.base_url(SG))
        with pytest.raises(UploadFileException):
            MultiModalConversation.call(
                api_key=SINGAPORE_KEY, model="qwen-image-edit-plus", messages=messages
            )


def test_multimodal_3_0_answer_with_rewrite_status_and_the_qima_usage(emu):
    messages = [{"role": "user", "content": [{"text": "a paper crane"}]}]
    rsp = MultiModalConversation.call(api_key=SINGAPORE_KEY, model="qwen-image-3.0-pro",
                                      messages=messages, n=2, size="1024*1536",
                                      prompt_extend=False, prompt_extend_mode="direct",
                                      enable_thinking=False, watermark=False, seed=8)
    assert rsp.status_code == 200 and rsp.code == ""
    assert rsp.output.rewrite_status == "not_use"
    assert (rsp.usage.output_width, rsp.usage.output_height) == (1024, 1536)
    assert (rsp.usage.output_image_count, rsp.usage.input_image_count) == (2, 0)
    assert rsp.usage.output_image_type == "qima_output_1k"
    assert rsp.usage.input_image_type == "qima_input_1k"
    assert "width" not in rsp.usage and "image_count" not in rsp.usage
    items = rsp.output.choices[0].message.content
    assert [fetch_png(item["image"]).size for item in items] == [(1024, 1536)] * 2
    refused = MultiModalConversation.call(api_key=SINGAPORE_KEY, model="qwen-image-3.0",
                                          messages=messages, size="2561*2561")
    assert (refused.status_code, refused.code) == (400, "InvalidParameter")
    assert "for t2i requests" in refused.message


def test_image_generation_3_0_async_call_wait_and_cancel(emu):
    emu.set_latency(0.4)
    image = png_data_uri((600, 400), (10, 20, 30))
    messages = [{"role": "user", "content": [{"image": image}, {"text": "paint it"}]}]
    tasks = [ImageGeneration.async_call(api_key=SINGAPORE_KEY, model="qwen-image-3.0",
                                        messages=messages, seed=i) for i in range(3)]
    assert [t.status_code for t in tasks] == [200] * 3
    assert all(t.output.task_status == "PENDING" for t in tasks)
    sent = [r for r in emu.requests if r.path.endswith("/image-generation/generation")]
    assert len(sent) == 3 and all(r.headers["X-DashScope-Async"] == "enable" for r in sent)
    assert ImageGeneration.fetch(tasks[2], api_key=SINGAPORE_KEY).output.task_status == "PENDING"
    canceled = ImageGeneration.cancel(tasks[2], api_key=SINGAPORE_KEY)
    assert canceled.status_code == 200
    done = ImageGeneration.wait(tasks[0], api_key=SINGAPORE_KEY)
    assert done.status_code == 200 and done.output.task_status == "SUCCEEDED"
    assert done.output.rewrite_status == "success"
    (item,) = done.output.choices[0].message.content
    assert item["type"] == "image"
    width, height = done.usage.output_width, done.usage.output_height
    assert fetch_png(item["image"]).size == (width, height) and width > height
    assert done.usage.input_image_count == 1 and done.usage.output_image_type == "qima_output_2k"
    last = ImageGeneration.fetch(tasks[2], api_key=SINGAPORE_KEY)
    assert last.output.task_status == "CANCELED"


def test_the_sdk_lists_the_tasks_of_the_account(monkeypatch):
    second = "sk-emulator-singapore-second"
    keys = {SINGAPORE_KEY: (SG, "acme"), second: (SG, "acme")}
    with Emulator(latency=0.05, rate_limits=False, keys=keys) as emu:
        monkeypatch.setattr(dashscope, "base_http_api_url", emu.base_url(SG))
        created = ImageSynthesis.async_call(api_key=SINGAPORE_KEY, model="qwen-image",
                                            prompt="a kite")
        ImageSynthesis.wait(created, api_key=SINGAPORE_KEY)
        listed = ImageSynthesis.list(api_key=second, model_name="qwen-image",
                                     status="SUCCEEDED", page_size=5)
        assert listed.status_code == 200 and listed.request_id
        assert (listed.output["total"], listed.output["page_size"]) == (1, 5)
        (item,) = listed.output["data"]
        assert item["task_id"] == created.output.task_id
        assert item["request_id"] == created.request_id
        assert item["end_time"] >= item["start_time"] >= item["gmt_create"]
        sent = emu.requests[-1]
        assert sent.path == "/ap-southeast-1/api/v1/tasks" and "page_no=1" in sent.query


def test_a_gateway_page_reaches_the_sdk_as_an_unknown_error(emu):
    emu.inject("gateway_html", status=504)
    messages = [{"role": "user", "content": [{"text": "a cat"}]}]
    rsp = MultiModalConversation.call(api_key=SINGAPORE_KEY, model="qwen-image-plus",
                                      messages=messages)
    assert (rsp.status_code, rsp.code) == (504, "Unknown")
    assert "504 Gateway Time-out" in rsp.message
