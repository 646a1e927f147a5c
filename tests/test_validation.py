"""Every input rule of the reference refuses bad input before anything is sent."""
import base64
import dataclasses
import io
import random

import pytest
from PIL import Image, ImageFile

from qwen_image_dashscope.api import (
    ImageEditRequest,
    TextToImageRequest,
    ValidationError,
    fit_encoding,
    inspect_image,
    to_data_uri,
    validate,
)
from qwen_image_dashscope.api.emulator import Emulator
from qwen_image_dashscope.api.models import EDIT_INPUT_MAX_BYTES
from test_client_support import make_client, png_bytes

T2I = TextToImageRequest("a quiet lake")
EDIT = ImageEditRequest("make it autumn", images=(png_bytes(),))


@pytest.fixture(scope="module")
def quiet_emu():
    with Emulator(latency=0.05) as emulator:
        yield emulator


def bmp(width, height):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (9, 9, 9)).save(buffer, "BMP")
    return buffer.getvalue()


def refused(quiet_emu, request, parameter, *parts):
    """The client refuses ``request`` naming ``parameter`` and sends nothing."""
    before = len(quiet_emu.requests)
    with make_client(quiet_emu) as client:
        with pytest.raises(ValidationError) as caught:
            if isinstance(request, TextToImageRequest):
                client.text_to_image(request)
            else:
                client.edit_image(request)
    assert caught.value.parameter == parameter
    for part in parts:
        assert part in str(caught.value)
    assert len(quiet_emu.requests) == before
    return caught.value


T2I_CASES = [
    (dict(prompt=""), "prompt", ["prompt: is empty"]),
    (dict(prompt="   \n"), "prompt", ["is empty"]),
    (dict(prompt="x" * 801), "prompt",
     ["is 801 characters long, over the limit of 800", "drop the last 1",
      "Shorten it by at least 1 characters"]),
    (dict(prompt="貓" * 950), "prompt", ["950 characters", "Shorten it by at least 150"]),
    (dict(negative_prompt="n" * 501), "negative_prompt",
     ["is 501 characters long, over the limit of 500"]),
    (dict(size="1024*1024"), "size", ["not one of qwen-image-plus's output sizes",
                                      "Allowed: 1664*928, 1472*1140, 1328*1328"]),
    (dict(n=2), "n", ["2 images asked for; qwen-image-plus makes 1 per call", "Allowed: 1"]),
    (dict(seed=-1), "seed", ["-1 is out of range", "0 to 2147483647"]),
    (dict(seed=2147483648), "seed", ["out of range"]),
    (dict(seed=True), "seed", ["must be a whole number, not True"]),
    (dict(n="2"), "n", ["must be a whole number, not '2'"]),
    (dict(n=1.5), "n", ["must be a whole number, not 1.5"]),
    (dict(watermark="yes"), "watermark", ["must be true or false"]),
    (dict(model="qwen-image-edit-plus"), "model", ["is an image-edit model, not text-to-image"]),
    (dict(model="qwen-image-next", size="big"), "size", ["is not written as width*height"]),
]


@pytest.mark.parametrize("changes, parameter, parts", T2I_CASES)
def test_text_to_image_rules(quiet_emu, changes, parameter, parts):
    refused(quiet_emu, dataclasses.replace(T2I, **changes), parameter, *parts)


def test_limits_themselves_are_allowed():
    assert validate(dataclasses.replace(T2I, prompt="貓" * 800, negative_prompt="n" * 500,
                                        seed=2147483647, size="1472*1104")) == []
    assert validate(dataclasses.replace(T2I, seed=0)) == []


def test_interface_must_be_offered(quiet_emu):
    with make_client(quiet_emu) as client:
        with pytest.raises(ValidationError) as caught:
            client.text_to_image(T2I, interface="batch")
    assert "Allowed: sync, async" in str(caught.value)


