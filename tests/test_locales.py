"""The pack's translations against the node definitions.

ComfyUI serves ``locales/<lang>/main.json`` with ``nodeDefs.json`` under "nodeDefs" at
GET /i18n (app/custom_node_manager.py), and the frontend looks names and tooltips up as
``nodeDefs.<node id>.display_name`` / ``.description`` / ``.inputs.<input>.name`` /
``.inputs.<input>.tooltip`` / ``.outputs.<index>.name`` / ``.outputs.<index>.tooltip``, and
category segments as ``nodeCategories.<segment>``. A key it does not find falls back to the
node definition, so a stale or missing entry shows no error: it shows English, or worse, an
old English text. These tests keep the files complete and current:

- every node of NODE_CLASS_MAPPINGS is in every locale, with every required and optional
  input (hidden ones are never shown) and every output, each with a name and a tooltip, and
  nothing that no longer exists;
- ``locales/en`` equals the code's strings (display names, DESCRIPTION, input tooltips,
  RETURN_NAMES, OUTPUT_TOOLTIPS), so it can never show an English text the code dropped;
- the Chinese files are translated (CJK text, not English copies) and keep the numbers,
  environment variables and model ids of the English text, so a changed limit in the code
  (800 characters, 384-3072 px, ...) makes them fail until they are updated too;
- with a real ComfyUI (COMFYUI_DIR, COMFYUI_PYTHON), GET /i18n returns the files as written.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import qwen_image_dashscope as pack

REPO = Path(__file__).resolve().parents[1]
LOCALES_DIR = REPO / "locales"
# Locales the pack must have: English mirrors the code; ComfyUI's "zh" is Simplified Chinese.
REQUIRED_LOCALES = ("en", "zh", "zh-TW")
# The locales ComfyUI's frontend offers (comfyui_frontend_package 1.35.9, src/locales/*). A
# folder with another name (e.g. "zh-CN", "zh_TW") is served by /i18n but never shown.
FRONTEND_LOCALES = {"en", "zh", "zh-TW", "ru", "ja", "ko", "fr", "es", "ar", "tr", "pt-BR"}
ENTRY_KEYS = {"display_name", "description", "inputs", "outputs"}
TEXT_KEYS = {"name", "tooltip"}
# Runs of CJK ideographs: a translated text has some.
CJK = re.compile(r"[\u4e00-\u9fff]")
# Technical tokens a translation must keep as they are: numbers (limits, ranges, prices),
# environment variables and model ids.
TOKENS = re.compile(r"\d+(?:\.\d+)?|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|qwen-image(?:-[a-z0-9]+)*")
# The frontend compiles these texts as vue-i18n messages: "{x}" is a placeholder, "@:" / "@."
# a linked message and "|" separates plural forms. None of them may appear as plain text.
VUE_I18N_SYNTAX = re.compile(r"[{}@|]")


# -- what the code defines ---------------------------------------------------------------------


def code_definitions() -> dict:
    """{node id: the nodeDefs entry the code implies}: what locales/en must hold."""
    definitions = {}
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        inputs = {}
        for section in ("required", "optional"):  # "hidden" inputs have no widget or socket
            for name, spec in types.get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                inputs[name] = {"name": name, "tooltip": options.get("tooltip")}
        tooltips = getattr(cls, "OUTPUT_TOOLTIPS", (None,) * len(cls.RETURN_TYPES))
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        outputs = {str(index): {"name": name, "tooltip": tooltip}
                   for index, (name, tooltip) in enumerate(zip(names, tooltips, strict=False))}
        definitions[node_id] = {
            "display_name": pack.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id),
            "description": getattr(cls, "DESCRIPTION", None),
            "inputs": inputs,
            "outputs": outputs,
        }
    return definitions


CODE = code_definitions()


def category_segments() -> set[str]:
    return {segment for cls in pack.NODE_CLASS_MAPPINGS.values()
            for segment in cls.CATEGORY.split("/")}


# -- the files ---------------------------------------------------------------------------------


def _no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:  # json.loads would silently keep the last one
        raise ValueError(f"duplicate keys {duplicates}")
    return dict(pairs)


def load(path: Path) -> dict:
    data = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    assert isinstance(data, dict), f"{path}: the top level must be an object"
    return data


def locale_names() -> list[str]:
    if not LOCALES_DIR.is_dir():
        return []
    return sorted(p.name for p in LOCALES_DIR.iterdir() if p.is_dir())


LOCALES = sorted(set(locale_names()) | set(REQUIRED_LOCALES))
TRANSLATED = [locale for locale in LOCALES if locale != "en"]


def node_defs(locale: str) -> dict:
    path = LOCALES_DIR / locale / "nodeDefs.json"
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    return load(path)


def strings(entry: dict):
    """(where, text) for every text of one node's entry."""
    yield "display_name", entry.get("display_name")
    yield "description", entry.get("description")
    for kind in ("inputs", "outputs"):
        for key, texts in (entry.get(kind) or {}).items():
            for field in ("name", "tooltip"):
                yield f"{kind}.{key}.{field}", (texts or {}).get(field)


