"""Random-number-generator state carried in checkpoints, so a resumed run is the same run.

Lightning restores weights, optimizer, schedule and loop counters but not the
RNGs; without them a resumed run shuffles and augments differently from the
run it continues. Everything here is tensors, tuples and ints, so checkpoints
still load with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import torch

KEY = "rng_states"


def collect() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
