"""The image-edit node run as ComfyUI runs it, against the emulator, with stand-in hooks."""
import io
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qwen_image_dashscope.api.catalog.specs import REQUEST_BODY_TARGET
from qwen_image_dashscope.api.errors import ValidationError
from qwen_image_dashscope.nodes.image_edit import DashScopeQwenImageEdit as Edit
from support.comfy_stubs.harness import (
    pixels_sent,
    png_pixels,
    run_node,
    saved_pixels,
)


def image(batch=1, height=400, width=520, channels=3, seed=0):
    return torch.rand(batch, height, width, channels, generator=torch.Generator().manual_seed(seed))


def thumbnail(data: bytes) -> bytes:
    picture = Image.open(io.BytesIO(data)).convert("RGB")
    picture.thumbnail((512, 512), reducing_gap=1.0)  # as the node scales its previews
    return picture.tobytes()


def edit_posts(emu):
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/generation")]


def received(emu):
    """Per edit request, in seed order: the decoded pixels of every input image it got."""
    posts = sorted(edit_posts(emu), key=lambda r: r.json["parameters"]["seed"])
    return [[png_pixels(data) for data in emu.input_images(post)] for post in posts]


def served_pixels(emu):
    return {png_pixels(data).tobytes() for data in emu.served_images.values()}


def test_batch_of_edits_times_n_outputs_with_exact_pixels_both_ways(service, comfy):
    inputs = image(batch=2)
    images, prompts, info, _ = run_node(Edit, image=inputs, prompt="make the sky pink", n=2,
                                        seed=10)

    sent = pixels_sent(inputs)
    got = received(service)
    assert [len(r) for r in got] == [1, 1]
    for index in range(2):
        assert np.array_equal(got[index][0], sent[index])  # lossless: the very pixels
    bodies = sorted((r.json for r in edit_posts(service)), key=lambda b: b["parameters"]["seed"])
    assert [b["parameters"]["seed"] for b in bodies] == [10, 11]
    assert all(b["parameters"]["n"] == 2 and "size" not in b["parameters"] for b in bodies)
    assert all(b["parameters"]["prompt_extend"] is True for b in bodies)
    assert all(b["input"]["messages"][0]["content"][-1] == {"text": "make the sky pink"}
               for b in bodies)

    assert tuple(images.shape)[0] == 4 and images.shape[-1] == 3
    out = saved_pixels(images)
    served = served_pixels(service)
    assert len(served) == 4 and {frame.tobytes() for frame in out} == served
    record = json.loads(info)
    assert record["images"] == 4
    assert [r["outputs"] for r in record["requests"]] == ["images 1-2/4", "images 3-4/4"]
    assert [r["seed"] for r in record["requests"]] == [10, 11]
    assert record["estimated_cost_usd"] == pytest.approx(0.12)
    assert prompts.split("\n") == ["make the sky pink"] * 4


def test_outputs_keep_the_order_edit_by_edit(service, comfy):
    inputs = torch.stack([torch.zeros(400, 400, 3), torch.ones(400, 400, 3)])
    images, _, _, _ = run_node(Edit, image=inputs, prompt="invert", n=1)
    # The emulator inverts the last input: black in gives white out, and the reverse.
    out = saved_pixels(images)
    assert out[0, 200, 200].tolist() == [255, 255, 255]
    assert out[1, 200, 200].tolist() == [0, 0, 0]


def test_image2_and_image3_of_batch_1_are_shared_by_every_edit(service, comfy):
    first, second = image(batch=3, seed=1), image(seed=2)
    third = image(height=512, width=512, seed=3)
    images, _, _, _ = run_node(Edit, image=first, image2=second, image3=third,
                            prompt="image 1 wears the hat of image 2 in the room of image 3")
    assert images.shape[0] == 3
    got = received(service)
    assert len(got) == 3
    for index, edit in enumerate(got):
        assert len(edit) == 3
        assert np.array_equal(edit[0], pixels_sent(first)[index])
        assert np.array_equal(edit[1], pixels_sent(second)[0])
        assert np.array_equal(edit[2], pixels_sent(third)[0])


def test_image2_of_the_same_batch_size_is_matched_one_to_one(service, comfy):
    first, second = image(batch=2, seed=4), image(batch=2, seed=5)
    run_node(Edit, image=first, image2=second, prompt="swap the faces of image 1 and image 2")
    got = received(service)
    for index in range(2):
        assert np.array_equal(got[index][1], pixels_sent(second)[index])


