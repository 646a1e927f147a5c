"""The one place that touches ComfyUI's own modules.

They are imported inside functions, never at import time: the pack is also imported by the
command line and by tests where ComfyUI does not exist. Without ComfyUI every hook falls
back to something harmless (no progress bar, no status text, never interrupted).
"""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from ..api.errors import CancelledError
from .status import page_text

log = logging.getLogger(__name__)

STORE_DIR_ENV = "QWEN_IMAGE_STORE_DIR"
STORE_SUBFOLDER = "qwen-image"


def _optional(name: str, attribute: str):
    """ComfyUI's module ``name`` when it is there, else None (``attribute`` proves it is)."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    # A stray top-level ``server`` or ``folder_paths`` of another program is not ComfyUI's.
    return module if hasattr(module, attribute) else None


class Comfy:
    """ComfyUI's hooks for one node run, looked up once when the run starts."""

    def __init__(self):
        self.model_management = _optional("comfy.model_management", "processing_interrupted")
        self.utils = _optional("comfy.utils", "ProgressBar")
        server = _optional("server", "PromptServer")
        self.server = getattr(server, "PromptServer", None)
        self.folder_paths = _optional("folder_paths", "get_output_directory")

    def interrupted(self) -> bool:
        return bool(self.model_management and self.model_management.processing_interrupted())

    def raise_interrupted(self):
        """Raise what makes ComfyUI report "interrupted" rather than an error."""
        mm = self.model_management
        if mm is None:
            raise CancelledError("Cancelled.")
        mm.throw_exception_if_processing_interrupted()
        # The flag can be cleared between our look and the throw (another node took it).
        raise mm.InterruptProcessingException()

    def progress_bar(self, total: int, node_id):
        if self.utils is None:
            return None
        return self.utils.ProgressBar(total, node_id=node_id)

    @staticmethod
    def progress(bar, value: float, total: int, picture=None) -> None:
        """Move the bar; with ``picture`` (an RGB PIL image) also make it the node's preview
        (ComfyUI sends it to the browser that queued the prompt)."""
        if bar is None:
            return
        preview = None if picture is None else ("PNG", picture, max(picture.size))
        bar.update_absolute(value, total, preview)

    def send_text(self, text: str, node_id) -> None:
        """The status text under the node, escaped for the page (``status.page_text``)."""
        instance = getattr(self.server, "instance", None)
        if instance is None or node_id is None:
            log.debug("%s", text)
            return
        instance.send_progress_text(page_text(text), node_id)

    def shown_path(self, folder) -> str:
        """``folder`` as a ComfyUI user finds it: under "output/" when it is in ComfyUI's
        output directory, else as it is."""
        folder = Path(folder)
        if self.folder_paths is not None:
            output = Path(self.folder_paths.get_output_directory())
            if folder.is_relative_to(output):
                return str(Path("output") / folder.relative_to(output))
        return str(folder)

    def store_directory(self) -> Path:
        """Where results are kept: $QWEN_IMAGE_STORE_DIR, else ComfyUI's output dir / qwen-image.

        Without ComfyUI (scripts, tests), ``./qwen-image-output`` as for the command line.
        """
        configured = os.environ.get(STORE_DIR_ENV, "").strip()
        if configured:
            return Path(configured).expanduser()
        if self.folder_paths is not None:
            return Path(self.folder_paths.get_output_directory()) / STORE_SUBFOLDER
        return Path("qwen-image-output")
