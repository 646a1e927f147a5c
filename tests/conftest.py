"""Test set-up: load the repository as the package ``qwen_image_dashscope``.

ComfyUI imports a pack from its folder, whatever the folder is called; the tests do the
same, so they run from a clone in any directory without installing anything.
"""
import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "qwen_image_dashscope"


def _load_repository_as_package():
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        PACKAGE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)


_load_repository_as_package()


# --- DashScope emulator -------------------------------------------------------------------
import pytest  # noqa: E402 - kept below the loader above, which must run first


@pytest.fixture
def emulator(request):
    """A running emulator (api/emulator); options via indirect parametrization, e.g.
    ``@pytest.mark.parametrize("emulator", [{"rate_limits": False}], indirect=True)``."""
    from qwen_image_dashscope.api.emulator import Emulator

    options = {"latency": 0.1, **getattr(request, "param", {})}
    with Emulator(**options) as emu:
        yield emu


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
    from test_client_support import make_client

    with make_client(emu) as c:
        yield c


@pytest.fixture
def store(tmp_path):
    from qwen_image_dashscope.api.store import ResultStore

    return ResultStore(tmp_path / "results")
