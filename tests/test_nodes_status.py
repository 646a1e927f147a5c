"""The status text under a node (nodes/status.py): counts by state, the oldest wait, why calls
wait, and the summary a run ends with."""
import pytest

from qwen_image_dashscope.api.call.waiting import Progress
from qwen_image_dashscope.api.errors import ContentModerationError
from qwen_image_dashscope.api.schema import GeneratedImage, GenerationResult
from qwen_image_dashscope.nodes import status as status_module
from qwen_image_dashscope.nodes.status import BatchStatus, duration, summary

RATE = "waiting for the model's rate limit: next call in 23 s"


@pytest.fixture
def clock(monkeypatch):
    """The status's clock, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(status_module.time, "monotonic", lambda: now[0])
    return now


def result(images=1, cost=0.03, from_store=False, folder="/out/qwen-image/2026-01-20"):
    return GenerationResult(
        images=[GeneratedImage(b"", "u", 8, 8, saved_path=f"{folder}/{i}.png" if folder else None)
                for i in range(images)],
        model="qwen-image-max", region="ap-southeast-1", interface="async", cost_usd=cost,
        from_store=from_store)


def test_a_batch_of_16_fits_one_line(clock):
    status = BatchStatus([1] * 16)
    report = [status.callback(i) for i in range(16)]
    for i in range(3):
        status.finish(i, result())
    report[3](Progress("running", 10.0, "t3", 0.5, "task t3 running"))
    report[4](Progress("running", 12.0, "t4", 0.5, "task t4 running"))
    for i in range(5, 16):
        report[i](Progress("queued", 30.0 + i, None, 0.0, "qwen-image-max queued"))
    report[6](Progress("queued", 36.0, None, 0.0, RATE))
    clock[0] += 0.4
    report[6](Progress("queued", 36.4, None, 0.0, "qwen-image-max queued"))  # a tick
    assert status.text() == ("3 done · 2 running (12 s) · 11 queued (oldest 45 s) · " + RATE)
    clock[0] += 2
    assert "11 queued (oldest 47 s)" in status.text()  # waits grow between reports
    assert status.images_done() == 4.0


def test_the_freshest_reason_is_shown_and_a_call_on_its_way_drops_its_own(clock):
    status = BatchStatus([1, 1, 1])
    report = [status.callback(i) for i in range(3)]
    slot = "waiting for one of the 2 qwen-image-plus requests in progress to end"
    report[0](Progress("queued", 0.0, None, 0.0, slot))
    clock[0] += 1
    report[1](Progress("queued", 1.0, None, 0.0, RATE))
    report[2](Progress("preparing", 1.0, None, 0.0, "uploading 1 input image(s)"))
    assert status.text().endswith(RATE)
    report[1](Progress("queued", 2.0, "t1", 0.0, "task t1 created"))  # at DashScope now
    assert status.text() == "1 preparing · 2 queued (oldest 2 s) · " + slot
    report[0](Progress("running", 3.0, "t0", 0.3, "task t0 running"))
    assert status.text() == "1 running (3 s) · 1 preparing · 1 queued (oldest 2 s)"


def test_images_are_counted_not_calls(clock):
    status = BatchStatus([4, 4])
    status.callback(0)(Progress("downloading", 9.0, "t", 0.95, "downloading 4 image(s)"))
    status.finish(1, ContentModerationError(400, "DataInspectionFailed", "refused"))
    assert status.text() == "4 failed · 4 downloading"
    assert status.images_done() == 7.8


def test_calls_not_heard_from_yet_count_as_queued_since_the_start(clock):
    status = BatchStatus([1, 1])
    clock[0] += 3
    assert status.text() == "2 queued (oldest 3 s)"


def test_summary_says_images_time_cost_and_folder():
    shown = lambda folder: folder.replace("/out", "output")  # noqa: E731
    assert summary([result(2, 0.06), result(2, 0.06)], 72.4, shown) == \
        "4 images in 1 min 12 s · about $0.12 · saved in output/qwen-image/2026-01-20"
    # From the store (free, another day's folder), a failed call, an unknown price.
    outcomes = [result(1, 0.0, True, "/out/qwen-image/2026-01-19"), result(1, None),
                ContentModerationError(400, "DataInspectionFailed", "refused")]
    assert summary(outcomes, 5, shown) == ("2 images in 5 s · 1 from the store · 1 call failed"
                                           " · cost unknown · saved in output/qwen-image")
    assert summary([result(1, 0.0, True)], 0.2, shown) == (
        "1 image in 0 s · 1 from the store · nothing billed · saved in "
        "output/qwen-image/2026-01-20")
    assert summary([result(1, 0.03, folder=None)], 3, shown) == \
        "1 image in 3 s · about $0.03 · not saved (no result store)"


def test_duration():
    assert [duration(s) for s in (0.4, 59.4, 60, 125)] == ["0 s", "59 s", "1 min 0 s",
                                                             "2 min 5 s"]