EDIT_CASES = [
    (dict(images=()), "images", ["0 images given", "1 to 3 images"]),
    (dict(images=(png_bytes(),) * 4), "images", ["4 images given"]),
    (dict(n=7), "n", ["7 images asked for; qwen-image-edit-plus makes 1 to 6"]),
    (dict(n=0), "n", ["Allowed: 1 to 6"]),
    (dict(model="qwen-image-edit", n=2, prompt_extend=None), "n",
     ["makes 1 per call", "qwen-image-edit-plus makes up to 6"]),
    (dict(size="511*1024"), "size", ["has a side outside 512-2048 pixels"]),
    (dict(size="1024*2049"), "size", ["outside 512-2048"]),
    (dict(size="1024x1024"), "size", ["not written as width*height"]),
    (dict(size="1024*1024", n=2), "size", ["only when n is 1", "n is 2"]),
    (dict(images=(png_bytes(383, 500),)), "image 1",
     ["is 383x500 pixels; each side must be from 384 to 3072"]),
    (dict(images=(png_bytes(), png_bytes(500, 3073))), "image 2", ["500x3073"]),
    (dict(images=(png_bytes(fmt="GIF", mode="P"),)), "image 1",
     ["is a GIF image", "Allowed: JPG/JPEG, PNG, BMP, TIFF, WEBP"]),
    (dict(images=(b"definitely not an image",),), "image 1", ["not an image Pillow can read"]),
    (dict(images=(bmp(3072, 1200),)), "image 1", ["over the 10 MB limit"]),
    (dict(images=(bmp(1700, 1700),)), "image 1",
     ["as a data URI (base64 adds a third) it would be", "limit of 10485760 bytes",
      "images.fit_encoding"]),
    (dict(images=("/home/me/cat.png",)), "image 1", ["not an http(s) URL, a data:"]),
    (dict(images=("data:image/png;base64," + "A" * EDIT_INPUT_MAX_BYTES,)), "image 1",
     ["over the service's limit of 10485760 bytes per data-URI item"]),
    (dict(images=("data:image/png;base64,@@@@",)), "image 1", ["base64 part is not valid"]),
    (dict(images=("data:image/png;base64,"
                  + base64.b64encode(png_bytes(fmt="JPEG")).decode(),)), "image 1",
     ["says image/png but holds a JPEG image"]),
    (dict(images=(12345,)), "image 1", ["is a int"]),
]


@pytest.mark.parametrize("changes, parameter, parts", EDIT_CASES)
def test_edit_rules(quiet_emu, changes, parameter, parts):
    refused(quiet_emu, dataclasses.replace(EDIT, **changes), parameter, *parts)


def test_accepted_edit_inputs_and_notes():
    jpeg = png_bytes(3072, 384, fmt="JPEG")
    assert validate(dataclasses.replace(EDIT, images=(jpeg, to_data_uri(png_bytes()),
                                                      "https://example.com/not-checked"),
                                        n=6)) == []
    assert validate(dataclasses.replace(EDIT, size="2048*512")) == []
    notes = validate(dataclasses.replace(EDIT, images=("oss://dashscope-instant/a.png",)))
    assert "works only in the Beijing region" in notes[0]
    notes = validate(dataclasses.replace(EDIT, model="qwen-image-edit", prompt_extend=False))
    assert notes == ["prompt_extend is not sent: qwen-image-edit does not take it"]
    notes = validate(dataclasses.replace(EDIT, model="qwen-image-edit-ultra", n=6))
    assert "'qwen-image-edit-ultra' is not in the pack's table" in notes[0]


def test_parameters_a_model_does_not_take_are_left_out_not_refused():
    # qwen-image-edit takes neither prompt rewriting nor an output size: both are left out
    # of what is sent, with a note when set to anything but the default.
    checked = validate(dataclasses.replace(EDIT, model="qwen-image-edit", prompt_extend=True,
                                           size="1024*1024"))
    assert checked.notes == ["size is not sent: qwen-image-edit does not take it"]
    assert checked.request.size is None and checked.request.prompt_extend is None


def test_image_checks_read_headers_only(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    big = png_bytes(3072, 3072, fmt="JPEG")
    assert validate(dataclasses.replace(EDIT, images=(big, big, big))) == []


def test_data_uri_mime_comes_from_the_bytes():
    jpeg = png_bytes(fmt="JPEG")
    assert to_data_uri(jpeg).startswith("data:image/jpeg;base64,")
    assert base64.b64decode(to_data_uri(jpeg).split(",", 1)[1]) == jpeg
    assert to_data_uri(png_bytes(fmt="WEBP")).startswith("data:image/webp;base64,")
    assert inspect_image(png_bytes(600, 400, fmt="TIFF")) == ("TIFF", 600, 400)


def test_fit_encoding_shrinks_only_when_needed():
    small = png_bytes(600, 600)
    assert fit_encoding(small) is small
    side = 1700
    noisy = Image.frombytes("RGB", (side, side), random.Random(7).randbytes(side * side * 3))
    buffer = io.BytesIO()
    noisy.save(buffer, "PNG")
    too_big = buffer.getvalue()
    with pytest.raises(ValidationError):  # over the data-URI limit once encoded
        validate(dataclasses.replace(EDIT, images=(too_big,)))
    fitted = fit_encoding(too_big)
    assert inspect_image(fitted) == ("JPEG", side, side)
    assert len(to_data_uri(fitted)) <= EDIT_INPUT_MAX_BYTES
    assert validate(dataclasses.replace(EDIT, images=(fitted,))) == []
