"""``lightning-cifar summary``: a backbone's layers, output shapes, kernel sizes, parameters and FLOPs."""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional, Sequence

import yaml
from torch import nn

from lightning_cifar import registry
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import read_yaml
from lightning_cifar.models.measure import count_parameters, forward_flops, layer_table


def render(name: str, kwargs: dict[str, Any], net: nn.Module) -> str:
    layers = layer_table(net)
    rows = [("layer", "type", "kernel", "output", "params")]
    rows += [(l.name, l.kind, l.kernel, "x".join(map(str, l.output)), f"{l.params:,}") for l in layers]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"{name}{' ' + json.dumps(kwargs) if kwargs else ''}", ""]
    for i, row in enumerate(rows):
        cells = (c.rjust(w) if j == 4 else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    params, flops = count_parameters(net), forward_flops(net)
    lines += ["", f"total parameters: {params:,}", f"FLOPs per image (forward): {flops:,} ({flops / 1e6:.1f} M)"]
    return "\n".join(lines)


def parse_kwargs(text: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LightningCifarError(f"--model.backbone_kwargs={text!r}: not valid JSON/YAML ({exc})") from None
    if not isinstance(value, dict):
        raise LightningCifarError(f"--model.backbone_kwargs={text!r}: must be a mapping, e.g. '{{\"width_mult\": 2}}'")
    return value


def summary_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-cifar summary",
        description="Layer table of a backbone (output shape, kernel, parameters per layer), total parameters"
        " and forward FLOPs per 3x32x32 image.",
    )
    parser.add_argument("-c", "--config", help="a fit config whose model section names the backbone")
    parser.add_argument("--model.backbone", dest="backbone", help="registered backbone name (default: cnn_base)")
    parser.add_argument("--model.backbone_kwargs", dest="kwargs", help="JSON/YAML mapping, e.g. '{\"width_mult\": 2}'")
    parser.add_argument("--model.num_classes", dest="num_classes", type=int, default=10)
    args = parser.parse_args(list(argv))
    model: dict[str, Any] = {}
    if args.config:
        config = read_yaml(args.config) or {}
        model = (config.get("model") or {}) if isinstance(config, dict) else {}
    name: Optional[str] = args.backbone or model.get("backbone") or "cnn_base"
    kwargs = parse_kwargs(args.kwargs) if args.kwargs else dict(model.get("backbone_kwargs") or {})
    net = registry.create_backbone(name, num_classes=args.num_classes, **kwargs)
    print(render(name, kwargs, net))
    return 0
