"""The repository as the package ``qwen_image_dashscope``, loaded as ComfyUI loads a pack.

ComfyUI imports a pack from its folder, whatever the folder is called; the tests, the
benchmarks and their child processes do the same, so they run from a clone in any
directory without installing anything.
"""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
PACKAGE = "qwen_image_dashscope"


def load_package():
    """The package (loaded once per process); ``tests/`` goes on sys.path for ``support``."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    return sys.modules[PACKAGE]