def test_mismatched_batches_are_a_clear_error_and_nothing_is_sent(service, comfy):
    with pytest.raises(ValidationError) as caught:
        run_node(Edit, image=image(batch=3), image2=image(batch=2), prompt="combine")
    message = str(caught.value)
    assert message.startswith("image2: batch sizes do not match (image has 3, image2 has 2)")
    assert "batch of 1" in message and "or of 3" in message
    assert service.requests == []


def test_image3_without_image2_is_refused(service, comfy):
    with pytest.raises(ValidationError, match="image3: is connected but image2 is not"):
        run_node(Edit, image=image(), image3=image(), prompt="combine")
    assert service.requests == []


def test_rgba_greyscale_and_out_of_range_inputs(service, comfy):
    rgba = torch.zeros(1, 400, 400, 4)
    rgba[..., 0] = 1.0
    rgba[:, :, :200, 3] = 1.0  # left half opaque red, right half transparent
    grey = torch.linspace(0, 1, 400 * 400).reshape(1, 400, 400, 1)
    wild = image(seed=6) * 1.6 - 0.3
    wild[0, 0, 0, 0] = float("nan")
    _, _, info, _ = run_node(Edit, image=rgba, image2=grey, image3=wild, prompt="collage")
    (edit,) = received(service)
    assert edit[0][0, 0].tolist() == [255, 0, 0] and edit[0][0, 399].tolist() == [255, 255, 255]
    assert np.array_equal(edit[1], np.repeat(pixels_sent(grey)[0], 3, axis=-1))
    expected = pixels_sent(torch.nan_to_num(wild, nan=0.0))[0]
    assert np.array_equal(edit[2], expected)
    notes = json.loads(info)["notes"]
    assert "image: the alpha channel was composited over white." in notes
    assert any(n.startswith("image3: 1 NaN values were set to 0") for n in notes)
    assert any(n.startswith("image3: ") and "outside 0..1" in n for n in notes)


def test_inputs_outside_384_to_3072_px_are_resized(service, comfy):
    small = image(height=200, width=300)
    large = image(height=400, width=3200)
    _, _, info, _ = run_node(Edit, image=small, image2=large, prompt="combine")
    (edit,) = received(service)
    assert edit[0].shape == (384, 576, 3) and edit[1].shape == (384, 3072, 3)
    notes = json.loads(info)["notes"]
    rule = "(the service takes 384-3072 px per side)."
    assert f"image: resized from 300x200 to 576x384 px {rule}" in notes
    assert f"image2: resized from 3200x400 to 3072x384 px {rule}" in notes


def test_impossible_aspect_ratio_is_refused_before_sending(service, comfy):
    with pytest.raises(ValidationError, match=r"image: 4000x300 px has an aspect ratio"):
        run_node(Edit, image=image(height=300, width=4000), prompt="widen")
    assert service.requests == []


@pytest.mark.parametrize("emulator", [{"body_limit": 0}], indirect=True)
def test_an_input_over_10_mb_is_re_encoded_to_fit(service, comfy):
    # body_limit 0: the emulator refuses no body; the node fits the 10 MB item limit, and
    # the client then the body limit it keeps to everywhere (Singapore: by shrinking).
    noise = torch.rand(1, 2000, 2400, 3, generator=torch.Generator().manual_seed(7))
    _, _, info, _ = run_node(Edit, image=noise, prompt="denoise")
    (post,) = edit_posts(service)
    item = post.json["input"]["messages"][0]["content"][0]["image"]
    assert item.startswith("data:image/png;base64,") and len(item) <= 10485760
    assert len(post.body) <= REQUEST_BODY_TARGET
    (edit,) = received(service)
    assert edit[0].shape[0] < 2000 and 384 <= edit[0].shape[0]
    notes = json.loads(info)["notes"]
    assert any("downscaled from 2400x2000" in n for n in notes)
    assert any("re-encoded to fit" in n and "no temporary file storage" in n for n in notes)


