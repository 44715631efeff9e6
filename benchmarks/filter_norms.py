"""How large the convolution filters of trained checkpoints are, against the norm Muon's normalisation holds them at.

    python benchmarks/filter_norms.py KEPT/full-seed0/checkpoints/last.ckpt KEPT/switch-muon-normalize-seed0/...

Batch norm after each convolution hides a filter bank's scale from the network's output, but Muon's steps have a
fixed size, so how far the filters grow sets how fast they still turn late in training. For every trainable
4D weight this prints its Frobenius norm over sqrt(output channels) (the norm ``muon_normalize`` holds them at,
as airbench94_muon does: 1.00 there), and the same for a freshly built network of the checkpoint's settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def relative_norms(state: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(w.norm() / w.shape[0] ** 0.5) for name, w in state.items()
            if w.ndim == 4 and w.is_floating_point()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    from lightning_cifar.training.classifier import Classifier

    for path in args.checkpoints:
        if not Path(path).is_file():
            sys.exit(f"{path}: no such checkpoint file")
    for path in args.checkpoints:
        model = Classifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        torch.manual_seed(0)
        fresh = type(model)(**model.hparams)  # the same settings, untrained
        trainable = {name for name, p in fresh.named_parameters() if p.requires_grad}
        trained = relative_norms({k: v for k, v in model.state_dict().items() if k in trainable})
        initial = relative_norms(fresh.state_dict())
        print(path)
        for name, norm in trained.items():
            shape = tuple(model.state_dict()[name].shape)
            print(f"  {name} {shape}: {norm:.2f} (at initialisation {initial[name]:.2f})")


if __name__ == "__main__":
    main()
