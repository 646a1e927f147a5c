"""The nodes across the model table: every model offered, inputs that fit the model chosen,
unified models with n and free sizes, more input images, mixed sizes in one output.

Run as ComfyUI runs the nodes, against the emulator, with stand-in hooks.
"""
import json

import numpy as np
import pytest
import torch

from qwen_image_dashscope.api.catalog.models import MODELS as TABLE, spec_for
from qwen_image_dashscope.api.catalog.specs import IMAGE_EDIT, TEXT_TO_IMAGE
from qwen_image_dashscope.api.errors import ValidationError
from qwen_image_dashscope.nodes import image_edit, outputs, runner, text_to_image
from qwen_image_dashscope.nodes.image_edit import DashScopeQwenImageEdit as Edit
from qwen_image_dashscope.nodes.text_to_image import DashScopeQwenImageTextToImage as T2I
from support.comfy_stubs.harness import pixels_sent, png_pixels, run_node, saved_pixels


def posts(emu):
    return [r for r in emu.requests if r.method == "POST" and "/services/aigc/" in r.path]


def parameters(emu):
    return [r.json["parameters"] for r in sorted(posts(emu),
                                                 key=lambda r: r.json["parameters"]["seed"])]


def picture(seed, height=400, width=520):
    return torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(seed))


def option(node_class) -> dict:
    return node_class.INPUT_TYPES()["required"]["model"][1]["qwen_image"]


# -- the table, the lists and what each model takes ---------------------------------------------

def test_every_model_of_the_table_is_offered_by_the_node_of_its_kind():
    assert text_to_image.MODELS == [m for m, s in TABLE.items() if s.accepts(TEXT_TO_IMAGE)]
    assert image_edit.MODELS == [m for m, s in TABLE.items() if s.accepts(IMAGE_EDIT)]
    unified = {m for m, s in TABLE.items() if s.kind == "unified"}
    assert unified and unified <= set(text_to_image.MODELS) & set(image_edit.MODELS)
    assert text_to_image.N_MAX == image_edit.N_MAX == 6
    assert image_edit.IMAGE_INPUTS == ("image", *(f"image{k}" for k in range(2, 11)))


@pytest.mark.parametrize("node_class, family, complete", [
    (T2I, TEXT_TO_IMAGE, "qwen-image-3.0"), (Edit, IMAGE_EDIT, "qwen-image-2.1-pro")])
def test_the_frontend_is_told_what_each_model_takes_from_the_table(node_class, family, complete):
    table = option(node_class)
    types = node_class.INPUT_TYPES()
    inputs = {**types["required"], **types["optional"]}
    assert set(table["depends"]) <= set(inputs)
    for model, taken in table["applies"].items():
        spec = spec_for(model, family)
        rule = spec.size_rule(family)
        expected = {
            "negative_prompt": "negative_prompt" in spec.takes,
            "size": rule is not None and "size" in spec.takes,
            "width": rule is not None and not rule.sizes and "size" in spec.takes,
            "n": spec.n_max != 1,
            "prompt_extend": "prompt_extend" in spec.takes,
            "prompt_extend_mode": "prompt_extend_mode" in spec.takes,
            "enable_thinking": "enable_thinking" in spec.takes,
            "interface": spec.async_path is not None,
            **{f"image{k}": spec.inputs is not None and k <= (spec.inputs.count[1] or k)
               for k in range(2, 11)},
        }
        for name in table["depends"]:
            if name in expected:
                assert (name in taken) == expected[name], (model, name)
    assert table["applies"][complete] == table["depends"]  # a model taking every input


def test_first_release_values_count_the_widgets_a_frozen_workflow_holds():
    # The frozen workflows' pack nodes hold 14 (text to image) and 16 (edit) values.
    assert option(T2I)["first_release_values"] == 14
    assert option(Edit)["first_release_values"] == 16


# -- text to image ------------------------------------------------------------------------------

def test_unified_model_makes_batch_times_n_images_at_a_custom_size(service, comfy):
    images, prompts, info, _ = run_node(T2I, prompt="a red kite", model="qwen-image-3.0", n=2,
                                     batch=2, size="custom", width=1024, height=768, seed=7)
    sent = parameters(service)
    assert [p["seed"] for p in sent] == [7, 8]
    assert all(p["n"] == 2 and p["size"] == "1024*768" for p in sent)
    assert tuple(images.shape) == (4, 768, 1024, 3)
    # The very pixels served, the two images of call 1 first.
    served = {png_pixels(data).tobytes() for data in service.served_images.values()}
    out = saved_pixels(images)
    assert len(served) == 4 and {frame.tobytes() for frame in out} == served
    record = json.loads(info)
    assert [r["outputs"] for r in record["requests"]] == ["images 1-2/4", "images 3-4/4"]
    assert [r["seed"] for r in record["requests"]] == [7, 8]
    assert record["batch"] == {"size": "1024*768", "padded": []}
    assert record["estimated_cost_usd"] == pytest.approx(4 * 0.03)
    assert record["price_usd"] == {"output": 0.03, "output_above_2k": 0.03, "input": 0.003}
    assert len(prompts.split("\n")) == 4


