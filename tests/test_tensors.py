"""IMAGE tensor <-> PNG conversion (nodes/tensors.py, api/images.py): exactness, channels,
range, limits."""
import io
import platform

import numpy as np
import pytest
import torch
from PIL import Image

from qwen_image_dashscope.api import images as api_images
from qwen_image_dashscope.api.catalog.specs import EDIT_INPUT_MAX_BYTES
from qwen_image_dashscope.api.errors import ValidationError
from qwen_image_dashscope.api.images import data_uri_length, mime_type
from qwen_image_dashscope.nodes import tensors
from support.comfy_stubs.harness import pixels_sent, png_pixels, saved_pixels


def png(array, mode="RGB", format="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format, **options)
    return buffer.getvalue()


def all_values_image() -> np.ndarray:
    """64x64 RGB holding every value 0..255 in every channel, channels differently arranged."""
    values = np.arange(256, dtype=np.uint8)
    grid = np.tile(values, 16).reshape(64, 64)
    return np.stack([grid, grid[::-1], grid.T], axis=-1)


def uri_length(encoded) -> int:
    return data_uri_length(len(encoded.data), mime_type(encoded.format))


# -- out: PNG -> IMAGE ------------------------------------------------------------------------

def test_every_value_survives_saveimage_exactly():
    pixels = all_values_image()
    images, masks, placed = tensors.decode_images([png(pixels)])
    assert placed == [] and not masks.any() and tuple(masks.shape) == (1, 64, 64)
    assert images.dtype == torch.float32 and tuple(images.shape) == (1, 64, 64, 3)
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    # The representation is v/255 in float32 ...
    expected = pixels.astype(np.float32) / np.float32(255)
    assert np.array_equal(images[0].numpy(), expected)
    # ... and SaveImage's truncating 255*x gives back every one of the 256 values.
    assert np.array_equal(saved_pixels(images)[0], pixels)
    values = torch.arange(256, dtype=torch.float32).div(255)
    assert np.array_equal(saved_pixels(values), np.arange(256, dtype=np.uint8))


def test_result_modes_become_rgb_and_transparency_becomes_the_mask():
    rgb = all_values_image()
    grey = rgb[..., 0]
    palette = Image.fromarray(rgb).quantize(64)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    alpha = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)  # 0..255
    rgba = np.dstack([rgb, alpha])
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: its colour is kept as served
    grey_alpha = np.dstack([grey, 255 - alpha])
    images, masks, _ = tensors.decode_images([png(grey, "L"), buffer.getvalue(),
                                              png(rgba, "RGBA"), png(grey_alpha, "LA")])
    out = saved_pixels(images)
    assert np.array_equal(out[0], np.repeat(grey[..., None], 3, axis=-1))
    assert np.array_equal(out[1], np.asarray(palette.convert("RGB")))
    assert tuple(out[2, 0, 0]) == (10, 20, 30)
    assert np.array_equal(out[2], rgba[..., :3])  # never composited
    assert np.array_equal(out[3], np.repeat(grey[..., None], 3, axis=-1))
    # MASK = 1 - alpha/255, exactly as ComfyUI's LoadImage computes it; zeros when opaque.
    assert not masks[:2].any()
    def loadimage_mask(a):
        return 1.0 - torch.from_numpy(a.astype(np.float32) / 255.0)

    assert torch.equal(masks[2], loadimage_mask(rgba[..., 3]))
    assert float(masks[2, 0, 0]) == 1.0 and float(masks[2, 0, 1]) < 1.0
    assert torch.equal(masks[3], loadimage_mask(255 - alpha))


def test_padding_of_a_transparent_result_has_a_zero_mask():
    small = np.dstack([np.full((20, 30, 3), 9, np.uint8), np.zeros((20, 30), np.uint8)])
    images, masks, placed = tensors.decode_images([png(all_values_image()), png(small, "RGBA")])
    (p,) = placed
    assert bool((masks[1, p.y:p.y + 20, p.x:p.x + 30] == 1).all())
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[p.y:p.y + 20, p.x:p.x + 30] = False
    assert not masks[1][outside].any() and not masks[0].any()


def test_results_of_different_sizes_share_the_batch_padded_with_exact_pixels():
    first = np.full((40, 60, 3), 10, np.uint8)
    other = all_values_image()[:30, :31]  # 31x30: odd margins
    tall = np.full((50, 20, 3), 200, np.uint8)
    images, _, placed = tensors.decode_images([png(first), png(other), png(tall)])
    assert tuple(images.shape) == (3, 50, 60, 3)  # the largest width and the largest height
    out = saved_pixels(images)
    assert [(p.index, p.width, p.height, p.x, p.y) for p in placed] == [
        (0, 60, 40, 0, 5), (1, 31, 30, 14, 10), (2, 20, 50, 20, 0)]
    for p, pixels in zip(placed, (first, other, tall), strict=False):
        frame = out[p.index]
        assert np.array_equal(frame[p.y:p.y + p.height, p.x:p.x + p.width], pixels)
        outside = np.ones(frame.shape[:2], bool)
        outside[p.y:p.y + p.height, p.x:p.x + p.width] = False
        assert not frame[outside].any()  # black around it


