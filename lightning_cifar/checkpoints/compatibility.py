"""Does a checkpoint fit the network it describes? Its weights against the shapes its settings build, and,
for a checkpoint of lightning-cifar 0.1, whether its images were standardised."""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from lightning_cifar.checkpoints.reading import DATA_HPARAMS, MODEL_HPARAMS
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.models._registry import create_shapes_only
from lightning_cifar.models.footprint import check_memory


def checkpoint_normalize(checkpoint: dict[str, Any], source: str = "the checkpoint") -> Optional[bool]:
    """For a checkpoint written before the model standardised its own input (lightning-cifar 0.1),
    whether its data module standardised the images, i.e. the ``normalize`` the model must use;
    ``None`` for a current checkpoint (its hyperparameters hold ``normalize`` themselves)."""
    hparams = checkpoint.get(MODEL_HPARAMS) or {}
    if "normalize" in hparams:
        return None
    data = checkpoint.get(DATA_HPARAMS)
    if not isinstance(data, dict):
        raise LightningCifarError(
            f"{source} was written before lightning-cifar 0.2 without its data module's settings, so whether its"
            " inputs were standardised is unknown; refusing to load it with a possibly wrong normalisation"
        )
    # lightning-cifar 0.1 standardised in the data module, by default (normalize=True).
    return bool(data.get("normalize", True))


def shapes_only_backbone(model: dict[str, Any]) -> Optional[nn.Module]:
    """The network of these model settings (a checkpoint's hyperparameters, or a command's ``model`` section)
    on the meta device: shapes only, no memory. None where it cannot be built there: an unknown or broken
    backbone is reported where the model is built, in its own words."""
    try:
        return create_shapes_only(model.get("backbone", "cnn_base"), int(model.get("num_classes") or 10),
                                  **dict(model.get("backbone_kwargs") or {}))
    except Exception:  # noqa: BLE001 (a plugin may fail in any way; the real build says how)
        return None


def check_checkpoint_fits(checkpoint: dict[str, Any], label: str) -> None:
    """What ``test`` checks before it builds a checkpoint's network, for the other ways in (``export``,
    ``load_from_checkpoint``): its weights fit the network its hyperparameters describe, and that network fits in
    this machine's memory (a 3.6 KB file of stride-0 tensors describing a 20,000-wide MLP built a 1.76 GiB model)."""
    hparams = checkpoint.get(MODEL_HPARAMS) or {}
    net = shapes_only_backbone(hparams)
    check_weights_fit(checkpoint, label, net)
    try:
        check_memory(hparams, 1, training=False, accelerator="cpu", net=net, skip="")
    except LightningCifarError as exc:
        raise LightningCifarError(f"{label}: {exc}") from None


def check_weights_fit(checkpoint: dict[str, Any], label: str, net: Optional[nn.Module] = None) -> None:
    """Refuse, in one line, a checkpoint whose weights do not fit the network its hyperparameters describe
    (an altered file, or one written by another program), before Lightning fails on it with a page of
    size mismatches. ``net``: that network, shapes only (built here from the hyperparameters if not given)."""
    hparams = checkpoint.get(MODEL_HPARAMS) or {}
    weights = {k[len("backbone."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
    net = net if net is not None else shapes_only_backbone(hparams)
    if net is None:
        return
    expected = net.state_dict()
    described = f"{hparams.get('backbone', 'cnn_base')} {hparams.get('backbone_kwargs') or {}}"
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    wrong = [k for k in sorted(set(expected) & set(weights)) if tuple(expected[k].shape) != tuple(weights[k].shape)]
    if wrong:
        k = wrong[0]
        shape = lambda t: "x".join(map(str, t.shape)) or "scalar"  # noqa: E731
        problem = f"backbone.{k} is {shape(weights[k])} in the file, {shape(expected[k])} in {described}"
    elif missing or extra:
        which = f"missing backbone.{missing[0]}" if missing else f"unexpected backbone.{extra[0]}"
        problem = f"{which} for {described}"
    else:
        return
    raise LightningCifarError(f"{label}: its weights do not fit the network its hyperparameters describe ({problem});"
                              " the file was altered or written by another program")
