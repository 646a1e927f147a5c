"""The emulator's model families: legacy and newer text to image, the edit family, 2.0,
3.0 (sync and async), 2.1-pro and 2.1-turbo, each with its rules and its answer shape;
RGBA results."""
import io
import math

import pytest
import requests
from PIL import Image

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator
from support.emulator_http import (
    BJ,
    GENERATION,
    SG,
    SMALL,
    assert_error,
    auth,
    create_generation_task,
    create_task,
    data_uri,
    download,
    edit_body,
    expected_edit,
    generate,
    image_urls,
    pattern_png,
    png,
    query,
    t2i_body,
    task_body,
    wait_until,
)

# the options of this module's ``emulator``/``emu``
EMULATOR = {"latency": 0.02, "rate_limits": False}

IMAGE_GENERATION = "/services/aigc/image-generation/generation"
V1_USAGE = {"width", "height", "image_count"}
QIMA_USAGE = {"output_width", "output_height", "input_image_count", "input_image_type",
              "output_image_count", "output_image_type"}
ALL_MODELS = {  # model: kind ("t2i", "edit" or "unified")
    "qwen-image": "t2i", "qwen-image-plus": "t2i", "qwen-image-plus-2026-01-09": "t2i",
    "qwen-image-max": "t2i", "qwen-image-max-2025-12-30": "t2i",
    "qwen-image-edit": "edit", "qwen-image-edit-plus": "edit",
    "qwen-image-edit-plus-2025-10-30": "edit", "qwen-image-edit-plus-2025-12-15": "edit",
    "qwen-image-edit-max": "edit", "qwen-image-edit-max-2026-01-16": "edit",
    "qwen-image-2.0": "unified", "qwen-image-2.0-2026-03-03": "unified",
    "qwen-image-2.0-pro": "unified", "qwen-image-2.0-pro-2026-06-22": "unified",
    "qwen-image-2.0-pro-2026-04-22": "unified", "qwen-image-2.0-pro-2026-03-03": "unified",
    "qwen-image-3.0": "unified", "qwen-image-3.0-pro": "unified", "qwen-image-2.1-pro": "unified",
    "qwen-image-2.1-turbo": "unified",
}


def sizes_of(response):
    return [download(url)[0].size for url in image_urls(response)]


# -- every model, both regions -----------------------------------------------------------------


@pytest.mark.parametrize("model", list(ALL_MODELS))
@pytest.mark.parametrize("region, key", [(SG, SINGAPORE_KEY), (BJ, BEIJING_KEY)])
def test_every_model_is_served_in_both_regions(emu, model, region, key):
    small = {"size": "1024*1024"} if model.startswith(("qwen-image-2.", "qwen-image-3.")) else {}
    body = (t2i_body(model=model, **small) if ALL_MODELS[model] != "edit"
            else edit_body([SMALL], model=model))
    assert generate(emu, body, key, region).status_code == 200


# -- qwen-image-max, qwen-image-plus-2026-01-09: the newer text-to-image models ----------------


@pytest.mark.parametrize("model", ["qwen-image-max", "qwen-image-max-2025-12-30",
                                   "qwen-image-plus-2026-01-09"])
def test_newer_text_to_image_models_default_to_1664x928_and_keep_the_five_sizes(emu, model):
    response = generate(emu, t2i_body(model=model, seed=1))
    body = response.json()
    assert body["usage"] == {"width": 1664, "height": 928, "image_count": 1}
    assert body["output"]["task_metric"] == {"TOTAL": 1, "FAILED": 0, "SUCCEEDED": 1}
    for size in ("1472*1140", "1472*1104", "1140*1472", "1104*1472"):  # both spellings
        other = generate(emu, t2i_body(model=model, size=size))
        assert "%(width)d*%(height)d" % other.json()["usage"] == size
    assert_error(generate(emu, t2i_body(model=model, n=2)), 400, "InvalidParameter",
                 "must be 1")
    assert_error(generate(emu, t2i_body(model=model, size="1024*1024")), 400,
                 "InvalidParameter", "1664*928")
    assert_error(generate(emu, edit_body([SMALL], model=model)), 400, "InvalidParameter",
                 "does not accept input images")


