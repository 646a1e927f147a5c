"""The status text under a node: one compact line while its calls run, a summary at the end.

ComfyUI shows the text in a fixed area under the widgets and cuts off what does not fit,
so a batch of 16 gets counts by state, not a line per image: "3 done · 2 running (12 s) ·
11 queued (oldest 41 s) · waiting for the model's rate limit: next call in 23 s". The
summary that replaces it says how many images, how long, the estimated cost and where
the files are: "16 images in 1 min 12 s · about $0.48 · saved in output/qwen-image/...".

Every text sent under a node goes through ``page_text`` (``comfy_bridge.Comfy.send_text``):
ComfyUI's frontend (1.35) renders progress text as HTML, and newer ones turn ``[[label|url]]``
and bare URLs into links, while the text carries model ids, task ids, paths and messages
from outside.
"""
from __future__ import annotations

import html
import os
import re
import time

from ..api.errors import QwenImageError

SEP = " · "
# Shown in this order; an image whose call has not reported yet counts as queued.
_ORDER = ("done", "from store", "failed", "downloading", "running", "preparing", "queued")


_ZERO_WIDTH = "\u200b"
# What a frontend could turn into a link: its wiki-style [[label|url]], a scheme's "://", a
# "mailto:"/"javascript:"-style "scheme:" before a word, and a dot before a domain's next
# label ("www.example.com", "example.com").
_LINKS = re.compile(r"\[\[|\]\]|:(?=//)|(?<=[A-Za-z])(?=:[^\s\d])|(?<=\w)\.(?=[A-Za-z])")


def page_text(text: str) -> str:
    """``text`` as it may reach the page: HTML special characters escaped, and a zero-width
    space breaking up everything a frontend could make a link of (it shows nothing)."""
    return html.escape(_LINKS.sub(lambda m: m.group(0)[:1] + _ZERO_WIDTH + m.group(0)[1:],
                                  text), quote=False)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s"


def _reason(progress) -> str | None:
    """Why a call waits before it has a task, when its Progress says so: the limiter's
    "waiting for ..." (a countdown to the rate limit, a busy slot) or a recovery. The
    client's half-second ticks repeat the plain "<model> queued", which explains nothing."""
    if progress.stage != "queued" or progress.task_id or progress.message.endswith(" queued"):
        return None
    return progress.message


class BatchStatus:
    """The latest Progress of each call of a node (``counts`` images: a call's n)."""

    def __init__(self, counts: list[int]):
        self.counts = counts
        self.total = sum(counts)
        self.started = time.monotonic()
        self.latest: list[tuple[object, float] | None] = [None] * len(counts)
        self.finished: list[str | None] = [None] * len(counts)
        # The last reason each call gave for waiting: kept while it waits, since the
        # ticks between two countdown reports do not repeat it.
        self.reasons: list[tuple[str, float] | None] = [None] * len(counts)

    def callback(self, index: int):
        def on_progress(progress) -> None:  # called from the client's thread
            now = time.monotonic()
            self.latest[index] = (progress, now)
            reason = _reason(progress)
            if reason is not None:
                self.reasons[index] = (reason, now)
            elif progress.stage != "queued" or progress.task_id:
                self.reasons[index] = None
        return on_progress

    def finish(self, index: int, outcome) -> None:
        if isinstance(outcome, QwenImageError):
            self.finished[index] = "failed"
        else:
            self.finished[index] = "from store" if outcome.from_store else "done"
        self.reasons[index] = None

    def _state(self, index: int, now: float) -> tuple[str, float]:
        """(state, seconds in the call so far) of one call."""
        if self.finished[index]:
            return self.finished[index], 0.0
        seen = self.latest[index]
        if seen is None:
            return "queued", now - self.started
        progress, at = seen
        return progress.stage if progress.stage in _ORDER else "running", \
            progress.elapsed + (now - at)

    def text(self) -> str:
        now = time.monotonic()
        images = dict.fromkeys(_ORDER, 0)
        longest = dict.fromkeys(_ORDER, 0.0)
        for index, count in enumerate(self.counts):
            state, seconds = self._state(index, now)
            images[state] += count
            longest[state] = max(longest[state], seconds)
        parts = []
        for state in _ORDER:
            if not images[state]:
                continue
            part = f"{images[state]} {state}"
            if state == "queued":
                part += f" (oldest {duration(longest[state])})"
            elif state == "running":
                part += f" ({duration(longest[state])})"
            parts.append(part)
        latest = max((r for r in self.reasons if r is not None), key=lambda r: r[1],
                     default=None)
        if latest is not None:
            parts.append(latest[0])
        return SEP.join(parts)

    def images_done(self) -> float:
        done = 0.0
        for index, count in enumerate(self.counts):
            if self.finished[index]:
                done += count
            elif self.latest[index] is not None:
                done += count * min(1.0, max(0.0, self.latest[index][0].fraction or 0.0))
        return round(done, 2)


def total_cost(results) -> float | None:
    """The estimated cost of results in USD (0 for those from the store); None if one is
    unknown."""
    costs = [result.cost_usd for result in results]
    return None if None in costs else round(sum(costs), 6)


def _dollars(amount: float) -> str:
    """$0.48, $0.033: cents, or two significant digits below ten cents (as the node shows
    its estimate before the run)."""
    return f"${amount:.2f}" if amount >= 0.1 else f"${amount:.2g}"


def _cost_text(cost: float | None) -> str:
    if cost is None:
        return "cost unknown"
    return "nothing billed" if cost == 0 else f"about {_dollars(cost)}"


def summary(outcomes: list, seconds: float, shown_path) -> str:
    """The line a finished run leaves under the node; ``shown_path(folder)`` says where a
    folder is as the user knows it."""
    results = [o for o in outcomes if not isinstance(o, QwenImageError)]
    images = sum(len(result.images) for result in results)
    parts = [f"{images} image{'s' if images != 1 else ''} in {duration(seconds)}"]
    stored = sum(len(result.images) for result in results if result.from_store)
    if stored:
        parts.append(f"{stored} from the store")
    failed = len(outcomes) - len(results)
    if failed:
        parts.append(f"{failed} call{'s' if failed != 1 else ''} failed")
    parts.append(_cost_text(total_cost(results)))
    files = [image.saved_path for result in results for image in result.images
             if image.saved_path]
    if files:
        folder = os.path.commonpath([os.path.dirname(path) for path in files])
        parts.append(f"saved in {shown_path(folder)}")
    elif images:
        parts.append("not saved (no result store)")
    return SEP.join(parts)
