"""cancel_event: fast return, queued tasks cancelled unbilled, paid images never lost."""
import logging
import threading
import time

import pytest
import requests

from qwen_image_dashscope.api import (
    CancelledError,
    ImageEditRequest,
    TaskCanceledError,
    TextToImageRequest,
)
from qwen_image_dashscope.api.catalog.models import MODELS
from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator
from qwen_image_dashscope.api.state import PROCESS_STATE
from support.client import (
    ASYNC_PATH,
    SG,
    SYNC_PATH,
    api_requests,
    make_client,
    png_bytes,
    wait_until,
)


class CancelOn:
    """on_progress callback that sets the event at the first matching progress."""

    def __init__(self, predicate):
        self.event = threading.Event()
        self.predicate = predicate
        self.set_at = None
        self.seen = []

    def __call__(self, progress):
        self.seen.append(progress)
        if self.set_at is None and self.predicate(progress):
            self.set_at = time.monotonic()
            self.event.set()


def cancel_after(seconds):
    """An event set by a timer; ``times`` gets the moment it was set."""
    event, times = threading.Event(), []

    def fire():
        times.append(time.monotonic())
        event.set()

    threading.Timer(seconds, fire).start()
    return event, times


def _stored_pngs(store):
    return sorted(store.directory.rglob("*.png")) if store.directory.exists() else []


def occupy_the_service(emu):
    """Two tasks of another program on the same key and model keep the service's two
    processing slots busy, so the pack's next task waits PENDING."""
    for prompt in ("blocker one", "blocker two"):
        requests.post(emu.base_url(SG) + ASYNC_PATH, timeout=5,
                      json={"model": "qwen-image-plus", "input": {"prompt": prompt}},
                      headers={"Authorization": f"Bearer {SINGAPORE_KEY}",
                               "X-DashScope-Async": "enable"}).raise_for_status()


def test_cancel_of_a_queued_task_cancels_it_unbilled():
    # The blockers run half a second: ours is cancelled within milliseconds of its creation.
    with Emulator(latency=0.5, rate_limits=False) as emu, make_client(emu) as client:
        occupy_the_service(emu)
        cancel = CancelOn(lambda p: p.task_id is not None)
        with pytest.raises(CancelledError) as caught:
            client.text_to_image(TextToImageRequest("mine"), on_progress=cancel,
                                 cancel_event=cancel.event)
        returned_after = time.monotonic() - cancel.set_at
        task_id = cancel.seen[-1].task_id
        assert returned_after < 0.3
        assert f"Task {task_id} was still queued and has been cancelled" in str(caught.value)
        assert "nothing was billed" in str(caught.value)
        [mine] = [t for t in emu.tasks if t["id"] == task_id]
        assert mine["status"] == "CANCELED" and mine["urls"] == []
        [cancel_call] = api_requests(emu, f"/tasks/{task_id}/cancel", "POST")
        assert cancel_call.status == 200
        assert wait_until(lambda: all(t["status"] != "RUNNING" for t in emu.tasks))
        assert emu.stats["images_billed"] == 2  # the blockers only


def test_cancel_of_a_running_task_saves_its_image_later(store, caplog):
    caplog.set_level(logging.INFO)
    with Emulator(latency=1.0) as emu, make_client(emu, store=store) as client:
        cancel = CancelOn(lambda p: p.stage == "running")
        with pytest.raises(CancelledError) as caught:
            client.text_to_image(TextToImageRequest("a storm"), on_progress=cancel,
                                 cancel_event=cancel.event)
        assert time.monotonic() - cancel.set_at < 0.2
        assert "had already started and cannot be stopped" in str(caught.value)
        assert str(store.directory) in str(caught.value)
        assert not api_requests(emu, "/cancel")
        assert wait_until(lambda: len(_stored_pngs(store)) == 1, timeout=5)
        [url] = emu.tasks[0]["urls"]
        assert _stored_pngs(store)[0].read_bytes() == emu.served_images[url]
        assert wait_until(lambda: "were saved" in caplog.text)


