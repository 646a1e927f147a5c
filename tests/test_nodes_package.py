"""The pack as ComfyUI loads it: import, node definitions, help pages, example workflows."""
import inspect
import json
import sys
from pathlib import Path

import pytest

import qwen_image_dashscope as pack
from qwen_image_dashscope.nodes.comfy_bridge import Comfy
from support.package import import_as_comfyui

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
FROZEN = REPO / "tests" / "fixtures" / "workflows"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
# ComfyUI's built-in Qwen node ids (a pack node with the same id would be dropped silently).
BUILTIN_QWEN_IDS = {"TextEncodeQwenImageEdit", "TextEncodeQwenImageEditPlus", "ModelMergeQwenImage",
                    "QwenImageDiffsynthControlnet", "EmptyQwenImageLayeredLatentImage"}


def test_imports_under_a_hyphenated_folder_without_key_torch_or_http(tmp_path):
    loaded = import_as_comfyui(tmp_path, preload_torch=False)
    assert loaded["nodes"] == ["DashScopeQwenImageEdit", "DashScopeQwenImageTextToImage"]
    assert loaded["web"] == "./web"
    heavy = ("torch", "numpy", "PIL", "requests", "urllib3", "asyncio", "comfy", "server",
             "folder_paths", "ssl")
    pulled = [m for m in loaded["new"] if m.split(".")[0] in heavy]
    assert pulled == []


def test_node_ids_and_display_names_cannot_clash_with_comfyui():
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, name in pack.NODE_DISPLAY_NAME_MAPPINGS.items():
        assert node_id.startswith("DashScopeQwenImage") and node_id not in BUILTIN_QWEN_IDS
        assert "(DashScope)" in name


@pytest.mark.parametrize("node_id", sorted(pack.NODE_CLASS_MAPPINGS))
def test_node_definition(node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    types = cls.INPUT_TYPES()
    assert types["hidden"] == {"unique_id": "UNIQUE_ID"}
    inputs = {**types["required"], **types.get("optional", {})}
    for name, spec in inputs.items():
        assert len(spec) == 2 and spec[1].get("tooltip"), f"{name} has no tooltip"
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == 4
    # mask came later: appended, so saved workflows keep their links by slot.
    assert cls.RETURN_TYPES == ("IMAGE", "STRING", "STRING", "MASK")
    assert cls.RETURN_NAMES == ("images", "prompt_used", "info", "mask")
    assert cls.CATEGORY.startswith("api node/") and len(cls.DESCRIPTION) > 100
    assert inspect.iscoroutinefunction(getattr(cls, cls.FUNCTION))
    # ComfyUI passes VALIDATE_INPUTS only the inputs it names: a misspelt name would mean
    # a rule that never runs.
    named = inspect.getfullargspec(cls.VALIDATE_INPUTS).args[1:]
    assert named and set(named) <= set(inputs)
    assert types["required"]["seed"][1]["control_after_generate"] is True
    assert types["required"]["seed"][1]["max"] == 2147483647
    assert (REPO / "web" / "docs" / f"{node_id}.md").is_file()


def test_without_comfyui_the_hooks_fall_back_quietly(monkeypatch, tmp_path):
    for name in ("comfy", "comfy.utils", "comfy.model_management", "server", "folder_paths"):
        assert name not in sys.modules
    comfy = Comfy()
    assert comfy.interrupted() is False
    assert comfy.progress_bar(3, "1") is None
    comfy.send_text("running 1 s", "1")  # logged, not sent
    from qwen_image_dashscope.api.errors import CancelledError

    with pytest.raises(CancelledError):
        comfy.raise_interrupted()
    monkeypatch.delenv("QWEN_IMAGE_STORE_DIR", raising=False)
    assert comfy.store_directory() == Path("qwen-image-output")
    monkeypatch.setenv("QWEN_IMAGE_STORE_DIR", str(tmp_path / "kept"))
    assert comfy.store_directory() == tmp_path / "kept"


# -- example workflows ----------------------------------------------------------------------

# Built-in nodes the examples use: widget names in order, input and output socket types.
BUILTIN = {
    "SaveImage": (["filename_prefix"], ["IMAGE"], []),
    "LoadImage": (["image", "upload"], [], ["IMAGE", "MASK"]),
    "VAEEncode": ([], ["IMAGE", "VAE"], ["LATENT"]),
    "VAEDecode": ([], ["LATENT", "VAE"], ["IMAGE"]),
    "CheckpointLoaderSimple": (["ckpt_name"], [], ["MODEL", "CLIP", "VAE"]),
    "CLIPTextEncode": (["text"], ["CLIP"], ["CONDITIONING"]),
    "KSampler": (["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler",
                  "denoise"], ["MODEL", "CONDITIONING", "CONDITIONING", "LATENT"], ["LATENT"]),
}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


def pack_node_shape(cls):
    """(widget names in frontend order, input socket types, output types) of a pack node."""
    types = cls.INPUT_TYPES()
    widgets, sockets = [], []
    for name, spec in {**types["required"], **types.get("optional", {})}.items():
        if isinstance(spec[0], list) or spec[0] in WIDGET_TYPES:
            widgets.append(name)
            if spec[1].get("control_after_generate"):
                widgets.append("control_after_generate")
        else:
            sockets.append(spec[0])
    return widgets, sockets, list(cls.RETURN_TYPES)


def pack_sockets(cls) -> dict[str, str]:
    """{socket input name: type} of a pack node, in definition order."""
    types = cls.INPUT_TYPES()
    return {name: spec[0]
            for name, spec in {**types["required"], **types.get("optional", {})}.items()
            if not (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES)}


def test_there_are_eight_example_workflows():
    assert [p.name for p in WORKFLOWS] == [
        "qwen-image-3-edit-three-references.json", "qwen-image-3-text-to-image.json",
        "qwen-image-edit-masked-region.json", "qwen-image-edit-multi-round.json",
        "qwen-image-edit-three-image-fusion.json", "qwen-image-edit.json",
        "qwen-image-refine-locally.json", "qwen-image-text-to-image.json"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_example_workflow_is_valid_ui_format(path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    assert set(workflow) == {"last_node_id", "last_link_id", "nodes", "links", "groups", "config",
                             "extra", "version"}
    assert workflow["version"] == 0.4
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])
    assert sorted(node["order"] for node in nodes.values()) == list(range(len(nodes)))

    for node in nodes.values():
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs",
                "properties", "widgets_values"} <= set(node)
        assert node["properties"]["Node name for S&R"] == node["type"]
        if node["type"] in pack.NODE_CLASS_MAPPINGS:
            cls = pack.NODE_CLASS_MAPPINGS[node["type"]]
            widgets, sockets, outputs = pack_node_shape(cls)
            check_pack_widgets(cls, widgets, node["widgets_values"])
        else:
            widgets, sockets, outputs = BUILTIN[node["type"]]
        assert len(node["widgets_values"]) == len(widgets), node["type"]
        if node["type"] in pack.NODE_CLASS_MAPPINGS:
            # The frontend adds the sockets a saved node lacks (input images the model it
            # had did not take, removed while unconnected): the others keep their order.
            defined = pack_sockets(pack.NODE_CLASS_MAPPINGS[node["type"]])
            names = [i["name"] for i in node["inputs"]]
            assert names == [name for name in defined if name in names], node["type"]
            assert [i["type"] for i in node["inputs"]] == [defined[n] for n in names]
        else:
            assert [i["type"] for i in node["inputs"]] == sockets[:len(node["inputs"])]
        assert [o["type"] for o in node["outputs"]] == outputs, node["type"]
        if "control_after_generate" in widgets:
            assert node["widgets_values"][widgets.index("control_after_generate")] in CONTROL_VALUES

    for link_id, source, source_slot, target, target_slot, kind in workflow["links"]:
        output = nodes[source]["outputs"][source_slot]
        socket = nodes[target]["inputs"][target_slot]
        assert output["type"] == socket["type"] == kind
        assert link_id in output["links"] and socket["link"] == link_id
    linked = {link[0] for link in workflow["links"]}
    for node in nodes.values():
        for socket in node["inputs"]:
            assert socket["link"] is None or socket["link"] in linked
        for output in node["outputs"]:
            assert all(link in linked for link in output["links"] or [])


