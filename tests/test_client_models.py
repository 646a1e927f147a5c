"""Every model family through the client, over loopback against the emulator.

Per family: text to image and edit at the maximum n and a non-default size, the exact
pixels served; official refusals before any request; rules only third parties report are
sent and the service's answer reported; cost from both usage shapes; 3.0's asynchronous
path, cancel while PENDING included.
"""
import io
import threading
import time

import pytest
import requests
from PIL import Image

from qwen_image_dashscope.api import (
    CancelledError,
    ImageEditRequest,
    InvalidParameterError,
    TextToImageRequest,
    ValidationError,
)
from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator
from support.client import SG, SYNC_PATH, api_requests, make_client, png_bytes

IMAGE_GENERATION_PATH = "/services/aigc/image-generation/generation"
THREE_INPUTS = (png_bytes(640, 480, (200, 0, 0)), png_bytes(512, 512, (0, 200, 0)),
                png_bytes(480, 640, (0, 0, 200)))


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _assert_served(emu, result, n, size=None):
    assert len(result.images) == n
    assert len({image.data for image in result.images}) == n
    for image in result.images:
        assert image.data == emu.served_images[image.url]
        if size:
            assert _size(image.data) == size


@pytest.mark.parametrize("model, n, size, path, cost", [
    ("qwen-image-max", 1, "1472*1104", SYNC_PATH, 0.075),
    ("qwen-image-plus-2026-01-09", 1, "928*1664", SYNC_PATH, 0.03),
    ("qwen-image-2.0-pro", 6, "2048*1152", SYNC_PATH, 6 * 0.075),
    ("qwen-image-2.0", 6, "1024*1536", SYNC_PATH, 6 * 0.035),
    ("qwen-image-3.0", 6, "1536*1024", IMAGE_GENERATION_PATH, 6 * 0.03),
    ("qwen-image-3.0-pro", 2, "2048*2048", IMAGE_GENERATION_PATH, 2 * 0.075),
])
def test_text_to_image_per_family(emu, client, model, n, size, path, cost):
    width, height = map(int, size.split("*"))
    result = client.text_to_image(TextToImageRequest("a harbour", model=model, n=n, size=size,
                                                     seed=1), interface="async")
    [call] = api_requests(emu, path, "POST")
    assert call.json["parameters"]["n"] == n and call.json["parameters"]["size"] == size
    _assert_served(emu, result, n, (width, height))
    assert result.cost_usd == pytest.approx(cost)
    if path == SYNC_PATH:  # sync-only models: the asynchronous request fell back
        assert any("synchronous one was used" in note for note in result.notes)


@pytest.mark.parametrize("model, n, size, cost", [
    ("qwen-image-edit-max", 6, "1024*1536", 6 * 0.075),
    ("qwen-image-edit-plus-2025-12-15", 6, "768*1024", 6 * 0.03),
    ("qwen-image-2.0-pro", 6, "1536*1024", 6 * 0.075),
    ("qwen-image-3.0", 6, None, 6 * 0.03 + 3 * 0.003),
])
def test_edit_per_family_with_three_inputs(emu, client, model, n, size, cost):
    result = client.edit_image(ImageEditRequest("blend them", images=THREE_INPUTS, model=model,
                                                n=n, size=size, seed=2))
    [call] = api_requests(emu, SYNC_PATH, "POST")
    assert emu.input_images(call) == list(THREE_INPUTS)
    _assert_served(emu, result, n, tuple(map(int, size.split("*"))) if size else None)
    assert result.cost_usd == pytest.approx(cost)


@pytest.mark.parametrize("request_, parameter", [
    (TextToImageRequest("x", model="qwen-image-2.0", n=7), "n"),
    (TextToImageRequest("x", model="qwen-image-max", n=2), "n"),
    (TextToImageRequest("x", model="qwen-image-3.0", size="100*100"), "size"),
    (TextToImageRequest("x", model="qwen-image-3.0", size="4096*256"), "size"),
    (TextToImageRequest("x", model="qwen-image-max", size="1024*1024"), "size"),
    (ImageEditRequest("x", images=THREE_INPUTS, model="qwen-image-3.0",
                      prompt_extend_mode="agent"), "prompt_extend_mode"),
    (ImageEditRequest("x", images=THREE_INPUTS + THREE_INPUTS[:1], model="qwen-image-2.0"),
     "images"),
])
def test_official_refusals_send_nothing(emu, client, request_, parameter):
    call = client.text_to_image if isinstance(request_, TextToImageRequest) else client.edit_image
    with pytest.raises(ValidationError) as caught:
        call(request_)
    assert caught.value.parameter.startswith(parameter)
    assert emu.requests == []


def test_an_area_only_measured_is_sent_with_a_note(emu, client):
    result = client.text_to_image(TextToImageRequest("wide", model="qwen-image-3.0",
                                                     size="2304*2304"), interface="sync")
    _assert_served(emu, result, 1, (2304, 2304))
    assert any("2048*2048" in note for note in result.notes)


def test_an_unconfirmed_model_is_sent_and_the_service_decides(emu, client):
    images = THREE_INPUTS + THREE_INPUTS[:2]
    result = client.edit_image(ImageEditRequest("five references", images=images,
                                                model="qwen-image-2.1-pro"))
    [call] = api_requests(emu, SYNC_PATH, "POST")
    assert len(emu.input_images(call)) == 5
    assert len(result.images) == 1
    assert any("unconfirmed" in note or "not official" in note or "only some" in note
               for note in result.notes)
    with pytest.raises(InvalidParameterError) as caught:  # beyond what the service takes
        client.text_to_image(TextToImageRequest("huge", model="qwen-image-2.1-pro",
                                                size="4096*4096"))
    assert caught.value.status == 400


def test_billed_counts_and_cost_come_from_the_qima_usage(emu, client):
    result = client.edit_image(ImageEditRequest("two from three", images=THREE_INPUTS,
                                                model="qwen-image-3.0-pro", n=2))
    assert result.usage["output_image_count"] == 2
    assert result.usage["input_image_count"] == 3
    tier = result.usage["output_image_type"]
    per_image = 0.075 if tier.endswith("2k") else 0.04
    assert result.cost_usd == pytest.approx(2 * per_image + 3 * 0.003)


def test_3_0_task_cancelled_while_pending_is_not_billed():
    # The blockers run half a second: ours is cancelled within milliseconds of its creation.
    with Emulator(latency=0.5, rate_limits=False) as emu, make_client(emu) as client:
        body = {"model": "qwen-image-3.0",
                "input": {"messages": [{"role": "user", "content": [{"text": "blocker"}]}]}}
        for _ in range(2):  # the account's two processing slots
            requests.post(emu.base_url(SG) + IMAGE_GENERATION_PATH, json=body, timeout=5,
                          headers={"Authorization": f"Bearer {SINGAPORE_KEY}",
                                   "X-DashScope-Async": "enable"}).raise_for_status()
        seen = []
        event = threading.Event()

        def on_progress(progress):
            seen.append(progress)
            if progress.task_id:
                event.set()

        with pytest.raises(CancelledError) as caught:
            client.text_to_image(TextToImageRequest("mine", model="qwen-image-3.0"),
                                 on_progress=on_progress, cancel_event=event)
        assert "still queued and has been cancelled" in str(caught.value)
        task_id = seen[-1].task_id
        [mine] = [t for t in emu.tasks if t["id"] == task_id]
        assert mine["status"] == "CANCELED"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(t["status"] == "RUNNING" for t in emu.tasks):
            time.sleep(0.05)
        assert emu.stats["images_billed"] == 2  # the blockers only
