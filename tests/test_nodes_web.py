"""web/model_inputs.js, the frontend extension, run by Node.js against stand-in nodes: hidden
inputs, saved values, and the cost badge.

The stand-ins do what ComfyUI's frontend (1.35.9) does with an extension's node type: call
``onNodeCreated`` on a new node, give a loaded workflow's ``widgets_values`` to the widgets
by position before ``onConfigure``, and build ``widgets_values`` before ``onSerialize``. The
node definitions are the nodes' own ``INPUT_TYPES``, as /object_info serves them. The real
frontend is exercised by tests/test_nodes_comfyui.py. Skipped without ``node``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import qwen_image_dashscope as pack
from qwen_image_dashscope.api.catalog.models import spec_for
from qwen_image_dashscope.api.catalog.pricing import estimate_usd
from qwen_image_dashscope.api.catalog.specs import IMAGE_EDIT, TEXT_TO_IMAGE
from qwen_image_dashscope.nodes.status import _dollars
from qwen_image_dashscope.nodes.widgets import REGION_CHOICES

REPO = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
FIXTURES = REPO / "tests" / "fixtures" / "workflows"
T2I, EDIT = "DashScopeQwenImageTextToImage", "DashScopeQwenImageEdit"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

# Stand-ins for the frontend: app.registerExtension, and nodes with widgets.
APP = "export const app = { registerExtension(e) { globalThis.extension = e; } };\n"
DRIVER = r"""
import "./extensions/pack/model_inputs.js";
const [definition, steps] = JSON.parse(process.argv[2]);

function widgetsOf(def) {
  const widgets = [];
  for (const [name, spec] of Object.entries({...def.input.required, ...def.input.optional})) {
    const [kind, options = {}] = spec;
    if (!Array.isArray(kind) && !["INT", "FLOAT", "STRING", "BOOLEAN"].includes(kind)) continue;
    const value = options.default ?? (Array.isArray(kind) ? kind[0] : "");
    const widget = {name, value, options: {...options}, callback: null};
    widgets.push(widget);
    if (options.control_after_generate) {
      const control = {name: "control_after_generate", value: "fixed", options: {}};
      widget.linkedWidgets = [control];
      widgets.push(control);
    }
  }
  return widgets;
}

class NodeType {
  constructor() {
    this.widgets = widgetsOf(definition);
    this.inputs = Object.entries({...definition.input.required, ...definition.input.optional})
      .filter(([, [kind]]) => kind === "IMAGE" || kind === "MASK")
      .map(([name, [kind]]) => ({name, type: kind, link: null}));
    this.properties = {};
    this.size = [400, 600];
    this.onNodeCreated?.();
  }
  isWidgetVisible(w) { return !w.hidden; }
  computeSize() { return [400, 100 + 20 * this.widgets.filter((w) => !w.hidden).length]; }
  setSize(size) { this.size = size; }
  setDirtyCanvas() {}
  addInput(name, type, extra) { this.inputs.push({name, type, link: null, ...extra}); }
  removeInput(index) { this.inputs.splice(index, 1); }
  configure(info) {  // LGraphNode.configure: values by position, then onConfigure
    Object.assign(this.properties, info.properties ?? {});
    let n = 0;
    for (const w of this.widgets) {
      if (w.serialize === false) continue;
      if (n >= info.widgets_values.length) break;
      w.value = info.widgets_values[n++];
    }
    this.onConfigure?.(info);
  }
  serialize() {
    const o = {properties: {...this.properties}, widgets_values: []};
    this.widgets.forEach((w, i) => { if (w.serialize !== false) o.widgets_values[i] = w.value; });
    this.onSerialize?.(o);
    return o;
  }
}

