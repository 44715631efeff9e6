"""Lookahead with a rising pull, as airbench94 trains: a slow copy of the weights that the network is reset to.

Written here because neither torch nor Lightning has it: Lightning's ``EMAWeightAveraging`` keeps an average
beside the network without ever moving the network to it, and Lookahead wrappers elsewhere wrap one optimizer
(ours are two, Muon and SGD, in one ``optimizer_step``) with a fixed pull.
"""

from __future__ import annotations

from typing import Any, Optional

import math

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_cifar.errors import LightningCifarError, is_whole_number


def _refuse(name: str, value: Any, allowed: str) -> None:
    raise LightningCifarError(f"Lookahead {name}={value!r}: must be {allowed}")


class Lookahead(pl.Callback):
    """Every ``every`` optimizer steps, the slow weights move toward the network's by ``1 - pull`` and the network
    is set to them; ``pull = decay * (step / total_steps) ** power`` rises from 0 (early steps train as without
    it) to ``decay`` at the last step, after which the network keeps the slow weights. Floating-point buffers
    (batch norm's running statistics) are averaged alike. airbench94: ``every=5, decay=0.95**5, power=3``.

    Add it to a fit with ``--trainer.callbacks+=lightning_cifar.training.callbacks.lookahead.Lookahead``. The slow
    weights go into the checkpoint, so a resumed fit goes on with them.
    """

    def __init__(self, every: int = 5, decay: float = 0.95 ** 5, power: float = 3.0) -> None:
        if not is_whole_number(every, at_least=1):
            _refuse("every", every, "a whole number of steps, at least 1")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
            _refuse("decay", decay, "a number from 0 to 1")
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power < 0:
            _refuse("power", power, "a number, 0 or more")
        self.every, self.decay, self.power = int(every), float(decay), float(power)
        self._slow: Optional[list[Tensor]] = None
        self._restored: Optional[list[Tensor]] = None
        self._total = 0

    @staticmethod
    def _tensors(pl_module: pl.LightningModule) -> list[Tensor]:
        state = pl_module.state_dict(keep_vars=True)
        return [t for t in state.values() if t.is_floating_point()]

    def pull(self, step: int, total_steps: int) -> float:
        """How far the slow weights stay from the network's at ``step`` (0: they become the network's)."""
        return self.decay * (min(step, total_steps) / max(1, total_steps)) ** self.power

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise LightningCifarError("Lookahead: the fit has no planned length (max_epochs=-1 and no max_steps), and"
                                      " its pull rises with the share of steps done; set --trainer.max_epochs or"
                                      " --trainer.max_steps")
        self._total = int(total)
        live, restored, self._restored = self._tensors(pl_module), self._restored, None
        if restored is None:
            self._slow = [t.detach().clone() for t in live]
            return
        if [tuple(t.shape) for t in restored] != [tuple(t.shape) for t in live]:
            # Starting a fresh slow copy instead would silently drop the averaged weights the checkpoint holds.
            raise LightningCifarError("Lookahead: the checkpoint's slow weights do not fit this network (another"
                                      " backbone or its settings); resume with the network it was trained with")
        self._slow = [s.to(device=t.device, dtype=t.dtype, copy=True) for s, t in zip(restored, live)]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step, total = trainer.global_step, self._total
        last = step >= total
        if self._slow is None or (step % self.every and not last):
            return
        pull = 1.0 if last else self.pull(step, total)
        with torch.no_grad():
            for slow, live in zip(self._slow, self._tensors(pl_module)):
                slow.lerp_(live, 1.0 - pull)
                live.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"slow": [t.detach().cpu() for t in self._slow] if self._slow is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("slow")
