"""Limits as the reference states them, adapted to what the service answers.

Synchronous edits are held by the request rate, not by task slots (the edit reference: sync
calls unlimited in number); a service stricter than documented (429 on concurrency) costs
seconds, never a failure or a second bill; a per-minute model is scheduled, never retried
into, and its wait is shown and cancellable.
"""
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from qwen_image_dashscope.api import ImageEditRequest, TextToImageRequest
from qwen_image_dashscope.api.call import limiter as limiter_module
from qwen_image_dashscope.api.call.limiter import (
    PROBE_AFTER,
    ModelLimiter,
    ModelLimits,
    RateGate,
    Window,
)
from qwen_image_dashscope.api.catalog.models import MODELS
from qwen_image_dashscope.api.emulator import Emulator
from qwen_image_dashscope.api.errors import CancelledError, RateLimitError, ServerError
from qwen_image_dashscope.api.state import PROCESS_STATE
from support.client import SYNC_PATH, api_requests, make_client, png_bytes, roomy_rate

EDIT = "qwen-image-edit-plus"
RATE_MESSAGE = "waiting for the model's rate limit: next call in"


def edit_request(seed: int, model: str = EDIT) -> ImageEditRequest:
    return ImageEditRequest("paint it blue", images=(png_bytes(),), model=model, seed=seed)


def run_together(client, requests):
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(client.edit_image, requests))


def billed_once_each(emu, seeds) -> bool:
    """Every seed was generated (answered 200) exactly once."""
    answered = [r.json["parameters"]["seed"] for r in api_requests(emu, SYNC_PATH, "POST")
                if r.status == 200]
    return sorted(answered) == sorted(seeds)


# -- against the emulator ----------------------------------------------------------------------

def test_sync_edits_run_beyond_two_at_once_within_the_request_rate():
    # Four calls (two rate windows) show it as six did (three windows): the second two are
    # sent while the first two run.
    latency, calls = 1.5, 4
    with Emulator(latency=latency, rate_limits=True) as emu, make_client(emu) as client:
        started = time.monotonic()
        results = run_together(client, [edit_request(seed) for seed in range(calls)])
        wall = time.monotonic() - started
        stats = emu.stats
    bucket = next(iter(stats["max_concurrent_calls"]))
    assert all(len(r.images) == 1 for r in results)
    assert stats["max_concurrent_calls"][bucket] > 2  # not held to two task slots ...
    assert stats["max_requests_per_second"][bucket] <= 2  # ... but to the 2 requests/s
    assert stats["rate_limited"] == 0
    # Two per second: the last two leave about a second after the first two.
    assert wall < latency + (calls - 1) / 2 + 0.6, wall


def test_a_service_stricter_than_documented_costs_seconds_not_failures():
    # The reference says sync edits are unlimited in number; this service takes 2 at once.
    # The account takes 10 requests a second, so the calls arrive while two run (at 2 a
    # second, each call had to outlast the rate window: 1.5 s).
    latency = 0.5
    with Emulator(latency=latency, rate_limits=True, sync_concurrency=2,
                  **roomy_rate(EDIT)) as emu, make_client(emu) as client:
        started = time.monotonic()
        results = run_together(client, [edit_request(seed) for seed in range(6)])
        wall = time.monotonic() - started
        stats = emu.stats
        refused = Counter(r.json["parameters"]["seed"]
                          for r in api_requests(emu, SYNC_PATH, "POST") if r.status == 429)
    assert [len(r.images) for r in results] == [1] * 6
    assert stats["errors"].get("Throttling", 0) >= 1  # it did refuse ...
    assert stats["images_billed"] == 6 and billed_once_each(emu, range(6))  # ... none twice
    bucket = next(iter(stats["max_concurrent_calls"]))
    assert stats["max_concurrent_calls"][bucket] == 2
    # The window learned it: later calls waited for room instead of being refused again.
    (limiter,) = PROCESS_STATE.limits.limiters.values()
    assert limiter.window.size <= 3 and max(refused.values()) <= 2
    assert wall < 3 * latency + 2.0, wall  # three rounds of two, and seconds, not failures


def test_text_to_image_sync_calls_keep_their_two_slots():
    # The account takes 10 requests a second: the rate cannot be what holds the four to two
    # at once (at 2 a second, each call had to outlast the rate window: 1.5 s).
    with Emulator(latency=0.4, rate_limits=True, **roomy_rate("qwen-image-plus")) as emu, \
            make_client(emu) as client:
        requests = [TextToImageRequest(f"kite {i}", seed=i) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda r: client.text_to_image(r, interface="sync"),
                                    requests))
        stats = emu.stats
    assert all(len(r.images) == 1 for r in results)
    assert max(stats["max_concurrent_calls"].values()) == 2
    assert stats["rate_limited"] == 0


# qwen-image-max's 2 per minute (the quotas API's official example, the emulator's default)
# scaled down to 2 per PERIOD seconds, so the test waits seconds, not a minute. (The client
# takes a quotas period of 1 s or more; the countdown shows whole seconds while 1 s or more
# is left: 3 s is the shortest period whose countdown always shows two numbers at least.)
PERIOD = 3


