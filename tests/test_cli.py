"""The qwen-image command line against the emulator: files in, files out."""
import io
import json

import pytest
from PIL import Image

from qwen_image_dashscope.api import cli
from qwen_image_dashscope.api.emulator import SINGAPORE_KEY

SYNC_PATH = "/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "/services/aigc/text2image/image-synthesis"


@pytest.fixture
def env(emulator, monkeypatch, tmp_path):
    for name in ("DASHSCOPE_API_KEY_AP_SOUTHEAST_1", "DASHSCOPE_API_KEY_CN_BEIJING",
                 "DASHSCOPE_API_REGION", "DASHSCOPE_HTTP_BASE_URL_AP_SOUTHEAST_1"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.dashscope/api_key of the developer
    monkeypatch.setenv("DASHSCOPE_API_KEY", SINGAPORE_KEY)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", emulator.base_url("ap-southeast-1"))
    return tmp_path


def _saved_pngs(out):
    return sorted(out.rglob("*.png"))


def test_generate_writes_the_served_png_and_its_sidecar(emulator, env, capsys):
    out = env / "out"
    code = cli.main(["generate", "a paper boat on a pond", "--size", "1664*928", "--seed", "7",
                     "--no-prompt-extend", "--out", str(out)])

    assert code == 0
    [create] = [r for r in emulator.requests if r.path.endswith(ASYNC_PATH)]
    assert create.json["input"]["prompt"] == "a paper boat on a pond"
    assert create.json["parameters"]["size"] == "1664*928"
    assert create.json["parameters"]["seed"] == 7
    assert create.json["parameters"]["prompt_extend"] is False
    [png] = _saved_pngs(out)
    assert png.read_bytes() in emulator.served_images.values()
    sidecar = json.loads(png.with_suffix(".json").read_text())
    assert sidecar["model"] == "qwen-image-plus"
    assert SINGAPORE_KEY not in png.with_suffix(".json").read_text()
    assert str(png) in capsys.readouterr().out


def test_edit_sends_the_file_bytes_and_saves_n_results(emulator, env, capsys):
    source = env / "cat.png"
    Image.new("RGB", (640, 480), (10, 120, 200)).save(source)
    out = env / "out"

    code = cli.main(["edit", "make it night", str(source), "--n", "2", "--seed", "3",
                     "--out", str(out)])

    assert code == 0
    [call] = [r for r in emulator.requests if r.path.endswith(SYNC_PATH)]
    assert emulator.input_images(call) == [source.read_bytes()]
    assert call.json["parameters"]["n"] == 2
    saved = _saved_pngs(out)
    assert len(saved) == 2
    assert {p.read_bytes() for p in saved} <= set(emulator.served_images.values())


def test_invalid_input_is_refused_with_one_message_and_nothing_sent(emulator, env, capsys):
    code = cli.main(["generate", "x" * 801, "--out", str(env / "out")])

    assert code == 2
    err = capsys.readouterr().err
    assert "prompt" in err and "800" in err
    assert not [r for r in emulator.requests if r.method == "POST"]


def test_missing_key_names_the_variables(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_API_KEY_AP_SOUTHEAST_1", raising=False)
    monkeypatch.delenv("DASHSCOPE_API_KEY_FILE_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    code = cli.main(["generate", "a kite", "--out", str(tmp_path / "out")])

    assert code == 2
    assert "DASHSCOPE_API_KEY" in capsys.readouterr().err


def test_demo_without_a_key_runs_on_the_bundled_emulator(monkeypatch, tmp_path, capsys):
    for name in ("DASHSCOPE_API_KEY", "DASHSCOPE_API_KEY_AP_SOUTHEAST_1",
                 "DASHSCOPE_API_KEY_FILE_PATH", "DASHSCOPE_HTTP_BASE_URL",
                 "DASHSCOPE_API_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    out = tmp_path / "demo"

    code = cli.main(["demo", "--out", str(out), "--latency", "0.05"])

    assert code == 0
    captured = capsys.readouterr()
    assert "bundled emulator" in captured.err
    generated, edited = sorted(_saved_pngs(out), key=lambda p: p.stat().st_mtime)
    with Image.open(io.BytesIO(generated.read_bytes())) as image:
        assert image.size == (1328, 1328)
    with Image.open(io.BytesIO(edited.read_bytes())) as image:
        assert image.size == (1024, 1024)  # the edit keeps the input's 1:1 aspect near 1024*1024
    assert str(out.resolve()) in captured.out


@pytest.mark.parametrize("model, n, size, path", [
    ("qwen-image-3.0", "6", "1536x1024", "/services/aigc/image-generation/generation"),
    ("qwen-image-2.0-pro", "6", "2048*1152", SYNC_PATH),
    ("qwen-image-max", "1", "1472x1104", SYNC_PATH),
])
def test_generate_with_each_family_prints_the_cost(emulator, env, capsys, model, n, size, path):
    out = env / "out"
    code = cli.main(["generate", "a lighthouse at dawn", "--model", model, "--n", n,
                     "--size", size, "--seed", "5", "--out", str(out)])

    assert code == 0
    [call] = [r for r in emulator.requests if r.path.endswith(path) and r.method == "POST"]
    assert call.json["parameters"]["n"] == int(n)
    assert call.json["parameters"]["size"] == size.replace("x", "*")
    pngs = _saved_pngs(out)
    assert len(pngs) == int(n)
    for png in pngs:
        assert png.read_bytes() in emulator.served_images.values()
        with Image.open(png) as image:
            assert f"{image.width}*{image.height}" == size.replace("x", "*")
    printed = capsys.readouterr().out
    assert f"model {model}" in printed and "estimated cost $" in printed


@pytest.mark.parametrize("model", ["qwen-image-2.0", "qwen-image-edit-max", "qwen-image-3.0-pro"])
def test_edit_with_each_family_prints_the_cost(emulator, env, capsys, model):
    sources = []
    for index, colour in enumerate(((200, 20, 20), (20, 200, 20), (20, 20, 200))):
        sources.append(env / f"in{index}.png")
        Image.new("RGB", (640, 480), colour).save(sources[-1])
    out = env / "out"

    code = cli.main(["edit", "put them together", *map(str, sources), "--model", model,
                     "--n", "2", "--seed", "9", "--out", str(out)])

    assert code == 0
    [call] = [r for r in emulator.requests if r.path.endswith(SYNC_PATH)]
    assert emulator.input_images(call) == [s.read_bytes() for s in sources]
    assert len(_saved_pngs(out)) == 2
    printed = capsys.readouterr().out
    assert f"model {model}" in printed and "estimated cost $" in printed


def test_the_emulator_command_serves_rgba_results_on_request():
    from qwen_image_dashscope.api.cli.commands import build_parser

    assert build_parser().parse_args(["emulator", "--rgba"]).rgba is True
    assert build_parser().parse_args(["emulator"]).rgba is False
