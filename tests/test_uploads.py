"""Large edit inputs: temporary uploads in Beijing, re-encoding in Singapore, the body limit.

Real loopback HTTP against the emulator (which answers 413 to API bodies over 6 MiB).
"""
import io
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from qwen_image_dashscope.api import (
    ImageEditRequest,
    InvalidParameterError,
    ServerError,
    TextToImageRequest,
    ValidationError,
)
from qwen_image_dashscope.api.catalog.specs import REQUEST_BODY_LIMIT, REQUEST_BODY_TARGET
from qwen_image_dashscope.api.emulator import BEIJING_KEY, Emulator
from qwen_image_dashscope.api.images import data_uri_length, inspect_image, shrink_to_fit
from support.client import BJ, SG, SYNC_PATH, api_requests, make_client, png_bytes

SIDE = 1180  # px of a noisy input


def noisy_png(side: int = SIDE) -> bytes:
    """A new side x side PNG of ~4.2 MB (5.6 MB as a data URI): random pixels, which no
    coding shrinks, so few pixels make a big file (stored uncompressed: zlib would only try)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(
        buffer, "PNG", compress_level=0)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big():
    """Three different noisy PNGs: one fits a body, three together do not."""
    images = [noisy_png() for _ in range(3)]
    assert all(data_uri_length(len(i), "image/png") < REQUEST_BODY_TARGET for i in images)
    assert sum(data_uri_length(len(i), "image/png") for i in images) > REQUEST_BODY_LIMIT
    return images


def policy_requests(emulator):
    return [r for r in emulator.requests if r.path.endswith("/uploads") and r.method == "GET"]


def upload_posts(emulator):
    return [r for r in emulator.requests if r.path == "/oss-upload"]


def image_items(recorded):
    return [item["image"] for item in recorded.json["input"]["messages"][0]["content"]
            if "image" in item]


def assert_no_body_over_the_limit(emulator):
    api = [r for r in emulator.requests if r.region is not None]
    assert api and all(len(r.body) <= REQUEST_BODY_LIMIT for r in api)
    assert all(r.status != 413 for r in emulator.requests)


def edit(client, images, prompt="merge image 1, image 2 and image 3", **options):
    transport = options.pop("input_transport", "auto")
    return client.edit_image(ImageEditRequest(prompt, images=tuple(images), **options),
                             input_transport=transport)


def test_big_inputs_go_by_upload_in_beijing(emu, big):
    with make_client(emu, BJ) as client:
        result = edit(client, big)
    assert result.images and result.region == BJ

    (policy,) = policy_requests(emu)
    assert policy.region == BJ and policy.status == 200
    assert "action=getPolicy" in policy.query and "model=qwen-image-edit-plus" in policy.query
    posts = upload_posts(emu)
    assert len(posts) == 3 and all(p.status == 200 for p in posts)
    assert all("Authorization" not in p.headers for p in posts)  # the key stays home
    assert emu.stats["uploads"] == 3

    (generation,) = api_requests(emu, SYNC_PATH, "POST")
    names = image_items(generation)
    assert all(n.startswith("oss://dashscope-instant/") for n in names)
    assert len(set(names)) == 3
    assert generation.headers["X-DashScope-OssResourceResolve"] == "enable"
    assert emu.input_images(generation) == big  # resolved to the very bytes, in order
    assert len(generation.body) < 10_000
    assert_no_body_over_the_limit(emu)
    (note,) = [n for n in result.notes if "temporary storage" in n]
    assert "3 uploaded now, 0 uploaded within the last 46 h" in note
    assert "over the 5.5 MiB the pack sends" in note


def test_small_inputs_go_as_data_uris_without_a_policy(emu):
    small = [png_bytes(600, 400, (10, 200, 10)), png_bytes(512, 512, (0, 0, 200))]
    with make_client(emu, BJ) as client:
        result = edit(client, small, prompt="put image 1 into image 2")
    (generation,) = api_requests(emu, SYNC_PATH, "POST")
    assert all(item.startswith("data:image/png;base64,") for item in image_items(generation))
    assert "X-DashScope-OssResourceResolve" not in generation.headers
    assert policy_requests(emu) == [] and upload_posts(emu) == []
    assert not any("temporary storage" in n or "re-encoded" in n for n in result.notes)


def test_a_repeated_image_is_uploaded_once_per_model(emu, big):
    with make_client(emu, BJ) as first:
        edit(first, big)
    assert len(upload_posts(emu)) == 3 and len(policy_requests(emu)) == 1

    # Another client of the process (a node makes one per run), the same images reordered.
    with make_client(emu, BJ) as second:
        again = edit(second, [big[2], big[0], big[1]], prompt="the same, once more")
    assert len(upload_posts(emu)) == 3 and len(policy_requests(emu)) == 1  # nothing new
    first_names, second_names = (image_items(r) for r in api_requests(emu, SYNC_PATH, "POST"))
    assert second_names == [first_names[2], first_names[0], first_names[1]]
    assert any("0 uploaded now, 3 uploaded within the last 46 h and reused" in n
               for n in again.notes)

    # One image twice in a request, plus a new one: one policy, one upload.
    with make_client(emu, BJ) as third:
        edit(third, [big[0], noisy_png(), big[0]])
    assert len(upload_posts(emu)) == 4 and len(policy_requests(emu)) == 2

    # A file is bound to the model it was uploaded for: another model uploads it again.
    with make_client(emu, BJ) as fourth:
        edit(fourth, [big[0]], prompt="sharpen", model="qwen-image-edit-plus-2025-10-30",
             input_transport="upload")
    assert len(upload_posts(emu)) == 5 and len(policy_requests(emu)) == 3
    assert_no_body_over_the_limit(emu)


def test_uploads_are_not_shared_between_accounts(big):
    other_key = "sk-emulator-beijing-second"
    with Emulator(latency=0.1, keys={BEIJING_KEY: BJ, other_key: BJ}) as two:
        with make_client(two, BJ) as first:
            edit(first, big[:1], input_transport="upload")
        with make_client(two, BJ, key=other_key) as second:
            edit(second, big[:1], input_transport="upload")
        assert len(upload_posts(two)) == 2


def test_singapore_shrinks_big_inputs_and_says_so(emu, big, caplog):
    caplog.set_level(logging.INFO)
    with make_client(emu, SG) as client:
        result = edit(client, big)
    assert result.images
    assert policy_requests(emu) == [] and upload_posts(emu) == []
    (generation,) = api_requests(emu, SYNC_PATH, "POST")
    assert len(generation.body) <= REQUEST_BODY_TARGET
    assert "X-DashScope-OssResourceResolve" not in generation.headers
    assert_no_body_over_the_limit(emu)
    for data in emu.input_images(generation):
        fmt, width, height = inspect_image(data)
        assert width == height and 384 <= width < SIDE  # downscaled, aspect kept
    (note,) = [n for n in result.notes if "re-encoded to fit" in n]
    assert "Singapore has no temporary file storage" in note
    assert all(f"image {i} downscaled from {SIDE}x{SIDE}" in note for i in (1, 2, 3))
    assert note in caplog.text  # and the log says it too


def test_forced_upload_sends_even_small_inputs_through_storage(emu):
    with make_client(emu, BJ) as client:
        made = client.text_to_image(TextToImageRequest("a source"), interface="sync")
        url = made.images[0].url
        result = edit(client, [url, png_bytes()], prompt="put image 2 into image 1",
                      input_transport="upload")
    generation = api_requests(emu, SYNC_PATH, "POST")[-1]
    first, second = image_items(generation)
    assert first == url  # URLs pass through
    assert second.startswith("oss://")
    assert len(upload_posts(emu)) == 1
    assert any("input_transport is 'upload'" in n for n in result.notes)


def test_forced_upload_in_singapore_is_refused_before_anything_is_sent(emu):
    with make_client(emu, SG) as client:
        with pytest.raises(ValidationError) as caught:
            edit(client, [png_bytes()], input_transport="upload")
        with pytest.raises(ValidationError) as wrong:
            edit(client, [png_bytes()], input_transport="ftp")
    message = str(caught.value)
    assert "input_transport" in message and "Singapore (ap-southeast-1)" in message
    assert "Beijing" in message and "Allowed: auto, data_uri" in message
    assert "Allowed: auto, data_uri, upload" in str(wrong.value)
    assert emu.requests == []


def test_forced_data_uri_in_beijing_shrinks_instead_of_uploading(emu, big):
    with make_client(emu, BJ) as client:
        result = edit(client, big, input_transport="data_uri")
    assert policy_requests(emu) == [] and upload_posts(emu) == []
    (generation,) = api_requests(emu, SYNC_PATH, "POST")
    assert len(generation.body) <= REQUEST_BODY_TARGET
    assert any("input_transport is 'data_uri'" in n for n in result.notes)
    assert_no_body_over_the_limit(emu)


def test_upload_post_is_retried_and_a_failing_storage_falls_back_to_shrinking(emu, big):
    # A lost connection and a 503 on the upload: retried, the file arrives once.
    emu.inject("drop", path="/oss-upload")
    emu.inject("http_error", path="/oss-upload", status=503, code="ServiceUnavailable")
    with make_client(emu, BJ) as client:
        edit(client, big[:1], input_transport="upload")
    assert emu.stats["uploads"] == 1 and len(upload_posts(emu)) == 3

    # Stored, but the answer is lost: the retry finds the file there (409), which is success.
    emu.inject("drop_after", path="/oss-upload")
    with make_client(emu, BJ) as client:
        result = edit(client, [big[1]], input_transport="upload")
    assert result.images and emu.stats["uploads"] == 2
    assert [p.status for p in upload_posts(emu)[3:]] == [None, 409]

    # The policy call keeps failing: in auto mode the edit still goes through, shrunk.
    emu.inject("http_error", path="/uploads", count=4, status=500)
    with make_client(emu, BJ) as client:
        result = edit(client, [big[1], big[2], noisy_png()])
    generation = api_requests(emu, SYNC_PATH, "POST")[-1]
    assert all(item.startswith("data:") for item in image_items(generation))
    assert len(generation.body) <= REQUEST_BODY_TARGET
    assert any("the temporary upload failed" in n for n in result.notes)

    # Forced upload does not fall back: the error is the storage's.
    emu.inject("http_error", path="/uploads", count=4, status=500)
    with make_client(emu, BJ) as client:
        with pytest.raises(ServerError) as caught:
            edit(client, [noisy_png()], input_transport="upload")
    assert caught.value.code == "InternalError"


def test_an_oss_name_without_its_upload_is_refused_by_the_service(emu):
    with make_client(emu, BJ) as client:
        with pytest.raises(InvalidParameterError) as caught:
            edit(client, ["oss://dashscope-instant/nobody/x.png"], prompt="x")
    assert caught.value.code == "InvalidURL"


def test_shrink_to_fit_is_lossless_when_it_can_be():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 512)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, -ramp) / 2 + 128,
                       np.full((512, 512), 90.0)], -1)
    pixels = (pixels + rng.integers(0, 4, pixels.shape)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)

    def encoded(fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    def decoded(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    default, strongest = encoded("PNG"), encoded("PNG", compress_level=9)
    data, done = shrink_to_fit(default, data_uri_length(len(strongest), "image/png"))
    assert done.startswith("re-encoded as maximally compressed PNG") and "pixels unchanged" in done
    assert np.array_equal(decoded(data), pixels)

    fast = encoded("PNG", compress_level=1)
    webp = encoded("WEBP", lossless=True, quality=25, method=1)
    data, done = shrink_to_fit(fast, data_uri_length(len(webp), "image/webp") + 100)
    assert done.startswith("re-encoded as lossless WebP") and inspect_image(data)[0] == "WEBP"
    assert np.array_equal(decoded(data), pixels)

    assert shrink_to_fit(default, 10 * 2**20) == (default, "")
    image = image.resize((1024, 1024))  # a JPEG a third of its size keeps sides over 384
    jpeg = encoded("JPEG", quality=98)
    data, done = shrink_to_fit(jpeg, len(jpeg) // 3)
    assert inspect_image(data)[0] == "JPEG" and "downscaled from 1024x1024" in done
    with pytest.raises(ValueError, match="below 384 px"):
        shrink_to_fit(default, 50_000)


def test_the_edit_node_passes_its_input_transport_widget(service, comfy, monkeypatch):
    import torch

    from qwen_image_dashscope.nodes.image_edit import DashScopeQwenImageEdit as Edit
    from support.comfy_stubs.harness import run_node

    picture = torch.rand(1, 400, 520, 3, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValidationError, match=r"input_transport: 'upload' needs"):
        run_node(Edit, image=picture, prompt="paint it", input_transport="upload")
    assert service.requests == []  # Singapore (the default here): refused before sending

    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL_CN_BEIJING", service.base_url(BJ))
    monkeypatch.setenv("DASHSCOPE_API_KEY_CN_BEIJING", BEIJING_KEY)
    _, _, info, _ = run_node(Edit, image=picture, prompt="paint it", region="cn-beijing (Beijing)",
                          input_transport="upload")
    assert len(upload_posts(service)) == 1
    (generation,) = api_requests(service, SYNC_PATH, "POST")
    assert image_items(generation)[0].startswith("oss://")
    assert any("input_transport is 'upload'" in n for n in json.loads(info)["notes"])
