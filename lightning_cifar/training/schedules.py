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
# Where a checkpoint keeps the schedule it was trained on: {"name", "total_steps", "warmup", "start_factor",
# "end_factor"} (checkpoints from before the two factors were settings hold the first three: both were 0).
CHECKPOINT_KEY = "lightning_cifar_schedule"
# The settings that change how many steps a fit plans, for the message that names them.
STEP_SETTINGS = ("--data.batch_size, --trainer.max_epochs, --trainer.max_steps, --data.val_split,"
                 " --trainer.accumulate_grad_batches")


def lr_multiplier(name: str, total_steps: int, warmup: float, start_factor: float = 0.0,
                  end_factor: float = 0.0) -> Callable[[int], float]:
    """``f(step)`` for ``step`` in ``[0, total_steps)``.

    ``onecycle``: linear warm-up over ``warmup`` (a fraction of all steps) from
    ``start_factor`` (0: near zero) to the base rate, then linear decay to ``end_factor``
    at the last step; airbench94's triangle is ``warmup=0.23, start_factor=0.2, end_factor=0.07``.
    ``cosine``: the same warm-up, then half a cosine down to ``end_factor``.
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
            return start_factor + (1.0 - start_factor) * (step + 1) / (ramp + 1)
        progress = min(1.0, (step - ramp) / max(1, total - ramp))
        if name == "onecycle":
            fall = progress
        else:
            fall = 0.5 * (1.0 - math.cos(math.pi * progress))
        return 1.0 - (1.0 - end_factor) * fall

    return multiplier


def plan(name: str, total_steps: int, warmup: float, start_factor: float, end_factor: float) -> dict[str, Any]:
    """A fit's learning-rate plan as its checkpoints keep it (``CHECKPOINT_KEY``)."""
    if name == "none":
        return {"name": "none", "total_steps": 0, "warmup": 0.0, "start_factor": 0.0, "end_factor": 0.0}
    return {"name": name, "total_steps": int(total_steps), "warmup": float(warmup),
            "start_factor": float(start_factor), "end_factor": float(end_factor)}


def _multiplier_of(p: dict[str, Any]) -> Callable[[int], float]:
    return lr_multiplier(p["name"], p["total_steps"], p["warmup"], p["start_factor"], p["end_factor"])


def resumed_schedule(saved: dict[str, Any], new: dict[str, Any], step: int, label: str) -> Optional[str]:
    """What happens to the learning rate when a fit resumes at ``step`` a run whose checkpoint was trained on the
    schedule ``saved`` and now plans ``new`` (both as ``plan`` makes them): None when the schedule is the same; a line
    saying how the rate changes when the new plan still has steps left; a refusal (one line) when it has none, where
    every remaining step would train at rate 0 and change nothing (a larger batch size after the restored step did
    that)."""
    # A checkpoint saved before the factors were settings lacks them: it trained with both at 0.
    saved = {"total_steps": 0, "warmup": 0.0, "start_factor": 0.0, "end_factor": 0.0, **saved}
    if {k: saved.get(k) for k in new} == new:
        return None
    name, total_steps = new["name"], new["total_steps"]
    was = f"{saved['name']} schedule over {saved['total_steps']} steps" if saved["name"] != "none" else "constant rate"
    now = f"{name} schedule over {total_steps} steps" if name != "none" else "constant rate"
    if name != "none" and step >= total_steps and new["end_factor"] == 0.0:
        raise LightningCifarError(
            f"{label}: the checkpoint was trained on a {was} and stopped at step {step}; this fit plans a"
            f" {now}, so every step left would train at learning rate 0 and change nothing. Resume with the settings"
            f" that set the number of steps ({STEP_SETTINGS}) as they were, or raise --trainer.max_epochs")
    before = _multiplier_of(saved)(step) if saved["name"] in SCHEDULES else None
    after = _multiplier_of(new)(step)
    jump = f" from {before:.2f}x" if before is not None else ""
    return (f"{label}: the checkpoint was trained on a {was}; this fit re-plans it as a {now}: at the restored"
            f" step {step} the learning rate goes{jump} to {after:.2f}x the base rate, then follows the new schedule")
