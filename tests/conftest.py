"""Test set-up: the repository as the package ``qwen_image_dashscope`` (``support.package``)
and every fixture of the suite; shared helpers are in ``tests/support/``."""
import functools
import os
import threading
import time

import pytest

from support.comfy_stubs import activate
from support.package import load_package

load_package()


# --- DashScope emulator -------------------------------------------------------------------


@pytest.fixture
def emulator(request):
    """A running emulator (api/emulator): latency 0.1 s, then the test module's ``EMULATOR``
    options (e.g. ``support.emulator_http.STANDARD_EMULATOR``), then the test's own via
    indirect parametrization:
    ``@pytest.mark.parametrize("emulator", [{"rate_limits": False}], indirect=True)``."""
    from qwen_image_dashscope.api.emulator import Emulator

    options = {"latency": 0.1, **getattr(request.module, "EMULATOR", {}),
               **getattr(request, "param", {})}
    with Emulator(**options) as emu:
        yield emu


@pytest.fixture(autouse=True)
def quick_polls(request, monkeypatch):
    """Task queries on the polling schedule of ``api/call/polling.py`` scaled down four
    times (the emulator's tasks take a tenth of a second, not fifteen), except in a module
    that tests the schedule itself (``REAL_POLL_SCHEDULE = True``)."""
    if getattr(request.module, "REAL_POLL_SCHEDULE", False):
        return
    from qwen_image_dashscope.api.call import polling

    for name in ("MIN_INTERVAL", "PAIR_WINDOW", "MIN_GAP", "ALIGN", "SNAP_SLACK"):
        monkeypatch.setattr(polling, name, getattr(polling, name) / 4)


@pytest.fixture(autouse=True)
def quick_recovery(monkeypatch):
    """The task list looked at four times as often as ``api/recovery/finder.py`` allows
    (every quarter of the grace period, at least every 0.125 s instead of 0.5 s): the tests'
    grace periods are a quarter of a second or so (``support.client.RECOVERY_GRACE``), the
    emulator's list shows a task at once, and a short grace still gets several looks."""
    from qwen_image_dashscope.api.recovery import finder

    monkeypatch.setattr(finder, "MIN_LIST_STEP", finder.MIN_LIST_STEP / 4)


# --- client tests -------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def private_home(tmp_path_factory, monkeypatch):
    """Each test has a HOME of its own: the journal, the budget ledger and key files of the
    machine are never read or written."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Each test starts as a fresh process does: no limiter, upload, probe or duration."""
    from qwen_image_dashscope.api.state import PROCESS_STATE

    PROCESS_STATE.reset()
    yield PROCESS_STATE


@pytest.fixture
def emu(emulator):
    """The client tests' name for the default emulator."""
    return emulator


@pytest.fixture
def client(emu):
    from support.client import make_client

    with make_client(emu) as c:
        yield c


@pytest.fixture
def store(tmp_path):
    from qwen_image_dashscope.api.storage.store import ResultStore

    return ResultStore(tmp_path / "results")


# --- nodes run as ComfyUI runs them, without ComfyUI ------------------------------------
@pytest.fixture
def comfy(tmp_path):
    """The ComfyUI stand-ins, with the output directory in tmp_path."""
    with activate(tmp_path / "output") as modules:
        yield modules


@pytest.fixture
def service(emulator, monkeypatch, tmp_path):
    """The emulator as the only DashScope the client can reach, with a Singapore key."""
    for name in list(os.environ):
        if name.startswith("DASHSCOPE_") or name == "QWEN_IMAGE_STORE_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.dashscope/api_key of the machine
    from qwen_image_dashscope.api.emulator import SINGAPORE_KEY

    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", emulator.base_url("ap-southeast-1"))
    monkeypatch.setenv("DASHSCOPE_API_KEY", SINGAPORE_KEY)
    # The clients the nodes make use the pack's default retry policy: the same attempts and
    # time budget here, with its backoff scaled down tenfold (a Retry-After is still obeyed).
    from qwen_image_dashscope.api.service import download, transport
    from qwen_image_dashscope.api.service.retry import RetryPolicy

    quick = functools.partial(RetryPolicy, base=RetryPolicy.base / 10, cap=RetryPolicy.cap / 10)
    monkeypatch.setattr(transport, "RetryPolicy", quick)
    monkeypatch.setattr(download, "RetryPolicy", quick)
    yield emulator
    # Work a node left behind (Cancel, a failed sibling) finishes in the client's background
    # threads. Let it end while the emulator still answers: a worker polling a vanished
    # service would hold its model's concurrency slot (shared by key) into the next test.
    deadline = time.monotonic() + 15
    for thread in threading.enumerate():
        if thread.name.startswith("qwen-image-"):
            thread.join(max(0.0, deadline - time.monotonic()))
