"""Learning-rate schedules as multipliers of the base rate, per optimizer step.

Written as plain functions for ``LambdaLR`` rather than ``OneCycleLR`` because
they must hold for any run length, including runs of one to a few steps
(``OneCycleLR`` divides by zero there).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from lightning_cifar.errors import LightningCifarError

SCHEDULES = ("onecycle", "cosine", "none")
# Where a checkpoint keeps the schedule it was trained on: {"name", "total_steps", "warmup"}.
CHECKPOINT_KEY = "lightning_cifar_schedule"
# The settings that change how many steps a fit plans, for the message that names them.
STEP_SETTINGS = ("--data.batch_size, --trainer.max_epochs, --trainer.max_steps, --data.val_split,"
                 " --trainer.accumulate_grad_batches")


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


def resumed_schedule(saved: dict[str, Any], name: str, total_steps: int, warmup: float, step: int,
                     label: str) -> Optional[str]:
    """What happens to the learning rate when a fit resumes at ``step`` a run whose checkpoint was trained on the
    schedule ``saved`` and now plans ``name`` over ``total_steps``: None when the schedule is the same; a line saying
    how the rate changes when the new plan still has steps left; a refusal (one line) when it has none, where every
    remaining step would train at rate 0 and change nothing (a larger batch size after the restored step did that)."""
    old = (saved.get("name"), int(saved.get("total_steps", 0)), float(saved.get("warmup", 0.0)))
    if old == (name, int(total_steps), float(warmup)):
        return None
    was = f"{old[0]} schedule over {old[1]} steps" if old[0] != "none" else "constant rate"
    now = f"{name} schedule over {total_steps} steps" if name != "none" else "constant rate"
    if name != "none" and step >= total_steps:
        raise LightningCifarError(
            f"{label}: the checkpoint was trained on a {was} and stopped at step {step}; this fit plans a"
            f" {now}, so every step left would train at learning rate 0 and change nothing. Resume with the settings"
            f" that set the number of steps ({STEP_SETTINGS}) as they were, or raise --trainer.max_epochs")
    before = lr_multiplier(old[0], old[1], old[2])(step) if old[0] in SCHEDULES else None
    after = lr_multiplier(name, total_steps, warmup)(step)
    jump = f" from {before:.2f}x" if before is not None else ""
    return (f"{label}: the checkpoint was trained on a {was}; this fit re-plans it as a {now}: at the restored"
            f" step {step} the learning rate goes{jump} to {after:.2f}x the base rate, then follows the new schedule")
