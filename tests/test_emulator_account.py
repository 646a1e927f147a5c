"""The emulator's account side: keys of one account, the task list, the quotas API, and the
rate limits and concurrency that obey the configured quotas."""
import threading
import time
from datetime import datetime, timedelta

import pytest
import requests

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator
from support.emulator_http import (
    BJ,
    GENERATION,
    SG,
    SMALL,
    assert_error,
    auth,
    create_generation_task,
    create_task,
    edit_body,
    generate,
    get_policy,
    png,
    query,
    t2i_body,
    task_body,
    upload,
    wait_until,
)

SECOND_SG_KEY = "sk-emulator-singapore-second"  # another key of the same account
SECOND_BJ_KEY = "sk-emulator-beijing-second"
STRANGER_KEY = "sk-emulator-another-account"
ACCOUNT_KEYS = {SINGAPORE_KEY: (SG, "acme"), SECOND_SG_KEY: (SG, "acme"),
                BEIJING_KEY: (BJ, "acme"), SECOND_BJ_KEY: (BJ, "acme"), STRANGER_KEY: SG}
# the options of this module's ``emulator``/``emu``
EMULATOR = {"latency": 0.3, "rate_limits": False, "keys": ACCOUNT_KEYS}
ITEM_FIELDS = {"task_id", "status", "model_name", "request_id", "gmt_create", "region",
               "api_key_id", "caller_uid", "caller_parent_id", "user_api_unique_key"}
UTC8 = timedelta(hours=8)


def list_tasks(emu, key=SINGAPORE_KEY, region=SG, **params):
    return requests.get(f"{emu.base_url(region)}/tasks", params=params, headers=auth(key))


def cancel(emu, task_id, key=SINGAPORE_KEY, region=SG):
    return requests.post(f"{emu.base_url(region)}/tasks/{task_id}/cancel", headers=auth(key))


def utc8(moment):
    """A time in the task list's format: YYYYMMDDhhmmss, UTC+8."""
    return (moment + UTC8).strftime("%Y%m%d%H%M%S")


def get_quotas(emu, key=SINGAPORE_KEY, region=SG, **params):
    return requests.get(f"{emu.base_url(region)}/quotas", params=params, headers=auth(key))


# -- keys of one account -----------------------------------------------------------------------


def test_any_key_of_the_account_sees_and_cancels_its_tasks_in_the_tasks_region(emu):
    first, second, third = (create_task(emu).json()["output"]["task_id"] for _ in range(3))
    assert query(emu, first, SECOND_SG_KEY).json()["output"]["task_status"] == "RUNNING"
    assert cancel(emu, third, SECOND_SG_KEY).status_code == 200
    assert query(emu, third).json()["output"]["task_status"] == "CANCELED"
    # Another account, or the account's key of the other region: nothing to see.
    assert query(emu, first, STRANGER_KEY).json()["output"]["task_status"] == "UNKNOWN"
    assert query(emu, first, BEIJING_KEY, BJ).json()["output"]["task_status"] == "UNKNOWN"
    assert_error(cancel(emu, second, STRANGER_KEY), 400, "UnsupportedOperation")
    # Rate limits and task slots stay per key: the second key's tasks start at once.
    other = create_task(emu, key=SECOND_SG_KEY).json()["output"]["task_id"]
    assert query(emu, other).json()["output"]["task_status"] == "RUNNING"


def test_uploads_are_shared_by_the_keys_of_an_account(emu):
    policy = get_policy(emu).json()["data"]  # with BEIJING_KEY
    assert upload(policy, "a.png", png()).status_code == 200
    body = edit_body([f"oss://{policy['upload_dir']}/a.png"])
    resolve = {"X-DashScope-OssResourceResolve": "enable"}
    assert generate(emu, body, SECOND_BJ_KEY, BJ, headers=resolve).status_code == 200


# -- the task list -----------------------------------------------------------------------------