globalThis.extension.beforeRegisterNodeDef(NodeType, definition, {});
const node = new NodeType();
const report = [];
const state = () => ({
  hidden: node.widgets.filter((w) => w.hidden).map((w) => w.name),
  sockets: node.inputs.filter((slot) => slot.type === "IMAGE").map((slot) => slot.name),
  values: Object.fromEntries(node.widgets.map((w) => [w.name, w.value])),
  height: node.size[1],
  cost: node.qwenImageBadge().text,  // the badge over the title, as drawn now
});
for (const [action, argument] of steps) {
  if (action === "set") {
    const [name, value] = argument;
    const widget = node.widgets.find((w) => w.name === name);
    widget.value = value;
    widget.callback?.(value);
  } else if (action === "link_model") {
    node.inputs.push({name: "model", widget: {name: "model"}, link: 7});
    node.onConnectionsChange?.();
    await null;  // the extension reacts after the frontend's own bookkeeping
  } else if (action === "link") {
    node.inputs.find((slot) => slot.name === argument).link = 9;
    node.onConnectionsChange?.();
    await null;
  } else if (action === "picture") {  // image 1 comes from a LoadImage showing this picture
    const [width, height] = argument;
    node.getInputNode = (slot) => node.inputs[slot].name === "image"
      ? {imgs: [{naturalWidth: width, naturalHeight: height}]} : null;
  } else if (action === "configure") {
    node.configure(argument);
  } else if (action === "status") {  // the frontend adds it when progress text arrives
    node.widgets.push({name: "$$node-text-preview", value: argument, options: {serialize: false}});
  } else if (action === "serialize") {
    report.push(node.serialize());
    continue;
  }
  report.push(state());
}
console.log(JSON.stringify(report));
"""


def definition(node_id: str) -> dict:
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    return {"name": node_id, "input": json.loads(json.dumps(cls.INPUT_TYPES()))}


def run(tmp_path: Path, node_id: str, steps: list) -> list:
    (tmp_path / "extensions" / "pack").mkdir(parents=True, exist_ok=True)
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(REPO / "web" / "model_inputs.js", tmp_path / "extensions" / "pack")
    (tmp_path / "scripts" / "app.js").write_text(APP)
    (tmp_path / "driver.mjs").write_text(DRIVER)
    done = subprocess.run([NODE, "driver.mjs", json.dumps([definition(node_id), steps])],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def frozen_pack_node(name: str, node_id: str, saved_after_run: bool = False) -> dict:
    folder = FIXTURES / "saved-after-run" if saved_after_run else FIXTURES
    workflow = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    return next(node for node in workflow["nodes"] if node["type"] == node_id)


def test_the_extension_imports_the_frontend_app_from_where_comfyui_serves_it():
    # Served at /extensions/<pack>/model_inputs.js: two levels up is the site root.
    source = (REPO / "web" / "model_inputs.js").read_text(encoding="utf-8")
    assert 'from "../../scripts/app.js"' in source
    assert pack.WEB_DIRECTORY == "./web"


def test_text_to_image_hides_what_the_chosen_model_does_not_take(tmp_path):
    plus, v3, v2, custom, linked = run(tmp_path, T2I, [
        ["set", ["model", "qwen-image-plus"]],
        ["set", ["model", "qwen-image-3.0"]],
        ["set", ["model", "qwen-image-2.0"]],
        ["set", ["custom_model", "qwen-image-next"]],
        ["link_model", None],
    ])
    assert plus["hidden"] == ["prompt_extend_mode", "enable_thinking", "n", "width", "height"]
    assert v3["hidden"] == []
    assert v2["hidden"] == ["interface", "prompt_extend_mode", "enable_thinking"]
    assert custom["hidden"] == [] and linked["hidden"] == []  # unknown here: all shown
    assert plus["height"] < v3["height"]  # the node shrinks to what is shown


def test_edit_hides_what_the_chosen_model_does_not_take(tmp_path):
    plus, legacy, more, linked, unified = run(tmp_path, EDIT, [
        ["set", ["model", "qwen-image-edit-plus"]],
        ["set", ["model", "qwen-image-edit"]],
        ["set", ["model", "qwen-image-2.1-pro"]],
        ["link", "image4"],
        ["set", ["model", "qwen-image-3.0"]],
    ])
    # size stays for every edit model: "match input" fits any model's result to image 1.
    assert legacy["hidden"] == ["n", "width", "height", "prompt_extend",
                                "prompt_extend_mode", "enable_thinking"]
    assert "size" not in plus["hidden"]
    assert unified["hidden"] == []
    three = ["image", "image2", "image3"]
    assert plus["sockets"] == legacy["sockets"] == three  # the others are taken away ...
    assert more["sockets"] == three + [f"image{k}" for k in range(4, 11)]  # ... and back
    assert linked["sockets"] == more["sockets"]
    assert unified["sockets"] == three + ["image4"]  # a connected one stays


@pytest.mark.parametrize("node_id, name", [
    (T2I, "qwen-image-text-to-image"), (EDIT, "qwen-image-edit"),
    (EDIT, "qwen-image-edit-multi-round")])
@pytest.mark.parametrize("saved_after_run", [False, True], ids=["shipped", "saved-after-run"])
def test_a_frozen_workflow_keeps_its_values_and_the_new_widgets_their_defaults(
        tmp_path, node_id, name, saved_after_run):
    frozen = frozen_pack_node(name, node_id, saved_after_run)
    fresh, loaded = run(tmp_path, node_id, [["set", ["model", "qwen-image-plus" if node_id == T2I
                                                      else "qwen-image-edit-plus"]],
                                            ["configure", frozen]])
    names = list(fresh["values"])  # widget order (dict order is insertion order)
    first_release = json.loads((FIXTURES / "expected" / "widget_names.json").read_text())
    old_names = next(entry["widgets"] for entry in first_release[name].values()
                     if entry["type"] == node_id)
    assert names[:len(old_names)] == old_names  # every old widget at its old position
    for index, old in enumerate(old_names):
        assert loaded["values"][old] == frozen["widgets_values"][index], old
    for added in names[len(old_names):]:
        assert loaded["values"][added] == fresh["values"][added], added  # not "done"


def test_a_save_leaves_out_the_status_text_and_records_its_length(tmp_path):
    *_, saved = run(tmp_path, T2I, [["set", ["n", 3]], ["status", "done"], ["serialize", None]])
    widgets = [name for name, (kind, _) in {
        **definition(T2I)["input"]["required"], **definition(T2I)["input"]["optional"]}.items()
        if isinstance(kind, list) or kind in WIDGET_TYPES]
    assert len(saved["widgets_values"]) == len(widgets) + 1  # + control_after_generate
    assert "done" not in saved["widgets_values"]
    assert saved["properties"]["qwen_image_saved_values"] == len(saved["widgets_values"])
    # Loaded again, n keeps its 3: a save of this version is taken at its word.
    *_, loaded = run(tmp_path, T2I, [["configure", saved]])
    assert loaded["values"]["n"] == 3


def label(region: str) -> str:
    return next(choice for choice, value in REGION_CHOICES.items() if value == region)


def estimate(model, family, n, size=None, inputs=0, region="ap-southeast-1") -> str:
    """What api.pricing books for one call, as the node's texts write amounts."""
    return _dollars(estimate_usd(spec_for(model, family), region, n, size, inputs))


