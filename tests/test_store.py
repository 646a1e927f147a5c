"""The result store: images and sidecars on disk before use, and reuse of identical requests."""
import dataclasses
import json
from pathlib import Path

import pytest

from qwen_image_dashscope.api import (
    ImageEditRequest,
    ResultStore,
    TextToImageRequest,
    request_fingerprint,
)
from qwen_image_dashscope.api.emulator import SINGAPORE_KEY
from support.client import SG, api_requests, make_client, png_bytes, roomy_rate

SEEDED = TextToImageRequest("a windmill in snow", negative_prompt="people", seed=1234)


def test_every_image_is_written_with_its_sidecar(emu, store):
    with make_client(emu, store=store) as client:
        result = client.text_to_image(SEEDED)
    [image] = result.images
    png = Path(image.saved_path)
    assert png.read_bytes() == image.data == emu.served_images[image.url]
    sidecar = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["model"] == "qwen-image-plus" and sidecar["region"] == SG
    assert sidecar["prompt"] == "a windmill in snow" and sidecar["negative_prompt"] == "people"
    assert sidecar["parameters"] == {"size": "1328*1328", "n": 1, "prompt_extend": True,
                                     "watermark": False, "seed": 1234}
    assert sidecar["seed"] == 1234
    assert sidecar["task_id"] == result.task_id and sidecar["request_id"] == result.request_id
    assert sidecar["usage"] == {"image_count": 1} and sidecar["url"] == image.url
    assert sidecar["call_cost_usd"] == pytest.approx(0.03)
    assert (sidecar["width"], sidecar["height"]) == (1328, 1328)
    assert sidecar["actual_prompt"] == result.actual_prompt
    assert sidecar["fingerprint"] == request_fingerprint(SEEDED, SG)
    assert sidecar["saved_at"] and sidecar["end_time"] == result.end_time
    files = [p for p in store.directory.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".part")]  # no temporary files left
    for path in files:
        assert SINGAPORE_KEY.encode() not in path.read_bytes()


def test_edit_inputs_are_described_not_copied(emu, store):
    source = png_bytes(400, 400)
    with make_client(emu, store=store) as client:
        result = client.edit_image(ImageEditRequest("paint it", images=(source,), n=2, seed=5))
    assert len(result.images) == 2
    sidecars = sorted(store.directory.rglob("*.json"))
    assert len(sidecars) == 2
    meta = json.loads(sidecars[0].read_text(encoding="utf-8"))
    assert meta["inputs"] == [{"sha256": meta["inputs"][0]["sha256"], "bytes": len(source)}]
    assert meta["index"] in (1, 2)


def test_identical_seeded_request_is_served_from_the_store(emu, store):
    with make_client(emu, store=store) as client:
        first = client.text_to_image(SEEDED, reuse=True)
        posts_before = len([r for r in emu.requests if r.method == "POST"])
        again = client.text_to_image(SEEDED, reuse=True)
        assert len([r for r in emu.requests if r.method == "POST"]) == posts_before == 1
        assert again.from_store and not first.from_store
        assert [i.data for i in again.images] == [i.data for i in first.images]
        assert again.cost_usd == 0.0 and again.task_id == first.task_id
        assert any("nothing was sent or billed" in note for note in again.notes)

        changed = client.text_to_image(dataclasses.replace(SEEDED, seed=1235), reuse=True)
        assert not changed.from_store
        assert len(api_requests(emu, "/image-synthesis", "POST")) == 2


@pytest.mark.parametrize("emulator", [roomy_rate("qwen-image-plus")], indirect=True)  # 4 calls
def test_reuse_needs_a_seed_and_is_opt_in(emu, store):
    unseeded = dataclasses.replace(SEEDED, seed=None)
    with make_client(emu, store=store) as client:
        client.text_to_image(unseeded, interface="sync")
        second = client.text_to_image(unseeded, interface="sync", reuse=True)
        client.text_to_image(SEEDED, interface="sync")
        third = client.text_to_image(SEEDED, interface="sync")  # reuse not asked for
    assert not second.from_store and not third.from_store
    assert "reuse skipped: without a fixed seed" in " ".join(second.notes)
    assert len(api_requests(emu, "/generation", "POST")) == 4


def test_fingerprint_covers_everything_that_shapes_the_image():
    base = request_fingerprint(SEEDED, SG)
    assert base == request_fingerprint(TextToImageRequest("a windmill in snow",
                                                          negative_prompt="people", seed=1234), SG)
    for changed in (dataclasses.replace(SEEDED, prompt="a windmill in rain"),
                    dataclasses.replace(SEEDED, negative_prompt=""),
                    dataclasses.replace(SEEDED, seed=1),
                    dataclasses.replace(SEEDED, size="1664*928"),
                    dataclasses.replace(SEEDED, watermark=True),
                    dataclasses.replace(SEEDED, prompt_extend=False),
                    dataclasses.replace(SEEDED, model="qwen-image")):
        assert request_fingerprint(changed, SG) != base
    assert request_fingerprint(SEEDED, "cn-beijing") != base
    edit = ImageEditRequest("x", images=(png_bytes(colour=(1, 2, 3)),), seed=1)
    other = dataclasses.replace(edit, images=(png_bytes(colour=(1, 2, 4)),))
    assert request_fingerprint(edit, SG) != request_fingerprint(other, SG)
    assert request_fingerprint(edit, SG) == request_fingerprint(
        dataclasses.replace(edit, images=(png_bytes(colour=(1, 2, 3)),)), SG)


def test_lookup_ignores_deleted_files(emu, store):
    with make_client(emu, store=store) as client:
        result = client.text_to_image(SEEDED, interface="sync")
    fingerprint = request_fingerprint(SEEDED, SG)
    assert [s.data for s in store.lookup(fingerprint)] == [result.images[0].data]
    Path(result.images[0].saved_path).unlink()
    assert store.lookup(fingerprint) is None
    assert ResultStore(store.directory / "empty").lookup(fingerprint) is None


def test_an_unwritable_store_does_not_lose_the_images(emu, tmp_path, caplog):
    not_a_folder = tmp_path / "plain-file"
    not_a_folder.write_text("x", encoding="utf-8")
    with make_client(emu, store=ResultStore(not_a_folder / "results")) as client:
        result = client.text_to_image(SEEDED, interface="sync")
    [image] = result.images
    assert image.data == emu.served_images[image.url] and image.saved_path is None
    assert any("could not be saved to the result store" in note for note in result.notes)
    assert image.url in caplog.text
