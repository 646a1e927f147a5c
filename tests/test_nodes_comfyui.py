"""The nodes in a real ComfyUI and its real frontend: unified models, inputs that fit the model.

A real ComfyUI (COMFYUI_DIR, COMFYUI_PYTHON) with this repository in custom_nodes/ and the
pack's DashScope emulator:

1. runs queued over HTTP, as a script or the frontend sends them: text to image with a
   unified model, n = 2 and a custom size gives a batch of 2 with exactly the pixels
   served; an edit with a unified model gets three input images pixel for pixel;
2. in the frontend (headless Chromium via playwright): each node hides exactly the inputs
   the model chosen does not take (screenshots of each node with a legacy and a unified
   model: QWEN_IMAGE_SCREENSHOT_DIR keeps them), image sockets come and go without losing
   links, and a workflow of the first release saved after a run loads with the new widgets
   at their defaults and is saved again without the status text;
3. a batch of 4 from the frontend: the cost badge before the run, one preview image per
   image over the websocket as each call lands (the first ones well before the last), the
   status text on one line, ending with the summary (screenshots before and after).

Skipped without ComfyUI (and the frontend part without playwright and Chromium).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from qwen_image_dashscope.nodes.image_edit import IMAGE_INPUTS
from support import comfyui as harness

FIXTURES = harness.REPO_ROOT / "tests" / "fixtures" / "workflows"
T2I, EDIT = "DashScopeQwenImageTextToImage", "DashScopeQwenImageEdit"
INPUTS = ("qwen_unified_person.png", "qwen_unified_dress.png", "qwen_unified_pose.png")
SCREENSHOT_ENV = "QWEN_IMAGE_SCREENSHOT_DIR"

_location = harness.comfyui_location()
_chromium = harness.frontend_location()
pytestmark = pytest.mark.skipif(isinstance(_location, str), reason=str(_location))
frontend = pytest.mark.skipif(isinstance(_chromium, str), reason=str(_chromium))


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator

    directory, python = _location
    base = harness.make_base_dir(tmp_path_factory.mktemp("comfyui-nodes"))
    frozen = [json.loads(p.read_text(encoding="utf-8")) for p in FIXTURES.rglob("*.json")
              if p.parent.name != "expected"]
    names = [*INPUTS, *(n for w in frozen for n in harness.workflow_load_image_files(w))]
    files = harness.write_inputs(base / "input", names)  # before start: LoadImage's choices
    with Emulator(latency=0.2) as emu:
        server = harness.ComfyUI(directory, python, base,
                                 harness.comfyui_env(base, emu.base_url("ap-southeast-1"),
                                                     SINGAPORE_KEY))
        server.start()
        try:
            yield {"emu": emu, "server": server, "files": files}
        finally:
            server.stop()
            (base / "custom_nodes" / harness.PACK_FOLDER).unlink()


def served_since(emu, before: int) -> list:
    return [harness.pixels(png) for png in list(emu.served_images.values())[before:]]


def posts_since(emu, before: int) -> list:
    return [r for r in emu.requests[before:] if r.method == "POST" and "/services/aigc/" in r.path]


def node_inputs(server, class_type: str, **chosen) -> dict:
    """Every widget input at its default (as GET /object_info gives them), then ``chosen``."""
    info = server.get("/object_info")[class_type]["input"]
    values = {}
    for section in ("required", "optional"):
        for name, spec in info.get(section, {}).items():
            options = spec[1] if len(spec) > 1 else {}
            if isinstance(spec[0], list):
                values[name] = options.get("default", spec[0][0])
            elif "default" in options:
                values[name] = options["default"]
    return {**values, **chosen}


# -- 1. runs ------------------------------------------------------------------------------------

def test_unified_text_to_image_with_n_2_at_a_custom_size(comfy):
    emu, server = comfy["emu"], comfy["server"]
    served, requests = len(emu.served_images), len(emu.requests)
    prompt = {
        "1": {"class_type": T2I, "inputs": node_inputs(
            server, T2I, prompt="a paper lantern festival", model="qwen-image-3.0", n=2,
            size="custom", width=1024, height=640, seed=11)},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                    "filename_prefix": "unified_t2i"}},
    }
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (post,) = posts_since(emu, requests)
    assert post.json["model"] == "qwen-image-3.0"
    assert post.json["parameters"]["n"] == 2 and post.json["parameters"]["size"] == "1024*640"
    saved = harness.saved_images(entry, server.base / "output")
    assert len(saved) == 2  # one IMAGE batch of 2
    # Exactly the pixels served, in the service's order.
    assert [harness.pixels(path) for path in saved] == served_since(emu, served)
    assert all(harness.pixels(path)[0] == (1024, 640) for path in saved)


def test_unified_edit_with_three_input_images(comfy):
    emu, server, files = comfy["emu"], comfy["server"], comfy["files"]
    served, requests = len(emu.served_images), len(emu.requests)
    prompt = {str(k): {"class_type": "LoadImage", "inputs": {"image": name}}
              for k, name in enumerate(INPUTS, 1)}
    prompt["4"] = {"class_type": EDIT, "inputs": node_inputs(
        server, EDIT, prompt="image 1 wears the dress of image 2 in the pose of image 3",
        model="qwen-image-3.0", seed=3, image=["1", 0], image2=["2", 0], image3=["3", 0])}
    prompt["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0],
                                                         "filename_prefix": "unified_edit"}}
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (post,) = posts_since(emu, requests)
    assert post.json["model"] == "qwen-image-3.0"
    received = [harness.pixels(data) for data in emu.input_images(post)]
    assert received == [harness.pixels(files[name]) for name in INPUTS]  # in order, exact
    (saved,) = harness.saved_images(entry, server.base / "output")
    assert [harness.pixels(saved)] == served_since(emu, served)


# -- 2. the frontend ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(comfy):
    if isinstance(_chromium, str):
        pytest.skip(_chromium)
    with harness.open_browser(_chromium) as browser:
        yield browser


@pytest.fixture
def page(browser, comfy):
    page = harness.open_app(browser, comfy["server"])
    try:
        yield page
    finally:
        page.close()


def screenshot_dir(tmp_path) -> Path:
    return Path(os.environ.get(SCREENSHOT_ENV) or tmp_path)


def hidden(node: dict) -> list[str]:
    return [w["name"] for w in node["widgets"] if w["hidden"]]


def sockets(page, node_id, kind: str = "IMAGE") -> list[str]:
    """The node's socket inputs of type ``kind`` (no widget), in order."""
    return page.evaluate(f"""() => {{
      const node = ({harness._APP}).graph.getNodeById({node_id});
      return node.inputs.filter((slot) => !slot.widget && slot.type === "{kind}")
        .map((slot) => slot.name);
    }}""")


