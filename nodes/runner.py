"""Running a node's client calls while ComfyUI watches: status text under the node, the
progress bar with each image as a preview the moment it lands, and Cancel (which cancels
queued remote tasks and returns at once).

Imports neither torch nor the HTTP client at import time (see ``widgets``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..api.catalog.specs import SEED_MAX
from ..api.config import Config
from ..api.errors import QwenImageError
from .comfy_bridge import Comfy
from .status import BatchStatus, summary

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often a waiting node looks at ComfyUI's Cancel flag
PREVIEW_SIDE = 512  # px: ComfyUI's own default preview size (--preview-size)
# Decoded pixels one run keeps for its IMAGE output (eight 1328x1328 images take 42 MB).
# The images past it are decoded again when the output is made: kept pixels add to the
# run's peak memory, which stays within the output tensor plus this much.
KEEP_DECODED_BYTES = 64 << 20


def seed_for(seed: int, index: int) -> int:
    """seed, seed+1, ... for the calls of one node, wrapping past the largest seed to 0."""
    return (seed + index) % (SEED_MAX + 1)


@dataclass
class Call:
    """One call of a node: its request and the output images it stands for (``first`` ..
    ``first+n-1``)."""

    request: object
    first: int
    n: int
    # What the run's Decoder made of its result's images (``Decoded``, in order); None
    # when not kept (see KEEP_DECODED_BYTES).
    decoded: list | None = None

    def label(self, total: int) -> str:
        if self.n == 1:
            return f"image {self.first + 1}/{total}"
        return f"images {self.first + 1}-{self.first + self.n}/{total}"


class OutputMemory:
    """The IMAGE tensor's memory (``tensors.new_output``: mapping 8 images of 1328x1328 takes
    about 0.1 s), mapped off the event loop while a batch's later calls still run, once the
    first call has shown the images' size; the run's ``Decoder`` writes each later image
    into its frame, and ``outputs.assemble`` uses it when the batch's shape is that (and maps
    its own otherwise)."""

    def __init__(self):
        self._future = None
        self._array = None  # set by the mapping thread, read by the decoding one

    def start(self, shape: tuple[int, ...]) -> None:
        import asyncio

        if self._future is None:
            self._future = asyncio.ensure_future(asyncio.to_thread(self._map, shape))

    def _map(self, shape: tuple[int, ...]) -> None:
        from .tensors import new_output  # in the thread: the first import loads torch

        self._array = new_output(shape)

    def frame(self, index: int, shape: tuple[int, ...]):
        """Frame ``index`` of the output if it is mapped and its frames have ``shape``,
        else None."""
        array = self._array
        if array is None or not 0 <= index < len(array) or array.shape[1:] != shape:
            return None
        return array[index]

    async def finish(self) -> None:
        if self._future is not None:
            await self._future

    def take(self):
        array, self._array = self._array, None
        return array


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


@dataclass
class Decoded:
    """One result image as the run's ``Decoder`` decoded it: its pixels (uint8 [H, W, 3] and
    the alpha or None, as ``api.images.decode_pixels`` gives them; None when not decoded;
    ``(None, alpha)`` when written into the output's frame already) and its preview (None
    when it has none)."""

    pixels: tuple | None
    preview: object | None

    @property
    def written(self) -> bool:
        """Whether the colour pixels went into the output's frame (only the alpha is kept)."""
        return self.pixels is not None and self.pixels[0] is None

    @property
    def kept_bytes(self) -> int:
        """What the kept colour pixels take (0 when none are kept)."""
        return 0 if self.pixels is None or self.written else self.pixels[0].nbytes


def _decoded(result, frame=None) -> list[Decoded]:
    """Each image of a result decoded once: a small RGB picture for the node's preview, and
    the pixels, which the IMAGE output takes without decoding the file again (written
    straight into ``frame(k, shape)`` when that gives the output's frame for image k). An
    image that does not decode, or is over the pixel cap, gets neither (the run goes on:
    its file is in the store either way, and the output decodes it itself)."""
    import io

    import numpy as np
    from PIL import Image

    from ..api.images import decode_pixels, flatten, over_pixel_cap
    from .tensors import return_freed_memory, to_float  # torch is loaded: a result is in hand

    decoded = []
    for index, image in enumerate(result.images):
        try:
            header = Image.open(io.BytesIO(image.data))  # the header only, so far
            if over_pixel_cap(*header.size):
                log.warning("No preview of %s: %dx%d is over the pixel cap",
                            image.saved_path or image.url, *header.size)
                decoded.append(Decoded(None, None))
                continue
            pixels, alpha = decode_pixels(image.data)
            picture = Image.fromarray(pixels) if alpha is None else flatten(
                Image.fromarray(np.dstack((pixels, alpha)), "RGBA"))
            # reducing_gap 1: a box reduction first, then bicubic; half the time of the
            # default (2) and alike at preview size.
            picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), reducing_gap=1.0)
        except Exception as exc:  # Pillow raises many kinds; a preview is never worth a run
            log.warning("No preview of %s: %s", image.saved_path or image.url, exc)
            decoded.append(Decoded(None, None))
            continue
        target = frame(index, pixels.shape) if frame is not None else None
        if target is not None:
            to_float(pixels, target)
            pixels = None  # the output holds them: nothing to keep
        decoded.append(Decoded((pixels, alpha), picture))
    return_freed_memory()  # the thread's buffers: see there
    return decoded