def test_a_per_minute_model_is_scheduled_and_its_wait_is_shown():
    # The third image waits for the window instead of being refused.
    scaled = {"qwen-image-max": {"request_limit": 2, "request_limit_period": PERIOD}}
    with Emulator(latency=0.2, rate_limits=True, quotas=scaled) as emu, \
            make_client(emu) as client:
        seen = []
        lock = threading.Lock()

        def one(seed):
            def on_progress(progress):
                with lock:
                    seen.append((seed, progress))
            return client.text_to_image(TextToImageRequest("a harbour", model="qwen-image-max",
                                                           seed=seed), on_progress=on_progress)

        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(one, range(3)))
        wall = time.monotonic() - started
        stats = emu.stats
    assert all(len(r.images) == 1 for r in results)
    assert stats["rate_limited"] == 0 and stats["images_billed"] == 3
    assert PERIOD <= wall < PERIOD + 1.0, wall  # the window, plus one call and a poll or two
    waits = [p for _, p in seen if p.message.startswith(RATE_MESSAGE)]
    assert waits and {p.stage for p in waits} == {"queued"}
    counts = [int(p.message[len(RATE_MESSAGE):].split()[0]) for p in waits]
    # A countdown from the start of the wait (a third of the period late at most), not one
    # stale number.
    assert max(counts) >= PERIOD and min(counts) <= 2
    assert counts == sorted(counts, reverse=True)
    # Nothing else is shown meanwhile (a generic "queued" tick would hide the countdown).
    (waiting_seed,) = {seed for seed, p in seen if p.message.startswith(RATE_MESSAGE)}
    events = [p for seed, p in seen if seed == waiting_seed]
    first = next(i for i, p in enumerate(events) if p.message.startswith(RATE_MESSAGE))
    last = max(i for i, p in enumerate(events) if p.message.startswith(RATE_MESSAGE))
    assert all(p.message.startswith(RATE_MESSAGE) for p in events[first:last + 1])


def test_cancel_ends_a_rate_wait_at_once_and_sends_nothing():
    with Emulator(latency=0.1, rate_limits=True) as emu, make_client(emu) as client:
        request = TextToImageRequest("a harbour", model="qwen-image-max")
        client.text_to_image(request)
        client.text_to_image(request)
        started = time.monotonic()
        cancel = threading.Event()
        noticed = []

        def on_progress(progress):
            if progress.message.startswith(RATE_MESSAGE) and not noticed:
                noticed.append(progress)
                cancel.set()

        with pytest.raises(CancelledError, match="nothing was billed"):
            client.text_to_image(request, on_progress=on_progress, cancel_event=cancel)
        cancelled_at = time.monotonic()
        time.sleep(0.3)  # a worker still waiting would send once the wait ends: it must not
        assert int(noticed[0].message[len(RATE_MESSAGE):].split()[0]) >= 55
        assert len(api_requests(emu, SYNC_PATH, "POST")) == 2
        assert emu.stats["rate_limited"] == 0
    assert cancelled_at - started < 1.0  # at once, not after the minute


# -- the parts ---------------------------------------------------------------------------------

def test_window_shrinks_to_what_was_served_and_grows_back():
    window = Window()

    def send():
        window.in_flight += 1
        window.mark_sent()

    for _ in range(6):
        send()
    for _ in range(4):  # 6 sent, 4 refused while 2 ran
        window.refused()
    assert window.size == 2 and window.in_flight == 2 and not window.has_room()
    for _ in range(6):
        send()
        window.succeeded()
    assert window.size == 2  # the refused level (3) is not probed again soon ...
    window._ceiling_until = time.monotonic() - 1  # ... but after PROBE_AFTER
    send()
    window.succeeded()
    assert 2 < window.size < 3 and PROBE_AFTER > 0


def test_a_refusal_counts_only_the_attempts_sent():
    window = Window()
    window.in_flight, window.sent = 6, 3  # three still wait for the rate
    window.refused()
    assert window.size == 2  # the other two sent were served


def test_only_a_429_shrinks_the_window_and_holds_the_rate():
    limits = ModelLimits(10, 1.0, 2, sync_limited=False, source="test")  # rate: room
    limiter = ModelLimiter(EDIT, limits)
    server_error = ServerError(500, "InternalError", "boom")
    throttled = RateLimitError(429, "Throttling", "Request concurrency limit exceeded",
                               retry_after=0.2)
    slots = [limiter.acquire(sync=True) for _ in range(2)]
    for slot in slots:
        slot.before_attempt()
    slots[0].refused(server_error)
    assert limiter.window.size is None and limiter.window.in_flight == 1
    slots[1].refused(throttled)
    assert limiter.window.size == 1 and limiter.window.in_flight == limiter.window.sent == 0
    started = time.monotonic()
    limiter.before_post()  # held for the Retry-After
    assert time.monotonic() - started >= 0.175


def test_rate_gate_counts_down_and_is_cancelled_at_once(monkeypatch):
    # Its reports four times as often: the three come in 0.125 s, not 0.5 s.
    monkeypatch.setattr(limiter_module, "COUNTDOWN_STEP", limiter_module.COUNTDOWN_STEP / 4)
    gate = RateGate(1, 2.0)
    gate.wait()
    reports = []
    cancel = threading.Event()

    def on_wait(left):
        reports.append(left)
        if len(reports) == 3:
            cancel.set()

    started = time.monotonic()
    with pytest.raises(CancelledError):
        gate.wait(cancel, on_wait=on_wait)
    assert time.monotonic() - started < 1.0
    assert reports == sorted(reports, reverse=True) and reports[0] > 1.9


def test_limits_of_the_reference():
    plus, edit, maximum = (ModelLimits.from_spec(MODELS[m]) for m in
                           ("qwen-image-plus", EDIT, "qwen-image-max"))
    assert (plus.requests, plus.period, plus.concurrent, plus.sync_limited) == (2, 1.0, 2, True)
    assert (edit.requests, edit.period, edit.sync_limited) == (2, 1.0, False)
    assert (maximum.requests, maximum.period) == (2, 60.0)
    assert "2 requests per minute" in maximum.describe()