def check_pack_widgets(cls, widgets, values):
    """Every value is one the widget allows, and the node's queue-time check accepts them."""
    types = cls.INPUT_TYPES()
    inputs = {**types["required"], **types.get("optional", {})}
    named = {}
    for name, value in zip(widgets, values, strict=False):
        if name == "control_after_generate":
            continue
        kind, options = inputs[name]
        if isinstance(kind, list):
            assert value in kind, (name, value)
        elif kind == "INT":
            assert isinstance(value, int) and options["min"] <= value <= options["max"], name
        elif kind == "BOOLEAN":
            assert isinstance(value, bool), name
        else:
            assert isinstance(value, str), name
        named[name] = value
    accepted = inspect.getfullargspec(cls.VALIDATE_INPUTS).args[1:]
    assert cls.VALIDATE_INPUTS(**{k: v for k, v in named.items() if k in accepted}) is True


def test_example_workflows_cover_the_five_graphs():
    def graph(name):
        workflow = json.loads((REPO / "example_workflows" / name).read_text(encoding="utf-8"))
        return sorted(node["type"] for node in workflow["nodes"]), workflow

    types, _ = graph("qwen-image-text-to-image.json")
    assert types == ["DashScopeQwenImageTextToImage", "SaveImage"]
    types, _ = graph("qwen-image-edit.json")
    assert types == ["DashScopeQwenImageEdit", "LoadImage", "SaveImage"]
    types, fusion = graph("qwen-image-edit-three-image-fusion.json")
    assert types == ["DashScopeQwenImageEdit"] + ["LoadImage"] * 3 + ["SaveImage"]
    edit = next(n for n in fusion["nodes"] if n["type"] == "DashScopeQwenImageEdit")
    assert all(socket["link"] is not None for socket in edit["inputs"])  # image, image2, image3
    types, chain = graph("qwen-image-edit-multi-round.json")
    assert types == ["DashScopeQwenImageEdit"] * 2 + ["LoadImage", "SaveImage"]
    edits = [n["id"] for n in chain["nodes"] if n["type"] == "DashScopeQwenImageEdit"]
    assert any(link[1] == edits[0] and link[3] == edits[1] for link in chain["links"])
    # A unified model: text to image with n = 4 at a custom size, an edit of three images.
    types, unified = graph("qwen-image-3-text-to-image.json")
    assert types == ["DashScopeQwenImageTextToImage", "SaveImage"]
    named = widget_values(unified["nodes"][0])
    assert (named["model"], named["n"], named["size"], named["width"], named["height"]) == (
        "qwen-image-3.0", 4, "custom", 1280, 720)
    types, unified = graph("qwen-image-3-edit-three-references.json")
    assert types == ["DashScopeQwenImageEdit"] + ["LoadImage"] * 3 + ["SaveImage"]
    edit = next(n for n in unified["nodes"] if n["type"] == "DashScopeQwenImageEdit")
    assert widget_values(edit)["model"] == "qwen-image-3.0"
    assert [socket["link"] is not None for socket in edit["inputs"]] == [True] * 3
    # Load a picture, mask a region (its transparency), edit only that, save at its size.
    types, masked = graph("qwen-image-edit-masked-region.json")
    assert types == ["DashScopeQwenImageEdit", "LoadImage", "SaveImage"]
    edit = next(n for n in masked["nodes"] if n["type"] == "DashScopeQwenImageEdit")
    assert widget_values(edit)["size"] == "match input"
    mask = next(i for i in edit["inputs"] if i["name"] == "mask")
    (link,) = [link for link in masked["links"] if link[0] == mask["link"]]
    assert masked["nodes"][0]["type"] == "LoadImage" and link[1:3] == [1, 1]  # its MASK
    types, _ = graph("qwen-image-refine-locally.json")
    assert types == ["CLIPTextEncode", "CLIPTextEncode", "CheckpointLoaderSimple",
                     "DashScopeQwenImageTextToImage", "KSampler", "SaveImage", "VAEDecode",
                     "VAEEncode"]


