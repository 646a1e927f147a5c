"""Stand-in for ``comfy.utils.ProgressBar`` and its global hook.

ComfyUI's hook (main.py, hijack_progress) first calls
``throw_exception_if_processing_interrupted()`` and then sends the progress; this one does
the same and records ``(node_id, value, total)`` in ``updates`` and each preview image
(``("PNG", pil_image, max_size)``) with the moment it came in ``previews``.
"""
import threading
import time

from comfy import model_management

updates = []
previews = []  # (node_id, preview tuple, time.monotonic())
bars = []  # (total, node_id) of every ProgressBar created
_lock = threading.Lock()


def _recording_hook(value, total, preview_image, prompt_id=None, node_id=None):
    model_management.throw_exception_if_processing_interrupted()
    with _lock:
        updates.append((node_id, value, total))
        if preview_image is not None:
            previews.append((node_id, preview_image, time.monotonic()))


PROGRESS_BAR_HOOK = _recording_hook


def set_progress_bar_global_hook(function):
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id
        with _lock:
            bars.append((total, node_id))

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value):
        self.update_absolute(self.current + value)