def test_a_body_over_the_limit_is_never_sent_in_singapore(service, comfy):
    # Three busy inputs of ~2.9 MB each: every item is fine, the 6 MiB body is not. The
    # client re-encodes them before sending, so the service never refuses a body.
    noise = [torch.rand(1, 900, 1100, 3, generator=torch.Generator().manual_seed(seed))
             for seed in (1, 2, 3)]
    images, _, info, _ = run_node(Edit, image=noise[0], image2=noise[1], image3=noise[2],
                               prompt="collage of image 1, image 2 and image 3")
    assert images.shape[0] == 1
    (accepted,) = edit_posts(service)
    assert accepted.status == 200
    assert len(accepted.body) <= REQUEST_BODY_TARGET < 6 * 1024 * 1024
    assert service.stats["images_billed"] == 1
    assert not any(r.status == 413 for r in service.requests)
    assert not any("/uploads" in r.path for r in service.requests)
    notes = json.loads(info)["notes"]
    (shrunk,) = [n for n in notes if "re-encoded to fit" in n]
    assert all(f"image {i} downscaled" in shrunk for i in (1, 2, 3))
    for data in service.input_images(accepted):
        assert png_pixels(data).shape[0] < 900  # downscaled: noise has no lossless way down


def test_custom_size_is_sent_for_n_1(service, comfy):
    images, _, _, _ = run_node(Edit, image=image(), prompt="widen", size="custom", width=1280,
                            height=720)
    (post,) = edit_posts(service)
    assert post.json["parameters"]["size"] == "1280*720"
    assert tuple(images.shape) == (1, 720, 1280, 3)


def test_inputs_qwen_image_edit_does_not_take_are_not_sent_and_info_says_so(service, comfy):
    images, _, info, _ = run_node(Edit, image=image(), prompt="remove the tree",
                               model="qwen-image-edit", prompt_extend=False, size="custom", n=3)
    (post,) = edit_posts(service)
    assert post.json["model"] == "qwen-image-edit"
    assert not {"prompt_extend", "size"} & set(post.json["parameters"])
    assert post.json["parameters"].get("n", 1) == 1 and images.shape[0] == 1
    record = json.loads(info)
    for said in ("prompt_extend is not sent: qwen-image-edit does not take it",
                 "size is not sent: qwen-image-edit does not take it",
                 "n = 3 was ignored: qwen-image-edit makes 1 image per call"):
        assert said in record["notes"]
    assert record["estimated_cost_usd"] == pytest.approx(0.045)


def test_progress_text_and_bar_count_the_images(service, comfy):
    service.set_latency(0.5)
    run_node(Edit, image=image(batch=2), prompt="paint it", n=3, unique_id="9")
    texts = comfy.server.PromptServer.instance.texts_for("9")
    assert any(re.fullmatch(r"6 running \(\d+ s\)", t) for t in texts), texts
    store = Path(comfy.folder_paths.get_output_directory()) / "qwen-image"
    day = next(store.rglob("*.png")).parent.name
    assert re.fullmatch(rf"6 images in \d+ s · about \$0\.18 · saved in output/qwen-image/{day}",
                        texts[-1]), texts[-1]
    assert comfy.utils.bars == [(6, "9")]
    assert comfy.utils.updates[-1] == ("9", 6, 6)
    # Every output image became the node's preview once, as a small RGB picture.
    previews = [preview for node, preview, _ in comfy.utils.previews if node == "9"]
    assert len(previews) == 6
    served = {thumbnail(data) for data in service.served_images.values()}
    for kind, picture, side in previews:
        assert kind == "PNG" and picture.mode == "RGB" and max(picture.size) == side == 512
        assert picture.tobytes() in served  # each of them, scaled down


def test_cancel_returns_at_once_and_the_paid_result_still_lands_in_the_store(service, comfy):
    service.set_latency(1.5)
    mm = comfy.model_management
    pressed, timing = {}, {}

    def press_cancel_once_sent():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not edit_posts(service):
            time.sleep(0.02)
        time.sleep(0.1)
        pressed["at"] = time.monotonic()
        mm.interrupt_current_processing()

    threading.Thread(target=press_cancel_once_sent, daemon=True).start()
    with pytest.raises(mm.InterruptProcessingException):
        run_node(Edit, timing=timing, image=image(), prompt="paint it", seed=1)
    assert timing["ended"] - pressed["at"] < 0.4  # the call itself takes 1.5 s
    store = Path(comfy.folder_paths.get_output_directory())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not list((store / "qwen-image").rglob("*.png")):
        time.sleep(0.05)
    assert len(list((store / "qwen-image").rglob("*.png"))) == 1


