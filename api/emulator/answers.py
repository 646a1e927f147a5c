"""The shapes of successful generation answers, per model family (catalog.Model.answer).

    v1    output.choices[0].message.content = [{"image": url}, ...]; text-to-image models add
          output.task_metric {TOTAL, FAILED, SUCCEEDED}; usage {width, height, image_count}
    v2    the same without task_metric (the 2.0 family)
    qima  output.rewrite_status ("not_use" without prompt_extend, else "success") before
          output.choices; usage {output_width, output_height, input_image_count,
          input_image_type, output_image_count, output_image_type}: the types are
          qima_output_1k / qima_input_1k for an output area up to rules.QIMA_1K_AREA, else
          the _2k ones (the input tier follows the output's, even without inputs)
Content items of 3.0 async task results also carry "type": "image".
"""
from __future__ import annotations

from typing import Any

from . import rules
from .catalog import Model
from .validate import Drawing


def choices(urls: list[str], typed: bool = False) -> list[dict[str, Any]]:
    """output.choices holding one image item per URL (typed: with "type": "image")."""
    content = [{"image": url, **({"type": "image"} if typed else {})} for url in urls]
    return [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}]


def usage(job: Drawing, model: Model, count: int) -> dict[str, Any]:
    """The usage block of a successful answer with *count* images."""
    width, height = job.size
    if model.answer != "qima":
        return {"width": width, "height": height, "image_count": count}
    tier = "1k" if width * height <= rules.QIMA_1K_AREA else "2k"
    return {"output_width": width, "output_height": height,
            "input_image_count": len(job.inputs), "input_image_type": f"qima_input_{tier}",
            "output_image_count": count, "output_image_type": f"qima_output_{tier}"}


def sync_output(job: Drawing, model: Model, urls: list[str]) -> dict[str, Any]:
    """The "output" of a synchronous answer."""
    output: dict[str, Any] = {}
    if model.answer == "qima":
        output["rewrite_status"] = job.rewrite_status
    output["choices"] = choices(urls)
    if model.answer == "v1" and model.kind == "t2i":
        output["task_metric"] = {"TOTAL": job.n, "FAILED": 0, "SUCCEEDED": job.n}
    return output