@frontend
@pytest.mark.parametrize("node_type, legacy, unified", [
    (T2I, "qwen-image-plus", "qwen-image-3.0"), (EDIT, "qwen-image-edit", "qwen-image-3.0")])
def test_each_node_shows_only_what_the_model_takes(page, comfy, tmp_path, node_type, legacy,
                                                   unified):
    table = comfy["server"].get("/object_info")[node_type]["input"]["required"]["model"][1]
    table = table["qwen_image"]
    folder = screenshot_dir(tmp_path)
    shots = {}
    for model in (legacy, unified):
        shot = harness.screenshot_node(page, node_type, {"model": model},
                                       folder / f"nodes-{node_type}-{model}.png")
        shots[model] = shot
        expected = [name for name in table["depends"] if name not in table["applies"][model]
                    and name not in IMAGE_INPUTS]
        assert hidden(shot) == expected, model
        # Hidden on the canvas and for the Vue renderer alike; every widget kept in place.
        assert all(w["options_hidden"] == w["hidden"] for w in shot["widgets"])
    assert [w["name"] for w in shots[legacy]["widgets"]] == \
        [w["name"] for w in shots[unified]["widgets"]]
    assert shots[legacy]["size"][1] < shots[unified]["size"][1]  # the node shrank
    if node_type == T2I:
        assert {"n", "width", "height", "prompt_extend_mode"} <= set(hidden(shots[legacy]))
    else:
        assert {"n", "width", "height", "prompt_extend"} <= set(hidden(shots[legacy]))
        # size stays for every edit model: "match input" fits any model's result to image 1.
        assert "size" not in hidden(shots[legacy])


