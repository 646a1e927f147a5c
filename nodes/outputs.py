"""The three outputs of a node run: IMAGE, prompt_used and the info JSON."""
from __future__ import annotations

import json
import os

from ..api.config import budget_settings
from ..api.errors import QwenImageError
from ..api.models import spec_for
from .runner import Job


def one_line(text: str) -> str:
    return " ".join(text.splitlines())


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
