"""Last month's workflows in the real ComfyUI frontend: they load with every value in place,
and run.

The workflows frozen in tests/fixtures/workflows/ (copies of example_workflows/ as they were
shipped, and in saved-after-run/ the same ones as the frontend saved them after running them,
status text included) are opened in ComfyUI's own frontend in headless Chromium, as a user
opening a saved workflow does, against a real ComfyUI with this repository in custom_nodes/
and the pack's DashScope emulator. For each one:

1. it loads: no missing-node dialog, no schema toast, no node drawn red, and each node's widget
   named in tests/fixtures/workflows/expected/widget_names.json holds the frozen value at the
   frozen position (the frontend restores widgets_values by position: an input inserted before
   old ones shifts them, and a new one must be appended), and each widget added since holds its
   default (a workflow saved after a run would hand its status text to the first new widget);
2. it runs when queued from the frontend (``app.queuePrompt``): the frontend's own API prompt
   carries the old values to the server, the run succeeds, the frontend hears it end, and every
   saved image is one the emulator served. The workflow with a local SDXL checkpoint (which
   cannot exist here) is refused only for that file, and its cloud part runs (as in
   test_comfyui_integration.py).

Also screenshots of each pack node (``support.comfyui.screenshot_node``). Skipped unless
COMFYUI_DIR / COMFYUI_PYTHON name a ComfyUI and playwright plus a Chromium are available:

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python \\
        python -m pytest tests/test_frontend_workflows.py -q

QWEN_IMAGE_SCREENSHOT_DIR=<dir> keeps the screenshots there (else they go to pytest's tmp);
CHROMIUM_PATH overrides /usr/bin/chromium.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from support import comfyui as harness

REPO_ROOT = harness.REPO_ROOT
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "workflows"
# The example workflows as shipped, and the same workflows as the frontend saves them after a
# run: then each pack node's widgets_values ends with its last status text (e.g. "done"), the
# frontend's status widget having no `serialize = false` of its own (frontend 1.35.9).
SHIPPED = sorted(FIXTURES.glob("*.json"))
SAVED_AFTER_RUN = sorted((FIXTURES / "saved-after-run").glob("*.json"))
FROZEN = SHIPPED + SAVED_AFTER_RUN
FROZEN_IDS = [p.relative_to(FIXTURES).with_suffix("").as_posix() for p in FROZEN]
WIDGET_NAMES = FIXTURES / "expected" / "widget_names.json"
PACK = harness.PACK_FOLDER
T2I, EDIT = "DashScopeQwenImageTextToImage", "DashScopeQwenImageEdit"
PACK_NODES = (T2I, EDIT)
SCREENSHOT_ENV = "QWEN_IMAGE_SCREENSHOT_DIR"
MASKED_TEMPLATE = REPO_ROOT / "example_workflows" / "qwen-image-edit-masked-region.json"
# Widget values the frontend saves but never sends to the server.
FRONTEND_ONLY = {"control_after_generate", "upload"}

_location = harness.comfyui_location()
_chromium = harness.frontend_location()
pytestmark = [
    pytest.mark.skipif(isinstance(_location, str), reason=str(_location)),
    pytest.mark.skipif(isinstance(_chromium, str), reason=str(_chromium)),
]


@dataclass
class Session:
    emu: object
    server: harness.ComfyUI
    object_info: dict
    inputs: dict[str, bytes]
    seen: list = field(default_factory=list)  # (workflow, what the frontend did), for the report

    @property
    def output(self) -> Path:
        return self.server.base / "output"


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator

    directory, python = _location
    base = harness.make_base_dir(tmp_path_factory.mktemp("comfyui-frontend"))
    # Before the page loads: LoadImage's choices come from /object_info at start-up.
    names = [name for path in FROZEN + [MASKED_TEMPLATE]
             for name in harness.workflow_load_image_files(load(path))]
    inputs = harness.write_inputs(base / "input", names)
    with Emulator(latency=0.2) as emu:
        env = harness.comfyui_env(base, emu.base_url("ap-southeast-1"), SINGAPORE_KEY)
        server = harness.ComfyUI(directory, python, base, env)
        server.start()
        try:
            yield Session(emu, server, server.get("/object_info"), inputs)
        finally:
            server.stop()
            (base / "custom_nodes" / PACK).unlink()  # leave nothing in tmp that leads into the repo


@pytest.fixture(scope="module")
def browser(comfy):
    with harness.open_browser(_chromium) as browser:
        yield browser


@pytest.fixture
def page(browser, comfy):
    page = harness.open_app(browser, comfy.server)
    try:
        yield page
    finally:
        page.close()


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def frozen_widgets(path: Path) -> dict[str, dict]:
    """{node id: {"type", "widgets": [names]}} of a frozen workflow."""
    names = json.loads(WIDGET_NAMES.read_text(encoding="utf-8"))
    assert path.stem in names, f"{WIDGET_NAMES.name} has no entry for {path.name}"
    return names[path.stem]


def frozen_values(path: Path) -> dict[str, list[tuple[str, object]]]:
    """{node id: [(widget name, frozen value), ...]} in widgets_values order (without the
    status text a workflow saved after a run has after the last widget's value)."""
    return {node_id: pairs for node_id, (pairs, _) in _frozen(path).items()}


def trailing_values(path: Path) -> dict[str, list]:
    """{node id: values after the last widget's} (the saved status text), where there are any."""
    return {node_id: extra for node_id, (_, extra) in _frozen(path).items() if extra}


def _frozen(path: Path) -> dict[str, tuple[list, list]]:
    names = frozen_widgets(path)
    result = {}
    for node in load(path)["nodes"]:
        expected = names[str(node["id"])]
        assert expected["type"] == node["type"]
        values = node.get("widgets_values") or []
        count = len(expected["widgets"])
        after_run = path.parent.name == "saved-after-run" and node["type"] in PACK_NODES
        assert len(values) == count + (1 if after_run else 0), (path.name, node["id"], values)
        result[str(node["id"])] = (list(zip(expected["widgets"], values, strict=False)),
                                   values[count:])
    return result


def input_default(info: dict, name: str):
    """(True, default) of a widget input of /object_info, (False, None) if it is not one."""
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is None:
            continue
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if "default" in options:
            return True, options["default"]
        if isinstance(spec[0], list) and spec[0]:
            return True, spec[0][0]
        return True, {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])
    return False, None