@frontend
def test_image_sockets_come_and_go_and_links_stay(page, comfy):
    fusion = json.loads((FIXTURES / "qwen-image-edit-three-image-fusion.json").read_text())
    assert harness.load_workflow(page, fusion)["toasts"] == []
    edit = next(n["id"] for n in fusion["nodes"] if n["type"] == EDIT)
    three = ["image", "image2", "image3"]
    assert sockets(page, edit) == three  # qwen-image-edit-plus takes 3
    harness.set_widgets(page, edit, {"model": "qwen-image-2.1-pro"})
    assert sockets(page, edit) == list(IMAGE_INPUTS)
    harness.set_widgets(page, edit, {"model": "qwen-image-3.0"})
    assert sockets(page, edit) == three
    assert sockets(page, edit, "MASK") == ["mask"]  # every model: the mask stays
    queued = harness.queue_from_frontend(page)
    assert queued["ok"], queued
    sent = queued["prompt"][str(edit)]["inputs"]
    assert [sent[name] for name in three] == [[str(k), 0] for k in (1, 2, 3)]
    entry, _ = harness.wait_for_run(page, comfy["server"], queued["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]


@frontend
def test_a_first_release_workflow_saved_after_a_run_loads_and_saves_cleanly(page, comfy):
    path = FIXTURES / "saved-after-run" / "qwen-image-text-to-image.json"
    frozen = json.loads(path.read_text(encoding="utf-8"))
    old = next(n for n in frozen["nodes"] if n["type"] == T2I)["widgets_values"]
    assert old[-1] == "done"  # the status text of the run before the save
    assert harness.load_workflow(page, frozen)["toasts"] == []
    (node,) = [n for n in harness.graph_nodes(page) if n["type"] == T2I]
    values = {w["name"]: w["value"] for w in harness.saved_widgets(node)}
    assert values["prompt_extend_mode"] == "direct" and values["n"] == 1  # not "done"
    saved = harness.save_workflow(page)
    again = next(n for n in saved["nodes"] if n["type"] == T2I)
    assert "done" not in again["widgets_values"]
    assert again["widgets_values"][:len(old) - 1] == old[:-1]
    assert again["properties"]["qwen_image_saved_values"] == len(again["widgets_values"])


# -- 3. a batch in the frontend: the cost before, a preview per image, the summary after ------

_RECORD_PREVIEWS = f"""() => {{
  const app = {harness._APP}, rec = window.__qwenTest;
  rec.previews = [];
  app.api.addEventListener('b_preview_with_metadata', (e) => rec.previews.push({{
    node: e.detail.nodeId, prompt: e.detail.promptId, type: e.detail.blob.type,
    bytes: e.detail.blob.size, at: performance.now()}}));
}}"""


@frontend
def test_a_batch_shows_its_cost_then_each_image_as_it_lands_then_a_summary(page, comfy, tmp_path):
    emu, server = comfy["emu"], comfy["server"]
    assert harness.load_workflow(page, harness.EMPTY_WORKFLOW)["toasts"] == []
    page.evaluate(_RECORD_PREVIEWS)
    node = harness.add_node(page, T2I)
    harness.set_widgets(page, node, {"prompt": "four paper kites", "model": "qwen-image-plus",
                                     "batch": 4})
    harness.add_node(page, "SaveImage", (700, 0), {"images": (node, 0)})
    badge = f"() => ({harness._APP}).graph.getNodeById({node}).qwenImageBadge().text"
    assert page.evaluate(badge) == "≈ $0.12 · 4 images · Singapore"  # ComfyUI's default region
    folder = screenshot_dir(tmp_path)
    harness.screenshot_node(page, T2I, None, folder / "nodes-batch-of-4-before.png", node_id=node)
    emu.set_latency(1.5)  # qwen-image-plus runs 2 tasks at once: calls 3 and 4 wait 1.5 s
    try:
        queued = harness.queue_from_frontend(page)
        assert queued["ok"], queued
        entry, events = harness.wait_for_run(page, server, queued["prompt_id"])
    finally:
        emu.set_latency(0.2)
    assert entry["status"]["status_str"] == "success", entry["status"]
    harness.screenshot_node(page, T2I, None, folder / "nodes-batch-of-4-after.png", node_id=node)
    previews = [p for p in page.evaluate("() => window.__qwenTest.previews")
                if p["node"] == str(node) and p["prompt"] == queued["prompt_id"]]
    assert len(previews) == 4  # one per image
    assert all(p["type"] == "image/png" and p["bytes"] > 1000 for p in previews)
    assert previews[-1]["at"] - previews[0]["at"] > 1000  # the first did not wait for the last
    texts = [e["detail"]["text"] for e in events
             if e["type"] == "progress_text" and e["detail"]["nodeId"] == str(node)]
    assert all("\n" not in text for text in texts)  # counts on one line, never one per image
    assert any(text.startswith("2 done · 2 running") for text in texts), texts
    assert re.fullmatch(r"4 images in \d+ s · about \$0\.12 · saved in "
                        r"output/qwen-image/\d{4}-\d\d-\d\d", texts[-1]), texts[-1]
    assert len(harness.saved_images(entry, server.base / "output")) == 4


# -- 4. no markup reaches the page ----------------------------------------------------------------

# A store folder whose name is markup: the summary under the node names it ("saved in ...").
_XSS = ('store <img src=x onerror="window.__qwenXss=1"> [[x|javascript:window.__qwenXss=2]] '
        'www.evil.example')


@frontend
def test_a_status_text_with_markup_arrives_escaped_and_runs_no_script(browser, tmp_path):
    """A ComfyUI of its own (its store folder's name is markup), its real frontend: the
    status text arrives over the websocket escaped, with every link broken, and no script
    runs; a custom_model with markup is refused when the prompt is queued."""
    from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator

    directory, python = _location
    base = harness.make_base_dir(tmp_path / "comfyui-markup")
    with Emulator(latency=0.2) as emu:
        env = harness.comfyui_env(base, emu.base_url("ap-southeast-1"), SINGAPORE_KEY)
        env["QWEN_IMAGE_STORE_DIR"] = str(tmp_path / _XSS)
        server = harness.ComfyUI(directory, python, base, env)
        server.start()
        page = None
        try:
            page = harness.open_app(browser, server)  # the module's browser: one at a time
            assert harness.load_workflow(page, harness.EMPTY_WORKFLOW)["toasts"] == []
            node = harness.add_node(page, T2I)
            harness.set_widgets(page, node, {"prompt": "<b>bold</b> [[a|https://evil.example]]",
                                             "model": "qwen-image-plus"})
            harness.add_node(page, "SaveImage", (700, 0), {"images": (node, 0)})
            queued = harness.queue_from_frontend(page)
            assert queued["ok"], queued
            entry, events = harness.wait_for_run(page, server, queued["prompt_id"])
            assert entry["status"]["status_str"] == "success", entry["status"]
            texts = [e["detail"]["text"] for e in events
                     if e["type"] == "progress_text" and e["detail"]["nodeId"] == str(node)]
            summary = texts[-1]
            assert summary.startswith("1 image in ") and "&lt;img src=x onerror=" in summary
            for raw in ("<", ">", "[[", "javascript:", "www.evil", "://"):
                assert not [t for t in texts if raw in t], (raw, texts)
            assert page.evaluate("() => window.__qwenXss") is None
            assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0

            harness.set_widgets(page, node,
                                {"custom_model": '<img src=x onerror="window.__qwenXss=3">'})
            refused = harness.queue_from_frontend(page)
            assert not refused["ok"] and "custom_model" in json.dumps(refused["node_errors"])
            assert "letters, digits" in json.dumps(refused["node_errors"])
            assert page.evaluate("() => window.__qwenXss") is None
            assert harness.page_errors(page) == []
        finally:
            if page is not None:
                page.close()
            server.stop()
            (base / "custom_nodes" / harness.PACK_FOLDER).unlink()
