"""The pack never exceeds DashScope's per-model limits, whatever the number of callers;
the quotas API and the service's refusals are in test_quotas.py and test_adaptive_limits.py."""
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from qwen_image_dashscope.api import ImageEditRequest, TextToImageRequest
from qwen_image_dashscope.api.call.limiter import ModelLimits, RateGate
from qwen_image_dashscope.api.catalog.models import MODELS
from qwen_image_dashscope.api.config import key_fingerprint
from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator
from qwen_image_dashscope.api.state import PROCESS_STATE
from support.client import make_client, png_bytes


def test_four_concurrent_async_requests_stay_within_the_limits():
    # Tasks outlast the 2-per-second rate window, so only the concurrency limit keeps a
    # third task from being created while two run. (Four requests, two rounds, show it as
    # six did in three.)
    with Emulator(latency=1.1, rate_limits=True) as emu:
        clients = [make_client(emu) for _ in range(3)]  # separate clients share the limiter
        requests = [TextToImageRequest(f"picture {i}", seed=i) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: clients[i % 3].text_to_image(requests[i]),
                                    range(4)))
        stats = emu.stats
        bucket = next(iter(stats["max_requests_per_second"]))
        assert all(len(r.images) == 1 for r in results)
        assert len({r.task_id for r in results}) == 4
        assert stats["tasks_created"] == 4
        assert stats["max_concurrent_tasks"][bucket] <= 2
        assert stats["max_outstanding_tasks"][bucket] <= 2  # none even waited in the queue
        assert stats["max_requests_per_second"][bucket] <= 2
        assert stats["rate_limited"] == 0
        for c in clients:
            c.close()


def test_concurrent_sync_calls_keep_the_request_rate():
    with Emulator(latency=0.1, rate_limits=True) as emu, make_client(emu) as client:
        request = ImageEditRequest("blue", images=(png_bytes(),), model="qwen-image-edit",
                                   prompt_extend=None)
        with ThreadPoolExecutor(3) as pool:  # three at once: the third waits a second
            results = list(pool.map(lambda _: client.edit_image(request), range(3)))
        stats = emu.stats
        assert all(len(r.images) == 1 for r in results)
        assert max(stats["max_requests_per_second"].values()) <= 2
        assert stats["rate_limited"] == 0


def test_registry_is_keyed_by_fingerprint_and_model():
    spec = MODELS["qwen-image-plus"]
    limiter_for = PROCESS_STATE.limits.for_model
    assert limiter_for(SINGAPORE_KEY, spec) is limiter_for(SINGAPORE_KEY, spec)
    assert limiter_for(SINGAPORE_KEY, spec) is not limiter_for("sk-another-key", spec)
    assert limiter_for(SINGAPORE_KEY, spec) is not limiter_for(SINGAPORE_KEY, MODELS["qwen-image"])
    limiters = PROCESS_STATE.limits.limiters
    assert all(SINGAPORE_KEY not in key for key, _ in limiters)
    assert (key_fingerprint(SINGAPORE_KEY), "qwen-image-plus") in limiters


def test_rate_gate_slides():
    import time

    gate = RateGate(2, 0.2)
    started = time.monotonic()
    threads = [threading.Thread(target=gate.wait) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 5 events at 2 per 0.3 s (window plus margin): the fifth waits two windows.
    assert 0.55 <= time.monotonic() - started < 1.0


def test_new_limits_reach_a_limiter_in_use():
    # The quotas API told more slots (e.g. a refresh a day later): a waiting call goes on.
    spec = MODELS["qwen-image-plus"]
    limiter = PROCESS_STATE.limits.for_model(SINGAPORE_KEY, spec)
    held = [limiter.acquire(), limiter.acquire()]
    third = []
    waiter = threading.Thread(target=lambda: third.append(limiter.acquire()))
    waiter.start()
    waiter.join(0.2)
    assert not third  # two tasks at once: the third waits
    granted = replace(ModelLimits.from_spec(spec), concurrent=3, source="quotas API")
    assert PROCESS_STATE.limits.for_model(SINGAPORE_KEY, spec, granted) is limiter
    waiter.join(1.0)
    assert len(third) == 1 and limiter.concurrent == 3
    for slot in held + third:
        slot.release()
    assert PROCESS_STATE.limits.for_model(SINGAPORE_KEY, spec).limits == granted  # kept


def test_sync_calls_take_a_slot_only_where_the_reference_counts_them():
    edit = PROCESS_STATE.limits.for_model(SINGAPORE_KEY, MODELS["qwen-image-edit-plus"])
    plus = PROCESS_STATE.limits.for_model(SINGAPORE_KEY, MODELS["qwen-image-plus"])
    edits = [edit.acquire(sync=True) for _ in range(5)]  # never waits
    assert not any(slot.holds_slot for slot in edits)
    assert plus.acquire(sync=True).holds_slot  # text to image: 2 at once, sync or async
