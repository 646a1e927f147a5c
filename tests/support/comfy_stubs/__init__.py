"""Stand-ins for the ComfyUI modules the pack talks to, at ComfyUI's own module paths.

This directory holds ``comfy/utils.py``, ``comfy/model_management.py``, ``server.py`` and
``folder_paths.py``; ``activate`` puts it on ``sys.path`` for one test and takes it off
afterwards, so tests that expect no ComfyUI never see the stand-ins. The stand-ins behave
like ComfyUI's (same names, same signatures, same interrupt semantics) and record every
call for assertions.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import SimpleNamespace

STUB_DIR = str(Path(__file__).resolve().parent)
MODULES = ("comfy", "comfy.utils", "comfy.model_management", "server", "folder_paths")


def _forget():
    for name in MODULES:
        sys.modules.pop(name, None)


@contextlib.contextmanager
def activate(output_directory):
    """Make ``import comfy.utils`` & co. find the stand-ins; yields the imported modules."""
    _forget()
    sys.path.insert(0, STUB_DIR)
    try:
        import comfy.model_management
        import comfy.utils
        import folder_paths
        import server

        folder_paths.set_output_directory(str(output_directory))
        yield SimpleNamespace(model_management=comfy.model_management, utils=comfy.utils,
                              server=server, folder_paths=folder_paths)
    finally:
        sys.path.remove(STUB_DIR)
        _forget()
