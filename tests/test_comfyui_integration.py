"""The pack inside a real ComfyUI, against the DashScope emulator.

One ComfyUI process per module (about 14 s to start on two cores), with its own base
directory under tmp and ``custom_nodes/ComfyUI-Qwen-Image`` linked to this repository; the
emulator runs in this process and is the only DashScope ComfyUI can reach. Skipped when
COMFYUI_DIR / COMFYUI_PYTHON are not set (CI has no ComfyUI).

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python \\
        python -m pytest tests/test_comfyui_integration.py -q

With QWEN_IMAGE_WRITE_THUMBNAILS=1 the run also writes example_workflows/<name>.jpg (the
Templates browser's thumbnails) from the images each example workflow produced.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from support import comfyui as harness

REPO_ROOT = harness.REPO_ROOT
WORKFLOW_DIR = REPO_ROOT / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
PACK = harness.PACK_FOLDER
THUMBNAIL_ENV = "QWEN_IMAGE_WRITE_THUMBNAILS"
THUMBNAIL_SIDE = 512
T2I, EDIT = "DashScopeQwenImageTextToImage", "DashScopeQwenImageEdit"

_location = harness.comfyui_location()
pytestmark = pytest.mark.skipif(isinstance(_location, str), reason=str(_location))


# -- the session: emulator + ComfyUI ---------------------------------------------------------


class Session:
    def __init__(self, emu, server, key):
        self.emu, self.server, self.key = emu, server, key
        self.base = server.base
        self.output = server.base / "output"
        self.input = server.base / "input"
        self.object_info = server.get("/object_info")
        self.prompts_sent: list[dict] = []  # every API prompt queued, for the key check
        self.first_output: dict[str, Path] = {}  # example workflow name -> its first image

    def queue(self, prompt, workflow=None):
        self.prompts_sent.append(prompt)
        return self.server.queue(prompt, workflow)

    def run(self, prompt, workflow=None, timeout=120.0):
        return self.server.wait(self.queue(prompt, workflow), timeout)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator

    directory, python = _location
    base = harness.make_base_dir(tmp_path_factory.mktemp("comfyui-base"))
    with Emulator(latency=0.2) as emu:
        env = harness.comfyui_env(base, emu.base_url("ap-southeast-1"), SINGAPORE_KEY)
        server = harness.ComfyUI(directory, python, base, env)
        server.start()
        try:
            yield Session(emu, server, SINGAPORE_KEY)
        finally:
            server.stop()
            # pytest prunes old tmp dirs later; leave nothing there that leads into the repo.
            (base / "custom_nodes" / PACK).unlink()


# -- helpers -----------------------------------------------------------------------------------


pixels = harness.pixels


def pack_nodes() -> tuple[dict, dict]:
    import qwen_image_dashscope as pack

    return pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS


def load_workflow(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


input_picture = harness.input_picture


def place_inputs(session: Session, prompt: dict) -> dict[str, bytes]:
    """Write the PNGs the prompt's LoadImage nodes read; their bytes by file name."""
    return harness.write_inputs(session.input, harness.load_image_files(prompt))


def widget_defaults(info: dict) -> dict:
    """The API inputs of a fresh node: every widget at its default."""
    values = {}
    for name, _ in harness.widget_inputs(info):
        section = "required" if name in info["input"].get("required", {}) else "optional"
        kind, *rest = info["input"][section][name]
        options = rest[0] if rest and isinstance(rest[0], dict) else {}
        values[name] = options.get("default", kind[0] if isinstance(kind, list) else None)
    return values


def qwen_node(session, class_type, **overrides) -> dict:
    inputs = widget_defaults(session.object_info[class_type])
    inputs.update(overrides)
    return {"class_type": class_type, "inputs": inputs}


def new_generation_requests(emu, since: int) -> list:
    return [r for r in emu.requests[since:] if r.method == "POST"
            and ("multimodal-generation" in r.path or "image-synthesis" in r.path)]