def test_the_task_list_shows_every_task_of_the_account_in_the_region(emu):
    before = datetime.utcnow()
    mine = create_task(emu, task_body("a", model="qwen-image"))
    theirs = create_task(emu, task_body("b"), key=SECOND_SG_KEY)
    three = create_generation_task(emu, t2i_body(model="qwen-image-3.0", size="512*512"))
    create_task(emu, key=STRANGER_KEY)
    create_task(emu, key=BEIJING_KEY, region=BJ)
    created = {r.json()["output"]["task_id"]: r.json()["request_id"] for r in (mine, theirs, three)}

    answer = list_tasks(emu).json()
    assert set(answer) == {"request_id", "total", "total_page", "page_no", "page_size", "data"}
    assert (answer["total"], answer["total_page"], answer["page_no"], answer["page_size"]) == (
        3, 1, 1, 10)
    data = answer["data"]
    assert [item["task_id"] for item in data] == list(created)[::-1]  # newest first
    for item in data:
        assert set(item) == ITEM_FIELDS | {"start_time"}  # running: no end_time yet
        assert item["request_id"] == created[item["task_id"]]  # the creation's request id
        assert item["region"] == SG and item["status"] == "RUNNING"
        assert before.timestamp() * 1000 - 1000 <= item["gmt_create"] <= time.time() * 1000
        assert item["caller_uid"] == item["caller_parent_id"] == data[0]["caller_uid"]
    keys = {item["model_name"]: item["api_key_id"] for item in data}
    assert keys["qwen-image"] == keys["qwen-image-3.0"] != keys["qwen-image-plus"]
    assert all(k not in repr(answer) for k in ACCOUNT_KEYS)  # ids, never keys
    unique = {item["model_name"]: item["user_api_unique_key"] for item in data}
    assert unique["qwen-image"] == "apikey:v1:aigc:text2image:image-synthesis:qwen-image"
    assert unique["qwen-image-3.0"] == "apikey:v1:aigc:image-generation:generation:qwen-image-3.0"
    # The other key of the account sees the same list.
    assert list_tasks(emu, SECOND_SG_KEY).json()["total"] == 3
    assert list_tasks(emu, STRANGER_KEY).json()["total"] == 1

    for task_id in created:
        wait_until(emu, task_id)
    finished = list_tasks(emu).json()["data"]
    assert all(item["status"] == "SUCCEEDED" for item in finished)
    assert all(item["gmt_create"] <= item["start_time"] <= item["end_time"] for item in finished)


def test_the_task_list_filters_and_pages(emu):
    ids = [create_task(emu, task_body(f"t{i}", model="qwen-image")).json()["output"]["task_id"]
           for i in range(4)]
    create_task(emu, task_body("plus"))
    assert cancel(emu, ids[3]).status_code == 200
    assert list_tasks(emu, model_name="qwen-image").json()["total"] == 4
    pending = list_tasks(emu, status="PENDING").json()
    assert [item["task_id"] for item in pending["data"]] == [ids[2]]
    canceled = list_tasks(emu, status="CANCELED").json()["data"]
    assert [item["task_id"] for item in canceled] == [ids[3]]
    assert "start_time" not in canceled[0] and "end_time" in canceled[0]
    assert "start_time" not in pending["data"][0] and "end_time" not in pending["data"][0]
    page = list_tasks(emu, page_no=2, page_size=2).json()
    assert (page["total"], page["total_page"], page["page_no"], page["page_size"]) == (5, 3, 2, 2)
    assert [item["task_id"] for item in page["data"]] == [ids[2], ids[1]]
    assert list_tasks(emu, page_no=4, page_size=2).json()["data"] == []
    (only,) = list_tasks(emu, task_id=ids[0]).json()["data"]
    assert only["task_id"] == ids[0]
    assert list_tasks(emu, STRANGER_KEY, task_id=ids[0]).json()["data"] == []
    key_id = only["api_key_id"]
    assert list_tasks(emu, api_key_id=key_id, region=SG).json()["total"] == 5
    assert list_tasks(emu, api_key_id="0").json()["total"] == 0


