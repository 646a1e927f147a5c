"""Every endpoint and parameter as it goes over the wire, and the results that come back."""
import io

import pytest
from PIL import Image

from qwen_image_dashscope.api import (
    ImageEditRequest,
    InvalidParameterError,
    TextToImageRequest,
)
from qwen_image_dashscope.api.emulator.images import edit_size
from qwen_image_dashscope.api.emulator.rules import EXTEND_SUFFIX
from support.client import ASYNC_PATH, BJ, SYNC_PATH, api_requests, make_client, png_bytes


def _decoded_size(data):
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def test_text_to_image_async_body_headers_and_result(emu, client):
    request = TextToImageRequest("一隻橘貓 on a sofa", negative_prompt="blurry", size="1664*928",
                                 seed=42, watermark=True)
    result = client.text_to_image(request)

    [create] = api_requests(emu, ASYNC_PATH, "POST")
    assert create.json == {
        "model": "qwen-image-plus",
        "input": {"prompt": "一隻橘貓 on a sofa", "negative_prompt": "blurry"},
        "parameters": {"size": "1664*928", "n": 1, "prompt_extend": True, "watermark": True,
                       "seed": 42},
    }
    assert "一隻橘貓".encode() in create.body  # UTF-8, not \\u escapes
    assert create.headers["X-DashScope-Async"] == "enable"
    assert create.headers["Content-Type"] == "application/json"
    assert create.headers["Authorization"] == "Bearer sk-…pore"
    assert create.headers["User-Agent"].startswith("qwen-image-dashscope/")
    assert "X-DashScope-OssResourceResolve" not in create.headers

    polls = api_requests(emu, f"/tasks/{result.task_id}", "GET")
    assert polls and all("X-DashScope-Async" not in p.headers for p in polls)
    assert all("Content-Type" not in p.headers for p in polls)

    [task] = emu.tasks
    assert result.task_id == task["id"] and task["status"] == "SUCCEEDED"
    [image] = result.images
    assert image.url == task["urls"][0]
    assert image.data == emu.served_images[image.url]
    assert (image.width, image.height) == (1664, 928) == _decoded_size(image.data)
    assert result.interface == "async"
    assert result.orig_prompt == request.prompt
    assert result.actual_prompt == request.prompt + EXTEND_SUFFIX
    assert result.usage == {"image_count": 1}
    assert result.submit_time and result.end_time and result.request_id
    assert result.seed == 42
    assert result.cost_usd == pytest.approx(0.03)


def test_seed_is_left_out_when_not_set(emu, client):
    client.text_to_image(TextToImageRequest("a cat", prompt_extend=False))
    [create] = api_requests(emu, ASYNC_PATH, "POST")
    assert "seed" not in create.json["parameters"]
    assert create.json["parameters"]["prompt_extend"] is False


def test_text_to_image_sync_body_and_result(emu, client):
    request = TextToImageRequest("a red bicycle", model="qwen-image", negative_prompt="rain",
                                 size="928*1664", seed=7)
    result = client.text_to_image(request, interface="sync")

    assert not api_requests(emu, ASYNC_PATH)
    [call] = api_requests(emu, SYNC_PATH, "POST")
    assert call.json == {
        "model": "qwen-image",
        "input": {"messages": [{"role": "user", "content": [{"text": "a red bicycle"}]}]},
        "parameters": {"negative_prompt": "rain", "n": 1, "watermark": False,
                       "size": "928*1664", "prompt_extend": True, "seed": 7},
    }
    assert "X-DashScope-Async" not in call.headers
    [image] = result.images
    assert image.data == emu.served_images[image.url]
    assert (image.width, image.height) == (928, 1664)
    assert result.interface == "sync" and result.task_id is None
    assert result.usage == {"width": 928, "height": 1664, "image_count": 1}
    assert result.cost_usd == pytest.approx(0.035)


def test_beijing_region_uses_its_key_and_price(emu):
    with make_client(emu, BJ) as beijing:
        result = beijing.text_to_image(TextToImageRequest("a lantern"))
    [create] = api_requests(emu, ASYNC_PATH, "POST")
    assert create.region == BJ and create.headers["Authorization"].endswith("jing")
    assert result.region == BJ
    assert result.cost_usd == pytest.approx(0.028671)


def test_edit_plus_sends_images_in_order_then_text(emu, client):
    first = png_bytes(600, 400, (10, 200, 10))
    second = png_bytes(512, 768, (0, 0, 250), fmt="JPEG")
    request = ImageEditRequest("put 圖1 into 圖2", images=(first, second), n=3, seed=11,
                               negative_prompt=" ")
    result = client.edit_image(request)

    [call] = api_requests(emu, SYNC_PATH, "POST")
    content = call.json["input"]["messages"][0]["content"]
    assert [list(item) for item in content] == [["image"], ["image"], ["text"]]
    assert content[0]["image"].startswith("data:image/png;base64,")
    assert content[1]["image"].startswith("data:image/jpeg;base64,")
    assert content[2] == {"text": "put 圖1 into 圖2"}
    assert emu.input_images(call) == [first, second]
    # A blank negative prompt carries nothing, so it is left out.
    assert call.json["parameters"] == {"n": 3, "watermark": False, "prompt_extend": True,
                                       "seed": 11}
    assert len(result.images) == 3
    assert len({image.data for image in result.images}) == 3
    for image in result.images:
        assert image.data == emu.served_images[image.url]
        # The last input (512x768) sets the aspect ratio, near 1024*1024.
        assert (image.width, image.height) == _decoded_size(image.data) == edit_size(512, 768)
    assert result.cost_usd == pytest.approx(0.09)


