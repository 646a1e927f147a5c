"""Throughput at the account's limits, and nothing lost: the nodes as ComfyUI's executor runs
them (``asyncio.gather`` of independent nodes' FUNCTIONs), against the emulator.

The client-level limiter tests are in test_client_limiter.py, the single-node reuse test in
test_nodes_text_to_image.py; this file adds what happens between nodes, under 429 storms
and server errors, and to the result store when something fails after the images arrived.
"""
import asyncio
import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_image_dashscope.api import TextToImageRequest
from qwen_image_dashscope.api.catalog.models import MODELS
from qwen_image_dashscope.api.catalog.pricing import usd_price
from qwen_image_dashscope.api.errors import TaskFailedError
from qwen_image_dashscope.api.service.retry import RetryPolicy
from qwen_image_dashscope.nodes import tensors
from qwen_image_dashscope.nodes.image_edit import DashScopeQwenImageEdit as Edit
from qwen_image_dashscope.nodes.text_to_image import DashScopeQwenImageTextToImage as T2I
from support.client import make_client, roomy_rate
from support.comfy_stubs.harness import png_pixels, run_node, saved_pixels, widget_defaults

T2I_MODEL, EDIT_MODEL = "qwen-image-plus", "qwen-image-edit-plus"
# An account that takes 10 calls a second, for the tests about what happens to calls and
# images, not about the account's rate: the refused attempts of a storm (each counted by the
# client's rate gate; each 429 without Retry-After pausing the model for one call's share of
# the second, a tenth here, not half) and the third image of a batch are not held for whole
# rate windows.
BUSY_ACCOUNT = roomy_rate(T2I_MODEL, EDIT_MODEL)


@pytest.fixture
def store_dir(service, tmp_path, monkeypatch):
    directory = tmp_path / "store"
    monkeypatch.setenv("QWEN_IMAGE_STORE_DIR", str(directory))
    return directory


def node_call(node_class, unique_id="1", **inputs):
    """The coroutine ComfyUI's executor awaits for one node: widget defaults plus inputs."""
    arguments = {**widget_defaults(node_class), "unique_id": unique_id, **inputs}
    return getattr(node_class(), node_class.FUNCTION)(**arguments)


def run_graph(*calls):
    """Independent nodes side by side, as ComfyUI's executor runs async nodes."""
    async def graph():
        return await asyncio.gather(*calls)
    return asyncio.run(graph())


def picture(batch=1, seed=0):
    return torch.rand(batch, 400, 520, 3, generator=torch.Generator().manual_seed(seed))


def posts(emu, path, status=None):
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith(path)
            and (status is None or r.status == status)]


def stored(store_dir) -> dict:
    """{png path: sidecar} of every image in the store; every PNG must have its sidecar."""
    pngs = sorted(store_dir.rglob("*.png"))
    sidecars = sorted(p for p in store_dir.rglob("*.json"))
    assert [p.with_suffix(".json") for p in pngs] == sidecars
    return {png: json.loads(png.with_suffix(".json").read_text(encoding="utf-8")) for png in pngs}


def assert_every_billed_image_is_stored(emu, store_dir) -> dict:
    """The store holds exactly the images the service made and billed, byte for byte."""
    files = stored(store_dir)
    served = emu.served_images
    assert len(files) == emu.stats["images_billed"] == len(served)
    assert {meta["url"] for meta in files.values()} == set(served)
    for png, meta in files.items():
        assert hashlib.sha256(png.read_bytes()).digest() == \
            hashlib.sha256(served[meta["url"]]).digest()
        assert meta["model"] in (T2I_MODEL, EDIT_MODEL) and meta["seed"] is not None
    return files


