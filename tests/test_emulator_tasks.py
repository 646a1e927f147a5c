"""The emulator's asynchronous tasks (life cycle, queueing, cancel, visibility) and its
rate limits, over plain HTTP."""
import time
from datetime import datetime, timedelta, timezone

import requests

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator
from support.emulator_http import (
    BJ,
    OTHER_SG_KEY,
    SG,
    STANDARD_EMULATOR,
    SYNTHESIS,
    assert_error,
    auth,
    create_task,
    download,
    generate,
    parse_utc8,
    query,
    t2i_body,
    task_body,
    wait_for,
)

EMULATOR = STANDARD_EMULATOR  # the options of this module's ``emulator``/``emu``

# -- async tasks -------------------------------------------------------------------------------


def test_task_life_cycle_timing_and_documents():
    with Emulator(latency=0.3, rate_limits=False) as emu:
        created_at = datetime.now(timezone.utc)
        response = create_task(emu, task_body("a dog", size="1664*928", seed=8))
        assert response.elapsed.total_seconds() < 0.2  # answered at once
        body = response.json()
        assert set(body) == {"request_id", "output"}
        task_id = body["output"]["task_id"]
        assert body["output"] == {"task_id": task_id, "task_status": "PENDING"}

        running = query(emu, task_id).json()
        assert running["output"]["task_status"] == "RUNNING"
        assert "end_time" not in running["output"] and "results" not in running["output"]
        assert "usage" not in running
        submitted = parse_utc8(running["output"]["submit_time"])
        assert abs(submitted - created_at) < timedelta(seconds=2)  # UTC+8 wall clock

        done = wait_for(emu, task_id)
        assert done["task_status"] == "SUCCEEDED"
        scheduled, ended = parse_utc8(done["scheduled_time"]), parse_utc8(done["end_time"])
        assert submitted <= scheduled < submitted + timedelta(seconds=0.1)
        assert timedelta(seconds=0.29) <= ended - scheduled < timedelta(seconds=0.6)
        (result,) = done["results"]
        assert result["orig_prompt"] == "a dog"
        assert result["actual_prompt"].startswith("a dog") and result["actual_prompt"] != "a dog"
        assert done["task_metrics"] == {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}
        full = query(emu, task_id).json()
        assert full["usage"] == {"image_count": 1}
        assert download(result["url"])[0].size == (1664, 928)
        assert emu.stats["tasks_created"] == 1 and emu.stats["images_billed"] == 1
        (task,) = emu.tasks
        assert (task["id"], task["status"], task["request"]["input"]["prompt"]) == (
            task_id,
            "SUCCEEDED",
            "a dog",
        )


def test_tasks_without_prompt_extend_have_no_actual_prompt(emu):
    task_id = create_task(emu, task_body("plain", prompt_extend=False)).json()["output"]["task_id"]
    (result,) = wait_for(emu, task_id)["results"]
    assert result["orig_prompt"] == "plain" and "actual_prompt" not in result


def test_task_creation_rules(emu):
    no_async = requests.post(emu.base_url(SG) + SYNTHESIS, json=task_body(), headers=auth())
    assert_error(
        no_async, 403, "AccessDenied", "current user api does not support synchronous calls"
    )
    assert_error(create_task(emu, task_body(model="qwen-image-edit-plus")), 400, "InvalidParameter",
                 "Model not exist.")
    assert_error(create_task(emu, {"model": "qwen-image", "input": {"negative_prompt": "x"}}), 400,
                 "InvalidParameter", "prompt")
    assert_error(
        create_task(emu, task_body(n=2)), 400, "InvalidParameter", "num_images_per_prompt must be 1"
    )
    assert_error(create_task(emu, task_body(size="1024*1024")), 400, "InvalidParameter")
    assert_error(create_task(emu, task_body("[[unsafe]]")), 400, "DataInspectionFailed")
    assert emu.stats["tasks_created"] == 0


def test_two_tasks_per_key_and_model_run_at_once_and_the_rest_wait_in_order():
    keys = {SINGAPORE_KEY: SG, OTHER_SG_KEY: SG}
    with Emulator(latency=0.3, rate_limits=False, keys=keys) as emu:
        ids = [create_task(emu, task_body(f"t{i}", model="qwen-image")).json()["output"]["task_id"]
               for i in range(4)]
        other_model = create_task(emu, task_body("m")).json()["output"]["task_id"]
        other_key = create_task(emu, task_body("k", model="qwen-image"), key=OTHER_SG_KEY)
        statuses = [query(emu, i).json()["output"]["task_status"] for i in ids]
        assert statuses == ["RUNNING", "RUNNING", "PENDING", "PENDING"]
        pending = query(emu, ids[2]).json()["output"]
        assert "scheduled_time" not in pending
        # Limits are per (key, model): these start at once.
        assert query(emu, other_model).json()["output"]["task_status"] == "RUNNING"
        other_id = other_key.json()["output"]["task_id"]
        assert query(emu, other_id, key=OTHER_SG_KEY).json()["output"]["task_status"] == "RUNNING"

        done = [wait_for(emu, i) for i in ids]
        assert [d["task_status"] for d in done] == ["SUCCEEDED"] * 4
        ends = [parse_utc8(d["end_time"]) for d in done]
        starts = [parse_utc8(d["scheduled_time"]) for d in done]
        assert (
            starts[2] >= min(ends[:2]) and starts[3] >= sorted(ends[:2])[1]
        )  # queue order, slot by slot
        key_id = emu.requests[0].key_id
        stats = emu.stats
        assert stats["max_concurrent_tasks"][(key_id, "qwen-image")] == 2
        assert stats["max_outstanding_tasks"][(key_id, "qwen-image")] == 4
        assert stats["max_concurrent_tasks"][(key_id, "qwen-image-plus")] == 1


