"""The repository as the package ``qwen_image_dashscope``, loaded as ComfyUI loads a pack.

ComfyUI imports a pack from its folder, whatever the folder is called; the tests, the
benchmarks and their child processes do the same, so they run from a clone in any
directory without installing anything.
"""
import importlib.util
import json
import os
import subprocess
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


def import_as_comfyui(home: Path, preload_torch: bool) -> dict:
    """Import the repository in a fresh process the way ComfyUI's load_custom_node does,
    from ``home/custom_nodes/ComfyUI-Qwen-Image`` (a hyphenated folder), with no key and
    ``home`` as HOME. Returns ``seconds``, ``new`` (modules it loaded), ``nodes``, ``names``
    and ``web`` (the pack's mappings and web directory)."""
    folder = home / "custom_nodes" / "ComfyUI-Qwen-Image"
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.symlink_to(REPO, target_is_directory=True)
    code = f"""
import importlib.util, json, sys, time
{"import torch" if preload_torch else ""}
before = set(sys.modules)
module_path = {str(folder)!r}
name = module_path.replace(".", "_x_")  # as ComfyUI names it
start = time.perf_counter()
spec = importlib.util.spec_from_file_location(name, module_path + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
nodes = sorted(module.NODE_CLASS_MAPPINGS)  # ComfyUI reads it at once; it is built lazily
print(json.dumps({{"seconds": time.perf_counter() - start,
                   "new": sorted(set(sys.modules) - before), "nodes": nodes,
                   "names": module.NODE_DISPLAY_NAME_MAPPINGS, "web": module.WEB_DIRECTORY}}))
"""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DASHSCOPE_") and k != "PYTHONPATH"}
    env["HOME"] = str(home)  # no key file either
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=home, env=env, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)
