"""The wire format on its own: bodies per interface and every answer shape, no sockets."""
import json

import pytest

from qwen_image_dashscope.api import ImageEditRequest, ServerError, TextToImageRequest
from qwen_image_dashscope.api.catalog.models import MODELS
from qwen_image_dashscope.api.service.wire import (
    billed_count,
    encode_body,
    messages_body,
    read_created,
    read_generated,
    read_task,
    read_usage,
    resolved,
    text2image_body,
)

LEGACY_USAGE = {"width": 1328, "height": 1328, "image_count": 2}
QIMA_USAGE = {"output_width": 2048, "output_height": 1152, "input_image_count": 3,
              "input_image_type": "qima_input_2k", "output_image_count": 4,
              "output_image_type": "qima_output_2k"}


def test_text2image_body_has_prompts_in_input_and_defaults_spelled_out():
    spec = MODELS["qwen-image-plus"]
    request = resolved(TextToImageRequest("a cat", negative_prompt="blurry", seed=3), spec)
    assert text2image_body(request, spec) == {
        "model": "qwen-image-plus",
        "input": {"prompt": "a cat", "negative_prompt": "blurry"},
        "parameters": {"size": "1328*1328", "n": 1, "prompt_extend": True,
                       "watermark": False, "seed": 3},
    }


def test_messages_body_sends_images_then_text_and_only_parameters_the_model_takes():
    spec = MODELS["qwen-image-3.0"]
    request = resolved(ImageEditRequest("merge", images=(b"x", b"y"), model="qwen-image-3.0",
                                        n=4, prompt_extend_mode="direct"), spec)
    body = messages_body(request, spec, ["data:image/png;base64,AA", "https://e/x.png"])
    assert body["input"]["messages"] == [{"role": "user", "content": [
        {"image": "data:image/png;base64,AA"}, {"image": "https://e/x.png"}, {"text": "merge"}]}]
    assert body["parameters"]["n"] == 4
    assert body["parameters"]["prompt_extend_mode"] == "direct"
    assert body["parameters"]["enable_thinking"] is True
    assert "size" not in body["parameters"]  # 3.0 picks the size itself when none is asked


def test_a_parameter_the_model_does_not_take_is_never_sent():
    spec = MODELS["qwen-image-edit"]
    request = resolved(ImageEditRequest("hat", images=(b"x",), model="qwen-image-edit",
                                        prompt_extend_mode="agent", size="1024*1024"), spec)
    parameters = messages_body(request, spec, ["data:image/png;base64,AA"])["parameters"]
    assert set(parameters) <= {"n", "negative_prompt", "watermark", "seed"}


def test_encoded_body_is_the_sdk_serialisation():
    body = {"model": "m", "input": {"prompt": "一隻貓"}, "parameters": {}}
    assert encode_body(body) == json.dumps(body, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("usage, expected", [
    (LEGACY_USAGE, dict(output_images=2, input_images=None, width=1328, height=1328,
                        output_tier=None, input_tier=None)),
    (QIMA_USAGE, dict(output_images=4, input_images=3, width=2048, height=1152,
                      output_tier="qima_output_2k", input_tier="qima_input_2k")),
    (None, dict(output_images=None, input_images=None, width=None, height=None,
                output_tier=None, input_tier=None)),
])
def test_both_usage_shapes_read_as_one_type(usage, expected):
    read = read_usage(usage)
    assert {name: getattr(read, name) for name in expected} == expected


def test_billed_count_is_the_reported_count_else_the_urls():
    assert billed_count(read_usage(QIMA_USAGE), 1) == 4
    assert billed_count(read_usage({}), 3) == 3
    assert billed_count(read_usage({"image_count": True}), 2) == 2  # not a count


def test_sync_answer_with_choices_and_rewrite_status():
    answer = {"request_id": "r1", "usage": QIMA_USAGE, "output": {
        "rewrite_status": "success",
        "choices": [{"message": {"content": [{"image": "https://a/1.png"},
                                             {"image": "https://a/2.png"}]}}]}}
    generated = read_generated(answer)
    assert generated.urls == ["https://a/1.png", "https://a/2.png"]
    assert generated.rewrite_status == "success"
    assert generated.request_id == "r1" and generated.usage.output_images == 4


def test_sync_answer_without_images_is_an_invalid_response():
    with pytest.raises(ServerError) as caught:
        read_generated({"request_id": "r2", "output": {"choices": []}})
    assert caught.value.code == "InvalidResponse" and caught.value.request_id == "r2"


def test_text2image_task_answer_with_results_and_a_failed_item():
    answer = {"request_id": "q", "usage": {"image_count": 1}, "output": {
        "task_id": "t1", "task_status": "SUCCEEDED",
        "results": [{"url": "https://a/1.png", "orig_prompt": "cat", "actual_prompt": "a cat"},
                    {"code": "DataInspectionFailed", "message": "no"}]}}
    state = read_task(answer, "t1")
    assert state.terminal and state.urls == ["https://a/1.png"]
    assert state.failed == ["image 2: DataInspectionFailed: no"]
    assert (state.orig_prompt, state.actual_prompt) == ("cat", "a cat")
    assert state.answer is answer


def test_image_generation_task_answer_keeps_its_images_under_choices():
    answer = {"usage": QIMA_USAGE, "output": {
        "task_id": "t3", "task_status": "SUCCEEDED", "rewrite_status": "not_use",
        "choices": [{"message": {"content": [{"image": "https://a/9.png", "type": "image"}]}}]}}
    state = read_task(answer, "t3")
    assert state.urls == ["https://a/9.png"] and state.failed == []
    assert state.rewrite_status == "not_use" and state.usage.output_tier == "qima_output_2k"


def test_failed_and_running_tasks():
    failed = read_task({"output": {"task_id": "t", "task_status": "FAILED",
                                   "code": "InternalError", "message": "boom"}}, "t")
    assert failed.terminal and (failed.code, failed.message) == ("InternalError", "boom")
    assert not read_task({"output": {"task_status": "RUNNING"}}, "t").terminal
    with pytest.raises(ServerError):
        read_task({"output": {"task_id": "t"}}, "t")


def test_created_answer_needs_a_task_id():
    assert read_created({"output": {"task_id": "abc", "task_status": "PENDING"}}) == "abc"
    with pytest.raises(ServerError) as caught:
        read_created({"request_id": "r", "output": {}})
    assert "task list" in str(caught.value)