def wait_for_background_work(timeout=15.0):
    """A run cut short leaves its running task to the client's threads, which store it."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith("qwen-image-"):
            thread.join(max(0.0, deadline - time.monotonic()))
    assert not [t for t in threading.enumerate() if t.name.startswith("qwen-image-")]


# -- the limiter holds across nodes ------------------------------------------------------------

# Calls outlast the 1 s rate window, so slots (not only the rate) decide what runs at once.
@pytest.mark.parametrize("emulator", [{"latency": 1.2, "rate_limits": True}], indirect=True)
def test_nodes_running_together_share_one_limiter_per_model(service, comfy, store_dir):
    outputs = run_graph(
        node_call(T2I, "1", prompt="a red kite", seed=0, batch=3, reuse_stored=False),
        node_call(T2I, "2", prompt="a blue kite", seed=50, batch=3, reuse_stored=False),
        node_call(Edit, "3", image=picture(batch=3), prompt="paint it in ink", seed=7,
                  reuse_stored=False))
    assert [int(images.shape[0]) for images, _, _, _ in outputs] == [3, 3, 3]
    stats = service.stats
    (key_id,) = {key for key, _ in stats["max_requests_per_second"]}
    t2i, edit = (key_id, T2I_MODEL), (key_id, EDIT_MODEL)
    # One process never breaks the account's limits, whatever the number of nodes.
    assert stats["max_requests_per_second"] == {t2i: 2, edit: 2}
    assert stats["max_concurrent_tasks"] == {t2i: 2}
    assert stats["max_outstanding_tasks"] == {t2i: 2}  # none ever queued at the service
    # Synchronous edits take no task slot (the edit reference: unlimited in number): the
    # rate alone holds them, so the third runs beside the first two.
    assert len(posts(service, "/generation", 200)) == 3
    assert stats["max_concurrent_calls"] == {edit: 3}
    assert stats["rate_limited"] == 0
    assert stats["tasks_created"] == 6 and stats["images_billed"] == 9
    assert_every_billed_image_is_stored(service, store_dir)


@pytest.mark.parametrize("emulator", [{"latency": 1.2}], indirect=True)
def test_two_qwen_nodes_started_together_run_side_by_side(service, comfy):
    latency = service.latency
    started = time.monotonic()
    (t2i_images, _, _, _), (edit_images, _, _, _) = run_graph(
        node_call(T2I, "1", prompt="a lantern", seed=1, reuse_stored=False),
        node_call(Edit, "2", image=picture(), prompt="add a lantern", seed=1,
                  reuse_stored=False))
    wall = time.monotonic() - started
    assert t2i_images.shape[0] == 1 and edit_images.shape[0] == 1
    (task,) = service.tasks
    (edit,) = posts(service, "/generation", 200)
    # The service worked on both at once ...
    assert max(task["submit_time"], edit.time) < min(task["end_time"], edit.time + latency)
    # ... so the graph took about one call, where one node after the other takes two.
    assert wall < 1.65 * latency, wall


@pytest.mark.parametrize("emulator", [{"latency": 0.8}], indirect=True)
def test_a_large_batch_does_not_hold_up_an_independent_node(service, comfy):
    ends = {}

    async def graph():
        # The default executor asyncio gives a 2-CPU machine: min(32, 2 + 4) threads.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(6))
        started = time.monotonic()

        async def timed(name, call):
            await call
            ends[name] = time.monotonic() - started

        await asyncio.gather(
            timed("t2i", node_call(T2I, "1", prompt="six kites", batch=6, reuse_stored=False)),
            timed("edit", node_call(Edit, "2", image=picture(), prompt="one kite",
                                    reuse_stored=False)))

    asyncio.run(graph())
    # The edit model's slots are free the whole time: one call's latency plus a little
    # (held up, it starts only once the batch's first two tasks end: two latencies and more).
    print("ENDS", ends)
    assert ends["edit"] < 1.5 * service.latency + 0.15, ends


# -- 429 storms and server errors ----------------------------------------------------------------


# A Retry-After of a quarter of a second (the service's are whole seconds; the client takes
# any number), so four waits in a row cost one second, not four.
@pytest.mark.parametrize("retry_after", [None, 0.25],
                         ids=["without-Retry-After", "Retry-After-0.25"])
@pytest.mark.parametrize("emulator", [{"latency": 0.2, **BUSY_ACCOUNT}], indirect=True)
def test_429_storms_are_absorbed_and_nothing_is_created_twice(service, comfy, store_dir,
                                                              retry_after):
    storm = {"status": 429, "code": "Throttling.RateQuota",
             "message": "Requests rate limit exceeded, please try again later.",
             "retry_after": retry_after}
    for path in ("/image-synthesis", "/generation", "/tasks/"):  # create, edit, task query
        service.inject("http_error", count=4, path=path, **storm)
    (t2i_images, _, t2i_info, _), (edit_images, _, edit_info, _) = run_graph(
        node_call(T2I, "1", prompt="a storm", seed=30, batch=3, reuse_stored=False),
        node_call(Edit, "2", image=picture(batch=2), prompt="after the storm", seed=30,
                  reuse_stored=False))
    assert service.faults == []  # the whole storm was met ...
    refused = [r for r in service.requests if r.status == 429]
    assert len(refused) == 12 and service.stats["faults_fired"] == 12
    if retry_after is not None:  # ... every request waited as told before trying again ...
        attempts = {}
        for r in posts(service, "/image-synthesis") + posts(service, "/generation"):
            attempts.setdefault((r.path, r.json["parameters"]["seed"]), []).append(r)
        gaps = [b.time - a.time for tries in attempts.values()
                for a, b in zip(tries, tries[1:], strict=False) if a.status == 429]
        assert len(gaps) == 8 and min(gaps) >= 0.95 * retry_after, gaps
    # ... and every image came, each made once.
    assert t2i_images.shape[0] == 3 and edit_images.shape[0] == 2
    assert json.loads(t2i_info)["failures"] == [] and json.loads(edit_info)["failures"] == []
    assert service.stats["tasks_created"] == 3
    assert sorted(t["seed"] for t in service.tasks) == [30, 31, 32]
    assert len(posts(service, "/generation", 200)) == 2
    assert_every_billed_image_is_stored(service, store_dir)


@pytest.mark.parametrize("emulator", [BUSY_ACCOUNT], indirect=True)
def test_a_429_storm_longer_than_the_attempt_budget_is_still_absorbed(emulator):
    # A storm is not a failure of the service: waiting it out within the time budget
    # (RetryPolicy.total) costs nothing, giving up costs the user a failed run.
    emulator.inject("http_error", count=5, path="/image-synthesis", status=429,
                    code="Throttling.RateQuota", message="Requests rate limit exceeded.")
    policy = RetryPolicy(attempts=4, base=0.05, cap=0.2, total=10.0)
    with make_client(emulator, retry=policy) as client:
        result = client.text_to_image(TextToImageRequest("a storm", seed=1))
    assert len(result.images) == 1 and emulator.stats["tasks_created"] == 1


@pytest.mark.parametrize("emulator", [{"latency": 0.2, **BUSY_ACCOUNT}], indirect=True)
def test_server_errors_are_survived(service, comfy, store_dir):
    service.inject("http_error", count=3, path="/image-synthesis")  # 500 InternalError
    service.inject("http_error", count=2, path="/generation", status=503,
                   code="ServiceUnavailable", message="The service is busy.")
    service.inject("http_error", count=2, path="/tasks/", status=500)
    service.inject("non_json", count=2, path="/tasks/")  # a gateway's page: a query repeats safely
    (t2i_images, _, _, _), (edit_images, _, _, _) = run_graph(
        node_call(T2I, "1", prompt="a lighthouse", seed=60, batch=2, reuse_stored=False),
        node_call(Edit, "2", image=picture(), prompt="a lighthouse at dawn", seed=60,
                  reuse_stored=False))
    assert service.faults == [] and service.stats["faults_fired"] == 9
    assert t2i_images.shape[0] == 2 and edit_images.shape[0] == 1
    assert service.stats["tasks_created"] == 2 and len(posts(service, "/generation", 200)) == 1
    assert_every_billed_image_is_stored(service, store_dir)


# -- the store keeps what was paid for ---------------------------------------------------------

@pytest.mark.parametrize("emulator", [BUSY_ACCOUNT], indirect=True)
def test_images_are_on_disk_before_the_node_decodes_them(service, comfy, store_dir, monkeypatch):
    def decode_fails(datas, files=None, decoded=None, out=None):
        raise MemoryError("no room for the output tensor")

    monkeypatch.setattr(tensors, "decode_images", decode_fails)
    with pytest.raises(MemoryError):
        run_node(T2I, prompt="a paper crane", seed=20, batch=3, reuse_stored=False)
    files = assert_every_billed_image_is_stored(service, store_dir)
    assert sorted(meta["seed"] for meta in files.values()) == [20, 21, 22]


@pytest.mark.parametrize("emulator", [BUSY_ACCOUNT], indirect=True)
def test_a_failing_downstream_node_loses_no_image(service, comfy, store_dir):
    seen = {}

    async def graph():
        images, _, info, _ = await node_call(T2I, prompt="a paper crane", seed=40, batch=3,
                                          reuse_stored=False)
        seen["images"], seen["info"] = images, json.loads(info)
        raise RuntimeError("the downstream node failed")  # e.g. a save node on a full disk

    with pytest.raises(RuntimeError, match="downstream"):
        asyncio.run(graph())
    files = assert_every_billed_image_is_stored(service, store_dir)
    # The info output names the files, and they hold the very pixels the node returned.
    named = [path for request in seen["info"]["requests"] for path in request["files"]]
    assert sorted(named) == sorted(str(path) for path in files)
    for index, path in enumerate(named):
        assert np.array_equal(saved_pixels(seen["images"][index:index + 1])[0],
                              png_pixels(Path(path).read_bytes()))


@pytest.mark.parametrize("choice", ["fail", "return successful"])
@pytest.mark.parametrize("emulator", [{"latency": 0.3, **BUSY_ACCOUNT}], indirect=True)
def test_partial_failure_keeps_every_successful_image_on_disk(service, comfy, store_dir,
                                                              choice):
    service.inject("task_failed", count=1)
    if choice == "fail":
        with pytest.raises(TaskFailedError):
            run_node(T2I, prompt="three kites", seed=80, batch=3, reuse_stored=False,
                     on_partial_failure=choice)
        wait_for_background_work()  # the task running beside the failed one ends later
    else:
        images, _, info, _ = run_node(T2I, prompt="three kites", seed=80, batch=3,
                                   reuse_stored=False, on_partial_failure=choice)
        record = json.loads(info)
        assert images.shape[0] == 2 and len(record["failures"]) == 1
    failed = [t for t in service.tasks if t["status"] == "FAILED"]
    assert len(failed) == 1
    files = assert_every_billed_image_is_stored(service, store_dir)
    assert len(files) >= 1 and failed[0]["id"] not in {m["task_id"] for m in files.values()}
    if choice != "fail":
        assert len(files) == 2


# -- reuse ---------------------------------------------------------------------------------------

def test_reusing_an_edit_batch_sends_nothing(service, comfy, store_dir):
    inputs = picture(batch=2, seed=4)
    first, _, _, _ = run_node(Edit, image=inputs, prompt="make it autumn", seed=3,
                           reuse_stored=True)
    sent, billed = len(service.requests), service.stats["images_billed"]
    again, _, info, _ = run_node(Edit, image=inputs, prompt="make it autumn", seed=3,
                              reuse_stored=True)
    assert len(service.requests) == sent and service.stats["images_billed"] == billed == 2
    record = json.loads(info)
    assert [r["from_store"] for r in record["requests"]] == [True, True]
    assert record["estimated_cost_usd"] == 0
    assert any("served from the result store" in note for note in record["notes"])
    assert torch.equal(first, again)


@pytest.mark.parametrize("emulator", [BUSY_ACCOUNT], indirect=True)
def test_a_batch_reuses_what_it_can_and_pays_only_for_the_rest(service, comfy, store_dir):
    run_node(T2I, prompt="a tea house", seed=5, batch=2, reuse_stored=True)
    before = len(posts(service, "/image-synthesis"))
    images, _, info, _ = run_node(T2I, prompt="a tea house", seed=5, batch=3, reuse_stored=True)
    new = posts(service, "/image-synthesis")[before:]
    assert [r.json["parameters"]["seed"] for r in new] == [7]  # only the image not stored
    record = json.loads(info)
    assert [r["from_store"] for r in record["requests"]] == [True, True, False]
    price = usd_price(MODELS[T2I_MODEL], "ap-southeast-1").output
    assert record["estimated_cost_usd"] == pytest.approx(price)
    assert images.shape[0] == 3 and service.stats["images_billed"] == 3
