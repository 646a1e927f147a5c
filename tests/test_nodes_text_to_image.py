"""The text-to-image node run as ComfyUI runs it, against the emulator, with stand-in hooks."""
import json
import re
import threading
import time

import numpy as np
import pytest

from qwen_image_dashscope.api.emulator import BEIJING_KEY
from qwen_image_dashscope.api.errors import MissingApiKeyError, TaskFailedError, ValidationError
from qwen_image_dashscope.nodes.text_to_image import SIZES, DashScopeQwenImageTextToImage as T2I
from support.client import roomy_rate
from support.comfy_stubs.harness import png_pixels, run_node, saved_pixels

SQUARE = "1328*1328 (1:1)"
WIDE = "1664*928 (16:9)"
# No test here is about the account's rate (test_client_limiter.py, test_throughput.py are):
# it takes 10 calls a second, so a batch's third image does not wait for the rate window.
EMULATOR = roomy_rate("qwen-image-plus")  # the options of this module's ``emulator``



def generation_posts(emu):
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith(
        ("/image-synthesis", "/generation"))]


def served_by_seed(emu):
    served = emu.served_images
    return {task["seed"]: served[task["urls"][0]] for task in emu.tasks if task["urls"]}


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "over the budget"])
def test_each_image_is_decoded_once_and_the_output_mapped_while_the_calls_run(
        service, comfy, monkeypatch, keep):
    from qwen_image_dashscope.api import images as codec
    from qwen_image_dashscope.nodes import runner, tensors

    decoded, decode = [], codec.decode_pixels

    def counting(data):
        decoded.append(data)
        return decode(data)

    mapped, new_output = [], tensors.new_output

    def mapping(shape):
        mapped.append(shape)
        return new_output(shape)

    monkeypatch.setattr(codec, "decode_pixels", counting)  # the decoder's (runner._decoded)
    monkeypatch.setattr(tensors, "decode_pixels", counting)  # the output's
    monkeypatch.setattr(tensors, "new_output", mapping)
    if not keep:  # a run past the budget decodes the images it did not write again
        monkeypatch.setattr(runner, "KEEP_DECODED_BYTES", 0)
    # qwen-image-plus runs 2 tasks at once: the third call ends a task's length after the
    # first two, when the output's memory is mapped.
    service.set_latency(0.6)
    images, _, _, _ = run_node(T2I, prompt="a paper boat", size=WIDE, seed=7, batch=3)
    # The output's memory was mapped once, while the calls ran, after the first had its images.
    assert mapped == [(3, 928, 1664, 3)]

    by_seed = served_by_seed(service)
    for index, seed in enumerate((7, 8, 9)):
        assert np.array_equal(saved_pixels(images[index:index + 1])[0], png_pixels(by_seed[seed]))
    times = [sum(data == image for data in decoded) for image in
             (service.served_images[task["urls"][0]] for task in
              sorted(service.tasks, key=lambda task: task["seed"]))]
    if keep:
        assert times == [1, 1, 1]
    else:
        # The first call to end (of the first two) came before the output's memory: neither
        # kept nor written, its image was decoded again; the third went into its frame.
        assert sorted(times[:2]) in ([1, 2], [2, 2]) and times[2] == 1


def test_pixels_written_for_another_place_in_the_batch_are_decoded_again():
    from qwen_image_dashscope.nodes import outputs, runner

    def call():  # images 3-4 of a run, both written into their frames by the decoder
        return runner.Call(None, first=2, n=2, decoded=[runner.Decoded((None, None), None)] * 2)

    # An earlier call gave one image fewer than asked: this call's images are 2 and 3 now.
    assert outputs._take_pixels(call(), 2, position=1) == [None, None]
    assert outputs._take_pixels(call(), 2, position=2) == [(None, None)] * 2


