"""Muon for convolution filters, SGD with Nesterov momentum for everything else, as one optimizer.

The CIFAR-10 speedruns (airbench94_muon) train their convolution filters with Muon, which replaces
each update by a nearly orthogonal matrix (Newton-Schulz iterations), and biases, batch-norm shifts
and the linear head with SGD. ``torch.optim.Muon`` does the orthogonalisation, but takes 2D
parameters only: here each filter bank (out, in, kh, kw) is handed to it as an (out, in*kh*kw)
matrix that shares the filters' storage, so its in-place update changes the filters themselves.
Lightning's automatic optimisation drives one optimizer, so both live behind this one, an ordinary
``torch.optim.Optimizer`` to Lightning (nothing here looks inside Lightning): its ``param_groups`` are
theirs (one learning-rate schedule scales all of them), and so is its state.

``torch.optim.Muon`` orthogonalises in bfloat16 whatever the parameters' dtype, and has no option for it. On a
CPU without native bfloat16 (``lightning_cifar.hardware``) that is emulated, and it was most of a training step
of the 94 % config (``benchmarks/muon_precision.py``): there the step runs torch's Muon with its
Newton-Schulz iteration swapped for :func:`newton_schulz` in float32, the same iteration otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
import torch.optim._muon as torch_muon
from torch import Tensor

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.hardware import cpu_has_native_bf16


def newton_schulz(grad: Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """``torch.optim.Muon``'s orthogonalisation (``torch.optim._muon._zeropower_via_newtonschulz``, the same
    operations in the same order: bit for bit the same in bfloat16) in ``dtype``, on a copy of ``grad``."""
    a, b, c = ns_coefficients
    ortho_grad = grad.to(dtype, copy=True)  # torch's divides in place: never into the momentum buffer
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    ortho_grad.div_(ortho_grad.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram_matrix = ortho_grad @ ortho_grad.T
        gram_update = torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c)
        ortho_grad = torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    return ortho_grad


@contextmanager
def _muon_orthogonalising_in(dtype: Optional[torch.dtype]) -> Iterator[None]:
    """While inside, ``torch.optim.Muon`` orthogonalises in ``dtype`` (None: its own bfloat16). Its step looks
    the function up in its module at every call; tests/cli/test_lightning_internals.py checks that it still does."""
    if dtype is None:
        yield
        return
    original = torch_muon._zeropower_via_newtonschulz
    torch_muon._zeropower_via_newtonschulz = functools.partial(newton_schulz, dtype=dtype)
    try:
        yield
    finally:
        torch_muon._zeropower_via_newtonschulz = original


def _matrix_view(filters: Tensor) -> Tensor:
    """``filters`` as one row per output channel, sharing its storage: (out, in*kh*kw) for a contiguous
    tensor, (out, kh*kw*in) for a channels_last one. Orthogonalising is blind to the column order."""
    if filters.is_contiguous():
        return filters.view(filters.shape[0], -1)
    if filters.is_contiguous(memory_format=torch.channels_last):
        return filters.permute(0, 2, 3, 1).view(filters.shape[0], -1)
    raise LightningCifarError(f"optimizer=muon: a filter tensor of strides {filters.stride()} has no matrix view")


def _as_matrix_like(grad: Tensor, filters: Tensor) -> Tensor:
    """``grad`` with its columns in the order of :func:`_matrix_view` of ``filters`` (a copy if need be)."""
    if filters.is_contiguous():
        return grad.reshape(grad.shape[0], -1)
    return grad.permute(0, 2, 3, 1).reshape(grad.shape[0], -1)


def parameter_groups(params: Iterable[Tensor], lr: float, weight_decay: float,
                     bias_lr: Optional[float] = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one, or with ``bias_lr`` two, the vectors (biases, batch-norm shifts and
    scales) apart at their own peak rate. The speedruns train those at rates far above the weights'
    (airbench94: 64x); their weight decay is scaled by lr / bias_lr so that each step decays them as much
    as at ``lr`` (SGD's and AdamW's decay per step is rate times decay; Adam's L2 goes through its
    adaptive scaling, so there the match is not exact), as airbench does."""
    if bias_lr is None:
        return [{"params": list(params)}]  # all of them, frozen ones too: as saved optimizer states count them
    params = [p for p in params if p.requires_grad]
    vectors, others = [p for p in params if p.ndim <= 1], [p for p in params if p.ndim > 1]
    groups = [{"params": others}] if others else []
    if vectors:
        groups.append({"params": vectors, "lr": bias_lr, "weight_decay": weight_decay * lr / bias_lr})
    return groups


