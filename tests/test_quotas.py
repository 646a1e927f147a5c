"""The account's own limits from the quotas API: read once, obeyed, refreshed, and quietly
replaced by the model table's where the key may not read them."""
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qwen_image_dashscope.api import ImageEditRequest, TextToImageRequest
from qwen_image_dashscope.api.catalog.models import MODELS
from qwen_image_dashscope.api.emulator import Emulator
from qwen_image_dashscope.api.service import quotas
from qwen_image_dashscope.api.service.quotas import (
    AccountLimits,
    QuotaBook,
    limits_for,
    read_quotas,
)
from qwen_image_dashscope.api.state import PROCESS_STATE
from support.client import api_requests, make_client, png_bytes, roomy_rate

PLUS = "qwen-image-plus"


def quota_reads(emu):
    return api_requests(emu, "/quotas", "GET")


def batch(client, count, model=PLUS, offset=0):
    requests = [TextToImageRequest(f"kite {i}", model=model, seed=offset + i)
                for i in range(count)]
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(client.text_to_image, requests))


def test_more_task_slots_granted_by_the_quotas_api_are_used():
    # The account also takes 10 requests a second, so all six are created at once but for
    # the slots: only they keep a fourth from starting early. (At the table's 2 per second,
    # the tasks had to outlast the rate window, 1.5 s each, for the slots to matter.)
    granted = {PLUS: {"async_user_concurrency_limit": 3, "request_limit": 10}}
    with Emulator(latency=0.4, quotas=granted) as emu, make_client(emu) as client:
        results = batch(client, 6)
        stats = emu.stats
    (bucket,) = stats["max_concurrent_tasks"]
    assert all(len(r.images) == 1 for r in results)
    assert stats["max_concurrent_tasks"][bucket] == 3  # the account's 3, not the table's 2
    assert stats["max_outstanding_tasks"][bucket] == 3  # none waited at the service
    # The account's 10 per second, not the table's 2.
    assert stats["max_requests_per_second"][bucket] <= 10 and stats["rate_limited"] == 0
    assert len(quota_reads(emu)) == 1
    (limiter,) = PROCESS_STATE.limits.limiters.values()
    assert limiter.limits.source == "quotas API" and limiter.limits.concurrent == 3
    assert limiter.limits.requests == 10


def test_a_stricter_quota_is_obeyed():
    with Emulator(latency=0.2, quotas={PLUS: {"request_limit": 1}}) as emu, \
            make_client(emu) as client:
        results = batch(client, 2)  # two at once: the second waits a second
        stats = emu.stats
    assert all(len(r.images) == 1 for r in results)
    assert max(stats["max_requests_per_second"].values()) == 1 and stats["rate_limited"] == 0


def later_clock():
    """A QuotaBook clock that can be moved forward: ``advance[0]`` seconds ahead."""
    advance = [0.0]
    return advance, QuotaBook(clock=lambda: time.monotonic() + advance[0])


def test_read_once_per_process_and_model_then_refreshed_after_a_day():
    advance, PROCESS_STATE.quotas = later_clock()
    edit = ImageEditRequest("blue", images=(png_bytes(),), model="qwen-image-edit-plus")
    with Emulator(latency=0.05, **roomy_rate(PLUS)) as emu, make_client(emu) as client, \
            make_client(emu) as other:
        client.text_to_image(TextToImageRequest("one"))
        other.text_to_image(TextToImageRequest("two"))  # another client of the process
        client.edit_image(edit)
        reads = quota_reads(emu)
        assert [r.query.split("&")[0] for r in reads] == [
            f"model={PLUS}", "model=qwen-image-edit-plus"]
        advance[0] = quotas.REFRESH_AFTER + 1  # a day later
        client.text_to_image(TextToImageRequest("three"))
        client.text_to_image(TextToImageRequest("four"))
        assert len(quota_reads(emu)) == 3  # asked again once, then fresh for another day


@pytest.mark.parametrize("status", [403, 404])
def test_a_refused_quotas_api_falls_back_quietly_once(status, caplog):
    caplog.set_level(logging.INFO, logger="qwen_image_dashscope")
    edit = ImageEditRequest("blue", images=(png_bytes(),), model="qwen-image-edit-plus")
    with Emulator(latency=0.05, quotas_status=status) as emu, make_client(emu) as client:
        client.text_to_image(TextToImageRequest("one"))
        client.text_to_image(TextToImageRequest("two"))
        client.edit_image(edit)  # another model: the refusal holds for the key
        assert len(quota_reads(emu)) == 1
    told = [r for r in caplog.records if "quotas API is not available" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    limiter = PROCESS_STATE.limits.limiters[next(k for k in PROCESS_STATE.limits.limiters
                                                 if k[1] == PLUS)]
    assert limiter.limits.source == "model table"


def test_a_failing_quotas_api_costs_nothing_and_is_asked_again_later():
    advance, PROCESS_STATE.quotas = later_clock()
    with Emulator(latency=0.05, **roomy_rate(PLUS)) as emu, make_client(emu) as client:
        emu.inject("http_error", path="/quotas")  # 500 InternalError
        result = client.text_to_image(TextToImageRequest("one"))
        assert len(result.images) == 1 and len(quota_reads(emu)) == 1  # the table's, at once
        client.text_to_image(TextToImageRequest("two"))
        assert len(quota_reads(emu)) == 1  # not asked at every call ...
        advance[0] = quotas.RETRY_AFTER + 1
        client.text_to_image(TextToImageRequest("three"))  # ... but a few minutes later
        assert [r.status for r in quota_reads(emu)] == [500, 200]


def test_reading_a_quotas_answer():
    answer = {"output": {"quotas": [
        {"model": "qwen-image-max", "model_limit": {
            "request_limit": 2, "request_limit_period": 60, "usage_limit": 1000000,
            "async_user_queue_limit": None, "async_user_concurrency_limit": None},
         "workspace_limit": None},
        {"model": PLUS, "model_limit": {"request_limit": 5, "request_limit_period": 1,
                                        "async_user_concurrency_limit": 4},
         "workspace_limit": {"request_limit": 120, "request_limit_period": 60,
                             "async_user_concurrency_limit": 3}}]}}
    assert read_quotas(answer, "qwen-image-max") == AccountLimits(2, 60.0, None)
    # The workspace's limit is the tighter one: 2/s (120 per minute) and 3 at once.
    assert read_quotas(answer, PLUS) == AccountLimits(120, 60.0, 3)
    assert read_quotas(answer, "qwen-image") is None
    with pytest.raises(ValueError):
        read_quotas({"output": None}, PLUS)
    # Figures the answer leaves null keep the table's.
    maximum = limits_for(MODELS["qwen-image-max"], read_quotas(answer, "qwen-image-max"))
    assert (maximum.requests, maximum.period, maximum.concurrent) == (2, 60.0, 2)
    assert limits_for(MODELS[PLUS], None).source == "model table"
    bogus = {"output": {"quotas": [{"model": PLUS, "model_limit": {
        "request_limit": True, "request_limit_period": 0, "async_user_concurrency_limit": -1}}]}}
    assert limits_for(MODELS[PLUS], read_quotas(bogus, PLUS)) == limits_for(MODELS[PLUS], None)