def test_cancel_during_a_sync_call_returns_at_once_and_keeps_the_image(store, caplog):
    caplog.set_level(logging.INFO)
    with Emulator(latency=1.0) as emu, make_client(emu, store=store) as client:
        event, set_at = cancel_after(0.3)
        with pytest.raises(CancelledError) as caught:
            client.edit_image(ImageEditRequest("a hat", images=(png_bytes(),)),
                              cancel_event=event)
        assert time.monotonic() - set_at[0] < 0.2
        assert "synchronous request was already sent and cannot be stopped" in str(caught.value)
        assert wait_until(lambda: len(_stored_pngs(store)) == 1, timeout=5)
        [url] = emu.served_images
        assert _stored_pngs(store)[0].read_bytes() == emu.served_images[url]
        assert emu.stats["images_billed"] == 1
        assert len(api_requests(emu, SYNC_PATH)) == 1
        assert wait_until(lambda: "were saved" in caplog.text)


def test_cancel_without_a_store_logs_the_urls(caplog):
    caplog.set_level(logging.INFO)
    with Emulator(latency=0.6) as emu, make_client(emu) as client:
        event, _ = cancel_after(0.2)
        with pytest.raises(CancelledError) as caught:
            client.text_to_image(TextToImageRequest("a moon"), interface="sync",
                                 cancel_event=event)
        assert "No result store is configured" in str(caught.value)
        assert wait_until(lambda: bool(emu.served_images))
        [url] = emu.served_images
        assert wait_until(lambda: url in caplog.text)


def test_cancel_while_waiting_for_a_slot_sends_nothing(emu):
    model_limiter = PROCESS_STATE.limits.for_model(SINGAPORE_KEY, MODELS["qwen-image-plus"])
    held = [model_limiter.acquire(), model_limiter.acquire()]
    seen = []
    event, _ = cancel_after(0.2)
    with make_client(emu) as client:
        with pytest.raises(CancelledError) as caught:
            client.text_to_image(TextToImageRequest("a queue"), on_progress=seen.append,
                                 cancel_event=event)
    assert "before the request was sent; nothing was billed" in str(caught.value)
    assert any("waiting for one of the 2 qwen-image-plus" in p.message for p in seen)
    # Only the free read of the account's limits went out, nothing billable.
    assert [r.path.rsplit("/", 1)[-1] for r in emu.requests] == ["quotas"]
    for slot in held:
        slot.release()


def test_a_task_cancelled_elsewhere_ends_the_wait():
    with Emulator(latency=0.6, rate_limits=False) as emu, make_client(emu) as client:
        occupy_the_service(emu)
        task_id = client.create_task(TextToImageRequest("queued"))
        client.cancel_task(task_id)  # e.g. from another program
        with pytest.raises(TaskCanceledError) as caught:
            client.wait_task(task_id)
        assert caught.value.task_id == task_id and caught.value.status == "CANCELED"
        assert "nothing was billed" in str(caught.value)


def test_stopping_wait_task_leaves_the_task_alone():
    with Emulator(latency=1.0) as emu, make_client(emu) as client:
        task_id = client.create_task(TextToImageRequest("a slow one"))
        event, set_at = cancel_after(0.3)
        with pytest.raises(CancelledError) as caught:
            client.wait_task(task_id, cancel_event=event)
        assert time.monotonic() - set_at[0] < 0.2
        assert f"Stopped waiting for task {task_id}; it continues" in str(caught.value)
        polls = len(api_requests(emu, f"/tasks/{task_id}", "GET"))
        time.sleep(0.6)
        assert len(api_requests(emu, f"/tasks/{task_id}", "GET")) == polls  # nobody polls
        assert not api_requests(emu, "/cancel")
        assert client.wait_task(task_id)["output"]["task_status"] == "SUCCEEDED"