def test_cancel_while_inputs_are_encoded_sends_nothing(service, comfy):
    big = torch.rand(1, 2000, 2400, 3, generator=torch.Generator().manual_seed(8))  # ~1-2 s
    mm = comfy.model_management
    timing = {}
    threading.Timer(0.2, mm.interrupt_current_processing).start()
    started = time.monotonic()
    with pytest.raises(mm.InterruptProcessingException):
        run_node(Edit, timing=timing, image=big, prompt="paint it")
    assert timing["ended"] - started < 0.6
    assert service.requests == []  # run_node returned after the encoding thread ended


@pytest.mark.parametrize("inputs, expected", [
    ({"n": 2, "size": "custom"}, "size: can be set only when n is 1"),
    ({"n": 7}, "n: 7 images asked for"),
    ({"size": "custom", "width": 4000}, "size: 4000*1024 has a side outside 512-2048 pixels"),
    ({"size": "custom", "height": 256}, "size: 1024*256 has a side outside 512-2048 pixels"),
    ({"size": "1024*1024"}, "size: '1024*1024' is not in the list"),
    ({"prompt": "字" * 801}, "prompt: is 801 characters long, over the limit of 800"),
    ({"negative_prompt": "n" * 501},
     "negative_prompt: is 501 characters long, over the limit of 500"),
    ({"seed": 2147483648}, "seed: 2147483648 is out of range"),
    ({"model": "wan2.5-i2i"}, "model: 'wan2.5-i2i' is not in the list"),
])
def test_validate_inputs_refuses_at_queue_time(inputs, expected, service):
    values = {"prompt": "edit", "negative_prompt": "", "model": "qwen-image-edit-plus", "n": 1,
              "size": "auto", "width": 1024, "height": 1024, "seed": 0, "custom_model": "",
              **inputs}
    message = Edit.VALIDATE_INPUTS(**values)
    assert isinstance(message, str) and message.startswith(expected), message
    assert service.requests == []


def test_validate_inputs_accepts_what_it_cannot_judge_yet():
    # Linked inputs are None at queue time; width and height matter only with size=custom.
    assert Edit.VALIDATE_INPUTS(prompt=None, negative_prompt=None, model="qwen-image-edit-plus",
                                n=None, size="custom", width=None, height=1024, seed=None) is True
    assert Edit.VALIDATE_INPUTS(prompt="edit", model="qwen-image-edit-plus", n=6, size="auto",
                                width=4000, height=1024, seed=0) is True
    assert Edit.VALIDATE_INPUTS(prompt="edit", model="qwen-image-edit-plus", n=3, size="auto",
                                seed=0, custom_model="qwen-image-edit-next") is True
    # What qwen-image-edit does not take is hidden in the frontend, so ignored, not refused.
    assert Edit.VALIDATE_INPUTS(prompt="edit", model="qwen-image-edit", n=2, size="custom",
                                width=1024, height=1024, prompt_extend=True, seed=0) is True


def test_run_time_refusal_sends_nothing(service, comfy):
    with pytest.raises(ValidationError, match="size: can be set only when n is 1"):
        run_node(Edit, image=image(), prompt="edit", n=2, size="custom")
    assert service.requests == []


# -- size = match input, the mask input, transparency ---------------------------------------


def served(emu):
    """The PNGs the emulator served, in the order it served them."""
    return list(emu.served_images.values())


def cover_crop(data: bytes, width: int, height: int) -> np.ndarray:
    """The served result scaled (Lanczos) to cover width x height and centre-cropped."""
    picture = Image.open(io.BytesIO(data)).convert("RGB")
    if width / picture.width >= height / picture.height:
        box_w, box_h = picture.width, height * picture.width / width
    else:
        box_w, box_h = width * picture.height / height, picture.height
    left, top = (picture.width - box_w) / 2, (picture.height - box_h) / 2
    return np.asarray(picture.resize((width, height), Image.Resampling.LANCZOS,
                                     box=(left, top, left + box_w, top + box_h)))