def test_the_cost_badge_follows_model_n_batch_size_and_region(tmp_path):
    states = [state["cost"] for state in run(tmp_path, T2I, [
        ["set", ["model", "qwen-image-plus"]],
        ["set", ["batch", 16]],
        ["set", ["model", "qwen-image-3.0-pro"]],  # tiered; the size is still 1328*1328
        ["set", ["size", "auto"]],  # the model's default size
        ["set", ["size", "custom"]], ["set", ["width", 2048]], ["set", ["height", 2048]],
        ["set", ["n", 2]],  # above 2K: the upper tier
        ["set", ["region", label("cn-beijing")]],
        ["set", ["model", "qwen-image-2.1-pro"]],  # no published price
        ["set", ["custom_model", "qwen-image-next"]],
    ])]
    fresh, batch, pro, auto, *_, large, beijing, no_price, unknown = states
    v3_pro = "qwen-image-3.0-pro"
    assert fresh == f"≈ {estimate('qwen-image-plus', TEXT_TO_IMAGE, 1)} · 1 image · Singapore"
    assert fresh == "≈ $0.03 · 1 image · Singapore"
    assert batch == "≈ $0.48 · 16 images · Singapore"
    square = estimate(v3_pro, TEXT_TO_IMAGE, 16, "1328*1328")
    assert pro == f"≈ {square} · 16 images · Singapore"
    # It picks a size itself: the upper tier, as the spend guard books it.
    assert spec_for(v3_pro, TEXT_TO_IMAGE).default_size(TEXT_TO_IMAGE) is None
    assert auto == f"up to {estimate(v3_pro, TEXT_TO_IMAGE, 16)} · 16 images · Singapore"
    above_2k = estimate(v3_pro, TEXT_TO_IMAGE, 32, "2048*2048")
    assert large == f"≈ {above_2k} · 32 images · Singapore"
    in_beijing = estimate(v3_pro, TEXT_TO_IMAGE, 32, "2048*2048", region="cn-beijing")
    assert beijing == f"≈ {in_beijing} · 32 images · Beijing"
    assert len({pro, large}) == 2  # the tier shows
    assert no_price == "no published price in Beijing"
    assert unknown == "cost unknown for this model"