def test_a_preset_is_an_aspect_for_a_free_size_model_and_auto_its_default(service, comfy):
    _, _, info, _ = run_node(T2I, prompt="a lake", model="qwen-image-2.0", seed=1,
                          size="1664*928 (16:9)")
    run_node(T2I, prompt="a lake", model="qwen-image-2.0", seed=2, size="auto")
    preset, auto = parameters(service)
    default = spec_for("qwen-image-2.0", TEXT_TO_IMAGE).default_size(TEXT_TO_IMAGE)
    assert preset["size"] == "1664*928" and auto.get("size", default) == default
    # qwen-image-2.0 has no tasks: the async default runs synchronously, and info says so.
    assert all(r.path.endswith("/multimodal-generation/generation") for r in posts(service))
    assert any("no asynchronous interface" in note for note in json.loads(info)["notes"])


def test_inputs_a_model_does_not_take_are_not_sent_and_info_says_so(service, comfy):
    images, _, info, _ = run_node(T2I, prompt="a lake", model="qwen-image-plus", n=4,
                               prompt_extend_mode="agent", enable_thinking=False, width=333)
    (sent,) = parameters(service)
    assert sent.get("n", 1) == 1 and images.shape[0] == 1
    assert not {"prompt_extend_mode", "enable_thinking"} & set(sent)
    notes = json.loads(info)["notes"]
    for said in ("n = 4 was ignored: qwen-image-plus makes 1 image per call",
                 "prompt_extend_mode is not sent: qwen-image-plus does not take it",
                 "enable_thinking is not sent: qwen-image-plus does not take it"):
        assert said in notes


def test_3_0_takes_its_rewriting_options(service, comfy):
    run_node(T2I, prompt="a poster for a tea house", model="qwen-image-3.0",
             prompt_extend_mode="agent", enable_thinking=False)
    (sent,) = parameters(service)
    assert sent["prompt_extend_mode"] == "agent" and sent["enable_thinking"] is False


def test_status_text_of_an_old_saved_workflow_in_the_first_new_widget_is_harmless(service,
                                                                                  comfy):
    # Without the frontend extension an old workflow saved after a run hands its status
    # text ("done") to the first widget added since: prompt_extend_mode.
    assert T2I.VALIDATE_INPUTS(prompt="a cat", model="qwen-image-plus",
                               prompt_extend_mode="done") is True
    _, _, info, _ = run_node(T2I, prompt="a cat", model="qwen-image-3.0", prompt_extend_mode="done")
    (sent,) = parameters(service)
    assert sent.get("prompt_extend_mode", "direct") == "direct"  # the model's default
    assert any(note.startswith("prompt_extend_mode 'done' is not a mode")
               for note in json.loads(info)["notes"])


@pytest.mark.parametrize("inputs, expected", [
    ({"size": "custom"}, "size: '1024*1024' is not one of qwen-image-plus's output sizes"),
    ({"model": "qwen-image-3.0", "size": "custom", "width": 4096, "height": 4096},
     "size: 4096*4096 is 16,777,216 pixels, over the largest area of 2560*2560"),
    ({"model": "qwen-image-2.0", "size": "custom", "width": 256, "height": 256},
     "size: 256*256 is 65,536 pixels, below the smallest area of 512*512"),
    ({"model": "qwen-image-3.0", "n": 7}, "n: 7 images asked for; qwen-image-3.0 makes 1 to 6"),
    ({"region": "eu-central-1 (Frankfurt)"},
     "region: qwen-image-plus is not offered in Frankfurt (eu-central-1)"),
])
def test_validate_inputs_applies_the_chosen_models_rules(inputs, expected, service):
    values = {"prompt": "a cat", "model": "qwen-image-plus", "size": "1328*1328 (1:1)",
              "width": 1024, "height": 1024, **inputs}
    message = T2I.VALIDATE_INPUTS(**values)
    assert isinstance(message, str) and message.startswith(expected), message
    assert service.requests == []