@pytest.mark.parametrize("model, n, asked", [
    ("qwen-image-edit-plus", 1, "688*512"),  # sides 512-2048: the short side raised to 512
    ("qwen-image-edit-plus", 2, None),  # size only with n = 1: asked without one
    ("qwen-image-edit", 1, None),  # takes no size: its own size, fitted
    ("qwen-image-2.0", 1, "640*480"),  # free area: its own size
    ("qwen-image-3.0", 1, "640*480"),  # size ignored with images (emulator: ~2048*2048)
])
def test_match_input_gives_image_1s_exact_size(service, comfy, model, n, asked):
    first = image(height=480, width=640, seed=21)
    images, _, info, masks = run_node(Edit, image=first, prompt="make it autumn", model=model,
                                      n=n, size="match input")
    (post,) = edit_posts(service)
    assert post.json["parameters"].get("size") == asked
    assert tuple(images.shape) == (n, 480, 640, 3) and tuple(masks.shape) == (n, 480, 640)
    assert not masks.any()  # opaque results
    out = saved_pixels(images)
    results = served(service)
    for k in range(n):  # each served result, covered and centre-cropped, never stretched
        assert np.array_equal(out[k], cover_crop(results[k], 640, 480))
    (request,) = json.loads(info)["requests"]
    returned = {png_pixels(data).shape[1::-1] for data in results}
    assert request["fit"]["asked"] == (asked or "no size (the model's default)")
    assert request["fit"]["fitted_to"] == "640*480"
    if returned != {(640, 480)}:
        assert all("Lanczos" in how for how in request["fit"]["how"])


def test_match_input_keeps_a_result_of_the_exact_size_as_served(service, comfy):
    images, _, info, _ = run_node(Edit, image=image(height=480, width=640, seed=22),
                                  prompt="paint it", model="qwen-image-2.0", size="match input")
    assert np.array_equal(saved_pixels(images)[0], png_pixels(served(service)[0]))
    assert json.loads(info)["requests"][0]["fit"]["how"] == ["unchanged (returned at that size)"]


def test_match_input_never_asks_for_a_higher_price_tier_than_the_picture_needs(service, comfy):
    # 1500x1500 is exactly the 1K tier's largest area; 1504*1504 would be billed at 2K.
    run_node(Edit, image=image(height=1500, width=1500, seed=23), prompt="paint it",
             model="qwen-image-3.0-pro", size="match input")
    (post,) = edit_posts(service)
    width, height = map(int, post.json["parameters"]["size"].split("*"))
    assert width * height <= 2_250_000 and (width, height) == (1488, 1488)


def rectangle_mask(height, width, box, batch=1):
    left, top, right, bottom = box
    mask = torch.zeros(batch, height, width)
    mask[:, top:bottom, left:right] = 1.0
    return mask


def outside(mask, margin):
    """Pixels farther than ``margin`` px (Chebyshev) from every pixel the mask marks."""
    grown = torch.nn.functional.max_pool2d(mask[:, None], 2 * margin + 1, stride=1,
                                           padding=margin)[:, 0]
    return grown == 0


def test_a_masked_edit_changes_only_the_mask_through_a_region_around_it(service, comfy):
    first = image(height=600, width=800, seed=24)
    mask = rectangle_mask(600, 800, (500, 300, 600, 380))  # 100x80, small
    images, _, info, masks = run_node(Edit, image=first, prompt="a red door here",
                                      size="match input", mask=mask)
    assert tuple(images.shape) == (1, 600, 800, 3) and not masks.any()
    # Outside the mask and its 16 px soft edge: image 1's tensor, bit for bit.
    far = outside(mask, 16)[0]
    assert torch.equal(images[0][far], first[0][far])
    # Inside: the edit (the emulator inverts image 1, here the region sent).
    inside = mask[0] > 0
    assert (images[0][inside] - first[0][inside]).abs().mean() > 0.3
    assert (images[0][inside] - (1 - first[0][inside])).abs().mean() < 0.1
    # Across the edge the two are blended.
    edge = ~far & ~inside
    assert ((images[0][edge] != first[0][edge]).any(dim=-1)).float().mean() > 0.5
    # A small mask is edited through a region around it, scaled up to about 1024*1024.
    (post,) = edit_posts(service)
    (sent,) = received(service)[0]
    region = json.loads(info)["requests"][0]["fit"]["region"]
    left, top, width, height = region["x"], region["y"], region["width"], region["height"]
    assert left < 500 - 16 and top < 300 - 16 and left + width > 616 and top + height > 396
    assert width < 800 and height < 600  # not the whole picture
    assert sent.shape[0] * sent.shape[1] >= 1024 * 1024 * 0.98
    assert abs(sent.shape[1] / sent.shape[0] - width / height) < 0.01
    crop = Image.fromarray(np.ascontiguousarray(
        pixels_sent(first)[0, top:top + height, left:left + width]))
    assert np.array_equal(sent, np.asarray(crop.resize(sent.shape[1::-1],
                                                       Image.Resampling.LANCZOS)))
    asked = tuple(map(int, post.json["parameters"]["size"].split("*")))
    assert abs(asked[0] / asked[1] - width / height) < 0.05 and asked[0] % 16 == 0


