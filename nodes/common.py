"""What both nodes share: widget choices, queue-time validation, running the calls while
ComfyUI watches (status text, progress bar, Cancel), and building the three outputs.

Nothing here imports torch or the HTTP client at import time: ComfyUI lists the nodes from
``INPUT_TYPES`` without running them, and the command line imports the pack without torch.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..api.config import Config, budget_settings
from ..api.errors import QwenImageError, ValidationError
from ..api.models import BEIJING, SEED_MAX, SINGAPORE, spec_for
from ..api.validation import validate
from .comfy_bridge import STORE_DIR_ENV, Comfy

log = logging.getLogger(__name__)

CATEGORY = "api node/image/Qwen-Image (DashScope)"
POLL_SECONDS = 0.1  # how often a waiting node looks at ComfyUI's Cancel flag

REGION_DEFAULT = "default"
REGION_CHOICES = {
    REGION_DEFAULT: None,
    f"{SINGAPORE} (Singapore)": SINGAPORE,
    f"{BEIJING} (Beijing)": BEIJING,
}
FAIL = "fail"
RETURN_SUCCESSFUL = "return successful"

TOOLTIPS = {
    "prompt": "What to make (up to 800 characters; longer prompts are refused, because the "
              "service would silently cut them and still bill). Chinese and English work best.",
    "negative_prompt": "What to keep out of the picture (up to 500 characters). May be empty.",
    "custom_model": "A model id that is not in the list (e.g. a newer snapshot). Overrides "
                    "'model' when not empty; sent as written. Its limits and price are unknown "
                    "to the pack, so the service has the last word and the cost estimate is empty.",
    "seed": "Random seed 0-2147483647. A fixed seed makes results repeatable (roughly: the "
            "service does not promise identical images) and lets 'reuse_stored' serve an "
            "identical request from disk.",
    "prompt_extend": "Let the service rewrite the prompt with a language model first (better "
                     "results for short prompts, 3-4 s slower). The rewritten prompt comes out "
                     "of 'prompt_used'.",
    "watermark": "Add the 'Qwen-Image' watermark in the lower right corner.",
    "region": "Which DashScope region to call. 'default' follows the configuration "
              "(DASHSCOPE_API_REGION, else Singapore), so a shared workflow runs for whoever "
              "opens it. Each region needs its own API key (DASHSCOPE_API_KEY or "
              "DASHSCOPE_API_KEY_AP_SOUTHEAST_1 / _CN_BEIJING; never typed into a widget).",
    "reuse_stored": "With a fixed seed, serve an identical earlier request (same model, region, "
                    "prompts, parameters and input pixels) from the result store instead of a "
                    f"new billed call. Results are kept in ComfyUI's output/qwen-image folder "
                    f"(or ${STORE_DIR_ENV}).",
    "on_partial_failure": "When some of this node's calls fail: 'fail' stops the run with the "
                          "first error (queued calls are cancelled); 'return successful' "
                          "returns the images that worked and lists the failures in 'info'.",
}
OUTPUT_TOOLTIPS_PROMPT = ("The prompt each image was made from, one line per image: the "
                          "service's rewritten prompt when prompt_extend rewrote it, else "
                          "your prompt (line breaks inside a prompt become spaces).")
OUTPUT_TOOLTIPS_INFO = ("JSON about the run: request and task ids, seeds, sizes, usage, "
                        "estimated cost in USD, region, which images came from the result "
                        "store, notes and failures.")


def seed_input(extra_tooltip: str = "") -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                    "tooltip": TOOLTIPS["seed"] + extra_tooltip})


def shared_optional_inputs() -> dict:
    return {
        "custom_model": ("STRING", {"default": "", "tooltip": TOOLTIPS["custom_model"]}),
        "region": (list(REGION_CHOICES),
                   {"default": REGION_DEFAULT, "tooltip": TOOLTIPS["region"]}),
    }


def shared_tail_inputs() -> dict:
    return {
        "reuse_stored": ("BOOLEAN", {"default": True, "tooltip": TOOLTIPS["reuse_stored"]}),
        "on_partial_failure": ([FAIL, RETURN_SUCCESSFUL],
                               {"default": FAIL, "tooltip": TOOLTIPS["on_partial_failure"]}),
    }


def model_id(model: str, custom_model: str | None) -> str:
    custom = (custom_model or "").strip()
    return custom or model


def region_id(choice: str | None) -> str | None:
    """None means "as configured"; an unknown label is refused with the choices."""
    if choice is None or choice == REGION_DEFAULT:
        return None
    try:
        return REGION_CHOICES[choice]
    except KeyError:
        raise ValidationError("region", f"{choice!r} is not a region choice",
                              allowed=list(REGION_CHOICES)) from None


def seed_for(seed: int, index: int) -> int:
    """seed, seed+1, ... for the calls of one node, wrapping past the largest seed to 0."""
    return (seed + index) % (SEED_MAX + 1)


def queue_time_check(model_choices: list[str], model, custom_model, build) -> bool | str:
    """VALIDATE_INPUTS body: True, or the first broken rule as one message.

    Inputs that come from a link arrive as None at queue time; ``build`` substitutes a
    neutral value for them, and the run checks them again once they are known.
    """
    try:
        if not (custom_model or "").strip() and model is not None and model not in model_choices:
            raise ValidationError("model", f"{model!r} is not in the list", allowed=model_choices,
                                  hint="Or write the id into custom_model.")
        validate(build())
    except ValidationError as error:
        return str(error)
    return True


def one_line(text: str) -> str:
    return " ".join(text.splitlines())


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

    return QwenImageClient(Config.resolve(region=region),
                           store=ResultStore(comfy.store_directory()))


def _budget() -> dict | None:
    """Today's state of the spend guard the clients use (from the same environment)."""
    from ..api.budget import SpendGuard

    guard = SpendGuard.from_settings(budget_settings(os.environ))
    return guard.status().as_dict() if guard is not None else None