def widget_problems(path: Path, live_nodes: list[dict], object_info: dict) -> list[str]:
    """Where the live graph's widgets differ from the frozen names, positions and values, and
    widgets added since that do not hold their default (an old workflow has no value for
    them; a value there came from a saved status text)."""
    live = {str(n["id"]): n for n in live_nodes}
    trailing = trailing_values(path)
    problems = []
    for node_id, pairs in frozen_values(path).items():
        node = live.get(node_id)
        if node is None:
            problems.append(f"node {node_id} is not in the live graph")
            continue
        saved = harness.saved_widgets(node)
        names, frozen = [w["name"] for w in saved], [name for name, _ in pairs]
        if names[:len(frozen)] != frozen:
            shift = next(i for i, name in enumerate(frozen) if i >= len(names) or names[i] != name)
            problems.append(
                f"node {node_id} ({node['type']}): old values land in other widgets from position "
                f"{shift} ({frozen[shift]!r} was there, "
                f"now {names[shift] if shift < len(names) else None!r})."
                f"\n  frozen widgets: {frozen}\n  live widgets:   {names}\n  "
                "New inputs must come after every old one (and none may be removed).")
        for position, (name, value) in enumerate(pairs):
            here = saved[position] if position < len(saved) else None
            if here is not None and here["name"] == name and here["value"] != value:
                problems.append(f"node {node_id} ({node['type']}): {name} = {here['value']!r}, "
                                f"the workflow saved {value!r}")
        for widget in saved[len(pairs):]:
            known, default = input_default(object_info[node["type"]], widget["name"])
            if known and widget["value"] != default:
                why = (f" (the status text this workflow saved after the node's last widget: "
                       f"{trailing[node_id]!r})"
                       if widget["value"] in trailing.get(node_id, []) else "")
                problems.append(
                    f"node {node_id} ({node['type']}): new widget {widget['name']} = "
                    f"{widget['value']!r}, not its default {default!r}{why}")
    return problems


def served_pixels(emu) -> list:
    return [harness.pixels(png) for png in emu.served_images.values()]


def generation_requests(emu, since: int) -> list:
    return [r for r in emu.requests[since:] if r.method == "POST"
            and ("multimodal-generation" in r.path or "image-synthesis" in r.path)]


def check_run(session: Session, page, prompt_id: str) -> list[Path]:
    """The run succeeded, the frontend heard so, and every saved image is a served one."""
    entry, events = harness.wait_for_run(page, session.server, prompt_id)
    if entry["status"]["status_str"] != "success":
        error = harness.messages(entry).get("execution_error") or entry["status"]
        pytest.fail(f"the run ended in {entry['status']['status_str']}: "
                    f"node {error.get('node_id')} "
                    f"({error.get('node_type')}): {error.get('exception_type')}: "
                    f"{error.get('exception_message')}")
    types = [e["type"] for e in events]
    assert "execution_success" in types and "execution_error" not in types, types
    saved = harness.saved_images(entry, session.output)
    assert saved, entry["outputs"]
    served = served_pixels(session.emu)
    for path in saved:
        assert harness.pixels(path) in served, f"{path.name} is not an image the emulator served"
    return saved


