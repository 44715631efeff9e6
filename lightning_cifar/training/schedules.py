"""Learning-rate schedules as multipliers of the base rate, per optimizer step.

Written as plain functions for ``LambdaLR`` rather than ``OneCycleLR`` because
they must hold for any run length, including runs of one to a few steps
(``OneCycleLR`` divides by zero there).
"""

from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("onecycle", "cosine", "none")


def lr_multiplier(name: str, total_steps: int, warmup: float) -> Callable[[int], float]:
    """``f(step)`` for ``step`` in ``[0, total_steps)``.

    ``onecycle``: linear warm-up over ``warmup`` (a fraction of all steps) from
    near zero to the base rate, then linear decay to zero at the last step.
    ``cosine``: the same warm-up, then half a cosine down to zero.
    ``none``: constant.
    """
    if name not in SCHEDULES:
        raise ValueError(f"scheduler={name!r}: allowed values are {', '.join(SCHEDULES)}")
    if name == "none":
        return lambda step: 1.0
    total = max(1, int(total_steps))
    ramp = min(total - 1, int(round(warmup * total)))

    def multiplier(step: int) -> float:
        if step < ramp:
            return (step + 1) / (ramp + 1)
        progress = min(1.0, (step - ramp) / max(1, total - ramp))
        if name == "onecycle":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier
