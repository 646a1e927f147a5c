"""Fixtures for running the node classes as ComfyUI would, without ComfyUI.

A pytest plugin: test modules load it with ``pytest_plugins = ("comfy_stubs.fixtures",)``.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from . import activate


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
    yield emulator
    # Work a node left behind (Cancel, a failed sibling) finishes in the client's background
    # threads. Let it end while the emulator still answers: a worker polling a vanished
    # service would hold its model's concurrency slot (shared by key) into the next test.
    deadline = time.monotonic() + 15
    for thread in threading.enumerate():
        if thread.name.startswith("qwen-image-"):
            thread.join(max(0.0, deadline - time.monotonic()))