class Decoder:
    """The run's one thread that decodes the calls' results, each as its worker hands it
    over (the worker waits: its call is done once its images are decoded).

    One thread for the run, not each call's worker: glibc keeps what a thread frees in
    that thread's arena, so workers decoding for themselves each kept a decode's buffers
    (about 28 MB for 2048x2048) resident, while one thread reuses the same ones. Once the
    output's memory is mapped (``OutputMemory``), each image goes straight into its frame,
    so a run keeps the pixels only of the images that came before (benchmark 4, 6 images of
    2048x2048: the peak 1.33-1.38 x the output, 1.48-1.58 before)."""

    def __init__(self, memory: OutputMemory | None):
        from concurrent.futures import ThreadPoolExecutor

        self._memory = memory
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qwen-image-decode")

    def for_call(self, call: Call):
        """The worker's ``after(result)`` for ``call``: its result decoded on this thread."""
        def frame(index: int, shape: tuple[int, ...]):
            if self._memory is None or index >= call.n:  # past its n: another call's frame
                return None
            return self._memory.frame(call.first + index, shape)

        def decode(result) -> list[Decoded]:
            try:
                job = self._pool.submit(_decoded, result, frame)
            except RuntimeError:  # the run has ended (a call given up): nobody shows it
                return []
            return job.result()

        return decode

    def close(self) -> None:
        """No new work; what is queued still ends (the thread goes then)."""
        self._pool.shutdown(wait=False)


async def run_calls(calls: list[Call], start, *, comfy: Comfy, node_id, fail_fast: bool,
                    memory: OutputMemory | None = None) -> list:
    """Start every call (``start(call, after, on_done)`` returns the client's ``Running``,
    whose worker thread does the call's HTTP work), then wait for all of them in this one
    loop.

    Returns one GenerationResult or QwenImageError per call. The status text counts the
    images by state; each image becomes the node's preview as soon as its call has it
    (decoded on the run's ``Decoder`` thread, never on ComfyUI's event loop); the text ends with a
    summary (``status``). The loop wakes the moment a call ends, and every POLL_SECONDS to
    look at ComfyUI's Cancel flag; on Cancel (or a failure with ``fail_fast``) every call
    still running is given up, which cancels queued remote tasks, and the node returns at
    once without waiting for them: their running work still lands in the store.
    ``memory``: mapped for the output once the first call has its images (``OutputMemory``).
    """
    import asyncio

    if comfy.interrupted():  # pressed while the inputs were prepared: send nothing
        comfy.raise_interrupted()
    status = BatchStatus([call.n for call in calls])
    bar = comfy.progress_bar(status.total, node_id)
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def on_done() -> None:  # in a worker thread
        try:
            loop.call_soon_threadsafe(woken.set)
        except RuntimeError:  # a call given up ended after its loop closed: nobody waits
            pass

    outcomes: list = [None] * len(calls)
    running: dict[int, object] = {}
    shown = (None, None)
    kept_bytes = 0  # of decoded pixels the calls keep (KEEP_DECODED_BYTES)
    decoder = Decoder(memory)
    try:
        for index, call in enumerate(calls):
            try:
                running[index] = start(call, decoder.for_call(call), on_done)
            except QwenImageError as error:  # refused before anything was sent
                outcomes[index] = error
                status.finish(index, error)
                if fail_fast:
                    raise
        while running:
            try:
                await asyncio.wait_for(woken.wait(), POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
            woken.clear()
            if comfy.interrupted():
                log.info("Cancel pressed: cancelling %d Qwen-Image call(s)", len(running))
                comfy.raise_interrupted()
            for index, call_running in list(running.items()):
                call = calls[index]
                progress = status.callback(index)
                for event in call_running.progress():
                    progress(event)
                if not call_running.done:
                    continue
                del running[index]
                try:
                    outcomes[index] = call_running.result()
                except QwenImageError as error:
                    outcomes[index] = error
                    status.finish(index, error)
                    if fail_fast:
                        raise
                    continue
                status.finish(index, outcomes[index])
                # Taken from the Running, which outlives this loop: its reference kept the
                # pixels of calls past KEEP_DECODED_BYTES alive until the node returned.
                decoded, call_running.extra = call_running.extra or [], None
                kept = sum(d.kept_bytes for d in decoded)
                if kept_bytes + kept <= KEEP_DECODED_BYTES:
                    call.decoded, kept_bytes = decoded, kept_bytes + kept
                else:  # the written ones are in the output still
                    call.decoded = [d if d.kept_bytes == 0 else Decoded(None, d.preview)
                                    for d in decoded]
                if memory is not None and decoded and decoded[0].kept_bytes:
                    memory.start((status.total, *decoded[0].pixels[0].shape))
                for picture in (d.preview for d in decoded if d.preview is not None):
                    comfy.progress(bar, status.images_done(), status.total, picture)
            now_shown = (status.text(), status.images_done())
            if now_shown != shown:
                shown = now_shown
                comfy.send_text(shown[0], node_id)
                comfy.progress(bar, shown[1], status.total)
    except BaseException:
        for call_running in running.values():
            call_running.give_up()  # what runs on finishes on its own, into the store
        raise
    finally:
        decoder.close()
    comfy.send_text(summary(outcomes, time.monotonic() - status.started, comfy.shown_path),
                    node_id)
    if memory is not None:
        await memory.finish()
    return outcomes


def make_client(region: str | None, comfy: Comfy):
    # Imported here: the client pulls in requests, which importing the pack must not.
    from ..api.client import QwenImageClient
    from ..api.storage.store import ResultStore

    # background_recovery: the first call after a restart also finishes, in the background,
    # the journal's tasks that a previous ComfyUI process created and never fetched.
    return QwenImageClient(Config.resolve(region=region),
                           store=ResultStore(comfy.store_directory()), background_recovery=True)