class _JoinedGroups(Sequence[dict[str, Any]]):
    """The parameter groups of several optimizers as one list (one schedule scales them all)."""

    def __init__(self, parts: Callable[[], list[torch.optim.Optimizer]]) -> None:
        self._parts = parts

    def _groups(self) -> list[dict[str, Any]]:
        return [g for o in self._parts() for g in o.param_groups]

    def __getitem__(self, index: Any) -> Any:
        return self._groups()[index]

    def __len__(self) -> int:
        return len(self._groups())


class _JoinedState(Mapping[Tensor, Any]):
    """The per-parameter state of several optimizers as one mapping."""

    def __init__(self, parts: Callable[[], list[torch.optim.Optimizer]]) -> None:
        self._parts = parts

    def __getitem__(self, param: Tensor) -> Any:
        for part in self._parts():
            if param in part.state:
                return part.state[param]
        raise KeyError(param)

    def __iter__(self) -> Iterator[Tensor]:
        return (p for part in self._parts() for p in part.state)

    def __len__(self) -> int:
        return sum(len(part.state) for part in self._parts())


class MuonWithSGD(torch.optim.Optimizer):
    """``torch.optim.Muon`` on every 4D parameter (convolution filters), ``torch.optim.SGD`` on the rest."""

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float, nesterov: bool, weight_decay: float,
                 muon_lr: float, muon_momentum: float, muon_weight_decay: float = 0.0,
                 normalize_filters: bool = False, bias_lr: Optional[float] = None) -> None:
        params = [p for p in params if p.requires_grad]
        self._filters = [p for p in params if p.ndim == 4]
        others = [p for p in params if p.ndim != 4]
        if not self._filters:
            raise LightningCifarError("optimizer=muon: the network has no convolution filters for Muon to train;"
                                      " use sgd, adam or adamw")
        # Parameters that alias the filters' memory: what Muon updates in place is the filters.
        self._matrices = [torch.nn.Parameter(_matrix_view(p.detach())) for p in self._filters]
        self.normalize_filters = normalize_filters
        super().__init__([*self._matrices, *others], {})
        self.muon = torch.optim.Muon(self._matrices, lr=muon_lr, momentum=muon_momentum, nesterov=nesterov,
                                     weight_decay=muon_weight_decay)
        # None: torch's own bfloat16, native on GPUs and on CPUs with AVX-512 BF16 or AMX.
        on_cpu = all(m.device.type == "cpu" for m in self._matrices)
        self.orthogonalise_dtype = torch.float32 if on_cpu and not cpu_has_native_bf16() else None
        self.sgd = (torch.optim.SGD(parameter_groups(others, lr, weight_decay, bias_lr), lr=lr, momentum=momentum,
                                    nesterov=nesterov and momentum > 0, weight_decay=weight_decay)
                    if others else None)
        # Plain attributes (Lightning's LightningOptimizer hands attribute reads on to the optimizer it wraps),
        # read from the two optimizers each time: loading a state dict replaces their groups and state.
        self.param_groups = _JoinedGroups(self._parts)  # type: ignore[assignment]
        self.state = _JoinedState(self._parts)  # type: ignore[assignment]

    def _parts(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.muon, self.sgd) if o is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in [*self._filters, *self._matrices, *(p for g in self.param_groups for p in g["params"])]:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for filters, matrix in zip(self._filters, self._matrices):
            matrix.grad = None if filters.grad is None else _as_matrix_like(filters.grad, filters)
            if self.normalize_filters and matrix.grad is not None:
                # Batch norm after each convolution makes the filters' scale irrelevant to the output, but
                # not to training: Muon's steps have a fixed size, so as the filters grow each step turns
                # them less. Holding every bank at norm sqrt(out) keeps the schedule's rate the rate the
                # filters actually turn at (airbench94_muon does this before each step).
                matrix.mul_(matrix.shape[0] ** 0.5 / matrix.norm().clamp(min=1e-12))
        with _muon_orthogonalising_in(self.orthogonalise_dtype):
            self.muon.step()
        if self.sgd is not None:
            self.sgd.step()
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"muon": self.muon.state_dict(), "sgd": self.sgd.state_dict() if self.sgd is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        self.muon.load_state_dict(state_dict["muon"])
        if self.sgd is not None:
            self.sgd.load_state_dict(state_dict["sgd"])