def test_edit_custom_size_and_url_input(emu, client):
    made = client.text_to_image(TextToImageRequest("a source picture"), interface="sync")
    url = made.images[0].url
    result = client.edit_image(ImageEditRequest("make it night", images=(url,),
                                                size="1024*1536", prompt_extend=False))
    call = api_requests(emu, SYNC_PATH, "POST")[-1]
    assert call.json["input"]["messages"][0]["content"][0] == {"image": url}
    assert call.json["parameters"]["size"] == "1024*1536"
    assert call.json["parameters"]["prompt_extend"] is False
    assert (result.images[0].width, result.images[0].height) == (1024, 1536)


def test_qwen_image_edit_gets_no_prompt_extend_and_no_size(emu, client):
    result = client.edit_image(ImageEditRequest("add a hat", images=(png_bytes(),),
                                                model="qwen-image-edit", prompt_extend=False))
    [call] = api_requests(emu, SYNC_PATH, "POST")
    assert call.json["parameters"] == {"n": 1, "watermark": False}
    assert "prompt_extend is not sent: qwen-image-edit does not take it" in result.notes
    assert result.cost_usd == pytest.approx(0.045)


def test_oss_input_sends_the_resolve_header(emu):
    with make_client(emu, BJ) as beijing:
        with pytest.raises(InvalidParameterError) as caught:
            beijing.edit_image(ImageEditRequest("x", images=("oss://dashscope-instant/x/a.png",)))
    [call] = api_requests(emu, SYNC_PATH, "POST")
    assert call.headers["X-DashScope-OssResourceResolve"] == "enable"
    assert caught.value.code == "InvalidURL"
    assert "oss:// names work only in Beijing" in str(caught.value)


def test_progress_stages_in_order(emu, client):
    seen = []
    client.text_to_image(TextToImageRequest("a cat"), on_progress=seen.append)
    stages = [p.stage for p in seen]
    assert stages[0] == "queued" and stages[-1] == "done"
    assert "downloading" in stages
    assert stages.index("downloading") < stages.index("done")
    assert all(0.0 <= p.fraction <= 1.0 for p in seen) and seen[-1].fraction == 1.0
    assert all(p.task_id == seen[-1].task_id for p in seen[1:])
    assert [p.elapsed for p in seen] == sorted(p.elapsed for p in seen)


def test_low_level_task_calls(emu, client):
    task_id = client.create_task(TextToImageRequest("a kite", seed=3))
    [create] = api_requests(emu, ASYNC_PATH, "POST")
    assert create.json["parameters"]["seed"] == 3
    first = client.get_task(task_id)
    assert first["output"]["task_id"] == task_id
    assert first["output"]["task_status"] in ("PENDING", "RUNNING", "SUCCEEDED")
    final = client.wait_task(task_id, model="qwen-image-plus")
    assert final["output"]["task_status"] == "SUCCEEDED"
    assert final["output"]["results"][0]["url"] in emu.served_images


def test_cancel_request_has_an_empty_body(emu, client):
    task_id = client.create_task(TextToImageRequest("a kite"))
    with pytest.raises(InvalidParameterError) as caught:  # it is already running
        client.cancel_task(task_id)
    [cancel] = api_requests(emu, f"/tasks/{task_id}/cancel", "POST")
    assert cancel.body == b"" and "Content-Type" not in cancel.headers
    assert caught.value.code == "UnsupportedOperation"
    assert "Only a task still queued (PENDING) can be cancelled" in str(caught.value)
    client.wait_task(task_id)


def test_check_key_tells_the_region_without_billing(emu, client):
    assert client.check_key("singapore") is True
    assert client.check_key("cn-beijing", base_url=emu.base_url(BJ)) is False
    probes = [r for r in emu.requests if r.method == "GET" and "/tasks/" in r.path]
    assert [r.status for r in probes] == [200, 401]
    assert emu.stats["tasks_created"] == 0 and emu.stats["images_billed"] == 0


def test_unknown_model_is_sent_with_a_note(emu, client):
    from qwen_image_dashscope.api import validate

    request = TextToImageRequest("a cat", model="qwen-image-ultra")
    assert "not in the pack's table" in validate(request).notes[0]
    with pytest.raises(InvalidParameterError) as caught:
        client.text_to_image(request)
    [create] = api_requests(emu, ASYNC_PATH, "POST")
    assert create.json["model"] == "qwen-image-ultra"
    assert "Model not exist." in str(caught.value)