def widget_values(node: dict) -> dict:
    """{widget name: value} of a pack node of a workflow, by position as the frontend reads."""
    widgets, _, _ = pack_node_shape(pack.NODE_CLASS_MAPPINGS[node["type"]])
    return dict(zip(widgets, node["widgets_values"], strict=False))


# -- last month's workflows (frozen) --------------------------------------------------------------

FROZEN_WORKFLOWS = sorted(FROZEN.glob("*.json")) + sorted(FROZEN.glob("saved-after-run/*.json"))


@pytest.mark.parametrize("node_id", sorted(pack.NODE_CLASS_MAPPINGS))
def test_the_widgets_are_the_frozen_ones_then_those_added_since_in_order(node_id):
    names = json.loads((FROZEN / "expected" / "widget_names.json").read_text(encoding="utf-8"))
    frozen = next(entry["widgets"] for workflow, nodes in names.items()
                  if not workflow.startswith("_") and workflow != "added_since"
                  for entry in nodes.values() if entry["type"] == node_id)
    widgets, _, _ = pack_node_shape(pack.NODE_CLASS_MAPPINGS[node_id])
    assert widgets == frozen + names["added_since"][node_id]


@pytest.mark.parametrize("path", FROZEN_WORKFLOWS, ids=lambda p: p.relative_to(FROZEN).as_posix())
def test_frozen_workflows_keep_their_widgets_in_place_and_pass_the_queue_time_check(path):
    names = json.loads((FROZEN / "expected" / "widget_names.json").read_text(encoding="utf-8"))
    first_release = names[path.stem]
    workflow = json.loads(path.read_text(encoding="utf-8"))
    for node in workflow["nodes"]:
        if node["type"] not in pack.NODE_CLASS_MAPPINGS:
            continue
        cls = pack.NODE_CLASS_MAPPINGS[node["type"]]
        widgets, sockets, _ = pack_node_shape(cls)
        old = first_release[str(node["id"])]["widgets"]
        assert widgets[:len(old)] == old  # new inputs were appended, never inserted
        sockets_saved = [i["type"] for i in node["inputs"] if "widget" not in i]
        assert sockets[:len(sockets_saved)] == sockets_saved
        # Saved after a run, the values end with the status text ("done"): the frontend hands
        # it to the first newer widget, a combo that takes any text (widgets.left_out).
        values = node["widgets_values"]
        extra = values[len(old):]
        assert extra in ([], ["done"])
        if extra:
            assert widgets[len(old)] == "prompt_extend_mode"
        named = {name: value for name, value in zip(widgets, values, strict=False)
                 if name != "control_after_generate"}
        accepted = inspect.getfullargspec(cls.VALIDATE_INPUTS).args[1:]
        assert cls.VALIDATE_INPUTS(**{k: v for k, v in named.items() if k in accepted}) is True