def test_only_qwen_image_and_plus_are_served_on_image_synthesis(emu):
    assert create_task(emu, task_body(model="qwen-image")).status_code == 200
    for model in ("qwen-image-plus-2026-01-09", "qwen-image-max", "qwen-image-2.0",
                  "qwen-image-3.0", "qwen-image-edit-max"):
        assert_error(create_task(emu, task_body(model=model)), 400, "InvalidParameter",
                     "Model not exist.")


def test_legacy_models_keep_1328x1328_as_their_default(emu):
    for model in ("qwen-image", "qwen-image-plus"):
        usage = generate(emu, t2i_body(model=model)).json()["usage"]
        assert (usage["width"], usage["height"]) == (1328, 1328)


# -- qwen-image-edit-max, qwen-image-edit-plus-2025-12-15 --------------------------------------


@pytest.mark.parametrize("model", ["qwen-image-edit-max", "qwen-image-edit-max-2026-01-16",
                                   "qwen-image-edit-plus-2025-12-15"])
def test_edit_max_takes_six_outputs_at_a_chosen_size_rounded_to_16(emu, model):
    # 1000 / 16 = 62.5 and 600 / 16 = 37.5: Python's round gives 62 and 38.
    response = generate(emu, edit_body([SMALL, SMALL], model=model, n=6, size="1000*600"))
    assert response.status_code == 200, response.text
    assert response.json()["usage"] == {"width": 992, "height": 608, "image_count": 6}
    assert "task_metric" not in response.json()["output"]
    assert sizes_of(response) == [(992, 608)] * 6
    default = generate(emu, edit_body([data_uri(png((768, 512)))], model=model))
    assert default.json()["usage"] == {"width": 1248, "height": 832, "image_count": 1}
    for bad in ({"n": 7}, {"size": "2049*1024"}, {"size": "511*1024"}):
        assert_error(generate(emu, edit_body([SMALL], model=model, **bad)), 400,
                     "InvalidParameter")
    assert_error(generate(emu, t2i_body(model=model)), 400, "InvalidParameter", "1 to 3")


def test_edit_plus_of_2025_10_30_still_takes_a_size_only_with_n_1(emu):
    assert_error(generate(emu, edit_body([SMALL], n=2, size="1024*1024")), 400,
                 "InvalidParameter", "n is 1")
    exact = generate(emu, edit_body([SMALL], size="1000*600"))
    assert exact.json()["usage"] == {"width": 1000, "height": 600, "image_count": 1}


# -- the 2.0 family ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["qwen-image-2.0", "qwen-image-2.0-pro-2026-06-22"])
def test_2_0_text_to_image_six_outputs_at_a_chosen_size(emu, model):
    response = generate(emu, t2i_body(model=model, n=6, size="1536*1024", seed=3))
    body = response.json()
    assert body["usage"] == {"width": 1536, "height": 1024, "image_count": 6}
    assert set(body["output"]) == {"choices"}  # no task_metric for the 2.0 family
    assert sizes_of(response) == [(1536, 1024)] * 6
    assert len({download(url)[1] for url in image_urls(response)}) == 6


def test_2_0_text_to_image_default_and_area_bounds(emu):
    usage = generate(emu, t2i_body(model="qwen-image-2.0-pro")).json()["usage"]
    assert (usage["width"], usage["height"]) == (2048, 2048)
    for size in ("512*512", "2688*1536", "1024*4096"):  # areas at or inside the bounds
        assert generate(emu, t2i_body(model="qwen-image-2.0", size=size)).status_code == 200
    for size in ("511*512", "2049*2048", "1024x1024"):
        assert_error(generate(emu, t2i_body(model="qwen-image-2.0", size=size)), 400,
                     "InvalidParameter", size)
    assert_error(generate(emu, t2i_body(model="qwen-image-2.0", n=7)), 400, "InvalidParameter",
                 "between 1 and 6")