# -- tests without ComfyUI ---------------------------------------------------------------------


def test_the_nodes_define_every_text_a_locale_mirrors():
    # The English file mirrors these; an input or output without a tooltip has nothing to
    # translate (and shows no help in the UI).
    missing = [f"{node_id}: {where}" for node_id, entry in CODE.items()
               for where, text in strings(entry) if not (isinstance(text, str) and text.strip())]
    assert missing == []


def test_locale_folders_are_frontend_locales_and_every_file_is_valid_json():
    assert set(REQUIRED_LOCALES) <= set(locale_names())
    assert set(locale_names()) <= FRONTEND_LOCALES, "a locale the frontend does not offer"
    files = sorted(LOCALES_DIR.rglob("*"))
    for path in files:
        if path.is_file():
            assert path.suffix == ".json" and path.parent.parent == LOCALES_DIR, path
            assert path.name in ("main.json", "nodeDefs.json", "commands.json", "settings.json")
            load(path)  # valid UTF-8 JSON, an object, no duplicate keys


@pytest.mark.parametrize("locale", LOCALES)
def test_every_node_is_in_the_locale_and_nothing_else(locale):
    assert sorted(node_defs(locale)) == sorted(CODE)


@pytest.mark.parametrize("node_id", sorted(CODE))
@pytest.mark.parametrize("locale", LOCALES)
def test_every_input_and_output_has_a_name_and_a_tooltip(locale, node_id):
    entry = node_defs(locale).get(node_id)
    assert isinstance(entry, dict), f"{locale}: no entry for {node_id}"
    assert set(entry) == ENTRY_KEYS
    expected = CODE[node_id]
    missing = sorted(set(expected["inputs"]) - set(entry["inputs"]))
    stale = sorted(set(entry["inputs"]) - set(expected["inputs"]))
    assert (missing, stale) == ([], []), f"{locale} {node_id}: inputs missing / not in the code"
    assert sorted(entry["outputs"]) == sorted(expected["outputs"])
    for kind in ("inputs", "outputs"):
        for key, texts in entry[kind].items():
            assert isinstance(texts, dict) and set(texts) == TEXT_KEYS, f"{kind}.{key}: {texts}"
    empty = [where for where, text in strings(entry)
             if not (isinstance(text, str) and text.strip())]
    assert empty == [], f"{locale} {node_id}: empty texts"
    for kind in ("inputs", "outputs"):
        names = [texts["name"] for texts in entry[kind].values()]
        assert len(names) == len(set(names)), f"{locale} {node_id}: two {kind} share a name"


def test_english_equals_the_code():
    # Input name = its key, output name = RETURN_NAMES[i], tooltips and DESCRIPTION as written.
    english = node_defs("en")
    differences = []
    for node_id, expected in CODE.items():
        ours = dict(strings(english.get(node_id) or {}))
        differences += [f"{node_id} {where}: file {ours.get(where)!r}, code {text!r}"
                        for where, text in strings(expected) if ours.get(where) != text]
    assert differences == [], "locales/en/nodeDefs.json differs from the code"
    assert {node_id: english.get(node_id) for node_id in CODE} == CODE