def test_batch_uses_consecutive_seeds_and_returns_the_served_pixels(service, comfy):
    images, prompts, info, masks = run_node(T2I, prompt="a red kite over a beach", size=WIDE,
                                            seed=41, batch=3)
    assert tuple(masks.shape) == (3, 928, 1664) and not masks.any()  # opaque: zeros
    assert not any("transparency" in note for note in json.loads(info)["notes"])
    bodies = [r.json for r in generation_posts(service)]
    assert sorted(b["parameters"]["seed"] for b in bodies) == [41, 42, 43]
    assert all(b["parameters"]["size"] == "1664*928" for b in bodies)
    assert all(b["parameters"]["prompt_extend"] is True for b in bodies)
    assert all(b["parameters"]["watermark"] is False for b in bodies)
    assert all(r.path.endswith("/image-synthesis") for r in generation_posts(service))  # async

    assert images.dtype.is_floating_point and tuple(images.shape) == (3, 928, 1664, 3)
    by_seed = served_by_seed(service)
    for index, seed in enumerate((41, 42, 43)):
        served = png_pixels(by_seed[seed])
        assert np.array_equal(saved_pixels(images[index:index + 1])[0], served)
        assert np.array_equal(images[index].numpy(), served.astype(np.float32) / np.float32(255))

    record = json.loads(info)
    assert record["images"] == 3 and record["region"] == "ap-southeast-1"
    assert [r["seed"] for r in record["requests"]] == [41, 42, 43]
    assert all(r["task_id"] and r["request_id"] and not r["from_store"] for r in record["requests"])
    assert record["requests"][0]["sizes"] == ["1664*928"]
    assert record["estimated_cost_usd"] == pytest.approx(0.09)
    assert record["failures"] == []
    # prompt_extend rewrote the prompt: one line per image, the rewritten one.
    lines = prompts.split("\n")
    assert len(lines) == 3
    assert all(line.startswith("a red kite over a beach") and line != "a red kite over a beach"
               for line in lines)
    assert lines[0] == record["requests"][0]["actual_prompt"]


def test_sync_interface_without_prompt_extend(service, comfy):
    images, prompts, _, _ = run_node(T2I, prompt="line one\nline two", interface="sync",
                                  prompt_extend=False, watermark=True, seed=7)
    (post,) = generation_posts(service)
    assert post.path.endswith("/multimodal-generation/generation")
    assert post.json["parameters"]["prompt_extend"] is False
    assert post.json["parameters"]["watermark"] is True
    assert post.json["input"]["messages"][0]["content"] == [{"text": "line one\nline two"}]
    assert prompts == "line one line two"  # one line per image
    (served,) = service.served_images.values()
    assert np.array_equal(saved_pixels(images)[0], png_pixels(served))


def test_progress_text_and_progress_bar(service, comfy):
    service.set_latency(0.6)
    run_node(T2I, prompt="a lighthouse", batch=2, unique_id="42")
    texts = comfy.server.PromptServer.instance.texts_for("42")
    # One line of counts by state, never a line per image.
    assert all("\n" not in text for text in texts)
    assert any(re.fullmatch(r"(\d done · )?\d running \(\d+ s\)", t) for t in texts), texts
    assert re.fullmatch(r"2 images in \d+ s · about \$0\.06 · saved in output/qwen-image/[\d-]+",
                        texts[-1]), texts[-1]
    assert comfy.utils.bars == [(2, "42")]
    updates = comfy.utils.updates
    assert updates and all(node == "42" and total == 2 for node, _, total in updates)
    values = [value for _, value, _ in updates]
    assert values == sorted(values) and values[-1] == 2
    assert comfy.model_management.polls >= 5  # it looked at the Cancel flag while waiting