def test_2_0_edit_rounds_sizes_to_16_and_defaults_to_the_last_image(emu):
    response = generate(emu, edit_body([SMALL, SMALL], model="qwen-image-2.0", n=6,
                                       size="1033*1032"))
    assert response.json()["usage"] == {"width": 1040, "height": 1024, "image_count": 6}
    assert set(response.json()["output"]) == {"choices"}
    last = pattern_png((600, 900))
    default = generate(emu, edit_body([SMALL, data_uri(last)], model="qwen-image-2.0-pro"))
    assert default.json()["usage"] == {"width": 832, "height": 1248, "image_count": 1}
    assert_error(generate(emu, edit_body([SMALL] * 4, model="qwen-image-2.0")), 400,
                 "InvalidParameter", "0 to 3")
    assert_error(generate(emu, edit_body([SMALL], model="qwen-image-2.0", size="500*500")), 400,
                 "InvalidParameter")


def test_2_0_cuts_prompts_at_1300_characters(emu):
    response = generate(emu, t2i_body("q" * 1400, model="qwen-image-2.0", size="512*512"))
    assert response.status_code == 200
    assert emu.requests[-1].notes == ["prompt truncated from 1400 to 1300 characters"]


# -- the 3.0 family, synchronous ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["qwen-image-3.0", "qwen-image-3.0-pro"])
def test_3_0_text_to_image_six_outputs_and_the_qima_answer(emu, model):
    response = generate(emu, t2i_body(model=model, n=6, size="1024*1536", seed=5))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"output", "usage", "request_id"}
    assert list(body["output"]) == ["rewrite_status", "choices"]
    assert body["output"]["rewrite_status"] == "success"  # prompt_extend defaults to true
    assert body["usage"] == {"output_width": 1024, "output_height": 1536, "input_image_count": 0,
                             "input_image_type": "qima_input_1k", "output_image_count": 6,
                             "output_image_type": "qima_output_1k"}
    assert sizes_of(response) == [(1024, 1536)] * 6
    plain = generate(emu, t2i_body(model=model, size="512*512", prompt_extend=False))
    assert plain.json()["output"]["rewrite_status"] == "not_use"


def test_3_0_size_bounds_are_the_measured_ones(emu):
    def t2i(**parameters):
        return generate(emu, t2i_body(model="qwen-image-3.0", **parameters))

    usage = t2i().json()["usage"]  # no size: 2048*2048, billed as 2k
    assert (usage["output_width"], usage["output_height"]) == (2048, 2048)
    assert (usage["input_image_type"], usage["output_image_type"]) == (
        "qima_input_2k", "qima_output_2k")
    biggest = t2i(size="2560*2560").json()["usage"]  # over the documented 2048*2048
    assert (biggest["output_width"], biggest["output_height"]) == (2560, 2560)
    assert t2i(size="4096*512").status_code == 200  # 8:1
    assert t2i(size="1500*1500").json()["usage"]["output_image_type"] == "qima_output_1k"
    assert_error(t2i(size="2561*2561"), 400, "InvalidParameter", "for t2i requests")
    assert_error(t2i(size="511*511"), 400, "InvalidParameter", "for t2i requests")
    assert_error(t2i(size="4096*256"), 400, "InvalidParameter", "1:8")
    assert_error(t2i(size="1K"), 400, "InvalidParameter", "Expected format: '<width>*<height>'")
    assert_error(t2i(size="2561*2561", n=7), 400, "InvalidParameter", "n must be")  # n first


