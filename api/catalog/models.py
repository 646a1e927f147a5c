"""The models the pack knows, looked up: ``MODELS`` (the table's rows), the default model of
each node and ``spec_for`` (a spec for any id, also one the table does not know).

The rows are in ``table``, their types in ``specs``.
"""
from __future__ import annotations

from ..errors import ValidationError
from .specs import (
    IMAGE_EDIT,
    OPTIONAL_PARAMETERS,
    TEXT2IMAGE_PATH,
    TEXT_TO_IMAGE,
    InputRule,
    ModelSpec,
    SizeRule,
)
from .table import MODELS

__all__ = ["DEFAULT_MODEL", "MODELS", "models_of", "spec_for"]

DEFAULT_MODEL = {TEXT_TO_IMAGE: "qwen-image-plus", IMAGE_EDIT: "qwen-image-edit-plus"}


def models_of(family: str) -> list[str]:
    """The table's ids usable for ``family`` requests (unified models serve both)."""
    return [m for m, spec in MODELS.items() if spec.accepts(family)]


def spec_for(model: str, family: str) -> ModelSpec:
    """The spec of ``model`` for ``family`` requests; for an id not in the table, a spec of
    the rules every documented model shares.

    An unknown id is taken at the user's word: its n, size, prompt and price limits are
    not known, so only the common rules are checked (prompt present, seed range, sizes
    written W*H, input image encoding) and the service has the last word on the rest.
    """
    spec = MODELS.get(model)
    if spec is not None:
        if not spec.accepts(family):
            article = "an" if spec.kind == IMAGE_EDIT else "a"
            raise ValidationError(
                "model", f"{model!r} is {article} {spec.kind} model, not {family}",
                allowed=models_of(family))
        return spec
    free = SizeRule()
    if family == TEXT_TO_IMAGE:  # the seeds' text-to-image interfaces
        return ModelSpec(model, family, async_path=TEXT2IMAGE_PATH, n_max=None,
                         t2i_size=free, takes=frozenset(OPTIONAL_PARAMETERS), known=False)
    return ModelSpec(model, family, n_max=None, edit_size=free,
                     takes=frozenset(OPTIONAL_PARAMETERS), inputs=InputRule(count=(1, None)),
                     known=False)