def test_each_image_is_the_preview_as_soon_as_its_call_has_it(service, comfy):
    # qwen-image-plus runs 2 tasks at once: calls 3 and 4 wait for calls 1 and 2.
    service.set_latency(0.6)
    timing = {}
    run_node(T2I, timing=timing, prompt="four kites", batch=4, unique_id="5", seed=1)
    previews = comfy.utils.previews
    assert [node for node, _, _ in previews] == ["5"] * 4
    first, last = previews[0][2], previews[-1][2]
    assert last - first > 0.3  # the first two were shown a task's length before the others
    assert timing["ended"] > last
    square = T2I.INPUT_TYPES()["required"]["size"][1]["default"].split(" ")[0]
    width, height = map(int, square.split("*"))
    assert all(picture.size == (512, 512 * height // width) for _, (_, picture, _), _ in previews)


def test_cancel_cancels_a_queued_task_and_reports_interrupted(service, comfy):
    # Another client of the same account keeps both task slots busy, so the node's task
    # waits PENDING at DashScope.
    import requests

    from qwen_image_dashscope.api.emulator import SINGAPORE_KEY

    service.set_latency(5.0)
    for _ in range(2):
        requests.post(
            service.base_url("ap-southeast-1") + "/services/aigc/text2image/image-synthesis",
            headers={"Authorization": f"Bearer {SINGAPORE_KEY}", "X-DashScope-Async": "enable"},
            json={"model": "qwen-image-plus", "input": {"prompt": "busy"}}, timeout=5)
    # (The account takes 10 creations a second: the node's is not refused for the rate.)
    mm = comfy.model_management
    pressed = {}

    def press_cancel_once_queued():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(service.tasks) < 3:
            time.sleep(0.02)
        time.sleep(0.3)
        pressed["at"] = time.monotonic()
        mm.interrupt_current_processing()

    threading.Thread(target=press_cancel_once_queued, daemon=True).start()
    timing = {}
    with pytest.raises(mm.InterruptProcessingException):
        run_node(T2I, timing=timing, prompt="a queued cat", seed=3)
    assert timing["ended"] - pressed["at"] < 0.4
    assert mm.raised == 1 and not mm.processing_interrupted()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        statuses = {t["request"]["input"]["prompt"]: t["status"] for t in service.tasks}
        if statuses.get("a queued cat") == "CANCELED":
            break
        time.sleep(0.05)
    assert statuses["a queued cat"] == "CANCELED"
    assert service.stats["images_billed"] == 0


def test_reuse_stored_serves_an_identical_request_from_the_store(service, comfy):
    first, _, info1, _ = run_node(T2I, prompt="a paper boat", seed=5)
    calls = len(generation_posts(service))
    second, _, info2, _ = run_node(T2I, prompt="a paper boat", seed=5)
    assert len(generation_posts(service)) == calls  # nothing sent
    assert np.array_equal(first.numpy(), second.numpy())
    record = json.loads(info2)
    assert record["requests"][0]["from_store"] is True
    assert record["estimated_cost_usd"] == 0
    assert any("served from the result store" in note for note in record["notes"])
    files = json.loads(info1)["requests"][0]["files"]
    assert files and files[0].startswith(str(comfy.folder_paths.get_output_directory()))
    assert "/qwen-image/" in files[0]
    run_node(T2I, prompt="a paper boat", seed=5, reuse_stored=False)
    assert len(generation_posts(service)) == calls + 1


def test_store_directory_follows_the_environment(service, comfy, tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_IMAGE_STORE_DIR", str(tmp_path / "elsewhere"))
    _, _, info, _ = run_node(T2I, prompt="a stored kite", seed=1)
    assert json.loads(info)["requests"][0]["files"][0].startswith(str(tmp_path / "elsewhere"))


def test_region_override_uses_that_regions_key_and_price(service, comfy, monkeypatch):
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL_CN_BEIJING", service.base_url("cn-beijing"))
    monkeypatch.setenv("DASHSCOPE_API_KEY_CN_BEIJING", BEIJING_KEY)
    _, _, info, _ = run_node(T2I, prompt="a tea house", region="cn-beijing (Beijing)")
    assert {r.region for r in generation_posts(service)} == {"cn-beijing"}
    record = json.loads(info)
    assert record["region"] == "cn-beijing"
    assert record["estimated_cost_usd"] == pytest.approx(0.028671)


def test_partial_failure_fail_raises_the_error_with_its_message(service, comfy):
    service.inject("task_failed", count=1)
    with pytest.raises(TaskFailedError) as caught:
        run_node(T2I, prompt="two kites", batch=2, interface="async")
    assert "InternalError.Algo" in str(caught.value) and "not billed" in str(caught.value)


def test_partial_failure_return_successful_lists_the_failure(service, comfy):
    service.inject("task_failed", count=1)
    images, prompts, info, _ = run_node(T2I, prompt="two kites", batch=2,
                                     on_partial_failure="return successful")
    assert images.shape[0] == 1 and len(prompts.split("\n")) == 1
    (failure,) = json.loads(info)["failures"]
    assert failure["error"] == "TaskFailedError" and "InternalError.Algo" in failure["message"]


def test_all_failed_raises_even_when_returning_successful(service, comfy):
    service.inject("task_failed", count=2)
    with pytest.raises(TaskFailedError):
        run_node(T2I, prompt="two kites", batch=2, on_partial_failure="return successful")


def test_missing_key_is_a_clear_error_at_run_time_and_nothing_is_sent(service, comfy, monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    with pytest.raises(MissingApiKeyError) as caught:
        run_node(T2I, prompt="a cat")
    message = str(caught.value)
    assert "No DashScope API key" in message and "DASHSCOPE_API_KEY" in message
    assert "never taken from a node widget" in message
    assert service.requests == []


def test_custom_model_is_sent_as_written_and_the_service_error_arrives_intact(service, comfy):
    assert T2I.VALIDATE_INPUTS(prompt="a cat", model="qwen-image-plus", size=SQUARE, seed=0,
                               custom_model="qwen-image-max-preview") is True
    with pytest.raises(Exception) as caught:
        run_node(T2I, prompt="a cat", custom_model=" qwen-image-max-preview ")
    (post,) = generation_posts(service)
    assert post.json["model"] == "qwen-image-max-preview"
    assert "Model not exist" in str(caught.value) and "InvalidParameter" in str(caught.value)


@pytest.mark.parametrize("inputs, expected", [
    ({"prompt": "x" * 801}, "prompt: is 801 characters long, over the limit of 800"),
    ({"prompt": ""}, "prompt: is empty"),
    ({"negative_prompt": "n" * 501}, "negative_prompt: is 501 characters long"),
    ({"seed": -1}, "seed: -1 is out of range"),
    ({"seed": 2147483648}, "seed: 2147483648 is out of range"),
    ({"size": "1024*1024"}, "size: '1024*1024' is not in the list"),
    ({"model": "qwen-image-edit-plus"}, "model: 'qwen-image-edit-plus' is not in the list"),
])
def test_validate_inputs_refuses_at_queue_time(inputs, expected, service):
    values = {"prompt": "a cat", "negative_prompt": "", "model": "qwen-image-plus",
              "size": SQUARE, "seed": 0, "custom_model": "", **inputs}
    message = T2I.VALIDATE_INPUTS(**values)
    assert isinstance(message, str) and message.startswith(expected), message
    assert service.requests == []


def test_validate_inputs_accepts_linked_and_missing_inputs():
    # Linked inputs arrive as None at queue time; optional inputs may be absent.
    assert T2I.VALIDATE_INPUTS(prompt=None, negative_prompt=None, model="qwen-image",
                               size=SQUARE, seed=None) is True
    assert T2I.VALIDATE_INPUTS(prompt="a cat", model="qwen-image-plus", size=SQUARE,
                               seed=2147483647) is True


def test_run_time_validation_sends_nothing(service, comfy):
    with pytest.raises(ValidationError, match="prompt: is 801 characters long"):
        run_node(T2I, prompt="x" * 801, batch=3)
    assert service.requests == []


def test_seeds_wrap_past_the_largest(service, comfy):
    run_node(T2I, prompt="wrap", seed=2147483647, batch=2, interface="sync")
    seeds = sorted(r.json["parameters"]["seed"] for r in generation_posts(service))
    assert seeds == [0, 2147483647]


def test_every_size_label_names_a_size_and_its_aspect():
    assert SIZES == ["1664*928 (16:9)", "1472*1140 (4:3)", "1328*1328 (1:1)",
                     "1140*1472 (3:4)", "928*1664 (9:16)", "auto", "custom"]
    assert T2I.INPUT_TYPES()["required"]["size"][1]["default"] == SQUARE


@pytest.mark.parametrize("emulator", [{"rgba": True}], indirect=True)
def test_an_rgba_result_keeps_its_colours_and_gives_the_mask_1_minus_alpha(service, comfy):
    import io

    import torch
    from PIL import Image

    images, _, info, masks = run_node(T2I, prompt="a cut-out teapot", seed=3,
                                      model="qwen-image-2.1-pro", size="custom", width=640,
                                      height=480)
    (data,) = service.served_images.values()
    picture = Image.open(io.BytesIO(data))
    assert picture.mode == "RGBA" and tuple(images.shape) == (1, 480, 640, 3)
    assert np.array_equal(saved_pixels(images)[0], np.asarray(picture)[..., :3])  # not flattened
    alpha = np.asarray(picture.getchannel("A"))
    expected = 1.0 - torch.from_numpy(alpha.astype(np.float32) / 255.0)  # as LoadImage does
    assert torch.equal(masks[0], expected)
    assert float(masks[0].max()) == 1.0 and float(masks[0].min()) == 0.0
    notes = json.loads(info)["notes"]
    assert any("colour channels as served" in n and "composited over white" in n for n in notes)