def test_3_0_edit_ignores_the_size_and_keeps_the_last_images_ratio(emu):
    last = pattern_png((600, 900))
    response = generate(emu, edit_body([SMALL, data_uri(last)], model="qwen-image-3.0-pro",
                                       size="10*10", n=2, prompt_extend=False, seed=4))
    assert response.status_code == 200, response.text
    # The last image's ratio at about 2048*2048: round(sqrt(4194304 * 2/3) / 16) * 16 = 1680.
    width = round(math.sqrt(2048 * 2048 * 600 / 900) / 16) * 16
    height = round(math.sqrt(2048 * 2048 * 900 / 600) / 16) * 16
    assert (width, height) == (1680, 2512)
    assert response.json()["usage"] == {
        "output_width": 1680, "output_height": 2512, "input_image_count": 2,
        "input_image_type": "qima_input_2k", "output_image_count": 2,
        "output_image_type": "qima_output_2k"}
    assert response.json()["output"]["rewrite_status"] == "not_use"
    inputs = [Image.open(io.BytesIO(png())), Image.open(io.BytesIO(last))]
    for k, url in enumerate(image_urls(response)):  # the edit pixel rule, as for every edit
        out = download(url)[0].convert("RGB")
        assert out.tobytes() == expected_edit(inputs, (1680, 2512), 4, k).tobytes()
    assert_error(generate(emu, edit_body([SMALL] * 4, model="qwen-image-3.0")), 400,
                 "InvalidParameter", "0 to 3")


def test_3_0_rewriting_options(emu):
    def call(images=(), **parameters):
        body = (edit_body(list(images), model="qwen-image-3.0", **parameters) if images
                else t2i_body(model="qwen-image-3.0", size="512*512", **parameters))
        return generate(emu, body)

    assert call(prompt_extend_mode="agent", enable_thinking=False).status_code == 200
    assert call([SMALL], prompt_extend_mode="direct", enable_thinking=True).status_code == 200
    assert_error(call([SMALL], prompt_extend_mode="agent"), 400, "InvalidParameter", "agent")
    assert_error(call(prompt_extend_mode="smart"), 400, "InvalidParameter", "prompt_extend_mode")
    assert_error(call(enable_thinking="yes"), 400, "InvalidParameter", "enable_thinking")
    # Older models ignore these parameters like any unknown one.
    body = t2i_body(prompt_extend_mode="smart", enable_thinking="yes")
    assert generate(emu, body).status_code == 200


# -- the 3.0 family, asynchronous --------------------------------------------------------------


def test_3_0_async_task_life_cycle_and_answer(emu):
    body = edit_body([SMALL], model="qwen-image-3.0", n=2, seed=4)
    created = create_generation_task(emu, body)
    assert created.status_code == 200, created.text
    task_id = created.json()["output"]["task_id"]
    assert created.json()["output"] == {"task_id": task_id, "task_status": "PENDING"}
    done = wait_until(emu, task_id)
    output = done["output"]
    assert output["task_status"] == "SUCCEEDED"
    assert {"submit_time", "scheduled_time", "end_time", "rewrite_status", "choices"} <= set(output)
    assert "results" not in output and "task_metrics" not in output
    assert output["rewrite_status"] == "success"
    content = output["choices"][0]["message"]["content"]
    assert [item["type"] for item in content] == ["image", "image"]
    assert set(done["usage"]) == QIMA_USAGE and done["usage"]["input_image_count"] == 1
    assert done["usage"]["output_image_count"] == 2
    width, height = done["usage"]["output_width"], done["usage"]["output_height"]
    assert Image.open(io.BytesIO(download(content[0]["image"])[1])).size == (width, height)
    (task,) = emu.tasks
    assert task["model"] == "qwen-image-3.0" and task["status"] == "SUCCEEDED"


