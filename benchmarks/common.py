"""What the benchmark modules share: the package loaded as ComfyUI loads it, the emulator as
the only DashScope, nodes run as ComfyUI runs them, fresh child processes, formatting."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package
from support.package import load_package  # noqa: E402,F401 - needs the path above; re-exported


@contextlib.contextmanager
def environment(base_url: str, key: str, store_dir: str):
    """The emulator as the only DashScope the nodes can reach; results into ``store_dir``,
    which is also HOME (so the state folder, ``~/.dashscope``, starts empty)."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("DASHSCOPE_") or name == "QWEN_IMAGE_STORE_DIR":
            del os.environ[name]
    os.environ.update({"DASHSCOPE_HTTP_BASE_URL": base_url, "DASHSCOPE_API_KEY": key,
                       "QWEN_IMAGE_STORE_DIR": store_dir, "HOME": store_dir})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_node(node_class, **inputs):
    """The node's FUNCTION with widget defaults, run as ComfyUI's prompt worker runs it."""
    from support.comfy_stubs.harness import widget_defaults

    arguments = {**widget_defaults(node_class), "unique_id": "bench", **inputs}
    return asyncio.run(getattr(node_class(), node_class.FUNCTION)(**arguments))


def in_child(flag: str, arguments: list, timeout: float = 600) -> dict:
    """``run.py --<flag> <arguments as JSON>`` in a fresh process; its last stdout line,
    parsed as JSON."""
    command = [sys.executable, str(BENCHMARKS / "run.py"), f"--{flag}", json.dumps(arguments)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{flag} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "**missed**"
