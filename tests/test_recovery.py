"""A paid image is never lost: lost creation answers found in the task list, other keys'
tasks never adopted, `qwen-image recover` after a crash, Ctrl-C keeping its promise.

Everything runs against the emulator over loopback; command-line runs are real processes.
"""
import email.utils
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from qwen_image_dashscope.api import (
    AmbiguousRequestError,
    Config,
    QwenImageClient,
    ResultStore,
    TextToImageRequest,
    cli,
)
from qwen_image_dashscope.api.catalog.specs import IMAGE_GENERATION_PATH
from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator
from qwen_image_dashscope.api.errors import AmbiguousTaskError
from qwen_image_dashscope.api.recovery import unfinished
from qwen_image_dashscope.api.state import PROCESS_STATE
from qwen_image_dashscope.api.storage.journal import (
    AMBIGUOUS,
    LOST_SYNC,
    NOT_CREATED,
    STORED,
    Journal,
)
from support.client import (
    ASYNC_PATH,
    FAST_RETRY,
    RECOVERY_GRACE,
    SG,
    SYNC_PATH,
    api_requests,
    roomy_rate,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
OTHER_KEY = "sk-emulator-second-key-of-the-account-0002"
MODEL_30 = "qwen-image-3.0"
# These tests are about lost answers, not the request rate (test_client_limiter.py and
# test_adaptive_limits.py are): the account takes 10 creations a second (the quotas API says
# so), so a creation sent again after its grace period is not held by the rate window too.
RATE = roomy_rate("qwen-image-plus", MODEL_30)
EMULATOR = RATE  # the options of this module's ``emulator``/``emu``


def client_for(emu, home, *, key=SINGAPORE_KEY, grace=2 * RECOVERY_GRACE):
    """A client configured as a user's environment would be: journal under home; a lost
    creation looked for ``grace`` seconds (the tests' scaled-down grace periods)."""
    config = Config.resolve(SG, api_key=key, base_url=emu.base_url(SG),
                            environ={"HOME": str(home), "QWEN_IMAGE_RECOVERY_GRACE": str(grace)})
    return QwenImageClient(config, store=ResultStore(home / "results"), retry=FAST_RETRY)


def journal_of(home):
    return Journal.in_folder(home / ".dashscope")


def create_directly(emu, prompt, *, key=SINGAPORE_KEY, model="qwen-image-plus"):
    """A task created by another program (another machine, another key)."""
    if model == MODEL_30:
        path, body = IMAGE_GENERATION_PATH, {"model": model, "input": {"messages": [
            {"role": "user", "content": [{"text": prompt}]}]}, "parameters": {}}
    else:
        path, body = ASYNC_PATH, {"model": model, "input": {"prompt": prompt}}
    answer = requests.post(emu.base_url(SG) + path, json=body, timeout=5, headers={
        "Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"})
    answer.raise_for_status()
    return answer.json()["output"]["task_id"]


def left_behind(emu, home, *, store):
    """The journal of ``home`` with a task another process created and never fetched (its
    entry, owned by a dead process): the key's warm-up call first, so the key is known."""
    with client_for(emu, home) as client:
        client.text_to_image(TextToImageRequest("warm up"))
    task = create_directly(emu, "left behind")
    journal = journal_of(home)
    entry = journal.begin(model="qwen-image-plus", region=SG, base_url=emu.base_url(SG),
                          interface="async", key=next(iter(journal.entries().values())).key,
                          fingerprint="f", request={"prompt": "left behind", "n": 1},
                          store=str(store))
    journal._update(entry.id, task_id=task, status="created", owner="elsewhere:1")
    return journal, journal.entries()[entry.id]


def first_key_id(emu, key=SINGAPORE_KEY):
    """The task list's api_key_id of the first task."""
    answer = requests.get(emu.base_url(SG) + "/tasks", timeout=5, params={
        "task_id": emu.tasks[0]["id"]}, headers={"Authorization": f"Bearer {key}"})
    return answer.json()["data"][0]["api_key_id"]


def creates(emu, path=ASYNC_PATH):
    return api_requests(emu, path, "POST")


@pytest.fixture
def shared_account(request):
    """Two keys of one account in Singapore: each sees the other's tasks in the list; a
    test's own Emulator options by indirect parametrization. Tasks take 0.1 s, as the
    ``emulator`` fixture's: still running at a lost call's first look at the list."""
    keys = {SINGAPORE_KEY: (SG, "acme"), OTHER_KEY: (SG, "acme")}
    options = {"latency": 0.1, "rate_limits": False, **RATE, **getattr(request, "param", {})}
    with Emulator(keys=keys, **options) as emu:
        yield emu


# -- a lost creation answer ---------------------------------------------------------------


def test_a_dropped_answer_is_found_in_the_task_list_and_adopted(emu, tmp_path):
    with client_for(emu, tmp_path) as client:
        client.text_to_image(TextToImageRequest("a first boat"))  # the key's id is learned
        emu.inject("drop_after", path=ASYNC_PATH)
        result = client.text_to_image(TextToImageRequest("a paper boat", seed=5))

    [image] = result.images
    assert open(image.saved_path, "rb").read() in emu.served_images.values()
    assert any("was found in the task list" in note for note in result.notes)
    assert len(creates(emu)) == 2 and emu.stats["tasks_created"] == 2  # never sent twice
    assert emu.stats["images_billed"] == 2
    entry = next(e for e in journal_of(tmp_path).entries().values()
                 if e.task_id == result.task_id)
    assert entry.status == STORED and entry.saved == [image.saved_path]


def test_a_gateway_page_after_processing_is_recovered_too(emu, tmp_path):
    with client_for(emu, tmp_path) as client:
        client.text_to_image(TextToImageRequest("warm up"))
        emu.inject("gateway_html", path=ASYNC_PATH, status=504, after=True)
        result = client.text_to_image(TextToImageRequest("a kite"))
    assert result.images and emu.stats["tasks_created"] == 2


def test_a_fresh_keys_first_lost_answer_returns_its_image_billed_once(emu, tmp_path):
    emu.inject("drop_after", path=ASYNC_PATH)
    with client_for(emu, tmp_path) as client:
        result = client.text_to_image(TextToImageRequest("a heron", seed=3))

    [image] = result.images
    assert open(image.saved_path, "rb").read() in emu.served_images.values()
    assert [t["id"] for t in emu.tasks] == [result.task_id] and not result.doubt
    assert len(creates(emu)) == 1 and emu.stats["images_billed"] == 1
    [entry] = journal_of(tmp_path).entries().values()
    assert entry.status == STORED and entry.task_id == result.task_id


def test_the_keys_id_is_learned_from_its_first_answered_task_so_3_0_is_found_next(emu,
                                                                                 tmp_path):
    with client_for(emu, tmp_path) as client:
        first = client.text_to_image(TextToImageRequest("a lantern", model=MODEL_30))
        journal = journal_of(tmp_path)
        [entry] = journal.entries().values()
        assert wait_until(lambda: journal.key_id(entry.key, emu.base_url(SG)) ==
                          first_key_id(emu))
        emu.inject("drop_after", path=IMAGE_GENERATION_PATH)
        second = client.text_to_image(TextToImageRequest("a lantern", model=MODEL_30, seed=4))
    assert second.images and second.task_id != first.task_id
    assert emu.stats["tasks_created"] == 2 and emu.stats["images_billed"] == 2


def test_an_unknown_keys_3_0_candidate_is_reported_without_downloading_it(emu, tmp_path):
    emu.inject("drop_after", path=IMAGE_GENERATION_PATH)
    with client_for(emu, tmp_path) as client, pytest.raises(AmbiguousTaskError) as caught:
        client.text_to_image(TextToImageRequest("a heron", model=MODEL_30))

    error = caught.value
    assert "not known yet" in str(error) and "not downloaded" in str(error)
    assert len(error.candidates) == 1 and error.saved == []
    assert not [r for r in emu.requests if r.path.startswith("/results")]  # nothing fetched
    assert not list((tmp_path / "results").rglob("*.png"))
    [entry] = journal_of(tmp_path).entries().values()
    assert not entry.done and entry.candidates == error.candidates  # `recover` looks again


def test_a_request_the_service_never_got_is_sent_again_after_the_grace_period(emu, tmp_path):
    with client_for(emu, tmp_path, grace=RECOVERY_GRACE) as client:
        client.text_to_image(TextToImageRequest("warm up"))
        emu.inject("drop", path=ASYNC_PATH)  # read, closed, never processed
        started = time.monotonic()
        result = client.text_to_image(TextToImageRequest("a swan"))

    assert result.images and time.monotonic() - started >= RECOVERY_GRACE
    assert len(creates(emu)) == 3 and emu.stats["tasks_created"] == 2
    # Sent again only after the grace period (the wall above also holds the new task's time).
    _, lost, again = creates(emu)
    assert again.time - lost.time >= RECOVERY_GRACE
    statuses = sorted(e.status for e in journal_of(tmp_path).entries().values())
    assert statuses == [NOT_CREATED, STORED, STORED]


def test_tasks_claimed_by_the_journal_are_never_candidates(emu, tmp_path):
    with client_for(emu, tmp_path) as client:
        earlier = client.text_to_image(TextToImageRequest("the same prompt"))
        emu.inject("drop_after", path=ASYNC_PATH)
        later = client.text_to_image(TextToImageRequest("the same prompt"))
    assert later.task_id != earlier.task_id and later.images


def test_another_keys_task_of_the_same_model_and_window_is_never_adopted(shared_account,
                                                                       tmp_path):
    emu = shared_account
    with client_for(emu, tmp_path, grace=RECOVERY_GRACE) as client:
        client.text_to_image(TextToImageRequest("warm up"))
        foreign = create_directly(emu, "a red fox", key=OTHER_KEY)  # same prompt, other key
        emu.inject("drop", path=ASYNC_PATH)  # ours never reaches the service
        result = client.text_to_image(TextToImageRequest("a red fox"))

    assert result.task_id != foreign
    mine = [t for t in emu.tasks if t["key_id"] != next(
        t2["key_id"] for t2 in emu.tasks if t2["id"] == foreign)]
    assert result.task_id in {t["id"] for t in mine}
    assert len(creates(emu)) == 4  # warm up, foreign, lost, sent again


def test_with_another_keys_task_beside_it_our_own_lost_task_is_adopted(shared_account,
                                                                      tmp_path):
    emu = shared_account
    with client_for(emu, tmp_path) as client:
        client.text_to_image(TextToImageRequest("warm up"))
        foreign = create_directly(emu, "a red fox", key=OTHER_KEY)
        emu.inject("drop_after", path=ASYNC_PATH)
        result = client.text_to_image(TextToImageRequest("a red fox"))
    assert result.task_id != foreign and result.images
    assert emu.stats["tasks_created"] == 3


@pytest.mark.parametrize("emulator", [{"rate_limits": False}], indirect=True)
def test_several_candidates_without_a_prompt_are_all_stored_and_reported(emulator, tmp_path):
    emu = emulator
    with client_for(emu, tmp_path, grace=1.5 * RECOVERY_GRACE) as client:
        client.text_to_image(TextToImageRequest("warm up", model=MODEL_30))
        twin = create_directly(emu, "a lantern", model=MODEL_30)  # same key, not journaled
        emu.inject("drop_after", path=IMAGE_GENERATION_PATH)
        with pytest.raises(AmbiguousTaskError) as caught:
            client.text_to_image(TextToImageRequest("a lantern", model=MODEL_30))

    error = caught.value
    assert twin in error.candidates and len(error.candidates) == 2
    assert len(error.saved) == 2
    assert {open(p, "rb").read() for p in error.saved} <= set(emu.served_images.values())
    assert "several could be it" in str(error)
    assert emu.stats["tasks_created"] == 3  # nothing sent twice


def test_a_batch_of_two_lost_answers_ends_with_two_images_billed_two(emu, tmp_path):
    """One create processed, one not, both answers lost: each call ends with an image; a
    seed is never recorded as certain unless it is."""
    emu.inject("drop_after", path=ASYNC_PATH)
    emu.inject("drop", path=ASYNC_PATH)
    results = {}
    with client_for(emu, tmp_path, grace=RECOVERY_GRACE) as client:
        def call(seed):
            results[seed] = client.text_to_image(TextToImageRequest("twin boats", seed=seed))

        threads = [threading.Thread(target=call, args=(seed,)) for seed in (11, 22)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    assert sorted(results) == [11, 22]
    assert emu.stats["tasks_created"] == 2 and emu.stats["images_billed"] == 2
    assert len({r.task_id for r in results.values()}) == 2
    seeds = {t["id"]: t["seed"] for t in emu.tasks}
    store = ResultStore(tmp_path / "results")
    for seed, result in results.items():
        [image] = result.images
        sidecar = json.loads(Path(image.saved_path).with_suffix(".json").read_text())
        if result.doubt:  # the pack could not tell which call the task was: it says so
            assert "seeds 11, 22" in result.doubt and result.doubt in result.notes
            assert sidecar["doubt"] == result.doubt and sidecar["fingerprint"] is None
        else:
            assert seeds[result.task_id] == seed and "doubt" not in sidecar
    index = tmp_path / "results" / "index.jsonl"
    indexed = {str(store.directory / name) for line in index.read_text().splitlines()
               for name in json.loads(line)["files"]}
    assert indexed == {r.images[0].saved_path for r in results.values() if not r.doubt}


@pytest.mark.parametrize("model", ["qwen-image-plus", MODEL_30])
def test_a_same_key_task_of_another_journal_30_s_before_the_send_is_not_adopted(emu, tmp_path,
                                                                                model):
    path = IMAGE_GENERATION_PATH if model == MODEL_30 else ASYNC_PATH
    emu.set_clock_offset(-30.0)  # so its task was made 30 s before ours, on the service's clock
    foreign = create_directly(emu, "a red fox", model=model)
    emu.set_clock_offset(0.0)
    with client_for(emu, tmp_path, grace=RECOVERY_GRACE) as client:
        client.text_to_image(TextToImageRequest("warm up", model=model))  # the key's id known
        emu.inject("drop", path=path)  # ours never reaches the service
        result = client.text_to_image(TextToImageRequest("a red fox", model=model))

    assert result.images and result.task_id != foreign
    assert len(creates(emu, path)) == 4  # foreign, warm up, lost, sent again
    assert foreign not in {e.task_id for e in journal_of(tmp_path).entries().values()}


@pytest.mark.parametrize("offset", [600.0, -600.0])
@pytest.mark.parametrize("model", ["qwen-image-plus", MODEL_30])
def test_a_machine_whose_clock_is_10_minutes_off_still_recovers(emu, tmp_path, offset, model):
    path = IMAGE_GENERATION_PATH if model == MODEL_30 else ASYNC_PATH
    emu.set_clock_offset(offset)
    with client_for(emu, tmp_path) as client:
        if model == MODEL_30:  # a task without a prompt needs the key's id
            client.text_to_image(TextToImageRequest("warm up", model=model))
        emu.inject("drop_after", path=path)
        result = client.text_to_image(TextToImageRequest("a clock tower", model=model))
    assert result.images and result.task_id == emu.tasks[-1]["id"]
    assert len(creates(emu, path)) == emu.stats["images_billed"] == len(emu.tasks)


def test_no_finder_adopts_while_a_sibling_create_awaits_its_answer(emu, tmp_path):
    journal = journal_of(tmp_path)
    with client_for(emu, tmp_path, grace=RECOVERY_GRACE) as client:
        client.text_to_image(TextToImageRequest("warm up"))
        [warm] = journal.entries().values()
        # A call of this process whose create was sent and whose answer is on its way.
        sibling = journal.begin(model="qwen-image-plus", region=SG, base_url=emu.base_url(SG),
                                interface="async", key=warm.key, fingerprint="f",
                                request={"prompt": "a heron", "n": 1, "seed": 2}, store=None)
        journal.sending(sibling.id, time.time())
        theirs = create_directly(emu, "a heron")
        emu.inject("drop", path=ASYNC_PATH)  # ours never reaches the service
        answer = threading.Timer(2.5 * RECOVERY_GRACE, lambda: journal.claim(sibling.id, theirs))
        answer.start()  # the sibling's answer comes, after our grace period
        result = client.text_to_image(TextToImageRequest("a heron", seed=1))
        answer.join()

    assert result.task_id != theirs and result.images
    assert journal.entries()[sibling.id].task_id == theirs
    assert not journal.claim(warm.id, theirs)  # a claimed task is nobody else's
    assert len(creates(emu)) == 4  # warm up, theirs, lost, sent again


# The other key's 30 tasks run side by side, not two at a time for 4.5 s.
@pytest.mark.parametrize("shared_account", [{"quotas": {**RATE["quotas"], "qwen-image-plus": {
    "request_limit": 10, "async_user_concurrency_limit": None}}}], indirect=True)
def test_one_look_at_a_busy_list_makes_at_most_20_task_queries(shared_account, tmp_path):
    emu = shared_account
    for i in range(30):  # another key's tasks of the same model, in the same seconds
        create_directly(emu, f"someone else's picture {i}", key=OTHER_KEY)
    assert wait_until(lambda: all(t["status"] == "SUCCEEDED" for t in emu.tasks), timeout=30)
    emu.inject("drop_after", path=ASYNC_PATH)
    before = len(emu.requests)
    with client_for(emu, tmp_path) as client:  # a fresh key: its id is not known
        result = client.text_to_image(TextToImageRequest("our picture"))

    assert result.images and emu.stats["images_billed"] == 31
    looks, queries = [], 0
    for r in emu.requests[before:]:
        if r.method == "GET" and r.path.endswith("/tasks") and "start_time" in r.query:
            looks.append(queries)
            queries = 0
        elif r.method == "GET" and "/tasks/" in r.path:
            queries += 1
    looks.append(queries)
    assert len(looks) > 2 and max(looks) <= 20


@pytest.mark.parametrize("emulator", [{"rate_limits": False}], indirect=True)
def test_candidate_lists_in_messages_and_the_journal_are_cut_short(emulator, tmp_path):
    emu = emulator
    with client_for(emu, tmp_path, grace=RECOVERY_GRACE) as client:
        client.text_to_image(TextToImageRequest("warm up", model=MODEL_30))
        twins = [create_directly(emu, "a lantern", model=MODEL_30) for _ in range(13)]
        emu.inject("drop_after", path=IMAGE_GENERATION_PATH)
        with pytest.raises(AmbiguousTaskError) as caught:
            client.text_to_image(TextToImageRequest("a lantern", model=MODEL_30))

    error = caught.value
    assert "14 candidate task(s)" in str(error) and "and 4 more" in str(error)
    assert len(error.candidates) == 10 and set(error.candidates) <= {
        t["id"] for t in emu.tasks}
    assert sum(twin in str(error) for twin in twins) <= 10
    entry = next(e for e in journal_of(tmp_path).entries().values() if e.status == AMBIGUOUS)
    assert entry.candidates == error.candidates


def test_concurrent_recoveries_store_an_image_once(emu, tmp_path):
    journal, entry = left_behind(emu, tmp_path, store=tmp_path / "left")
    done = []
    with client_for(emu, tmp_path) as first, client_for(emu, tmp_path) as second:
        runs = [threading.Thread(target=lambda c=c: done.append(
            unfinished.Recoverer(c).recover(entry))) for c in (first, second)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(30)

    assert sorted(d.status for d in done) == ["skipped", STORED]
    assert len(list((tmp_path / "left").rglob("*.png"))) == 1
    assert journal.entries()[entry.id].status == STORED


def test_the_emulators_clock_offset_moves_task_times_and_date_headers():
    with Emulator(clock_offset=-600.0) as emu:
        task = create_directly(emu, "a clock")
        answer = requests.get(emu.base_url(SG) + "/tasks", params={"task_id": task}, timeout=5,
                              headers={"Authorization": f"Bearer {SINGAPORE_KEY}"})
    date = email.utils.parsedate_to_datetime(answer.headers["Date"]).timestamp()
    assert -602 < date - time.time() < -598
    assert -602 < answer.json()["data"][0]["gmt_create"] / 1000 - time.time() < -598


def test_a_lost_synchronous_answer_is_not_recoverable_and_says_so(emu, tmp_path):
    emu.inject("drop_after", path=SYNC_PATH)
    with client_for(emu, tmp_path) as client, pytest.raises(AmbiguousRequestError) as caught:
        client.text_to_image(TextToImageRequest("a cat"), interface="sync")
    assert "usage statistics" in str(caught.value)
    [entry] = journal_of(tmp_path).entries().values()
    assert entry.status == LOST_SYNC and entry.interface == "sync"


def test_the_entry_is_on_disk_before_the_request_leaves(emu, tmp_path):
    emu.inject("drop_after", path=SYNC_PATH)
    with client_for(emu, tmp_path) as client, pytest.raises(AmbiguousRequestError):
        client.text_to_image(TextToImageRequest("a cat"), interface="sync")
    [entry] = journal_of(tmp_path).entries().values()
    [post] = creates(emu, SYNC_PATH)
    assert entry.time <= post.time and entry.request["prompt"] == "a cat"
    assert SINGAPORE_KEY not in journal_of(tmp_path).path.read_text()


# -- recovery after a crash, Ctrl-C --------------------------------------------------------


def cli_environment(emu, home):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DASHSCOPE_", "QWEN_IMAGE_")) and k != "PYTHONPATH"}
    env.update(HOME=str(home), DASHSCOPE_API_KEY=SINGAPORE_KEY,
               DASHSCOPE_HTTP_BASE_URL=emu.base_url(SG))
    return env


def run_cli(args, env, **options):
    script = ("import importlib.util, sys\n"
              f"spec = importlib.util.spec_from_file_location('qwen_image_dashscope', "
              f"{str(REPO / '__init__.py')!r}, submodule_search_locations=[{str(REPO)!r}])\n"
              "module = importlib.util.module_from_spec(spec)\n"
              "sys.modules['qwen_image_dashscope'] = module\n"
              "spec.loader.exec_module(module)\n"
              "from qwen_image_dashscope.api.cli.commands import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)


def started_task(emu):
    return wait_until(lambda: any(t["status"] == "RUNNING" for t in emu.tasks), timeout=20)


def collect_lines(stream):
    """The lines ``stream`` gives, in a list that grows as they come (a thread reads them)."""
    lines = []

    def read():
        for line in stream:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


# What the tests do while a run's task runs (kill the run, Ctrl-C it, twice) takes
# milliseconds once the task is seen running. A run polls on the real schedule, 0.55 s and
# 1.1 s after the creation: a task of 0.6 s is seen done at the second poll, as one of 1 s,
# so the run cannot have its image before 1.1 s either way; the 0.4 s less is what the
# in-process `recover` waits.
@pytest.mark.parametrize("emulator", [{"latency": 0.6}], indirect=True)
def test_a_killed_cli_run_is_recovered_without_paying_twice(emulator, tmp_path, monkeypatch,
                                                            capsys):
    emu, out = emulator, tmp_path / "out"
    env = cli_environment(emu, tmp_path)
    run = run_cli(["generate", "a lighthouse at dusk", "--out", str(out)], env)
    assert started_task(emu)
    assert wait_until(lambda: any(e.task_id for e in journal_of(tmp_path).entries().values()),
                      timeout=10)  # the task has started and the run knows it
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    assert not list(out.rglob("*.png"))

    for name, value in env.items():
        if name.startswith(("DASHSCOPE_", "HOME")):
            monkeypatch.setenv(name, value)
    assert cli.main(["recover"]) == 0

    printed = capsys.readouterr().out
    [png] = out.rglob("*.png")
    assert png.read_bytes() in emu.served_images.values() and str(png) in printed
    assert emu.stats["tasks_created"] == 1 and emu.stats["images_billed"] == 1
    assert cli.main(["recover"]) == 0  # nothing left: the entry is done
    assert "No unfinished request" in capsys.readouterr().out


@pytest.mark.parametrize("emulator", [{"latency": 1.0}], indirect=True)
def test_ctrl_c_after_the_task_started_keeps_the_promise(emulator, tmp_path):
    out = tmp_path / "out"
    run = run_cli(["generate", "a windmill", "--out", str(out)], cli_environment(emulator,
                                                                                 tmp_path))
    assert started_task(emulator)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)

    assert run.returncode == 0 and "Traceback" not in err  # the image it promised is there
    assert "Waiting to save its images to" in err
    [png] = out.rglob("*.png")
    assert png.read_bytes() in emulator.served_images.values()


@pytest.mark.parametrize("emulator", [{"latency": 0.6}], indirect=True)
def test_a_second_ctrl_c_leaves_cleanly_and_recover_saves_the_image(emulator, tmp_path,
                                                                    monkeypatch):
    out, env = tmp_path / "out", cli_environment(emulator, tmp_path)
    run = run_cli(["generate", "a windmill", "--out", str(out)], env)
    lines, reader = collect_lines(run.stderr)
    assert started_task(emulator)
    run.send_signal(signal.SIGINT)
    # The first one is handled: the run now waits for the images.
    assert wait_until(lambda: any("Waiting to save its images" in line for line in lines),
                      timeout=20)
    run.send_signal(signal.SIGINT)
    run.wait(timeout=30)
    reader.join(10)
    run.stdout.close()
    err = "".join(lines)
    [task] = emulator.tasks

    assert run.returncode == 130 and "Traceback" not in err
    assert f"Task {task['id']} goes on at DashScope" in err and "qwen-image recover" in err
    assert not list(out.rglob("*.png"))
    for name in ("HOME", "DASHSCOPE_API_KEY", "DASHSCOPE_HTTP_BASE_URL"):
        monkeypatch.setenv(name, env[name])
    assert cli.main(["recover"]) == 0
    assert len(list(out.rglob("*.png"))) == 1 and emulator.stats["images_billed"] == 1


def test_the_first_call_after_a_restart_recovers_in_the_background(emu, tmp_path, caplog,
                                                                   monkeypatch):
    journal, entry = left_behind(emu, tmp_path, store=tmp_path / "results")
    monkeypatch.setattr(PROCESS_STATE, "started", time.time())
    caplog.set_level(logging.WARNING)

    with client_for(emu, tmp_path) as client:
        client.background_recovery = True
        client.text_to_image(TextToImageRequest("after the restart"))
        thread = unfinished.recover_in_background(client)  # already started: not twice
    assert thread is None
    assert wait_until(lambda: journal.entries()[entry.id].status == STORED, timeout=20)
    assert f"Recovered qwen-image-plus {entry.task_id}" in caplog.text


# -- the command line's other promises ----------------------------------------------------


def test_an_out_folder_that_cannot_be_written_is_refused_before_paying(emu, tmp_path,
                                                                      monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DASHSCOPE_API_KEY", SINGAPORE_KEY)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", emu.base_url(SG))

    assert cli.main(["generate", "a cat", "--out", str(blocker / "out")]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written" in err and "nothing was sent" in err
    assert emu.requests == []


def test_a_missing_input_file_is_a_one_line_error(emu, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DASHSCOPE_API_KEY", SINGAPORE_KEY)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", emu.base_url(SG))

    code = cli.main(["edit", "blue", str(tmp_path / "missing.png"), "--out", str(tmp_path)])

    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing.png" in err
    assert "No such file" in err and "Traceback" not in err and emu.requests == []


def test_progress_piped_to_a_file_writes_plain_lines(emu, tmp_path):
    run = run_cli(["generate", "a cat", "--out", str(tmp_path / "out")],
                  cli_environment(emu, tmp_path))
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0 and "\r" not in err
    lines = [line for line in err.splitlines()
             if line.split()[0] in ("queued", "running", "downloading", "done")]
    assert [line.split()[0] for line in lines][-2:] == ["downloading", "done"]
    assert len(lines) == len(set(lines))  # a line per change, not per tick


def test_progress_on_a_terminal_redraws_one_line(monkeypatch):
    import io

    from qwen_image_dashscope.api.call.waiting import Progress
    from qwen_image_dashscope.api.cli.console import Console

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    console = Console()
    for stage, elapsed in (("queued", 0.1), ("running", 0.6), ("running", 1.1), ("done", 1.5)):
        console.progress(Progress(stage, elapsed, "task-1", 0.5, stage))

    text = screen.getvalue()
    assert text.count("\r") == 4 and text.count("\n") == 1 and text.endswith("\n")