def test_3_0_async_path_rules(emu):
    body = t2i_body(model="qwen-image-3.0-pro", size="512*512")
    assert_error(create_generation_task(emu, body, asynchronous=False), 403, "AccessDenied",
                 "current user api does not support synchronous calls")
    assert_error(create_generation_task(emu, t2i_body()), 400, "InvalidParameter",
                 "Model not exist.")  # qwen-image-plus: image-synthesis only
    assert_error(create_generation_task(emu, t2i_body(model="qwen-image-3.0", n=7)), 400,
                 "InvalidParameter", "between 1 and 6")
    failed = create_generation_task(emu, t2i_body(model="qwen-image-3.0", size="2561*2561"))
    assert_error(failed, 400, "InvalidParameter", "for t2i requests")
    assert emu.stats["tasks_created"] == 0


def test_3_0_async_cancel_while_pending_and_the_limit_of_two_running():
    with Emulator(latency=0.4, rate_limits=False) as emu:
        body = t2i_body(model="qwen-image-3.0", size="512*512")
        ids = [create_generation_task(emu, body).json()["output"]["task_id"] for _ in range(3)]
        statuses = [query(emu, i).json()["output"]["task_status"] for i in ids]
        assert statuses == ["RUNNING", "RUNNING", "PENDING"]
        cancel = requests.post(f"{emu.base_url(SG)}/tasks/{ids[2]}/cancel", headers=auth())
        assert cancel.status_code == 200 and set(cancel.json()) == {"request_id"}
        refused = requests.post(f"{emu.base_url(SG)}/tasks/{ids[0]}/cancel", headers=auth())
        assert_error(refused, 400, "UnsupportedOperation")
        canceled = query(emu, ids[2]).json()
        assert canceled["output"]["task_status"] == "CANCELED" and "usage" not in canceled
        assert "choices" not in canceled["output"]
        assert [wait_until(emu, i)["output"]["task_status"] for i in ids[:2]] == ["SUCCEEDED"] * 2
        assert emu.stats["images_billed"] == 2


def test_3_0_async_task_failed_fault_has_code_and_message(emu):
    emu.inject("task_failed", message="inference crashed")
    task_id = create_generation_task(emu, t2i_body(model="qwen-image-3.0", size="512*512")) \
        .json()["output"]["task_id"]
    answer = wait_until(emu, task_id)
    assert (answer["output"]["task_status"], answer["output"]["message"]) == (
        "FAILED", "inference crashed")
    assert "usage" not in answer and "choices" not in answer["output"]


# -- qwen-image-2.1-pro (third-party limits) ---------------------------------------------------


def test_2_1_pro_takes_ten_references_and_no_negative_prompt(emu):
    model = "qwen-image-2.1-pro"
    ten = generate(emu, edit_body([SMALL] * 9 + [data_uri(png((800, 400)))], model=model,
                                  n=6, size="1024*512"))
    assert ten.status_code == 200, ten.text
    assert ten.json()["usage"]["input_image_count"] == 10
    assert sizes_of(ten) == [(1024, 512)] * 6
    # The last reference's ratio at about 2048*2048: sqrt(4194304 * 2) / 16 = 181.02 and
    # sqrt(4194304 / 2) / 16 = 90.5 round to 181 and 90 (Python's round), within the area.
    default = generate(emu, edit_body([data_uri(png((800, 400)))], model=model)).json()["usage"]
    assert (default["output_width"], default["output_height"]) == (2896, 1440)
    # 416x400 would round to 2096*2016, over the largest area: rounded down instead.
    capped = generate(emu, edit_body([data_uri(png((416, 400)))], model=model)).json()["usage"]
    assert (capped["output_width"], capped["output_height"]) == (2080, 2000)
    assert set(generate(emu, t2i_body(model=model, size="512*512")).json()["usage"]) == QIMA_USAGE
    assert_error(generate(emu, edit_body([SMALL] * 11, model=model)), 400, "InvalidParameter",
                 "0 to 10")
    assert_error(generate(emu, t2i_body(model=model, negative_prompt="blurry")), 400,
                 "InvalidParameter", "negative_prompt")
    assert generate(emu, t2i_body(model=model, size="512*512", negative_prompt=" ")) \
        .status_code == 200  # blank is as good as absent
    for size in ("511*512", "2049*2048", "4096*256"):
        assert_error(generate(emu, t2i_body(model=model, size=size)), 400, "InvalidParameter")
    assert create_generation_task(emu, t2i_body(model=model, size="512*512")).status_code == 200