def test_validate_inputs_accepts_what_the_model_takes_and_what_it_ignores():
    assert T2I.VALIDATE_INPUTS(prompt="a cat", model="qwen-image-3.0", n=6, size="custom",
                               width=2048, height=1024, prompt_extend_mode="agent") is True
    assert T2I.VALIDATE_INPUTS(prompt="a cat", model="qwen-image-plus", n=4, width=64) is True
    # A linked width is judged at run time.
    assert T2I.VALIDATE_INPUTS(prompt="a cat", model="qwen-image-3.0", size="custom",
                               width=None, height=1024) is True


# -- edit -----------------------------------------------------------------------------------------

def test_unified_edit_with_three_references_and_n(service, comfy):
    inputs = [picture(seed) for seed in (1, 2, 3)]
    images, _, info, _ = run_node(Edit, image=inputs[0], image2=inputs[1], image3=inputs[2],
                               prompt="image 1 wears the hat of image 2 in the room of image 3",
                               model="qwen-image-3.0", n=2, seed=5)
    (post,) = posts(service)
    assert post.json["model"] == "qwen-image-3.0" and post.json["parameters"]["n"] == 2
    got = [png_pixels(data) for data in service.input_images(post)]
    assert len(got) == 3
    for sent, received in zip(inputs, got, strict=False):
        assert np.array_equal(received, pixels_sent(sent)[0])  # lossless, in order
    assert images.shape[0] == 2
    served = {png_pixels(data).tobytes() for data in service.served_images.values()}
    assert {frame.tobytes() for frame in saved_pixels(images)} == served
    assert json.loads(info)["images"] == 2


def test_a_model_taking_more_references_gets_them_all(service, comfy):
    inputs = {name: picture(k) for k, name in enumerate(image_edit.IMAGE_INPUTS[:5], 1)}
    run_node(Edit, prompt="combine the five", model="qwen-image-2.1-pro", **inputs)
    (post,) = posts(service)
    got = [png_pixels(data) for data in service.input_images(post)]
    assert [g.shape for g in got] == [(400, 520, 3)] * 5
    for name, received in zip(inputs, got, strict=False):
        assert np.array_equal(received, pixels_sent(inputs[name])[0])


def test_more_references_than_the_model_takes_are_refused_before_sending(service, comfy):
    inputs = {name: picture(k) for k, name in enumerate(image_edit.IMAGE_INPUTS[:4], 1)}
    with pytest.raises(ValidationError, match="images: 4 images given"):
        run_node(Edit, prompt="combine", model="qwen-image-3.0", **inputs)
    assert posts(service) == []


def test_a_gap_in_the_references_is_refused(service, comfy):
    with pytest.raises(ValidationError, match="image5: is connected but image4 is not"):
        run_node(Edit, prompt="combine", model="qwen-image-2.1-pro", image=picture(1),
                 image2=picture(2), image3=picture(3), image5=picture(5))
    assert service.requests == []


def test_agent_rewriting_with_input_images_is_refused_at_queue_time():
    message = Edit.VALIDATE_INPUTS(prompt="edit", model="qwen-image-3.0",
                                   prompt_extend_mode="agent")
    assert message.startswith("prompt_extend_mode: 'agent' cannot be used with input images")


# -- outputs of different sizes -----------------------------------------------------------------

def _png(width, height, value):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (value,) * 3).save(buffer, "PNG")
    return buffer.getvalue()


def test_results_of_different_sizes_are_one_batch_padded_and_info_says_how(comfy):
    from qwen_image_dashscope.api.schema import (
        GeneratedImage,
        GenerationResult,
        TextToImageRequest,
    )

    sizes = [(1024, 768), (768, 1024)]
    jobs = [runner.Call(TextToImageRequest(prompt="a kite", model="qwen-image-3.0", seed=i),
                        first=i, n=1) for i in range(2)]
    results = [GenerationResult(
        images=[GeneratedImage(_png(w, h, 100 + i), f"https://x/{i}.png", w, h)],
        model="qwen-image-3.0", region="ap-southeast-1", interface="sync", cost_usd=0.03)
        for i, (w, h) in enumerate(sizes)]
    images, _, info, _ = outputs.assemble("T", "qwen-image-3.0", TEXT_TO_IMAGE, jobs, results, [])
    assert tuple(images.shape) == (2, 1024, 1024, 3)
    out = saved_pixels(images)
    assert (out[0, 128:896] == 100).all() and (out[0, :128] == 0).all()
    assert (out[1, :, 128:896] == 101).all() and (out[1, :, :128] == 0).all()
    record = json.loads(info)
    assert record["batch"] == {"size": "1024*1024", "padded": [
        {"image": 1, "size": "1024*768", "x": 0, "y": 128},
        {"image": 2, "size": "768*1024", "x": 128, "y": 0}]}
    (note,) = [n for n in record["notes"] if n.startswith("The results differ in size")]
    assert "centred on black with its pixels unchanged" in note and "keeps every exact file" in note
