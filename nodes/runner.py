"""Running a node's client calls while ComfyUI watches: status text under the node, the
progress bar with each image as a preview the moment it lands, and Cancel (which cancels
queued remote tasks and returns at once).

Imports neither torch nor the HTTP client at import time (see ``widgets``).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..api.catalog.specs import SEED_MAX
from ..api.config import Config
from ..api.errors import QwenImageError
from .comfy_bridge import Comfy
from .status import BatchStatus, summary

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often a waiting node looks at ComfyUI's Cancel flag
PREVIEW_SIDE = 512  # px: ComfyUI's own default preview size (--preview-size)


def seed_for(seed: int, index: int) -> int:
    """seed, seed+1, ... for the calls of one node, wrapping past the largest seed to 0."""
    return (seed + index) % (SEED_MAX + 1)


@dataclass
class Job:
    """One call: its request and the output images it stands for (``first`` .. ``first+n-1``)."""

    request: object
    first: int
    n: int

    def label(self, total: int) -> str:
        if self.n == 1:
            return f"image {self.first + 1}/{total}"
        return f"images {self.first + 1}-{self.first + self.n}/{total}"


async def in_thread(comfy: Comfy, function, *args):
    """Run CPU work (PNG coding) off ComfyUI's event loop, so other nodes go on; Cancel
    returns at once and leaves the thread to finish unseen."""
    import asyncio  # here, not at the top: importing it costs the command line ~70 ms

    future = asyncio.ensure_future(asyncio.to_thread(function, *args))
    while True:
        done, _ = await asyncio.wait({future}, timeout=POLL_SECONDS)
        if done:
            return future.result()
        if comfy.interrupted():
            future.add_done_callback(_consume)
            comfy.raise_interrupted()


def _consume(future) -> None:
    # Work left behind after Cancel ends unseen (a call in CancelledError): nobody awaits it.
    if not future.cancelled():
        future.exception()


def _previews(result) -> list:
    """Small RGB pictures of a result's images for the node's preview; an image that does
    not decode, or is over the pixel cap, gets none (the run goes on: its file is in the
    store either way)."""
    import io

    from PIL import Image

    from ..api.images import flatten, over_pixel_cap

    pictures = []
    for image in result.images:
        try:
            picture = Image.open(io.BytesIO(image.data))  # the header only, so far
            if over_pixel_cap(*picture.size):
                log.warning("No preview of %s: %dx%d is over the pixel cap",
                            image.saved_path or image.url, *picture.size)
                continue
            picture = picture if picture.mode == "RGB" else flatten(picture)
            picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        except Exception as exc:  # Pillow raises many kinds; a preview is never worth a run
            log.warning("No preview of %s: %s", image.saved_path or image.url, exc)
            continue
        pictures.append(picture)
    return pictures


def _call_and_preview(call, job, on_progress, cancel_event):
    # In the call's own thread, so decoding previews never holds up ComfyUI's event loop.
    result = call(job, on_progress, cancel_event)
    return result, _previews(result)


async def run_jobs(jobs: list[Job], call, *, comfy: Comfy, node_id, fail_fast: bool) -> list:
    """Run ``call(job, on_progress, cancel_event)`` for every job concurrently in threads.

    Returns one GenerationResult or QwenImageError per job. The status text counts the
    images by state; each image becomes the node's preview as soon as its call has it; the
    text ends with a summary (``status``). Every POLL_SECONDS the node looks at ComfyUI's
    Cancel flag; on Cancel (or a failure with ``fail_fast``) the shared cancel event is
    set, which cancels queued remote tasks, and the node returns at once without waiting
    for the calls, whose running work still lands in the store.
    """
    import asyncio

    if comfy.interrupted():  # pressed while the inputs were prepared: send nothing
        comfy.raise_interrupted()
    cancel_event = threading.Event()
    status = BatchStatus([job.n for job in jobs])
    bar = comfy.progress_bar(status.total, node_id)
    loop = asyncio.get_running_loop()
    # A pool of this node's own: its calls block while they wait for the model's slots,
    # and in the loop's shared default pool they would starve every other node's work.
    pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="dashscope-node")
    futures = {loop.run_in_executor(pool, _call_and_preview, call, job, status.callback(i),
                                    cancel_event): i
               for i, job in enumerate(jobs)}
    outcomes: list = [None] * len(jobs)
    shown = (None, None)
    try:
        pending = set(futures)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=POLL_SECONDS)
            if comfy.interrupted():
                log.info("Cancel pressed: cancelling %d Qwen-Image call(s)", len(pending))
                cancel_event.set()
                comfy.raise_interrupted()
            for future in done:
                index = futures[future]
                error = future.exception()
                if error is None:
                    outcomes[index], previews = future.result()
                    status.finish(index, outcomes[index])
                    for picture in previews:
                        comfy.progress(bar, status.images_done(), status.total, picture)
                elif isinstance(error, QwenImageError):
                    outcomes[index] = error
                    status.finish(index, error)
                    if fail_fast:
                        raise error
                else:
                    raise error
            now_shown = (status.text(), status.images_done())
            if now_shown != shown:
                shown = now_shown
                comfy.send_text(shown[0], node_id)
                comfy.progress(bar, shown[1], status.total)
    except BaseException:
        cancel_event.set()
        for future in futures:
            if not future.done():
                future.add_done_callback(_consume)
        raise
    finally:
        pool.shutdown(wait=False)  # calls left behind after Cancel finish on their own
    comfy.send_text(summary(outcomes, time.monotonic() - status.started, comfy.shown_path),
                    node_id)
    return outcomes


def make_client(region: str | None, comfy: Comfy):
    # Imported here: the client pulls in requests, which importing the pack must not.
    from ..api.client import QwenImageClient
    from ..api.storage.store import ResultStore

    # background_recovery: the first call after a restart also finishes, in the background,
    # the journal's tasks that a previous ComfyUI process created and never fetched.
    return QwenImageClient(Config.resolve(region=region),
                           store=ResultStore(comfy.store_directory()), background_recovery=True)