def test_2_1_turbo_takes_a_negative_prompt_and_ignores_the_rewriting_switches(emu):
    model = "qwen-image-2.1-turbo"
    answer = generate(emu, t2i_body(model=model, size="512*512", negative_prompt="blurry",
                                    prompt_extend_mode="garbage", enable_thinking="garbage"))
    assert answer.status_code == 200, answer.text
    assert sizes_of(answer) == [(512, 512)]
    references = generate(emu, edit_body([SMALL] * 10, model=model, n=2, size="1024*512"))
    assert references.status_code == 200 and sizes_of(references) == [(1024, 512)] * 2
    assert_error(generate(emu, t2i_body(model=model, size="4096*256")), 400, "InvalidParameter")


def rgba_alpha_rule(size):
    """The documented alpha of an RGBA result, written out independently of the emulator."""
    width, height = size
    ramp = Image.linear_gradient("L").rotate(90)
    alpha = ramp.resize(size, Image.Resampling.BICUBIC).point(lambda v: v // 2)
    from PIL import ImageDraw

    ImageDraw.Draw(alpha).ellipse((width // 8, height // 8, 7 * width // 8, 7 * height // 8),
                                  fill=255)
    return alpha


@pytest.mark.parametrize("asynchronous", [False, True])
def test_rgba_results_keep_the_colours_and_add_the_documented_alpha(asynchronous):
    with Emulator(latency=0.02, rate_limits=False, rgba=True) as emu:
        body = t2i_body(model="qwen-image-2.1-pro", size="640*480", seed=3)
        if asynchronous:
            task_id = create_generation_task(emu, body).json()["output"]["task_id"]
            content = wait_until(emu, task_id)["output"]["choices"][0]["message"]["content"]
            picture = download(content[0]["image"])[0]
        else:
            picture = download(image_urls(generate(emu, body))[0])[0]
        assert picture.mode == "RGBA" and picture.size == (640, 480)
        alpha = picture.getchannel("A")
        assert alpha.tobytes() == rgba_alpha_rule((640, 480)).tobytes()
        assert alpha.getpixel((320, 240)) == 255 and alpha.getpixel((0, 0)) == 0
        assert 0 < alpha.getpixel((639, 0)) <= 127
        emu.set_rgba(False)
        plain = download(image_urls(generate(emu, body))[0])[0]
    assert plain.mode == "RGB" and plain.tobytes() == picture.convert("RGB").tobytes()
    # An edit result, too.
    with Emulator(latency=0.02, rate_limits=False, rgba=True) as emu:
        edited = download(image_urls(generate(emu, edit_body([SMALL], size="512*512")))[0])[0]
        assert edited.mode == "RGBA"
        assert edited.getchannel("A").tobytes() == rgba_alpha_rule((512, 512)).tobytes()


def test_unified_models_on_the_synchronous_path_take_the_same_body_as_their_async_one(emu):
    body = t2i_body(model="qwen-image-3.0", size="512*512", seed=9)
    sync_bytes = download(image_urls(generate(emu, body))[0])[1]
    task_id = create_generation_task(emu, body).json()["output"]["task_id"]
    content = wait_until(emu, task_id)["output"]["choices"][0]["message"]["content"]
    assert download(content[0]["image"])[1] == sync_bytes
    assert emu.requests[0].path.endswith(GENERATION)
    assert emu.requests[2].path.endswith(IMAGE_GENERATION)