# -- the pack in the frontend ------------------------------------------------------------------


def test_pack_nodes_are_registered_in_the_frontend(page, comfy):
    registered = page.evaluate(
        "(types) => types.filter((t) => t in LiteGraph.registered_node_types)", list(PACK_NODES))
    if registered != list(PACK_NODES):
        ours = [line for line in comfy.server.log_text().splitlines() if PACK in line]
        pytest.fail(f"the frontend knows {registered} of {list(PACK_NODES)}; "
                    "ComfyUI's log about the pack:\n" + "\n".join(ours[-20:]))
    assert harness.page_errors(page) == []


def test_pack_web_extensions_load_in_the_frontend(page, comfy):
    """Every .js of WEB_DIRECTORY is fetched and runs: a wrong import path (the frontend serves
    web/x.js as /extensions/<pack>/x.js, so web/js/x.js imports "../../../scripts/app.js") is
    only a console error in the browser, and the extension silently does nothing."""
    scripts = sorted(p.relative_to(REPO_ROOT / "web").as_posix()
                     for p in (REPO_ROOT / "web").rglob("*.js"))
    if not scripts:
        pytest.skip("the pack has no web/**/*.js")
    fetched = harness.loaded_scripts(page)
    for script in scripts:
        assert any(url.endswith(f"/extensions/{PACK}/{script}") for url in fetched), script
    ours = [e for e in harness.console_errors(page) if f"/extensions/{PACK}/" in e]
    assert not ours, "\n".join(ours)
    assert harness.page_errors(page) == []


def test_widget_names_cover_every_frozen_workflow():
    assert len(SHIPPED) == 5, [p.name for p in SHIPPED]
    assert {p.name for p in SAVED_AFTER_RUN} <= {p.name for p in SHIPPED}
    for path in FROZEN:
        frozen_values(path)  # one name per saved value, node types as frozen
    for path in SAVED_AFTER_RUN:  # the same values as shipped, and the status text after them
        assert frozen_values(path) == frozen_values(FIXTURES / path.name)
        assert trailing_values(path)


# -- 1. loading --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FROZEN, ids=FROZEN_IDS)
def test_frozen_workflow_loads_with_every_value_in_place(page, comfy, path):
    workflow = load(path)
    report = harness.load_workflow(page, workflow)
    assert report == {"missing_node_types": [], "dialogs": [], "toasts": []}, report

    live = harness.graph_nodes(page)
    assert sorted(n["id"] for n in live) == sorted(n["id"] for n in workflow["nodes"])
    for node in live:
        frozen_type = frozen_widgets(path)[str(node["id"])]["type"]
        assert node["type"] == frozen_type and node["registered"], node
        assert not node["has_errors"], f"node {node['id']} ({node['type']}) is drawn with errors"
    problems = widget_problems(path, live, comfy.object_info)
    assert not problems, "\n".join(problems)

    # Saving it again keeps every old value at its old position (new widgets come after).
    saved = {str(n["id"]): n.get("widgets_values") or []
             for n in harness.save_workflow(page)["nodes"]}
    for node_id, pairs in frozen_values(path).items():
        assert saved[node_id][:len(pairs)] == [value for _, value in pairs], node_id
    assert harness.page_errors(page) == []


# -- 2. running from the frontend --------------------------------------------------------------