def test_the_task_list_time_window_is_utc8_and_at_most_24_hours(emu):
    task_id = create_task(emu).json()["output"]["task_id"]
    now = datetime.utcnow()
    around = {"start_time": utc8(now - timedelta(minutes=5)), "end_time": utc8(now)}
    assert [i["task_id"] for i in list_tasks(emu, **around).json()["data"]] == [task_id]
    earlier = {"start_time": utc8(now - timedelta(hours=3)),
               "end_time": utc8(now - timedelta(hours=2))}
    assert list_tasks(emu, **earlier).json()["total"] == 0
    # One end alone: 24 h from or to it.
    assert list_tasks(emu, start_time=utc8(now - timedelta(hours=23))).json()["total"] == 1
    assert list_tasks(emu, end_time=utc8(now - timedelta(hours=1))).json()["total"] == 0
    assert list_tasks(emu, end_time=utc8(now + timedelta(hours=1))).json()["total"] == 1
    # In UTC the same digits name a moment 8 h later: the task is outside that window.
    as_utc = {"start_time": (now - timedelta(minutes=5)).strftime("%Y%m%d%H%M%S"),
              "end_time": now.strftime("%Y%m%d%H%M%S")}
    assert list_tasks(emu, **as_utc).json()["total"] == 0
    wide = {"start_time": utc8(now - timedelta(hours=25)), "end_time": utc8(now)}
    assert_error(list_tasks(emu, **wide), 400, "InvalidParameter", "24 hours")
    backwards = {"start_time": utc8(now), "end_time": utc8(now - timedelta(hours=1))}
    assert_error(list_tasks(emu, **backwards), 400, "InvalidParameter", "before")
    for bad in ({"start_time": "2026-10-12 10:00:00"}, {"status": "DONE"}, {"page_no": "0"},
                {"page_size": "x"}):
        assert_error(list_tasks(emu, **bad), 400, "InvalidParameter")


# -- the quotas API ----------------------------------------------------------------------------


def test_quotas_answer_the_default_limits():
    with Emulator(latency=0, keys=ACCOUNT_KEYS) as emu:
        answer = get_quotas(emu, page_size=100).json()
        assert set(answer) == {"request_id", "output"} and set(answer["output"]) == {"quotas"}
        quotas = {q["model"]: q for q in answer["output"]["quotas"]}
        assert len(quotas) == 21  # every model of catalog.py, 2.1-turbo included
        plus = quotas["qwen-image-plus"]
        assert set(plus) == {"model", "workspace_id", "model_limit", "workspace_limit"}
        assert plus["model_limit"] == {
            "request_limit": 2, "request_limit_period": 1, "usage_limit": 1000000,
            "usage_limit_field": "total_tokens", "usage_limit_period": 60,
            "async_user_queue_limit": None, "async_user_concurrency_limit": 2}
        limits = {m: (q["model_limit"]["request_limit"], q["model_limit"]["request_limit_period"])
                  for m, q in quotas.items()}
        assert limits["qwen-image-max"] == limits["qwen-image-max-2025-12-30"] == (2, 60)
        assert limits["qwen-image-edit-plus"] == limits["qwen-image-edit-max"] == (2, 1)
        assert limits["qwen-image"] == (2, 1)
        # One workspace per account: the same for its keys, another for another account.
        workspace = plus["workspace_id"]
        assert all(q["workspace_id"] == workspace for q in quotas.values())
        (same,) = get_quotas(emu, SECOND_SG_KEY, model="qwen-image-plus").json()["output"]["quotas"]
        assert same["workspace_id"] == workspace
        (other,) = get_quotas(emu, STRANGER_KEY, model="qwen-image").json()["output"]["quotas"]
        assert other["workspace_id"] != workspace
        first = get_quotas(emu, page_size=3).json()["output"]["quotas"]
        second = get_quotas(emu, page_no=2, page_size=3).json()["output"]["quotas"]
        assert [q["model"] for q in first + second] == sorted(quotas)[:6]
        assert get_quotas(emu, page_size=100, page_no=2).json()["output"]["quotas"] == []
        assert get_quotas(emu).json()["output"]["quotas"] == answer["output"]["quotas"][:20]


