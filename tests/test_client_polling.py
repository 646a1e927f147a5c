"""Polling: the end of a task is noticed quickly, and no task is queried more than 2/s;
the first tasks of a process too, with or without durations learned by an earlier one."""
import json
import statistics
import threading
import time

import pytest

from qwen_image_dashscope.api import TextToImageRequest
from qwen_image_dashscope.api.call.polling import (
    ALIGN,
    MIN_GAP,
    MIN_INTERVAL,
    PAIR_WINDOW,
    SNAP_SLACK,
    DurationEstimator,
    PollSchedule,
    service_duration,
)
from qwen_image_dashscope.api.emulator import Emulator
from qwen_image_dashscope.api.state import PROCESS_STATE
from qwen_image_dashscope.api.storage import durations as durations_store
from support.client import api_requests, make_client

REAL_POLL_SCHEDULE = True  # conftest's quick_polls leaves this module the real schedule


def test_task_end_is_noticed_quickly_without_hammering():
    with Emulator(latency=0.7) as emu, make_client(emu) as client:
        results = [client.text_to_image(TextToImageRequest(f"picture {i}")) for i in range(3)]
        tasks = {t["id"]: t for t in emu.tasks}
        delays = []
        for result in results:
            polls = api_requests(emu, f"/tasks/{result.task_id}", "GET")
            times = [p.time for p in polls]
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert all(gap >= MIN_INTERVAL - SNAP_SLACK - 0.03 for gap in gaps), gaps
            span = times[-1] - tasks[result.task_id]["submit_time"]
            assert len(polls) <= 2 * span + 1
            delays.append(times[-1] - tasks[result.task_id]["end_time"])
        assert all(delay >= 0 for delay in delays)
        assert statistics.median(delays) <= 0.5, delays
        key = (emu.base_url("ap-southeast-1"), "qwen-image-plus", "async")
        learned, _ = PROCESS_STATE.durations.expected(key)
        assert learned == pytest.approx(0.7, abs=0.2)


def _poll_times(schedule, until):
    times, now = [], 0.0
    while now < until:
        now += schedule.next_delay(now)
        times.append(now)
    return times


def test_schedule_for_the_real_service():
    schedule = PollSchedule(expected=15.0, deviation=3.75)
    times = _poll_times(schedule, 40.0)
    gaps = [b - a for a, b in zip([0.0] + times, times, strict=False)]
    assert times[0] == MIN_INTERVAL  # an instant failure is seen at once
    assert min(gaps) >= MIN_INTERVAL - SNAP_SLACK - 1e-9 and max(gaps) <= 5.0
    assert 15.0 + ALIGN - 1e-6 <= next(t for t in times if t >= 15.0) <= 15.0 + ALIGN + 1e-6
    assert sum(1 for t in times if t <= 15.0) <= 22  # sparse early: far fewer than 2/s
    # From shortly before the expected end until well after it, an end is seen within 0.5 s.
    for end in [8.0 + 0.1 * k for k in range(200)]:
        noticed = next(t for t in times if t >= end)
        assert noticed - end <= MIN_INTERVAL + 1e-9, end
    assert schedule.next_delay(200.0) == 3.0  # a task stuck in a queue is polled gently


def test_estimator_adapts_fast():
    estimator = DurationEstimator(initial=15.0)
    key = ("https://example", "qwen-image-plus", "async")
    assert estimator.expected(key) == (15.0, 3.75)
    estimator.record(key, 4.0)
    assert estimator.expected(key)[0] == 4.0  # the first real task replaces the prior
    estimator.record(key, 6.0)
    assert estimator.expected(key)[0] == 5.0


def test_service_duration_from_task_times():
    output = {"submit_time": "2025-09-09 13:39:20.659", "end_time": "2025-09-09 13:39:45.233"}
    assert service_duration(output) == pytest.approx(24.574)
    assert service_duration({"submit_time": "garbled"}) is None


def test_without_a_prior_polls_evenly_then_follows_what_a_sibling_taught():
    learned = []
    schedule = PollSchedule.without_prior(lambda: learned[0] if learned else None)
    times = _poll_times(schedule, 1.0)
    assert times == pytest.approx([MIN_INTERVAL, 2 * MIN_INTERVAL])  # evenly, from the start
    learned.append((1.2, 0.1))  # another task of the model ended after 1.2 s
    for _ in range(3):
        times.append(times[-1] + schedule.next_delay(times[-1]))
    # The expected end is between two grid steps of the new schedule: the next poll comes
    # as soon as the pace allows, not a grid step later.
    assert times[2] - 1.2 <= MIN_INTERVAL
    assert all(b - a >= MIN_GAP for a, b in zip(times, times[1:], strict=False))
    assert all(c - a >= PAIR_WINDOW - 1e-9 for a, c in zip(times, times[2:], strict=False))


def test_the_first_batch_of_a_process_is_noticed_as_fast_as_later_ones():
    with Emulator(latency=1.3) as emu, make_client(emu) as client:
        results = [client.text_to_image(TextToImageRequest(f"first {i}")) for i in range(2)]
        tasks = {t["id"]: t for t in emu.tasks}
        for result in results:
            polls = [p.time for p in api_requests(emu, f"/tasks/{result.task_id}", "GET")]
            assert polls[-1] - tasks[result.task_id]["end_time"] <= MIN_INTERVAL
            assert max(sum(1 for u in polls if t <= u < t + 1.0) for t in polls) <= 2


def test_learned_durations_outlive_the_process(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the state folder: ~/.dashscope
    path = tmp_path / ".dashscope" / durations_store.FILE_NAME
    # A task of 0.4 s is seen at the first poll (0.55 s), not the second (1.1 s) as one of 0.6 s.
    with Emulator(latency=0.4) as emu:
        key = (emu.base_url("ap-southeast-1"), "qwen-image-plus", "async")
        with make_client(emu) as client:
            client.text_to_image(TextToImageRequest("a kite"))
        saved = json.loads(path.read_text(encoding="utf-8"))["durations"]
        assert [(e["model"], e["interface"]) for e in saved] == [("qwen-image-plus", "async")]
        PROCESS_STATE.reset()  # a new process ...
        assert PROCESS_STATE.durations.learned(key) is None
        with make_client(emu):
            pass
        learned, _ = PROCESS_STATE.durations.learned(key)  # ... knows it before any task
        assert learned == pytest.approx(0.4, abs=0.1)


def test_the_durations_file_keeps_other_entries_and_survives_garbage(tmp_path, caplog):
    path = tmp_path / durations_store.FILE_NAME
    other = {"base_url": "https://elsewhere", "model": "qwen-image", "interface": "async",
             "mean": 20.0, "deviation": 3.0, "updated": time.time()}
    stale = {**other, "model": "qwen-image-max", "updated": time.time() - 40 * 86400}
    path.write_text(json.dumps({"version": 1, "durations": [other, stale, {"junk": 1}]}))
    file = durations_store.DurationFile(path, threading.Lock())
    file.save(("https://here", "qwen-image-plus", "async"), (12.0, 2.0))
    loaded = file.load()
    assert loaded == {("https://elsewhere", "qwen-image", "async"): (20.0, 3.0),
                      ("https://here", "qwen-image-plus", "async"): (12.0, 2.0)}
    path.write_text("not json")
    assert file.load() == {}  # a broken file is an empty one, never an error
    file.save(("https://here", "qwen-image-plus", "async"), (11.0, 2.0))
    assert list(file.load().values()) == [(11.0, 2.0)]
    assert len([r for r in caplog.records if "cannot be kept" in r.getMessage()]) == 1