@pytest.mark.parametrize("path", FROZEN, ids=FROZEN_IDS)
def test_frozen_workflow_runs_from_the_frontend(page, comfy, path):
    workflow = load(path)
    assert harness.load_workflow(page, workflow)["missing_node_types"] == []
    requests_before = len(comfy.emu.requests)
    queued = harness.queue_from_frontend(page)
    prompt = queued["prompt"]
    assert prompt, queued

    # The frontend's own API prompt (graphToPrompt) sends every old value unchanged.
    for node_id, pairs in frozen_values(path).items():
        if node_id not in prompt:  # frontend-only nodes (notes) are not sent
            continue
        inputs = prompt[node_id]["inputs"]
        for name, value in pairs:
            if name not in FRONTEND_ONLY:
                assert inputs.get(name) == value, (node_id, name, inputs.get(name), value)
    qwen_ids = [i for i, node in prompt.items() if node["class_type"] in PACK_NODES]
    assert qwen_ids, f"{path.name} has no Qwen-Image node"

    missing = harness.missing_local_models(comfy.object_info, prompt)
    if not missing:
        assert queued["ok"], ("the server refused the frontend's prompt: "
                              + json.dumps(queued["node_errors"] or queued["error"],
                                           ensure_ascii=False)[:3000])
        check_run(comfy, page, queued["prompt_id"])
        assert not [n for n in harness.graph_nodes(page) if n["has_errors"]]
        return

    # A local checkpoint this machine cannot have: refused for that file alone, nothing sent.
    assert not queued["ok"] and not queued["prompt_id"], queued
    errors = queued["node_errors"]
    assert set(errors) == set(missing), errors
    for node_id, file in missing.items():
        assert {e["type"] for e in errors[node_id]["errors"]} == {"value_not_in_list"}, errors
        assert all(file in e["details"] for e in errors[node_id]["errors"]), errors
    marked = {str(n["id"]) for n in harness.graph_nodes(page) if n["has_errors"]}
    assert marked == set(missing), marked
    assert not generation_requests(comfy.emu, requests_before)

    # Its cloud part runs from the frontend: a Save Image on each Qwen node, queued alone
    # ("Queue selected output nodes": only those outputs are validated and run).
    page.keyboard.press("Escape")  # the error dialog
    saves = [harness.add_node(page, "SaveImage", (0, 900 + 400 * number),
                              {"images": (int(qwen_id), 0)})
             for number, qwen_id in enumerate(qwen_ids)]
    queued = harness.queue_from_frontend(page, saves)
    assert queued["ok"] and queued["prompt_id"], queued
    check_run(comfy, page, queued["prompt_id"])


# -- 3. screenshots ---------------------------------------------------------------------------


def screenshot_dir(tmp_path) -> Path:
    chosen = os.environ.get(SCREENSHOT_ENV)
    return Path(chosen) if chosen else tmp_path


@pytest.mark.parametrize("node_type", PACK_NODES)
def test_screenshot_of_each_model(page, comfy, node_type, tmp_path):
    """A fresh node with each of its model choices selected, as a user's pick does."""
    folder = screenshot_dir(tmp_path)
    models = comfy.object_info[node_type]["input"]["required"]["model"][0]
    assert isinstance(models, list) and models, models
    harness.load_workflow(page, harness.EMPTY_WORKFLOW)
    node_id = None
    for model in [None, *models]:
        label = "default" if model is None else re.sub(r"[^A-Za-z0-9._-]", "_", model)
        name = f"{node_type}-{label}.png"
        shot = harness.screenshot_node(page, node_type, {"model": model} if model else None,
                                       folder / name, node_id=node_id)
        node_id = shot["id"]
        values = {w["name"]: w["value"] for w in shot["widgets"]}
        if model:
            assert values["model"] == model
        with Image.open(folder / name) as image:
            assert image.size == (shot["clip"]["width"], shot["clip"]["height"])
            # a node of its real size: taller than its widgets at 20 px each, not cut off
            assert image.size[1] >= shot["size"][1] and image.size[0] >= shot["size"][0]
    assert harness.page_errors(page) == []


def test_screenshot_of_the_masked_region_template(page, comfy, tmp_path):
    """The template as the Templates browser opens it: LoadImage's MASK wired into the edit
    node's mask, size = match input shown, and the canvas as a user sees it."""
    workflow = load(MASKED_TEMPLATE)
    assert harness.load_workflow(page, workflow) == {"missing_node_types": [], "dialogs": [],
                                                     "toasts": []}
    live = {n["type"]: n for n in harness.graph_nodes(page)}
    assert not any(n["has_errors"] for n in live.values())
    widgets = {w["name"]: w for w in live[EDIT]["widgets"]}
    assert widgets["size"]["value"] == "match input" and not widgets["size"]["hidden"]
    assert "match input" in widgets["size"]["values"]
    assert widgets["mask_soft_edge"]["value"] == 16
    linked = page.evaluate(f"""() => {{
      const app = {harness._APP};
      const node = app.graph._nodes.find((n) => n.type === "{EDIT}");
      const slot = node.inputs.find((input) => input.name === "mask");
      const link = app.graph.links.get?.(slot.link) ?? app.graph.links[slot.link];
      return {{type: slot.type, origin: app.graph.getNodeById(link.origin_id).type,
               origin_slot: link.origin_slot}};
    }}""")
    assert linked == {"type": "MASK", "origin": "LoadImage", "origin_slot": 1}
    page.evaluate(f"""() => {{
      const app = {harness._APP};
      app.canvas.ds.scale = 0.8;
      app.canvas.ds.offset = [40, 60];
      app.canvas.setDirty(true, true);
    }}""")
    page.wait_for_timeout(500)
    path = screenshot_dir(tmp_path) / "qwen-image-edit-masked-region.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    with Image.open(path) as image:
        assert image.size[0] > 800 and image.size[1] > 500
    assert harness.page_errors(page) == []