@pytest.mark.parametrize("status, code", [(404, "NotFound"), (403, "AccessDenied")])
def test_the_quotas_api_can_be_missing_or_refused(status, code):
    with Emulator(latency=0, quotas_status=status) as emu:
        assert_error(get_quotas(emu), status, code)
        assert generate(emu, t2i_body()).status_code == 200  # everything else works


def test_quota_options_are_checked():
    for bad in ({"qwen-image-9": {}}, {"qwen-image": {"rpm": 2}},
                {"qwen-image": {"request_limit_period": 0}},
                {"qwen-image": {"request_limit_period": "60"}},
                {"qwen-image": {"request_limit_period": 86401}}):
        with pytest.raises(ValueError):
            Emulator(quotas=bad)
    with pytest.raises(ValueError):
        Emulator(quotas_status=500)


def test_rate_limits_and_task_slots_obey_the_configured_quotas():
    quotas = {"qwen-image-plus": {"request_limit": 3, "async_user_concurrency_limit": 1}}
    with Emulator(latency=0.3, quotas=quotas) as emu:
        (shown,) = get_quotas(emu, model="qwen-image-plus").json()["output"]["quotas"]
        assert shown["model_limit"]["request_limit"] == 3
        assert shown["model_limit"]["async_user_concurrency_limit"] == 1
        answers = [create_task(emu) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[3].headers["Retry-After"] == "1"
        ids = [a.json()["output"]["task_id"] for a in answers[:3]]
        assert [query(emu, i).json()["output"]["task_status"] for i in ids] == [
            "RUNNING", "PENDING", "PENDING"]
        # qwen-image keeps the defaults.
        assert [create_task(emu, task_body(model="qwen-image")).status_code
                for _ in range(3)] == [200, 200, 429]


def test_max_models_allow_two_requests_per_minute():
    with Emulator(latency=0) as emu:
        answers = [generate(emu, t2i_body(model="qwen-image-max")) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert_error(answers[2], 429, "Throttling.RateQuota")
        assert 58 <= int(answers[2].headers["Retry-After"]) <= 60
        assert generate(emu, t2i_body(model="qwen-image-max-2025-12-30")).status_code == 200


def test_a_full_task_queue_refuses_new_tasks():
    quotas = {"qwen-image": {"async_user_concurrency_limit": 1, "async_user_queue_limit": 1}}
    with Emulator(latency=0.3, rate_limits=False, quotas=quotas) as emu:
        assert create_task(emu, task_body(model="qwen-image")).status_code == 200  # running
        assert create_task(emu, task_body(model="qwen-image")).status_code == 200  # waiting
        assert_error(create_task(emu, task_body(model="qwen-image")), 429, "Throttling", "queue")
        assert emu.stats["tasks_created"] == 2


# -- synchronous concurrency -------------------------------------------------------------------


def run_together(emu, bodies):
    answers = [None] * len(bodies)

    def call(i):
        answers[i] = generate(emu, bodies[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_sync_concurrency_refuses_calls_over_the_cap_per_key_and_model():
    with Emulator(latency=0.5, rate_limits=False, sync_concurrency=1) as emu:
        answers = run_together(emu, [t2i_body(), t2i_body(), t2i_body(model="qwen-image")])
        statuses = sorted(a.status_code for a in answers[:2])
        assert statuses == [200, 429] and answers[2].status_code == 200
        refused = next(a for a in answers if a.status_code == 429)
        assert_error(refused, 429, "Throttling", "concurrency")
        key_id = emu.requests[0].key_id
        assert emu.stats["max_concurrent_calls"] == {(key_id, "qwen-image-plus"): 1,
                                                     (key_id, "qwen-image"): 1}
        assert generate(emu, t2i_body()).status_code == 200  # the slot is free again


def test_sync_calls_are_unlimited_by_default_and_their_peak_is_counted():
    with Emulator(latency=0.5, rate_limits=False) as emu:
        answers = run_together(emu, [edit_body([SMALL])] * 3)
        assert [a.status_code for a in answers] == [200] * 3
        key_id = emu.requests[0].key_id
        assert emu.stats["max_concurrent_calls"] == {(key_id, "qwen-image-edit-plus"): 3}
        assert all(r.path.endswith(GENERATION) for r in emu.requests)