def test_results_of_one_size_are_not_padded():
    images, _, placed = tensors.decode_images([png(all_values_image())] * 2)
    assert placed == [] and tuple(images.shape) == (2, 64, 64, 3)


def test_pixels_decoded_already_are_used_and_handed_over():
    served = all_values_image()
    given = (served[::-1].copy(), None)  # not the file's pixels: shows which were used
    decoded = [given, None]
    images, _, _ = tensors.decode_images([png(served), png(served)], decoded=decoded)
    assert np.array_equal(saved_pixels(images)[0], served[::-1])
    assert np.array_equal(saved_pixels(images)[1], served)  # decoded from its file
    assert decoded == [None, None]  # the output holds no other copy of them


@pytest.mark.parametrize("frames", [2, 3], ids=["the batch's shape", "another shape"])
def test_pixels_written_into_the_output_are_not_decoded_again_if_it_is_used(monkeypatch,
                                                                             frames):
    served = all_values_image()
    decoded, decode = [], tensors.decode_pixels
    monkeypatch.setattr(tensors, "decode_pixels", lambda data: decoded.append(data) or decode(data))
    out = tensors.new_output((frames, *served.shape))
    tensors.to_float(served[::-1], out[0])  # not the file's pixels: shows which were used
    alpha = np.full(served.shape[:2], 51, np.uint8)
    images, masks, _ = tensors.decode_images([png(served), png(served)],
                                             decoded=[(None, alpha), None], out=out)
    if frames == 2:  # used: image 1 is what was written, its mask from the alpha given
        assert np.array_equal(saved_pixels(images)[0], served[::-1]) and len(decoded) == 1
        assert torch.equal(masks[0], tensors.alpha_mask(alpha))
    else:  # not the batch's: what was written is in the wrong memory, decoded again
        assert np.array_equal(saved_pixels(images)[0], served) and len(decoded) == 2
        assert not masks.any()  # the file's own alpha: none
    assert np.array_equal(saved_pixels(images)[1], served)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_is_handed_back_with_glibc():
    assert tensors._malloc_trim() is not None
    tensors.return_freed_memory()


# -- in: IMAGE -> PNG -----------------------------------------------------------------------

def test_float_tensor_becomes_round_clip_255_exactly():
    images = torch.rand(2, 400, 470, 3, generator=torch.Generator().manual_seed(3))
    pixels, notes = tensors.to_uint8_rgb(images, "image")
    assert notes == []
    assert np.array_equal(pixels, pixels_sent(images))
    encoded = api_images.encode_image(pixels[1], "image")
    assert encoded.format == "PNG" and encoded.notes == []
    assert np.array_equal(png_pixels(encoded.data), pixels[1])


def test_decoded_values_round_trip_unchanged():
    pixels = all_values_image()
    images, _, _ = tensors.decode_images([png(pixels)])
    again, _ = tensors.to_uint8_rgb(images, "image")
    assert np.array_equal(again[0], pixels)


def test_greyscale_is_repeated_to_rgb():
    grey = torch.linspace(0, 1, 20 * 30).reshape(1, 20, 30, 1)
    pixels, notes = tensors.to_uint8_rgb(grey, "image")
    assert pixels.shape == (1, 20, 30, 3) and notes == []
    expected = pixels_sent(grey)[..., 0]
    for channel in range(3):
        assert np.array_equal(pixels[..., channel], expected)


def test_rgba_is_composited_over_white():
    rgba = torch.tensor([[[[1.0, 0.0, 0.0, 1.0],    # opaque red stays red
                           [0.0, 0.0, 0.0, 0.0],    # transparent black becomes white
                           [0.0, 0.0, 1.0, 0.5],    # half-transparent blue: half white
                           [0.2, 0.4, 0.6, 1.0]]]])
    pixels, notes = tensors.to_uint8_rgb(rgba, "image2")
    assert pixels[0, 0].tolist() == [[255, 0, 0], [255, 255, 255], [128, 128, 255], [51, 102, 153]]
    assert notes == ["image2: the alpha channel was composited over white."]


def test_grey_alpha_is_composited_over_white():
    pixels, notes = tensors.to_uint8_rgb(torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]]), "image")
    assert pixels[0, 0].tolist() == [[255, 255, 255], [0, 0, 0]]
    assert "composited over white" in notes[0]


def test_nan_and_out_of_range_values_are_clipped_with_a_note():
    x = torch.tensor([[[[float("nan"), 0.5, 1.7], [-0.3, 1.0, 0.0]]]])
    pixels, notes = tensors.to_uint8_rgb(x, "image")
    assert pixels[0, 0].tolist() == [[0, 128, 255], [0, 255, 0]]
    assert any("1 NaN values were set to 0" in n for n in notes)
    assert any("2 values outside 0..1" in n for n in notes)


