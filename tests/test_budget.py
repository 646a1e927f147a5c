"""The daily spend guard: refused before sending, persisted, shared, released on failure."""
import datetime
import json
import multiprocessing
import os

import pytest

from qwen_image_dashscope.api import (
    AmbiguousRequestError,
    BudgetExceededError,
    Config,
    ConfigurationError,
    ContentModerationError,
    ImageEditRequest,
    QwenImageClient,
    ResultStore,
    TaskFailedError,
    TextToImageRequest,
)
from qwen_image_dashscope.api.cli.commands import main
from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY
from qwen_image_dashscope.api.storage.budget import SpendGuard
from support.client import (
    ASYNC_PATH,
    FAST_RETRY,
    SG,
    SYNC_PATH,
    api_requests,
    png_bytes,
    roomy_rate,
)


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "budget" / "ledger.json"


def client_with(emulator, ledger, region=SG, store=None, **limits):
    """A client whose budget comes from the environment variables, as in ComfyUI."""
    environ = {"HOME": str(ledger.parent), "QWEN_IMAGE_BUDGET_FILE": str(ledger)}
    if "images" in limits:
        environ["QWEN_IMAGE_BUDGET_IMAGES_PER_DAY"] = str(limits["images"])
    if "usd" in limits:
        environ["QWEN_IMAGE_BUDGET_USD_PER_DAY"] = str(limits["usd"])
    config = Config.resolve(region, api_key=SINGAPORE_KEY if region == SG else BEIJING_KEY,
                            base_url=emulator.base_url(region), environ=environ)
    return QwenImageClient(config, retry=FAST_RETRY, store=store)


def edit(n, prompt="make it blue", **options):
    return ImageEditRequest(prompt, images=(png_bytes(),), n=n, **options)


def test_a_request_that_would_cross_the_image_budget_is_refused_before_sending(emu, ledger):
    with client_with(emu, ledger, images=3) as client:
        client.edit_image(edit(2))
        sent = len(emu.requests)
        with pytest.raises(BudgetExceededError) as caught:
            client.edit_image(edit(2, "make it red"))
        assert len(emu.requests) == sent  # nothing sent, not even a probe
        client.edit_image(edit(1, "make it green"))  # exactly the budget
        status = client.budget_status()
    message = str(caught.value)
    assert "daily image budget of 3 (QWEN_IMAGE_BUDGET_IMAGES_PER_DAY)" in message
    assert "has 2 used or in progress today, and this request would add 2" in message
    assert "(qwen-image-edit-plus, n=2 in Singapore (ap-southeast-1), day " in message
    assert "Nothing was sent" in message
    assert "QWEN_IMAGE_BUDGET_IMAGES_PER_DAY=4 or more" in message and str(ledger) in message
    assert (status.images_used, status.images_left) == (3, 0)
    assert emu.stats["images_billed"] == 3


def test_the_dollar_budget_uses_the_price_table(emu, ledger):
    with client_with(emu, ledger, usd=0.05) as client:
        client.text_to_image(TextToImageRequest("a kite"))  # $0.03 in Singapore
        with pytest.raises(BudgetExceededError) as caught:
            client.text_to_image(TextToImageRequest("a second kite"))
        status = client.budget_status()
    message = str(caught.value)
    assert "daily spending budget of $0.05 (QWEN_IMAGE_BUDGET_USD_PER_DAY)" in message
    assert "has $0.03 used or in progress today, and this request would cost $0.03" in message
    assert "QWEN_IMAGE_BUDGET_USD_PER_DAY=0.06 or more" in message
    assert len(api_requests(emu, ASYNC_PATH, "POST")) == 1
    assert status.usd_used == pytest.approx(0.03) and status.usd_left == pytest.approx(0.02)


def test_the_budget_survives_a_restart(emu, ledger):
    with client_with(emu, ledger, images=2) as client:
        client.edit_image(edit(1))
    restarted = SpendGuard(images_per_day=2, path=ledger)  # a new process, the same file
    assert restarted.status().images_used == 1
    with client_with(emu, ledger, images=2) as client:
        client.edit_image(edit(1, "again"))
        with pytest.raises(BudgetExceededError):
            client.edit_image(edit(1, "once more"))
    document = json.loads(ledger.read_text(encoding="utf-8"))
    today = datetime.date.today().isoformat()
    assert document["days"][today]["images"] == 2
    assert document["day_boundary"] == "local midnight"


def test_failures_are_released_and_ambiguous_ones_stay_charged(emu, ledger):
    with client_with(emu, ledger, images=5) as client:
        with pytest.raises(ContentModerationError):  # an error answer: not billed
            client.edit_image(edit(2, "[[unsafe]] thing"))
        assert client.budget_status().images_used == 0
        emu.inject("task_failed")
        with pytest.raises(TaskFailedError):  # a failed task: not billed
            client.text_to_image(TextToImageRequest("a kite"))
        assert client.budget_status().images_used == 0
        emu.inject("drop_after", path=SYNC_PATH)
        with pytest.raises(AmbiguousRequestError):  # billed at the service, answer lost
            client.edit_image(edit(2, "make it gold"))
        assert client.budget_status().images_used == 2
        assert emu.stats["images_billed"] == 2