def thumbnail_jpeg(source: Path) -> bytes:
    """The Templates browser's thumbnail of an output: at most 512 px a side, JPEG."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85, optimize=True)
        return buffer.getvalue()


def mean_difference(a: bytes, b: bytes) -> float:
    (size_a, pixels_a), (size_b, pixels_b) = pixels(a), pixels(b)
    if size_a != size_b:
        return 255.0
    return sum(abs(x - y) for x, y in zip(pixels_a, pixels_b, strict=False)) / len(pixels_a)


# -- 1. loading --------------------------------------------------------------------------------


def test_pack_imports_cleanly(comfy):
    log = comfy.server.log_text()
    ours = [line for line in log.splitlines() if PACK in line]
    assert not [line for line in ours if "IMPORT FAILED" in line or "Cannot import" in line], \
        "\n".join(ours)
    # The start-up summary lists the pack as imported: "   0.1 seconds: .../ComfyUI-Qwen-Image"
    assert any(re.search(rf"seconds: .*custom_nodes/{re.escape(PACK)}$", line) for line in ours), \
        log[-3000:]
    assert "Traceback" not in "\n".join(ours)


# -- 2. /object_info -----------------------------------------------------------------------------


def test_object_info_lists_every_node(comfy):
    mappings, display_names = pack_nodes()
    assert {T2I, EDIT} <= set(mappings)
    for node_id, cls in mappings.items():
        assert node_id.startswith("DashScopeQwenImage")
        info = comfy.object_info.get(node_id)
        assert info is not None, f"{node_id} missing from /object_info"
        # Registered from this pack, not a built-in of the same id (a clash is dropped silently).
        assert info["python_module"] == f"custom_nodes.{PACK}"
        assert info["category"] == cls.CATEGORY
        assert info["display_name"] == display_names[node_id]
        assert info["description"] == cls.DESCRIPTION
        expected_inputs = json.loads(json.dumps(cls.INPUT_TYPES()))
        assert info["input"] == expected_inputs
        assert info["input_order"] == {section: list(values)
                                       for section, values in expected_inputs.items()}
        assert info["output"] == list(cls.RETURN_TYPES)
        assert info["output_name"] == list(cls.RETURN_NAMES)
        assert info["output_node"] is False
        assert info["input_order"]["hidden"] == ["unique_id"]
    # What the example workflows wire up.
    t2i, edit = comfy.object_info[T2I], comfy.object_info[EDIT]
    assert t2i["output"] == edit["output"] == ["IMAGE", "STRING", "STRING", "MASK"]
    assert edit["input"]["optional"]["mask"][0] == "MASK"
    assert "match input" in edit["input"]["required"]["size"][0]
    assert edit["input"]["required"]["image"][0] == "IMAGE"
    assert ([edit["input"]["optional"][name][0] for name in ("image2", "image3")]
            == ["IMAGE", "IMAGE"])
    assert t2i["input"]["required"]["seed"][1]["control_after_generate"] is True


# -- 3. templates --------------------------------------------------------------------------------


def test_workflow_templates_list_and_serve_every_example(comfy):
    assert WORKFLOWS, "example_workflows/ has no .json"
    listed = comfy.server.get("/api/workflow_templates")
    assert sorted(listed.get(PACK, [])) == sorted(path.stem for path in WORKFLOWS), listed
    for path in WORKFLOWS:
        _, body = comfy.server.get_bytes(f"/api/workflow_templates/{PACK}/{path.name}")
        assert body == path.read_bytes(), path.name
        assert json.loads(body)["nodes"]


def test_web_directory_and_translations_are_served(comfy):
    """WEB_DIRECTORY files (per-node help pages) and locales/ reach the frontend."""
    web_files = [p for p in (REPO_ROOT / "web").rglob("*") if p.is_file()]
    for path in web_files:
        relative = path.relative_to(REPO_ROOT / "web").as_posix()
        _, body = comfy.server.get_bytes(f"/extensions/{PACK}/{relative}")
        assert body == path.read_bytes(), relative
    translations = comfy.server.get("/i18n")
    checked = 0
    for node_defs in sorted((REPO_ROOT / "locales").glob("*/nodeDefs.json")):
        ours = json.loads(node_defs.read_text(encoding="utf-8"))
        if not ours:
            continue
        served = translations[node_defs.parent.name]["nodeDefs"]
        for node_id, texts in ours.items():
            assert served[node_id] == texts, (node_defs, node_id)
            checked += 1
    if not web_files and not checked:
        pytest.skip("the pack has no web/ files and no locales/*/nodeDefs.json yet")


# -- 4. every example workflow ------------------------------------------------------------------


def _check_exact(session: Session, entry: dict, served_before: int, requests_before: int,
                 inputs: dict[str, bytes]) -> list[Path]:
    """SaveImage wrote exactly the pixels the emulator served; the emulator got exactly ours."""
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = harness.saved_images(entry, session.output)
    assert saved, entry["outputs"]
    served = [pixels(png) for png in list(session.emu.served_images.values())[served_before:]]
    assert len(served) >= len(saved), (len(served), saved)
    # Each saved image is one the emulator served, pixel for pixel, each a different one.
    matches = []
    for path in saved:
        assert path.is_file(), path
        found = pixels(path)
        assert found in served, f"{path.name} is not pixel-equal to any PNG the emulator served"
        matches.append(served.index(found))
    assert len(set(matches)) == len(saved), matches
    start = 0
    for node_output in entry["outputs"].values():  # each node's batch keeps the service's order
        count = sum(1 for image in node_output.get("images", []) if image.get("type") == "output")
        assert matches[start:start + count] == sorted(matches[start:start + count]), matches
        start += count
    # The last image made is saved (in a chain of edits: the final one, not an earlier round).
    assert max(matches) == len(served) - 1, matches
    # Every picture sent for an edit is a LoadImage file or an earlier result, pixel for pixel.
    known = [pixels(data) for data in inputs.values()] + served
    for recorded in new_generation_requests(session.emu, requests_before):
        if ("multimodal-generation" in recorded.path
                and recorded.json["model"].startswith("qwen-image-edit")):
            for sent in session.emu.input_images(recorded):
                assert pixels(sent) in known, "an edit input was not sent pixel-exact"
    return saved


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.stem for path in WORKFLOWS])
def test_example_workflow_runs(comfy, path):
    workflow = load_workflow(path)
    prompt = harness.ui_to_api(workflow, comfy.object_info)  # raises if widgets_values are off
    qwen_ids = [i for i, node in prompt.items() if node["class_type"] in (T2I, EDIT)]
    assert qwen_ids, f"{path.name} has no Qwen-Image node"
    inputs = place_inputs(comfy, prompt)
    served_before, requests_before = len(comfy.emu.served_images), len(comfy.emu.requests)

    missing = harness.missing_local_models(comfy.object_info, prompt)
    masked = [i for i in qwen_ids if "mask" in prompt[i]["inputs"]]
    if masked:
        entry = comfy.run(prompt, workflow)
        saved = _check_stitched(comfy, entry, prompt, masked[0], requests_before, inputs)
    elif not missing:
        entry = comfy.run(prompt, workflow)
        saved = _check_exact(comfy, entry, served_before, requests_before, inputs)
    else:
        # A local model this machine cannot have (ComfyUI cannot download one here, and a
        # *working* stand-in is not feasible: see _refine_without_checkpoint).
        saved = _refine_without_checkpoint(comfy, path.stem, workflow, prompt, missing, qwen_ids,
                                           served_before, requests_before, inputs)
    for file in saved:
        with Image.open(file) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            assert set(image.text) == {"prompt", "workflow"}
            assert json.loads(image.text["prompt"]).keys() >= set(qwen_ids)
    comfy.first_output[path.stem] = saved[0]
    if os.environ.get(THUMBNAIL_ENV) == "1":
        path.with_suffix(".jpg").write_bytes(thumbnail_jpeg(saved[0]))


def _check_stitched(session: Session, entry: dict, prompt: dict, edit_id: str,
                    requests_before: int, inputs: dict[str, bytes]) -> list[Path]:
    """An edit whose mask is the LoadImage picture's transparency: the saved image has the
    picture's size, its pixels outside the mask and the soft edge are the picture's own,
    the inside is edited, and the emulator got the region around the mask, not the picture."""
    import numpy as np
    from PIL import ImageFilter

    assert entry["status"]["status_str"] == "success", entry["status"]
    [saved] = harness.saved_images(entry, session.output)
    source = prompt[prompt[edit_id]["inputs"]["image"][0]]["inputs"]["image"]
    with Image.open(io.BytesIO(inputs[source])) as picture:
        assert picture.mode == "RGBA"
        colours, alpha = picture.convert("RGB"), picture.getchannel("A")
    with Image.open(saved) as result:
        assert result.size == colours.size
        out = np.asarray(result.convert("RGB")).astype(int)
    original = np.asarray(colours).astype(int)
    edge = prompt[edit_id]["inputs"].get("mask_soft_edge", 16)
    region = alpha.point(lambda a: 255 if a < 255 else 0)  # the mask: 1 - alpha > 0
    near = np.asarray(region.filter(ImageFilter.MaxFilter(2 * edge + 1))) > 0
    assert (out[~near] == original[~near]).all(), "a pixel outside the mask changed"
    inside = np.asarray(alpha) == 0
    assert np.abs(out[inside] - original[inside]).mean() > 40, "the masked region is unchanged"
    [call] = [r for r in new_generation_requests(session.emu, requests_before)
              if r.json["model"] == prompt[edit_id]["inputs"]["model"]]
    [sent] = session.emu.input_images(call)
    with Image.open(io.BytesIO(sent)) as region_sent:
        sent_size = region_sent.size
    assert sent_size != colours.size  # the region around the mask, scaled up
    assert sent_size[0] * sent_size[1] >= 1024 * 1024 * 0.98
    return [saved]


def _refine_without_checkpoint(session, name, workflow, prompt, missing, qwen_ids,
                               served_before, requests_before, inputs) -> list[Path]:
    """The local part needs a checkpoint; check everything up to it.

    A tiny *valid* checkpoint is not feasible in seconds: ComfyUI's model detection pins the
    UNet widths (SD1.x/SDXL: model_channels 320; SD3: 16 latent channels), the VAEs have fixed
    architectures (the smallest, TAESD, has 64 channels at full resolution: one of its 3x3
    convolutions takes 3.3 s at 1328x1328 on these two cores, about 40 s per encode), and
    every Qwen-Image text-to-image size is about 1.7 MP. So:
    1. the whole graph is refused at queue time *only* for the missing model file: every
       other node, the Qwen ones included, passes validation;
    2. the graph without the local part (the Qwen nodes and what they depend on, each
       followed by a SaveImage) runs, and gives the served pixels exactly.
    """
    with pytest.raises(harness.HttpError) as refused:
        session.queue(prompt, workflow)
    assert refused.value.status == 400
    body = refused.value.json()
    assert set(body["node_errors"]) == set(missing), body["node_errors"]
    for node_id, file in missing.items():
        errors = body["node_errors"][node_id]["errors"]
        assert {e["type"] for e in errors} == {"value_not_in_list"}, errors
        assert all(file in e["details"] for e in errors), errors
    assert not new_generation_requests(session.emu, requests_before)

    cloud = {}
    for qwen_id in qwen_ids:
        part = harness.upstream(prompt, qwen_id)
        assert not part & set(missing)
        cloud.update({node_id: prompt[node_id] for node_id in part})
    for number, qwen_id in enumerate(qwen_ids):
        cloud[f"save{number}"] = {"class_type": "SaveImage", "inputs": {
            "images": [qwen_id, 0], "filename_prefix": f"qwen-image/{name}-cloud"}}
    entry = session.run(cloud, workflow)
    return _check_exact(session, entry, served_before, requests_before, inputs)


def test_thumbnails_beside_workflows_are_served(comfy):
    for path in WORKFLOWS:
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file(), f"{thumbnail.name} missing: run with {THUMBNAIL_ENV}=1"
        headers, body = comfy.server.get_bytes(f"/api/workflow_templates/{PACK}/{thumbnail.name}")
        assert body == thumbnail.read_bytes()
        assert headers.get("Content-Type", "").startswith("image/jpeg")
        with Image.open(thumbnail) as image:
            assert image.format == "JPEG" and max(image.size) <= THUMBNAIL_SIDE
        # Still the picture this workflow makes (when it ran in this session).
        if path.stem in comfy.first_output:
            fresh = thumbnail_jpeg(comfy.first_output[path.stem])
            assert mean_difference(fresh, thumbnail.read_bytes()) < 2.0, \
                f"{thumbnail.name} is stale: run with {THUMBNAIL_ENV}=1"


# -- 4b. masks, match input and transparency ----------------------------------------------------


def test_a_loadimage_alpha_region_is_the_only_part_edited_at_the_pictures_size(comfy):
    """LoadImage of a picture whose transparency marks a region -> the edit node with that
    MASK and size = match input (a model that takes no size) -> SaveImage."""
    name = "qwen_masked_balloon_input.png"
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": qwen_node(comfy, EDIT, image=["1", 0], mask=["1", 1], model="qwen-image-edit",
                       prompt=f"A red balloon here {uuid.uuid4()}", size="match input",
                       reuse_stored=False),
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                    "filename_prefix": "masked-edit"}},
    }
    inputs = place_inputs(comfy, prompt)
    requests_before = len(comfy.emu.requests)
    entry = comfy.run(prompt)
    _check_stitched(comfy, entry, prompt, "2", requests_before, inputs)


def test_a_picture_without_alpha_gives_an_empty_mask_and_the_run_sends_nothing(comfy):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "qwen_edit_input.png"}},
        "2": qwen_node(comfy, EDIT, image=["1", 0], mask=["1", 1], prompt="A red balloon here",
                       reuse_stored=False),
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                    "filename_prefix": "empty-mask"}},
    }
    place_inputs(comfy, prompt)
    before = len(comfy.emu.requests)
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "error"
    error = harness.messages(entry)["execution_error"]
    assert error["node_type"] == EDIT
    assert error["exception_message"].startswith("mask: is empty")
    assert len(comfy.emu.requests) == before


def test_the_text_to_image_mask_output_through_mask_to_image_is_1_minus_alpha(comfy):
    import numpy as np

    emu = comfy.emu
    prompt = {
        "1": qwen_node(comfy, T2I, prompt=f"A teapot cut out {uuid.uuid4()}",
                       model="qwen-image-2.1-pro", size="custom", width=640, height=480,
                       reuse_stored=False),
        "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 3]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                    "filename_prefix": "alpha-mask"}},
    }
    served_before = len(emu.served_images)
    emu.set_rgba(True)
    try:
        entry = comfy.run(prompt)
    finally:
        emu.set_rgba(False)
    assert entry["status"]["status_str"] == "success", entry["status"]
    [saved] = harness.saved_images(entry, comfy.output)
    [served] = list(emu.served_images.values())[served_before:]
    with Image.open(io.BytesIO(served)) as picture:
        assert picture.mode == "RGBA" and picture.size == (640, 480)
        alpha = np.asarray(picture.getchannel("A"))
    # 1 - alpha as LoadImage computes it, then MaskToImage and SaveImage's 255 * x.
    mask = 1.0 - alpha.astype(np.float32) / 255.0
    expected = np.clip(255. * mask, 0, 255).astype(np.uint8)
    with Image.open(saved) as image:
        got = np.asarray(image.convert("RGB"))
    assert (got == expected[..., None]).all()
    assert expected.min() == 0 and expected.max() == 255  # opaque and transparent both seen


# -- 5. queue-time validation -------------------------------------------------------------------


def test_invalid_edit_is_refused_at_queue_time(comfy):
    place_inputs(comfy, {"1": {"class_type": "LoadImage",
                               "inputs": {"image": "qwen_edit_input.png"}}})
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "qwen_edit_input.png"}},
        "2": qwen_node(comfy, EDIT, image=["1", 0], prompt="Make it snow.", n=2, size="custom",
                       width=1024, height=768),
        "3": {"class_type": "SaveImage",
              "inputs": {"images": ["2", 0], "filename_prefix": "refused"}},
    }
    before = len(comfy.emu.requests)
    with pytest.raises(harness.HttpError) as refused:
        comfy.queue(prompt)
    assert refused.value.status == 400
    body = refused.value.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"2"}
    node = body["node_errors"]["2"]
    assert node["class_type"] == EDIT and node["dependent_outputs"] == ["3"]
    assert {e["type"] for e in node["errors"]} == {"custom_validation_failed"}
    named = {e["extra_info"]["input_name"] for e in node["errors"]}
    assert {"n", "size"} <= named
    assert all("size: can be set only when n is 1" in e["details"] for e in node["errors"]), node
    assert len(comfy.emu.requests) == before  # nothing was sent


def test_overlong_prompt_is_refused_at_queue_time(comfy):
    prompt = {
        "1": qwen_node(comfy, T2I, prompt="x" * 801),
        "2": {"class_type": "SaveImage",
              "inputs": {"images": ["1", 0], "filename_prefix": "refused"}},
    }
    with pytest.raises(harness.HttpError) as refused:
        comfy.queue(prompt)
    assert refused.value.status == 400
    errors = refused.value.json()["node_errors"]["1"]["errors"]
    assert "prompt" in {e["extra_info"]["input_name"] for e in errors}
    assert all(e["details"].split(" - ", 1)[1].startswith("prompt:") for e in errors), errors


# -- 6. Cancel ---------------------------------------------------------------------------------


def _occupy_task_slots(emu, key: str, model: str, count: int) -> list[str]:
    """Start tasks as another client of the same account would (e.g. a second machine).

    The pack never has more tasks in flight than the account runs at once (its limiter
    holds them back), so only someone else's running tasks make its own wait PENDING.
    """
    import urllib.error
    import urllib.request

    ids = []
    for number in range(count):
        body = json.dumps({"model": model, "input": {"prompt": f"someone else's task {number}"},
                           "parameters": {"n": 1}}).encode()
        request = urllib.request.Request(
            f"{emu.base_url('ap-southeast-1')}/services/aigc/text2image/image-synthesis",
            data=body, method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     "X-DashScope-Async": "enable"})
        for _ in range(10):
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    ids.append(json.loads(answer.read())["output"]["task_id"])
                    break
            except urllib.error.HTTPError as error:  # 429: two creations per second
                if error.code != 429:
                    raise
                time.sleep(float(error.headers.get("Retry-After") or 1))
    return ids


def test_interrupt_cancels_the_queued_tasks_and_reports_interrupted(comfy):
    emu, latency = comfy.emu, 5.0
    text = f"interrupt test {uuid.uuid4()}"
    prompt = {
        "1": qwen_node(comfy, T2I, prompt=text, batch=2, interface="async", reuse_stored=False,
                       prompt_extend=False, seed=1234),
        "2": {"class_type": "SaveImage",
              "inputs": {"images": ["1", 0], "filename_prefix": "interrupted"}},
    }
    model = prompt["1"]["inputs"]["model"]
    emu.set_latency(latency)
    try:
        # The account's two task slots for this model are busy: the node's tasks queue.
        blockers = _occupy_task_slots(emu, comfy.key, model, 2)
        prompt_id = comfy.queue(prompt)

        def ours():
            return [t for t in emu.tasks if t["request"]["input"].get("prompt") == text]

        deadline = time.monotonic() + 10
        while not (len(ours()) == 2 and all(t["status"] == "PENDING" for t in ours())):
            assert time.monotonic() < deadline, ours()
            time.sleep(0.05)
        interrupted_at = time.monotonic()
        comfy.server.post("/interrupt", {"prompt_id": prompt_id})
        entry = comfy.server.wait(prompt_id, timeout=30)
        reported_after = time.monotonic() - interrupted_at

        status = entry["status"]
        assert status["status_str"] == "error" and not status["completed"]
        events = harness.messages(entry)
        assert "execution_interrupted" in events and "execution_error" not in events, events
        assert events["execution_interrupted"]["node_type"] == T2I
        assert events["execution_interrupted"]["node_id"] == "1"
        assert not entry["outputs"]
        # The node let go at once; it did not wait for the service.
        assert reported_after < 2.0, reported_after
        deadline = time.monotonic() + 5
        while any(t["status"] != "CANCELED" for t in ours()):
            assert time.monotonic() < deadline, [t["status"] for t in ours()]
            time.sleep(0.05)
        for task in ours():
            cancels = [r for r in emu.requests if r.path.endswith(f"/tasks/{task['id']}/cancel")]
            assert [r.status for r in cancels] == [200]
        # Cancelled while queued: nothing of ours ran, and the other client's tasks go on.
        assert all(t["scheduled_time"] is None for t in ours())
        assert {t["status"] for t in emu.tasks if t["id"] in blockers} == {"RUNNING"}
    finally:
        emu.set_latency(0.2)
        # Let the other client's tasks end, so later tests find the account's slots free.
        deadline = time.monotonic() + latency + 5
        while (any(t["status"] in ("PENDING", "RUNNING") for t in emu.tasks)
               and time.monotonic() < deadline):
            time.sleep(0.1)


# -- 6b. a lost answer ------------------------------------------------------------------------


def test_a_lost_creation_answer_still_returns_the_image_billed_once(comfy):
    """The emulator creates the task and drops the answer: the node finds the task in the
    task list (journal, api/recovery.py) and returns its image; nothing is sent twice."""
    emu, text = comfy.emu, f"a lighthouse, lost answer {uuid.uuid4()}"

    def prompt(words):
        return {"1": qwen_node(comfy, T2I, prompt=words, interface="async", reuse_stored=False),
                "2": {"class_type": "SaveImage",
                      "inputs": {"images": ["1", 0], "filename_prefix": "lost-answer"}}}

    # A task of the key that the journal knows (earlier tests made some; this one runs
    # alone too): the key's id in the task list is learned from it.
    assert comfy.run(prompt(f"{text}, warm up"))["status"]["status_str"] == "success"
    created, billed = emu.stats["tasks_created"], emu.stats["images_billed"]
    served_before = len(emu.served_images)
    emu.inject("drop_after", path="/image-synthesis")

    entry = comfy.run(prompt(text))

    assert entry["status"]["status_str"] == "success", entry["status"]
    [saved] = harness.saved_images(entry, comfy.output)
    assert pixels(saved) in [pixels(png) for png in
                             list(emu.served_images.values())[served_before:]]
    ours = [t for t in emu.tasks if t["request"]["input"].get("prompt") == text]
    assert len(ours) == 1 and ours[0]["status"] == "SUCCEEDED"
    creations = [r for r in emu.requests if r.method == "POST" and "image-synthesis" in r.path
                 and r.json["input"].get("prompt") == text]
    assert [r.status for r in creations] == [None]  # one POST, its answer dropped
    assert (emu.stats["tasks_created"] - created, emu.stats["images_billed"] - billed) == (1, 1)


def test_a_fresh_comfyuis_first_lost_creation_answer_returns_the_image_billed_once(
        comfy, tmp_path_factory):
    """A ComfyUI never run before (an empty journal: the key's id in the task list is not
    known) whose very first create answer is lost: the task showing the prompt sent is
    adopted (api/recovery.py) and its image returned, nothing sent twice."""
    from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator

    directory, python = _location
    base = harness.make_base_dir(tmp_path_factory.mktemp("comfyui-fresh"))
    text = f"a lighthouse, first call {uuid.uuid4()}"
    prompt = {"1": qwen_node(comfy, T2I, prompt=text, interface="async", reuse_stored=False),
              "2": {"class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "first-lost"}}}
    with Emulator(latency=0.2) as emu:
        emu.inject("drop_after", path="/image-synthesis")
        server = harness.ComfyUI(directory, python, base, harness.comfyui_env(
            base, emu.base_url("ap-southeast-1"), SINGAPORE_KEY))
        server.start()
        try:
            entry = server.wait(server.queue(prompt), 120.0)
        finally:
            server.stop()
            (base / "custom_nodes" / PACK).unlink()

        assert entry["status"]["status_str"] == "success", entry["status"]
        [saved] = harness.saved_images(entry, base / "output")
        assert pixels(saved) in [pixels(png) for png in emu.served_images.values()]
        [task] = emu.tasks
        assert task["request"]["input"]["prompt"] == text and task["status"] == "SUCCEEDED"
        creations = [r for r in emu.requests if r.method == "POST" and "image-synthesis" in r.path]
        assert [r.status for r in creations] == [None]  # one POST, its answer dropped
        assert (emu.stats["tasks_created"], emu.stats["images_billed"]) == (1, 1)


# -- 7. the key stays secret --------------------------------------------------------------------


def test_key_never_appears_in_outputs_workflows_history_or_log(comfy):
    key = comfy.key
    assert len(key) > 8
    # One run of its own, so the check has something to look at when run alone.
    prompt = {"1": qwen_node(comfy, T2I, prompt="A lighthouse at night, key check"),
              "2": {"class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "keycheck"}}}
    entry = comfy.run(prompt, load_workflow(WORKFLOWS[0]) if WORKFLOWS else None)
    assert entry["status"]["status_str"] == "success", entry["status"]
    pngs = sorted(comfy.output.rglob("*.png"))
    assert any("qwen-image" in p.parts for p in pngs)  # the pack's store
    for png in pngs:
        assert key.encode() not in png.read_bytes(), png
        with Image.open(png) as image:
            for name, value in getattr(image, "text", {}).items():
                assert key not in value, (png, name)
    for other in comfy.output.rglob("*"):
        if other.is_file() and other.suffix != ".png":
            assert key.encode() not in other.read_bytes(), other
    for path in WORKFLOWS:
        assert key not in path.read_text(encoding="utf-8"), path
    for prompt in comfy.prompts_sent:
        assert key not in json.dumps(prompt, ensure_ascii=False)
    assert key not in json.dumps(comfy.server.get("/history"), ensure_ascii=False)
    assert key not in comfy.server.log_text()
    # ...and the pack did run with it: the emulator saw it (redacted in its records).
    assert any(r.headers.get("Authorization", "").endswith(key[-4:]) for r in comfy.emu.requests)


def _tracebacks(log: str) -> list[tuple[list[str], str]]:
    """(the frame lines, the exception line) of each traceback in a log."""
    found, frames = [], None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            frames = []
        elif frames is not None:
            if line.startswith(" "):
                frames.append(line)
            else:
                found.append((frames, line))
                frames = None
    return found


def test_log_has_no_traceback_from_the_pack(comfy):
    """Nothing of the above left a traceback through the pack's files in ComfyUI's log, but
    the pack's own refusals (ValidationError, e.g. the empty mask above): ComfyUI logs every
    exception a node raises with its traceback, and a refusal is the run's message by design."""
    log = comfy.server.log_text()
    ours = [line for frames, error in _tracebacks(log)
            if ".api.errors.ValidationError: " not in error for line in frames
            if re.search(rf'File ".*custom_nodes/{re.escape(PACK)}/', line)]
    assert not ours, "\n".join(ours)
    # Every node exception ComfyUI logged was parsed as a traceback (none slipped through).
    assert len(_tracebacks(log)) >= log.count("!!! Exception during processing !!!")
