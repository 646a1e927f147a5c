"""Running a node's client calls while ComfyUI watches: status text under the node, the
progress bar, and Cancel (which cancels queued remote tasks and returns at once).

Imports neither torch nor the HTTP client at import time (see ``widgets``).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..api.config import Config
from ..api.errors import QwenImageError
from ..api.models import SEED_MAX
from .comfy_bridge import Comfy

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often a waiting node looks at ComfyUI's Cancel flag


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


class _Status:
    """The latest Progress of every call, rendered as the text under the node."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.total = sum(job.n for job in jobs)
        self.latest: list[tuple[object, float] | None] = [None] * len(jobs)
        self.finished: list[str | None] = [None] * len(jobs)

    def callback(self, index: int):
        def on_progress(progress) -> None:  # called from the client's thread
            self.latest[index] = (progress, time.monotonic())
        return on_progress

    def _line(self, index: int, now: float) -> str:
        if self.finished[index]:
            return self.finished[index]
        seen = self.latest[index]
        if seen is None:
            return "waiting"
        progress, at = seen
        if progress.stage in ("queued", "running"):
            return f"{progress.stage} {progress.elapsed + (now - at):.0f} s"
        return progress.stage

    def text(self) -> str:
        now = time.monotonic()
        if len(self.jobs) == 1:
            return self._line(0, now)
        return "\n".join(f"{job.label(self.total)}: {self._line(i, now)}"
                         for i, job in enumerate(self.jobs))

    def images_done(self) -> float:
        done = 0.0
        for i, job in enumerate(self.jobs):
            if self.finished[i]:
                done += job.n
            elif self.latest[i] is not None:
                done += job.n * min(1.0, max(0.0, self.latest[i][0].fraction or 0.0))
        return round(done, 2)


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


async def run_jobs(jobs: list[Job], call, *, comfy: Comfy, node_id, fail_fast: bool) -> list:
    """Run ``call(job, on_progress, cancel_event)`` for every job concurrently in threads.

    Returns one GenerationResult or QwenImageError per job. Every POLL_SECONDS the node
    looks at ComfyUI's Cancel flag; on Cancel (or a failure with ``fail_fast``) the
    shared cancel event is set, which cancels queued remote tasks, and the node returns at
    once without waiting for the calls, whose running work still lands in the store.
    """
    import asyncio

    if comfy.interrupted():  # pressed while the inputs were prepared: send nothing
        comfy.raise_interrupted()
    cancel_event = threading.Event()
    status = _Status(jobs)
    bar = comfy.progress_bar(status.total, node_id)
    loop = asyncio.get_running_loop()
    # A pool of this node's own: its calls block while they wait for the model's slots,
    # and in the loop's shared default pool they would starve every other node's work.
    pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="dashscope-node")
    futures = {loop.run_in_executor(pool, call, job, status.callback(i), cancel_event): i
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
                    outcomes[index] = future.result()
                    status.finished[index] = ("from store" if outcomes[index].from_store
                                              else "done")
                elif isinstance(error, QwenImageError):
                    outcomes[index] = error
                    status.finished[index] = f"failed: {type(error).__name__}"
                    if fail_fast:
                        raise error
                else:
                    raise error
            now_shown = (status.text(), status.images_done())
            if now_shown != shown:
                shown = now_shown
                comfy.send_text(shown[0], node_id)
                if bar is not None:
                    bar.update_absolute(shown[1], status.total)
    except BaseException:
        cancel_event.set()
        for future in futures:
            if not future.done():
                future.add_done_callback(_consume)
        raise
    finally:
        pool.shutdown(wait=False)  # calls left behind after Cancel finish on their own
    return outcomes


def make_client(region: str | None, comfy: Comfy):
    # Imported here: the client pulls in requests, which importing the pack must not.
    from ..api.client import QwenImageClient
    from ..api.store import ResultStore

    # background_recovery: the first call after a restart also finishes, in the background,
    # the journal's tasks that a previous ComfyUI process created and never fetched.
    return QwenImageClient(Config.resolve(region=region),
                           store=ResultStore(comfy.store_directory()), background_recovery=True)