@pytest.mark.parametrize("locale", TRANSLATED)
def test_translations_are_translated_and_keep_the_technical_tokens(locale):
    translated = node_defs(locale)
    problems = []
    for node_id, english in CODE.items():
        ours = dict(strings(translated[node_id]))
        for where, source in strings(english):
            text = ours[where]
            if not CJK.search(text) or text == source:
                problems.append(f"{node_id} {where}: not translated: {text!r}")
            lost = sorted(set(TOKENS.findall(source)) - set(TOKENS.findall(text)))
            lost = [token for token in lost if token not in text]
            if lost:
                problems.append(f"{node_id} {where}: {lost} of the English text are missing "
                                "(stale translation?)")
    assert problems == []


@pytest.mark.parametrize("locale", LOCALES)
def test_no_text_is_read_as_vue_i18n_syntax(locale):
    found = [f"{node_id} {where}: {text!r}"
             for node_id, entry in node_defs(locale).items()
             for where, text in strings(entry) if VUE_I18N_SYNTAX.search(text or "")]
    main = LOCALES_DIR / locale / "main.json"
    if main.is_file():
        found += [f"main.json: {text!r}" for text in _leaves(load(main))
                  if VUE_I18N_SYNTAX.search(text)]
    assert found == []


def _leaves(data):
    if isinstance(data, dict):
        for value in data.values():
            yield from _leaves(value)
    else:
        yield data


@pytest.mark.parametrize("locale", TRANSLATED)
def test_main_json_translates_only_the_packs_own_category(locale):
    # main.json is merged into the frontend's own messages for every node: a translation of
    # "api node" or "image" here would replace ComfyUI's for all nodes. So only the pack's
    # own segment, and nothing stale.
    path = LOCALES_DIR / locale / "main.json"
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    data = load(path)
    assert set(data) == {"nodeCategories"}
    own = {cls.CATEGORY.split("/")[-1] for cls in pack.NODE_CLASS_MAPPINGS.values()}
    assert set(data["nodeCategories"]) == own
    assert own <= category_segments()
    for segment, text in data["nodeCategories"].items():
        assert CJK.search(text) and text != segment


# -- with a real ComfyUI -----------------------------------------------------------------------


def _comfyui():
    directory, python = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if not directory or not python:
        return None
    return Path(directory), Path(python)


@pytest.mark.skipif(_comfyui() is None,
                    reason="COMFYUI_DIR and COMFYUI_PYTHON are not set (no ComfyUI here)")
def test_comfyui_serves_the_translations_at_get_i18n(tmp_path):
    from support import comfyui as harness  # the integration tests' harness (tests/)

    found = harness.comfyui_location()
    if isinstance(found, str):
        pytest.skip(found)
    base = harness.make_base_dir(tmp_path / "base")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DASHSCOPE_", "QWEN_IMAGE_"))}
    env.update({"HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"})
    server = harness.ComfyUI(*found, base=base, env=env)
    server.start()
    try:
        i18n = server.get("/i18n")
        object_info = server.get("/object_info")
    finally:
        server.stop()
    assert set(CODE) <= set(object_info), "the pack did not load:\n" + server.log_text()[-3000:]
    assert set(locale_names()) <= set(i18n)
    for locale in locale_names():
        served = i18n[locale]
        for node_id in CODE:
            ours = node_defs(locale)[node_id]
            assert served["nodeDefs"][node_id]["display_name"] == ours["display_name"]
            assert served["nodeDefs"][node_id] == ours
        main = LOCALES_DIR / locale / "main.json"
        if main.is_file():
            for key, value in load(main).items():
                assert served[key] == value
    # What a Chinese user sees: the node names in Chinese.
    assert i18n["zh"]["nodeDefs"]["DashScopeQwenImageTextToImage"]["display_name"].startswith(
        "通义千问")
