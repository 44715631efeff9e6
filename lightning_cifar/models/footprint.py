"""Will the network fit in memory? Asked before it is built: ``widths: [6000, 6000, 6000]`` used to
allocate 3.6 GB of weights before anything could object, and a terabyte request failed only because
the operating system refused it.

The network is built on PyTorch's meta device (shapes, no storage) and run once there to count its
activations. The estimate is a lower bound on what training needs (weights, gradients and one
optimizer buffer in fp32, the activations kept for the backward pass in 16 bits), so a refusal is
never a false alarm; a run that passes may still need more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.models.measure import IMAGE_SHAPE


@dataclass(frozen=True)
class Footprint:
    params: int
    activations_per_image: int  # numbers all layers output for one image: training keeps them for the backward
    largest_per_image: int  # the largest single layer output: the least inference has to hold at once

    def training_bytes(self, batch_size: int) -> int:
        return self.params * 4 * 3 + self.activations_per_image * batch_size * 2

    def inference_bytes(self, batch_size: int) -> int:
        return self.params * 4 + self.largest_per_image * batch_size * 2


def footprint(net: Optional[torch.nn.Module]) -> Optional[Footprint]:
    """Parameters and activations of ``net`` (built on the meta device), measured there; None where the
    network could not be built or cannot run there (a plugin doing something the meta device cannot)."""
    if net is None:
        return None
    try:
        sizes: list[int] = []

        def count(module: Any, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                sizes.append(output.numel())

        leaves = [m for m in net.modules() if not any(True for _ in m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        try:
            with torch.no_grad():
                net(torch.empty(1, *IMAGE_SHAPE, device="meta"))
        finally:
            for handle in handles:
                handle.remove()
    # An unknown or broken backbone is reported where the model is built, in its own words; and the meta
    # device cannot run every module a plugin may use. Either way there is no estimate.
    except Exception:  # noqa: BLE001
        return None
    return Footprint(sum(p.numel() for p in net.parameters()), sum(sizes), max(sizes, default=0))


def available_bytes(accelerator: str) -> tuple[int, str]:
    """Memory the run can use, and where it is: the GPU's total, or the host's available memory."""
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.mem_get_info()[1], f"GPU {torch.cuda.get_device_name()}"
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024, "this machine's available memory"
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's free memory"


def check_memory(model: dict[str, Any], batch_size: int, training: bool, accelerator: str,
                 net: Optional[torch.nn.Module], skip: str = ", or pass --check_memory=false") -> None:
    """Refuse, in one line with the estimate, a network that cannot fit. ``net``: the network of the settings
    ``model`` on the meta device (:func:`lightning_cifar.checkpoints.compatibility.shapes_only_backbone`); None: no
    estimate. ``skip``: how the user skips the check, where there is a way (the CLI's ``--check_memory=false``)."""
    found = footprint(net)
    if found is None:
        return
    need = found.training_bytes(batch_size) if training else found.inference_bytes(batch_size)
    have, where = available_bytes(accelerator)
    if need <= have:
        return
    gib = 2**30
    kwargs = dict(model.get("backbone_kwargs") or {})
    raise LightningCifarError(
        f"model.backbone={model.get('backbone')} {kwargs}: {found.params:,} parameters;"
        f" {'training' if training else 'running'} it on batches of {batch_size} needs at least {need / gib:.1f} GiB,"
        f" more than {where} ({have / gib:.1f} GiB); choose a smaller network or batch{skip}")
