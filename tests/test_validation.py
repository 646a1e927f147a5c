"""Every input rule of the reference refuses bad input before anything is sent."""
import base64
import dataclasses
import io
import random

import numpy as np
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
from qwen_image_dashscope.api.catalog.specs import EDIT_INPUT_MAX_BYTES
from qwen_image_dashscope.api.catalog.validation import normalize_size
from qwen_image_dashscope.api.emulator import Emulator
from support.client import make_client, png_bytes

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
                                        seed=2147483647, size="1472*1104")).notes == []
    assert validate(dataclasses.replace(T2I, seed=0)).notes == []


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
                                        n=6)).notes == []
    assert validate(dataclasses.replace(EDIT, size="2048*512")).notes == []
    notes = validate(dataclasses.replace(EDIT, images=("oss://dashscope-instant/a.png",))).notes
    assert "works only in the Beijing region" in notes[0]
    notes = validate(dataclasses.replace(EDIT, model="qwen-image-edit", prompt_extend=False)).notes
    assert notes == ["prompt_extend is not sent: qwen-image-edit does not take it"]
    notes = validate(dataclasses.replace(EDIT, model="qwen-image-edit-ultra", n=6)).notes
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
    assert validate(dataclasses.replace(EDIT, images=(big, big, big))).notes == []


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
    assert validate(dataclasses.replace(EDIT, images=(fitted,))).notes == []


# -- the newer models: official rules refuse, reported ones only note --------------------

URL = "https://example.com/in.png"


def t2i(model, prompt="a lighthouse at dusk", **fields):
    return TextToImageRequest(prompt, model=model, **fields)


def edit(model, images=(URL,), **fields):
    return ImageEditRequest("make it winter", images=images, model=model, **fields)


def refuses(request, parameter, *parts, region=None):
    with pytest.raises(ValidationError) as caught:
        validate(request, region)
    assert caught.value.parameter == parameter
    for part in parts:
        assert part in str(caught.value)
    return caught.value


@pytest.mark.parametrize("request_, parameter, parts", [
    (t2i("qwen-image-3.0", n=7), "n", ["makes 1 to 6 per call"]),
    (t2i("qwen-image-2.0-pro", n=0), "n", ["Allowed: 1 to 6"]),
    (t2i("qwen-image-max", n=2), "n", ["makes 1 per call", "qwen-image-3.0"]),
    (t2i("qwen-image-max", size="1024*1024"), "size",
     ["not one of qwen-image-max's output sizes", "1664*928, 1472*1104"]),
    (t2i("qwen-image-3.0", size="511*511"), "size", ["below the smallest area of 512*512"]),
    (t2i("qwen-image-3.0-pro", size="2561*2561"), "size", ["over the largest area of 2560*2560"]),
    (t2i("qwen-image-3.0", size="4608*512"), "size", ["aspect ratio of 9.00:1, over 8:1"]),
    (t2i("qwen-image-2.0", size="2049*2048"), "size", ["over the largest area of 2048*2048"]),
    (edit("qwen-image-2.0", size="500*500"), "size", ["below the smallest area"]),
    (edit("qwen-image-edit-max", size="2049*1024"), "size", ["a side outside 512-2048"]),
    (edit("qwen-image-3.0", prompt_extend_mode="agent"), "prompt_extend_mode",
     ["'agent' cannot be used with input images", "Use 'direct'"]),
    (t2i("qwen-image-3.0", prompt_extend_mode="auto"), "prompt_extend_mode",
     ["Allowed: direct, agent"]),
    (edit("qwen-image-3.0", images=(URL,) * 4), "images", ["4 images given", "1 to 3 images"]),
    (edit("qwen-image-2.1-pro", images=(URL,) * 11), "images", ["11 images", "1 to 10 images"]),
    (t2i("qwen-image-2.0", negative_prompt="n" * 501), "negative_prompt",
     ["501 characters long, over the limit of 500"]),
    (t2i("qwen-image-3.0", enable_thinking="yes"), "enable_thinking", ["true or false"]),
    (edit("qwen-image-max"), "model", ["is a text-to-image model, not image-edit"]),
    (t2i("qwen-image-edit-max"), "model", ["is an image-edit model, not text-to-image"]),
])
def test_official_rules_of_newer_models_refuse(request_, parameter, parts):
    refuses(request_, parameter, *parts)


def test_3_0_area_refused_beyond_the_measured_limit_and_noted_beyond_the_official_one():
    assert validate(t2i("qwen-image-3.0", size="2048*2048")).notes == []
    for request in (t2i("qwen-image-3.0", size="2560*2560"),
                    edit("qwen-image-3.0-pro", size="2304*2304")):
        checked = validate(request)
        assert any("over the largest area of 2048*2048" in note and "2560*2560" in note
                   and note.startswith("Unconfirmed limit") for note in checked.notes)
        assert checked.request.size == request.size  # sent as asked


def test_limits_only_third_parties_report_are_noted_not_refused():
    checked = validate(t2i("qwen-image-2.1-pro", n=8, size="4096*4096", negative_prompt="fog"))
    notes = " | ".join(checked.notes)
    assert "only some of its limits are official" in notes
    assert "n: 8 images asked for" in notes and "Only third parties report" in notes
    assert "4096*4096 is 16,777,216 pixels" in notes
    assert "negative_prompt: qwen-image-2.1-pro may ignore or refuse it" in notes
    assert checked.request.negative_prompt == "fog" and checked.request.n == 8
    notes = validate(edit("qwen-image-2.1-pro", images=(URL,) * 10,
                          prompt_extend_mode="agent")).notes
    assert any("'agent' cannot be used with input images" in n for n in notes)
    notes = validate(edit("qwen-image-3.0", size="1024*1024")).notes
    assert any("Third parties saw the size ignored" in n for n in notes)
    # edit-plus: the seed reference refuses size with n > 1; for edit-max only a note.
    refuses(edit("qwen-image-edit-plus", size="1024*1024", n=2), "size", "only when n is 1")
    notes = validate(edit("qwen-image-edit-max", size="1024*1024", n=2)).notes
    assert len(notes) == 1 and "Dec 2025 reference refuses size with n > 1" in notes[0]