def _dedupe(notes: list[str]) -> list[str]:
    return list(dict.fromkeys(notes))


def assemble(node_id: str, model: str, family: str, jobs: list[Job], outcomes: list,
             notes: list[str]):
    """(IMAGE, prompt_used, info) from the results; raises the first error if none worked."""
    from .tensors import decode_images

    succeeded = [(job, result) for job, result in zip(jobs, outcomes)
                 if not isinstance(result, QwenImageError)]
    if not succeeded:
        raise next(result for result in outcomes if isinstance(result, QwenImageError))
    total = sum(job.n for job in jobs)
    datas, prompts, requests_info = [], [], []
    for job, result in succeeded:
        used = one_line(result.actual_prompt or job.request.prompt)
        for image in result.images:
            datas.append(image.data)
            prompts.append(used)
        notes.extend(result.notes)
        requests_info.append({
            "outputs": job.label(total),
            "seed": result.seed if result.seed is not None else job.request.seed,
            "request_id": result.request_id,
            "task_id": result.task_id,
            "interface": result.interface,
            "from_store": result.from_store,
            "sizes": [f"{image.width}*{image.height}" for image in result.images],
            "usage": result.usage,
            "cost_usd": result.cost_usd,  # 0 when served from the store
            "files": [image.saved_path for image in result.images if image.saved_path],
            **({"actual_prompt": result.actual_prompt}
               if result.actual_prompt and result.actual_prompt != job.request.prompt else {}),
        })
    images, decode_notes = decode_images(datas)
    notes.extend(decode_notes)
    costs = [r["cost_usd"] for r in requests_info]
    failures = [{"outputs": job.label(total), "seed": job.request.seed,
                 "error": type(result).__name__, "message": str(result)}
                for job, result in zip(jobs, outcomes) if isinstance(result, QwenImageError)]
    info = {
        "node": node_id,
        "model": model,
        "model_known": spec_for(model, family).known,
        "region": succeeded[0][1].region,
        "images": len(datas),
        "estimated_cost_usd": None if None in costs else round(sum(costs), 6),
        "requests": requests_info,
        "failures": failures,
        "budget": _budget(),  # None: no daily limit is set
        "notes": _dedupe(notes),
    }
    return images, "\n".join(prompts), json.dumps(info, ensure_ascii=False, indent=2)
