"""Numbers from outside (service answers, headers, files on disk), checked before use.

A number the service or a file gives can be anything JSON or text can hold: ``1e400``
(infinity), NaN, a negative count, a billion seconds. ``bounded`` takes it only when it
is a finite real number inside the range the caller finds plausible; anything else is
None, which every caller reads as "not given" (the model table's figure, or no prior),
and is logged once per kind of value, so a bad file or answer never fails a call and
never floods the log.
"""
from __future__ import annotations

import logging
import math
import numbers

from .state import PROCESS_STATE

log = logging.getLogger(__name__)


def warn_once(what, message: str, *args, logger: logging.Logger = log) -> None:
    """Log ``message`` at WARNING the first time ``what`` goes wrong in this process
    (``ProcessState.warned``)."""
    if PROCESS_STATE.warned.first(what):
        logger.warning(message, *args)


def bounded(value, low: float, high: float, what: str, *, whole: bool = False):
    """``value`` when it is a finite real number from ``low`` to ``high`` (a whole number
    with ``whole``, returned as int), else None, logged once per ``what`` (None itself,
    "not given", quietly)."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            number = math.inf
        if math.isfinite(number) and low <= number <= high and (
                not whole or number.is_integer()):
            return int(number) if whole else number
    warn_once(what, "Ignoring %s = %.80r: not a %s from %g to %g; using the default instead",
              what, value, "whole number" if whole else "finite number", low, high)
    return None