def test_token_limits_are_notes_never_refusals():
    checked = validate(t2i("qwen-image-2.0", prompt="word " * 1200))  # about 1500 tokens
    assert len(checked.notes) == 1
    assert ("roughly 1500 tokens (an estimate), over qwen-image-2.0's 1300 tokens"
            in checked.notes[0])
    note = validate(t2i("qwen-image-3.0", prompt="貓" * 4600)).notes[0]
    assert "4600 tokens" in note and "the most its page recommends" in note
    assert "service drops the excess" in validate(t2i("qwen-image-max", prompt="貓" * 900)).notes[0]
    assert validate(t2i("qwen-image-3.0", prompt="貓" * 4500)).notes == []
    assert validate(t2i("qwen-image-3.0", negative_prompt="n" * 5000)).notes == []  # no limit


def test_parameters_a_model_does_not_take_are_noted_when_set():
    checked = validate(t2i("qwen-image-plus", prompt_extend_mode="agent", enable_thinking=False,
                           watermark=True))
    assert checked.notes == ["prompt_extend_mode is not sent: qwen-image-plus does not take it",
                             "enable_thinking is not sent: qwen-image-plus does not take it"]
    sent = checked.request
    assert (sent.prompt_extend_mode, sent.enable_thinking, sent.watermark) == (None, None, True)
    # Their default values are left out silently.
    assert validate(t2i("qwen-image-plus", prompt_extend_mode="direct",
                        enable_thinking=True)).notes == []
    assert validate(t2i("qwen-image-3.0", prompt_extend=False, enable_thinking=True)).notes == [
        "enable_thinking has no effect: it works only with prompt_extend on"]


def test_a_model_is_refused_only_in_regions_no_official_page_lists():
    error = refuses(t2i("qwen-image-max"), "region", "not offered in Virginia (us-east-1)",
                    "Allowed: Singapore (ap-southeast-1), Beijing (cn-beijing)",
                    region="us-east-1")
    assert "DASHSCOPE_API_REGION" in str(error)
    for region in ("cn-hongkong", "eu-central-1", "us-east-1"):
        assert validate(t2i("qwen-image-3.0-pro"), region).notes == []
    assert len(validate(t2i("qwen-image-2.1-pro"), "eu-central-1").notes) == 1  # regions unknown
    assert "not in the pack's table" in validate(t2i("qwen-image-9"), "us-east-1").notes[0]


def test_whole_numbers_of_any_type_are_taken_as_int():
    checked = validate(t2i("qwen-image-3.0", n=np.int64(3), seed=np.int32(7)))
    assert type(checked.request.n) is int and type(checked.request.seed) is int
    assert (checked.request.n, checked.request.seed) == (3, 7)
    assert validate(t2i("qwen-image-3.0", n=2.0, seed=5.0)).request.n == 2
    refuses(t2i("qwen-image-3.0", n=np.float64(2.5)), "n", "must be a whole number, not")
    refuses(t2i("qwen-image-3.0", n=np.int64(7)), "n", "makes 1 to 6 per call")
    refuses(t2i("qwen-image-3.0", seed=np.int64(-1)), "seed", "out of range")


def test_sizes_are_sent_as_the_model_documents_them():
    checked = validate(t2i("qwen-image-max", size="1140*1472"))
    assert checked.request.size == "1104*1472"
    assert checked.notes == ["size 1140*1472 is sent as 1104*1472, the spelling qwen-image-max "
                             "documents"]
    assert validate(t2i("qwen-image-plus", size="1140*1472")).request.size == "1140*1472"
    note = validate(edit("qwen-image-edit-plus", size="1033*1032")).notes[0]
    assert "nearest multiple of 16, so the output will be 1040*1024" in note
    assert validate(t2i("qwen-image-plus", negative_prompt="  ")).request.negative_prompt is None


@pytest.mark.parametrize("text, size", [("1024*768", "1024*768"), ("1024x768", "1024*768"),
                                        (" 1024 X 768 ", "1024*768"), ("1024×768", "1024*768"),
                                        ("auto", None), ("", None), (None, None)])
def test_normalize_size(text, size):
    assert normalize_size(text) == size


def test_normalize_size_refuses_what_is_not_a_size():
    with pytest.raises(ValidationError) as caught:
        normalize_size("big")
    assert caught.value.parameter == "size" and "1024x1536" in str(caught.value)
    refuses(t2i("qwen-image-3.0", size="1024x1024"), "size", "normalize_size()")


def test_newer_input_image_rules():
    wide = png_bytes(3000, 500)  # 3.0's page recommends 384-2048 per side: a note
    notes = validate(edit("qwen-image-3.0", images=(wide,))).notes
    assert notes == ["image 1 is 3000x500 pixels; qwen-image-3.0's page recommends sides from "
                     "384 to 2048, so the service may refuse or resize it"]
    gif = png_bytes(fmt="GIF", mode="P")  # taken by 3.0, but the pack cannot send it yet
    refuses(edit("qwen-image-3.0", images=(gif,)), "image 1", "which qwen-image-3.0 takes but "
            "the pack cannot send yet")