def test_cancel_only_pending_tasks():
    with Emulator(latency=0.3, rate_limits=False) as emu:
        ids = [create_task(emu).json()["output"]["task_id"] for _ in range(3)]
        cancel = requests.post(f"{emu.base_url(SG)}/tasks/{ids[2]}/cancel", headers=auth())
        assert cancel.status_code == 200
        assert set(cancel.json()) == {"request_id"}
        assert query(emu, ids[2]).json()["output"]["task_status"] == "CANCELED"
        for task_id in (ids[0], ids[2], "no-such-task"):  # running, already canceled, unknown
            again = requests.post(f"{emu.base_url(SG)}/tasks/{task_id}/cancel", headers=auth())
            assert_error(
                again,
                400,
                "UnsupportedOperation",
                "Failed to cancel the task, please confirm if the task is in PENDING status.",
            )
        # Another key cannot cancel it either.
        fourth = create_task(emu).json()["output"]["task_id"]
        assert_error(
            requests.post(f"{emu.base_url(BJ)}/tasks/{fourth}/cancel", headers=auth(BEIJING_KEY)),
            400,
            "UnsupportedOperation",
        )
        assert [wait_for(emu, i)["task_status"] for i in ids] == [
            "SUCCEEDED",
            "SUCCEEDED",
            "CANCELED",
        ]
        assert (
            wait_for(emu, fourth)["task_status"] == "SUCCEEDED"
        )  # the canceled one freed its place
        assert emu.stats["images_billed"] == 3


def test_tasks_of_other_keys_and_regions_are_unknown(emu):
    task_id = create_task(emu).json()["output"]["task_id"]
    for key, region in ((OTHER_SG_KEY, SG), (BEIJING_KEY, BJ)):
        response = query(emu, task_id, key, region)
        assert response.status_code == 200
        assert response.json()["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
    assert query(emu, task_id).json()["output"]["task_status"] in ("RUNNING", "SUCCEEDED")


# -- rate limits -------------------------------------------------------------------------------


def test_two_generating_requests_per_second_per_key_and_model():
    with Emulator(latency=0.3) as emu:
        started = time.monotonic()
        first, second, third = (create_task(emu) for _ in range(3))
        assert time.monotonic() - started < 0.9  # all three inside one second
        assert first.status_code == second.status_code == 200
        body = assert_error(
            third,
            429,
            "Throttling.RateQuota",
            "Requests rate limit exceeded, please try again later.",
        )
        assert third.headers["Retry-After"] == "1"
        assert body["code"] == "Throttling.RateQuota"
        # Sync calls share the window; other models have their own.
        assert generate(emu, t2i_body()).status_code == 429
        assert generate(emu, t2i_body(model="qwen-image")).status_code == 200
        time.sleep(max(0.0, started + 0.6 - time.monotonic()))
        assert create_task(emu).status_code == 429  # a sliding window: the first two still count
        time.sleep(max(0.0, started + 1.05 - time.monotonic()))
        assert create_task(emu).status_code == 200
        stats = emu.stats
        assert stats["rate_limited"] == 3 and stats["tasks_created"] == 3
        key_id = emu.requests[0].key_id
        assert (
            stats["max_requests_per_second"][(key_id, "qwen-image-plus")] == 5
        )  # attempts, refused included
        assert stats["errors"] == {"Throttling.RateQuota": 3}


def test_task_queries_are_limited_to_20_per_second_per_key():
    with Emulator(latency=0.05) as emu:
        session = requests.Session()
        started = time.monotonic()
        statuses = [
            session.get(f"{emu.base_url(SG)}/tasks/x", headers=auth()).status_code
            for _ in range(21)
        ]
        assert time.monotonic() - started < 0.9
        assert statuses == [200] * 20 + [429]
        # Another key has its own budget.
        assert (
            session.get(f"{emu.base_url(BJ)}/tasks/x", headers=auth(BEIJING_KEY)).status_code == 200
        )


def test_without_rate_limits_nothing_is_refused_but_the_attempts_are_counted(emu):
    statuses = [create_task(emu).status_code for _ in range(5)]
    assert statuses == [200] * 5
    key_id = emu.requests[0].key_id
    assert emu.stats["max_requests_per_second"][(key_id, "qwen-image-plus")] == 5
    assert emu.stats["rate_limited"] == 0
    emu.reset_stats()
    assert emu.stats["max_requests_per_second"] == {} and emu.stats["tasks_created"] == 0