def test_one_mask_of_another_size_serves_every_image_and_a_batch_pairs(service, comfy):
    first = image(batch=2, height=400, width=600, seed=25)
    small = rectangle_mask(200, 300, (20, 20, 60, 60))  # resized to 400x600: (40, 40)-(120, 120)
    images, _, _, _ = run_node(Edit, image=first, prompt="a window", mask=small,
                               mask_soft_edge=0)
    resized = torch.nn.functional.interpolate(small[:, None], size=(400, 600),
                                              mode="bilinear")[:, 0]
    far = outside(resized, 0)[0]
    for k in range(2):
        assert torch.equal(images[k][far], first[k][far])
        assert not torch.equal(images[k], first[k])
    assert len(edit_posts(service)) == 2
    pair = torch.cat([rectangle_mask(400, 600, (0, 0, 100, 100)),
                      rectangle_mask(400, 600, (400, 250, 600, 400))])
    images, _, info, _ = run_node(Edit, image=first, prompt="a window", mask=pair, seed=7)
    regions = [r["fit"]["region"] for r in json.loads(info)["requests"]]
    assert regions[0]["x"] == 0 and regions[1]["x"] + regions[1]["width"] == 600
    for k in range(2):
        far = outside(pair[k:k + 1], 16)[0]
        assert torch.equal(images[k][far], first[k][far])


@pytest.mark.parametrize("mask", [torch.zeros(1, 400, 520), torch.zeros(1, 64, 64),
                                  torch.cat([rectangle_mask(400, 520, (0, 0, 9, 9)),
                                             torch.zeros(1, 400, 520)])],
                         ids=["zeros", "loadimage-without-alpha", "one-of-two"])
def test_an_empty_mask_refuses_the_run_and_sends_nothing(service, comfy, mask):
    with pytest.raises(ValidationError) as caught:
        run_node(Edit, image=image(batch=mask.shape[0]), prompt="a door", mask=mask)
    message = str(caught.value)
    assert message.startswith("mask: is empty") and "nothing was sent" in message
    assert "LoadImage" in message
    if mask.shape[0] == 2:
        assert "(mask 2 of 2)" in message
    assert service.requests == []


def test_a_mask_batch_that_does_not_pair_is_refused(service, comfy):
    with pytest.raises(ValidationError, match=r"mask: batch sizes do not match"):
        run_node(Edit, image=image(batch=3), prompt="a door",
                 mask=rectangle_mask(400, 520, (0, 0, 9, 9), batch=2))
    assert service.requests == []


@pytest.mark.parametrize("emulator", [{"rgba": True}], indirect=True)
def test_an_rgba_result_gives_its_colours_and_the_mask_1_minus_alpha(service, comfy):
    images, _, info, masks = run_node(Edit, image=image(height=512, width=512, seed=26),
                                      prompt="cut it out", size="custom", width=512, height=512)
    (data,) = served(service)
    picture = Image.open(io.BytesIO(data))
    assert picture.mode == "RGBA"
    assert np.array_equal(saved_pixels(images)[0], np.asarray(picture)[..., :3])
    alpha = np.asarray(picture.getchannel("A"))
    assert torch.equal(masks[0], 1.0 - torch.from_numpy(alpha.astype(np.float32) / 255.0))
    assert any("'mask' its 1 - alpha" in note for note in json.loads(info)["notes"])


def test_validate_inputs_takes_match_input_for_every_edit_model():
    for model in ("qwen-image-edit", "qwen-image-edit-plus", "qwen-image-3.0"):
        assert Edit.VALIDATE_INPUTS(prompt="edit", model=model, n=2, size="match input",
                                    width=1024, height=1024, seed=0) is True
