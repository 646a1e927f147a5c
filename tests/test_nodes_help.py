"""The nodes' help pages (web/docs/<node id>.md) and docs/models.md against the model table.

Each page documents every input of its node, and its "Models" section, between two marker
lines, is the table rendered here from api/catalog/table.py (n, sizes, input images,
interfaces, price per image by region); docs/models.md holds both tables, text to image first.
When the table changes, run this file to rewrite the sections:
python tests/test_nodes_help.py
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: load the repository as the package first
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import conftest  # noqa: F401

import qwen_image_dashscope as pack
from qwen_image_dashscope.api.catalog.models import spec_for
from qwen_image_dashscope.api.catalog.pricing import TIER_1K_MAX_PIXELS, usd_price
from qwen_image_dashscope.api.catalog.regions import REGIONS
from qwen_image_dashscope.api.catalog.specs import IMAGE_EDIT, TEXT_TO_IMAGE

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- models: rendered from api/catalog/table.py by tests/test_nodes_help.py -->"
END = "<!-- end of models -->"
FAMILIES = {"DashScopeQwenImageTextToImage": TEXT_TO_IMAGE, "DashScopeQwenImageEdit": IMAGE_EDIT}


def _usd(value: float) -> str:
    return f"${value:.4f}".rstrip("0").rstrip(".")


def _price(spec, region: str, family: str) -> str:
    price = usd_price(spec, region)
    if price is None:
        return "–"
    text = _usd(price.output)
    if price.output_2k is not None and price.output_2k != price.output:
        text += f" / {_usd(price.output_2k)}²"
    if family == IMAGE_EDIT and price.input:
        text += f" + {_usd(price.input)}³"
    return text


def _row(model: str, family: str, regions: list[str]) -> list[str]:
    spec = spec_for(model, family)
    rule = spec.size_rule(family)
    if rule is None or "size" not in spec.takes:
        sizes = "not set (the model's own)"
    else:
        sizes = rule.describe()
        if spec.needs_n1:
            sizes += " (only with n = 1)"
        default = rule.default or rule.default_text
        if default:
            sizes += f"; auto: {default}"
        sizes = sizes.replace("*", "\\*")
    n = "1" if spec.n_max == 1 else (f"1-{spec.n_max}" if spec.n_max else "not published")
    cells = [n, sizes]
    if family == IMAGE_EDIT:  # edits are synchronous
        low, high = spec.inputs.count
        cells.append(f"{low}-{high}" if high else f"{low} or more (no limit published)")
    else:
        cells.append(" + ".join(spec.interfaces))
    cells += [_price(spec, region, family) for region in regions]
    return cells


def render(node_id: str) -> str:
    """The "Models" section of a node's help page."""
    family = FAMILIES[node_id]
    models = pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]["model"][0]
    regions = [r for r in REGIONS if any(r in spec_for(m, family).prices for m in models)]
    header = ["Model", "n", "Sizes", "Input images" if family == IMAGE_EDIT else "Interface"]
    header += [f"{REGIONS[r].name}¹" for r in regions]
    rows: list[tuple[list[str], list[str]]] = []  # (ids, cells): snapshots alike share a row
    for model in models:
        cells = _row(model, family, regions)
        if rows and rows[-1][1] == cells:
            rows[-1][0].append(model)
        else:
            rows.append(([model], cells))
    lines = [BEGIN, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ids, cells in rows:
        named = ", ".join(f"`{m}`" for m in ids)
        if not spec_for(ids[0], family).documented:
            named += "⁴"
        lines.append("| " + " | ".join([named, *cells]) + " |")
    lines += ["", "¹ USD per output image in that region (Beijing, Frankfurt and Tokyo publish "
                  "CNY prices, converted); – where none is published: `info` then has no cost."]
    marks = "".join(cell for _, cells in rows for cell in cells)
    if "²" in marks:
        lines.append(f"² Above {TIER_1K_MAX_PIXELS:,} output pixels. With size = auto the "
                     "upper price is assumed until the service reports the size.")
    if "³" in marks:
        lines.append("³ Plus this per input image.")
    if any(not spec_for(ids[0], family).documented for ids, _ in rows):
        lines.append("⁴ Only some of its limits are official; the others are not enforced "
                     "(the service decides), and `info` lists them.")
    lines += ["", END]
    return "\n".join(lines)


def page(node_id: str) -> Path:
    return REPO / "web" / "docs" / f"{node_id}.md"


def _sections(text: str) -> list[str]:
    found = re.findall(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.DOTALL)
    assert found, f"no section between {BEGIN!r} and {END!r}"
    return found


def _documents() -> list[tuple[Path, list[str]]]:
    """Each file with the node ids of its sections, in order."""
    return [(page(node_id), [node_id]) for node_id in FAMILIES] + [
        (REPO / "docs" / "models.md", list(FAMILIES))]


def test_the_models_sections_are_the_table_as_it_is():
    for path, node_ids in _documents():
        found = _sections(path.read_text(encoding="utf-8"))
        assert found == [render(node_id) for node_id in node_ids], \
            f"{path.name}: run python tests/test_nodes_help.py"


def test_every_model_and_every_input_is_on_the_help_page():
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        text = page(node_id).read_text(encoding="utf-8")
        types = cls.INPUT_TYPES()
        for model in types["required"]["model"][0]:
            assert f"`{model}`" in text, (node_id, model)
        for name in {**types["required"], **types["optional"]}:
            if re.fullmatch(r"image([4-9]|\d\d)", name):
                name = "image4-image10"
            assert re.search(rf"\b{name}\b", text), (node_id, name)


if __name__ == "__main__":
    for path, node_ids in _documents():
        text = path.read_text(encoding="utf-8")
        assert len(_sections(text)) == len(node_ids), path
        rendered = iter(render(node_id) for node_id in node_ids)
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END),
                      lambda _, rendered=rendered: next(rendered), text, flags=re.DOTALL)
        path.write_text(text, encoding="utf-8")
        print(f"rewrote the models sections of {path.relative_to(REPO)}")