def test_the_cost_of_an_edit_is_per_edit_with_its_input_images(tmp_path):
    plus, v3, _, linked, _, pro = [state["cost"] for state in run(tmp_path, EDIT, [
        ["set", ["model", "qwen-image-edit-plus"]],
        ["set", ["model", "qwen-image-3.0"]],
        ["link", "image"], ["link", "image2"],
        ["set", ["n", 3]], ["set", ["model", "qwen-image-3.0-pro"]],
    ])]
    assert plus == "≈ $0.03 per edit · Singapore"
    assert v3 == f"≈ {estimate('qwen-image-3.0', IMAGE_EDIT, 1)} per edit · Singapore"
    with_inputs = estimate("qwen-image-3.0", IMAGE_EDIT, 1, inputs=2)
    assert linked == f"≈ {with_inputs} per edit · Singapore"
    # Tiered, and the output size follows the input images: the upper tier, as booked.
    pro_with_inputs = estimate("qwen-image-3.0-pro", IMAGE_EDIT, 3, inputs=2)
    assert pro == f"up to {pro_with_inputs} per edit · Singapore"


def test_the_cost_of_match_input_counts_the_size_the_node_asks(tmp_path):
    pro = "qwen-image-3.0-pro"  # tiered: 1K / 2K
    _, _, unknown, small, large, masked, legacy, _, plus_n2 = [state["cost"] for state in run(
        tmp_path, EDIT, [
            ["set", ["model", pro]], ["set", ["size", "match input"]],
            ["link", "image"],  # image 1's size is not known yet: the upper tier, as booked
            ["picture", [640, 480]],  # image 1's own area: 1K
            ["picture", [3000, 2000]],  # 6,000,000 px, within the model's range: 2K
            ["link", "mask"],  # the region's size: not known here
            ["set", ["model", "qwen-image-edit"]],  # asks no size: its default's price
            ["set", ["model", "qwen-image-edit-plus"]], ["set", ["n", 2]],
        ])]
    assert unknown == f"up to {estimate(pro, IMAGE_EDIT, 1, None, 1)} per edit · Singapore"
    assert small == f"≈ {estimate(pro, IMAGE_EDIT, 1, '640*480', 1)} per edit · Singapore"
    assert large == f"≈ {estimate(pro, IMAGE_EDIT, 1, '2048*2048', 1)} per edit · Singapore"
    assert small != large
    assert masked == unknown
    assert legacy == f"≈ {estimate('qwen-image-edit', IMAGE_EDIT, 1)} per edit · Singapore"
    assert plus_n2 == f"≈ {estimate('qwen-image-edit-plus', IMAGE_EDIT, 2)} per edit · Singapore"


@pytest.mark.parametrize("configured, shown", [
    ("cn-beijing", "Beijing"), ("", "Singapore"),
    ("atlantis", "Singapore (assumed)")])
def test_the_default_region_is_the_configured_one(tmp_path, monkeypatch, configured, shown):
    monkeypatch.setenv("DASHSCOPE_API_REGION", configured)
    (state,) = run(tmp_path, T2I, [["set", ["model", "qwen-image-plus"]]])
    region = "cn-beijing" if configured == "cn-beijing" else "ap-southeast-1"
    price = estimate("qwen-image-plus", TEXT_TO_IMAGE, 1, region=region)
    assert state["cost"] == f"≈ {price} · 1 image · {shown}"