def test_deviations_below_half_a_step_change_nothing_and_are_not_reported():
    x = torch.tensor([[[[-0.001, 1.001, 0.5]]]])
    pixels, notes = tensors.to_uint8_rgb(x, "image")
    assert pixels[0, 0, 0].tolist() == [0, 255, 128] and notes == []


def test_bad_shapes_are_refused():
    with pytest.raises(ValidationError, match="image3: expected an IMAGE tensor"):
        tensors.to_uint8_rgb(torch.zeros(1, 8, 8, 5), "image3")


@pytest.mark.parametrize("size, expected", [
    ((1000, 800), (1000, 800)),     # inside: unchanged
    ((200, 300), (384, 576)),       # too small: short side to 384
    ((4000, 1000), (3072, 768)),    # too large: long side to 3072
    ((3072, 384), (3072, 384)),     # the extreme that still fits
    ((300, 2400), (384, 3072)),     # 8:1 upscaled
])
def test_fit_sides(size, expected):
    assert api_images.fit_sides(*size, "image") == expected


def test_impossible_aspect_ratio_is_a_clear_error():
    with pytest.raises(ValidationError) as caught:
        api_images.fit_sides(4000, 300, "image2")
    message = str(caught.value)
    assert message.startswith("image2: 4000x300 px has an aspect ratio of 13.33:1")
    assert "at most 8:1" in message and "Crop or pad" in message


def test_small_input_is_upscaled_with_lanczos_and_a_note():
    pixels = np.zeros((100, 150, 3), np.uint8)
    pixels[:, 75:] = 255
    encoded = api_images.encode_image(pixels, "image")
    assert (encoded.width, encoded.height) == (576, 384)
    assert png_pixels(encoded.data).shape == (384, 576, 3)
    assert encoded.notes == ["image: resized from 150x100 to 576x384 px (the service takes "
                             "384-3072 px per side)."]


def _busy(width, height, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_over_the_limit_tries_stronger_png_then_lossless_webp():
    # A ramp with one bit of noise: zlib's top level gains a few percent, WebP far more.
    ramp = np.broadcast_to((np.arange(512) % 256).astype(np.uint8)[None, :, None], (512, 512, 3))
    pixels = ramp + np.random.default_rng(5).integers(0, 2, (512, 512, 3), dtype=np.uint8)
    default = png(pixels)
    strongest = png(pixels, compress_level=9)
    webp = png(pixels, "RGB", format="WEBP", lossless=True, quality=25, method=1)
    default_uri = data_uri_length(len(default), "image/png")
    strongest_uri = data_uri_length(len(strongest), "image/png")
    assert strongest_uri < default_uri <= 1.1 * strongest_uri  # the test's premise
    assert data_uri_length(len(webp), "image/webp") < strongest_uri - 10

    limit = strongest_uri + 10  # only the strongest PNG fits
    encoded = api_images.encode_image(pixels, "image", max_uri_bytes=limit)
    assert encoded.format == "PNG" and uri_length(encoded) <= limit
    assert np.array_equal(png_pixels(encoded.data), pixels)
    assert "re-encoded as maximally compressed PNG" in encoded.notes[0]

    limit = strongest_uri - 10  # only WebP fits
    encoded = api_images.encode_image(pixels, "image", max_uri_bytes=limit)
    assert encoded.format == "WEBP" and uri_length(encoded) <= limit
    assert np.array_equal(png_pixels(encoded.data), pixels)
    assert "re-encoded as lossless WebP" in encoded.notes[0]
    assert "pixels unchanged" in encoded.notes[0]


def test_over_10_mb_even_lossless_is_downscaled_to_fit():
    pixels = _busy(2400, 2000)  # noise: no lossless coding gets it under 10 MB
    encoded = api_images.encode_image(pixels, "image")
    assert encoded.format == "PNG" and uri_length(encoded) <= EDIT_INPUT_MAX_BYTES
    assert encoded.width < 2400 and encoded.height < 2000
    assert abs(encoded.width / encoded.height - 2400 / 2000) < 0.01
    assert "downscaled from 2400x2000" in encoded.notes[0]
    assert png_pixels(encoded.data).shape == (encoded.height, encoded.width, 3)


def test_an_image_that_cannot_fit_without_going_below_384_px_is_refused():
    expected = ("cannot be encoded within the service's 10 MB data-URI limit: .* without a side "
                "below 384 px")
    with pytest.raises(ValidationError, match=expected):
        api_images.encode_image(_busy(400, 400), "image", max_uri_bytes=100_000)


def test_out_of_range_input_is_clipped_without_touching_the_callers_tensor():
    # The tensor is the upstream node's cached output: converting it must not change it.
    images = torch.tensor([[[[1.5, 0.2, -0.3]]]])
    pixels, _ = tensors.to_uint8_rgb(images, "image")
    assert pixels[0, 0, 0].tolist() == [255, 51, 0]
    assert images[0, 0, 0].tolist() == pytest.approx([1.5, 0.2, -0.3])