def test_low_level_tasks_are_settled_when_they_end(emu, ledger):
    with client_with(emu, ledger, images=5) as client:
        task_id = client.create_task(TextToImageRequest("a kite"))
        assert client.budget_status().images_used == 1  # charged while it runs
        client.wait_task(task_id)
        assert client.budget_status().images_used == 1  # succeeded: billed
        emu.inject("task_failed")
        failing = client.create_task(TextToImageRequest("a second kite"))
        assert client.budget_status().images_used == 2
        with pytest.raises(TaskFailedError):
            client.wait_task(failing)
        assert client.budget_status().images_used == 1  # failed: released


def test_reuse_from_the_store_is_free_and_not_counted(emu, ledger, tmp_path):
    store = ResultStore(tmp_path / "results")
    with client_with(emu, ledger, store=store, images=1) as client:
        client.edit_image(edit(1, seed=5), reuse=True)
        again = client.edit_image(edit(1, seed=5), reuse=True)  # the budget is used up
        assert again.from_store and again.cost_usd == 0.0
        assert client.budget_status().images_used == 1
    assert len(api_requests(emu, SYNC_PATH, "POST")) == 1


def test_unknown_price_and_day_boundary(tmp_path):
    day = [datetime.date(2025, 1, 8)]
    guard = SpendGuard(images_per_day=3, usd_per_day=0.01, path=tmp_path / "l.json",
                       today=lambda: day[0])
    unpriced = guard.reserve("qwen-image-next", 2, None)  # no price: the dollar limit cannot see it
    status = guard.status()
    assert (status.images_used, status.usd_used, status.unpriced_images) == (2, 0.0, 2)
    with pytest.raises(BudgetExceededError):
        guard.reserve("qwen-image-next", 2, None)  # but the image limit does
    day[0] = datetime.date(2025, 1, 9)  # local midnight passed
    assert guard.status().images_used == 0
    guard.settle(unpriced, 1)  # settled on the day it was charged
    guard.settle(unpriced, 0)  # a second settle changes nothing
    day[0] = datetime.date(2025, 1, 8)
    assert guard.status().images_used == 1


def _reserve_many(path: str, count: int, results) -> None:
    guard = SpendGuard(images_per_day=60, path=path)
    taken = 0
    for _ in range(count):
        try:
            guard.reserve("qwen-image-plus", 1, 0.03)
            taken += 1
        except BudgetExceededError:
            pass
    results.put(taken)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")
def test_processes_sharing_the_ledger_never_overshoot(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    path = str(tmp_path / "shared.json")
    processes = [context.Process(target=_reserve_many, args=(path, 25, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    taken = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sum(taken) == 60
    status = SpendGuard(images_per_day=60, path=path).status()
    assert status.images_used == 60 and status.usd_used == pytest.approx(1.8)


def test_a_broken_ledger_or_setting_refuses_rather_than_forgets(emu, ledger):
    ledger.parent.mkdir(parents=True)
    ledger.write_text("not json", encoding="utf-8")
    with client_with(emu, ledger, images=3) as client:
        with pytest.raises(ConfigurationError, match="is not a ledger this pack wrote"):
            client.edit_image(edit(1))
    assert emu.requests == []
    with pytest.raises(ConfigurationError, match="QWEN_IMAGE_BUDGET_USD_PER_DAY is 'lots'"):
        Config.resolve(SG, environ={"QWEN_IMAGE_BUDGET_USD_PER_DAY": "lots"})
    with pytest.raises(ConfigurationError, match="QWEN_IMAGE_BUDGET_IMAGES_PER_DAY is '-1'"):
        Config.resolve(SG, environ={"QWEN_IMAGE_BUDGET_IMAGES_PER_DAY": "-1"})
    assert Config.resolve(SG, environ={"HOME": "/h"}).budget.enabled is False
    assert str(Config.resolve(SG, environ={"HOME": "/h"}).budget.path) == \
        "/h/.dashscope/qwen-image-budget.json"


@pytest.mark.parametrize("emulator", [roomy_rate("qwen-image-plus")], indirect=True)  # 3 calls
def test_the_node_info_and_doctor_show_the_budget_left(service, comfy, monkeypatch, tmp_path,
                                                      capsys):
    from qwen_image_dashscope.nodes.text_to_image import DashScopeQwenImageTextToImage as T2I
    from support.comfy_stubs.harness import run_node

    ledger = tmp_path / "ledger.json"
    monkeypatch.setenv("QWEN_IMAGE_BUDGET_FILE", str(ledger))
    monkeypatch.setenv("QWEN_IMAGE_BUDGET_IMAGES_PER_DAY", "10")
    monkeypatch.setenv("QWEN_IMAGE_BUDGET_USD_PER_DAY", "1")
    _, _, info, _ = run_node(T2I, prompt="a lighthouse", batch=2)
    budget = json.loads(info)["budget"]
    assert budget["images_used"] == 2 and budget["images_left"] == 8
    assert budget["usd_used"] == pytest.approx(0.06) and budget["usd_left"] == pytest.approx(0.94)
    assert budget["day_boundary"] == "local midnight" and budget["ledger"] == str(ledger)

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "budget     8 of 10 images left today (2 used); $0.94 of $1 left today" in out

    monkeypatch.delenv("QWEN_IMAGE_BUDGET_IMAGES_PER_DAY")
    monkeypatch.delenv("QWEN_IMAGE_BUDGET_USD_PER_DAY")
    _, _, info, _ = run_node(T2I, prompt="a lighthouse at night")
    assert json.loads(info)["budget"] is None
    main(["doctor"])
    assert "budget     none (set QWEN_IMAGE_BUDGET_IMAGES_PER_DAY" in capsys.readouterr().out
