"""One command does each thing once: a config file is read once, a checkpoint opened at most three times (our
look at its zip directory, our check and Lightning's load), the network built at most twice (shapes only for the
checks, then for real).
Counted from the inside: file opens by Python's audit hook, builds by a registered backbone."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_cifar import registry
from tests.helpers.runs import TINY_DATA_ARGS, fit_in_process

BACKBONE = "counted_net"
builds: list[str] = []  # "meta" or "real", one per build of BACKBONE
opened: dict[str, int] = {}  # how many times each watched file was opened
_watched: set[str] = set()


def _on_open(event: str, args: tuple) -> None:
    if event == "open" and _watched and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path in _watched:
            opened[path] = opened.get(path, 0) + 1


sys.addaudithook(_on_open)  # cannot be removed: it counts only while a test watches a file


def counted_net(num_classes: int = 10, width: int = 8) -> nn.Module:
    """A small conv net that counts its builds."""
    builds.append(torch.empty(0).device.type == "meta" and "meta" or "real")
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))


@pytest.fixture
def counting(monkeypatch):
    registry.register_backbone(BACKBONE, counted_net, replace=True)
    builds.clear()
    opened.clear()
    yield
    _watched.clear()
    registry.unregister_backbone(BACKBONE)


def watch(path: Path) -> str:
    real = os.path.realpath(path)
    _watched.add(real)
    opened[real] = 0
    return real


def test_fit_from_a_config_file_reads_it_once_and_builds_the_network_twice(tmp_path, tiny_cifar, counting):
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  backbone: {BACKBONE}\n  backbone_kwargs: {{width: 4}}\ntrainer:\n  max_epochs: 1\n")
    key = watch(config)
    fit_in_process(["fit", "-c", str(config), f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS], tmp_path)
    assert opened[key] == 1, "the config file was read more than once"
    assert builds == ["meta", "real"], builds  # the memory check's shapes, then the model
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_test_from_a_checkpoint_opens_it_three_times_and_builds_the_network_twice(tmp_path, tiny_cifar, counting):
    fit_in_process(["fit", f"--model.backbone={BACKBONE}", "--trainer.max_epochs=1",
                    f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS], tmp_path)
    ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    key = watch(ckpt)
    builds.clear()
    fit_in_process(["test", f"--ckpt_path={ckpt}", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS], tmp_path)
    # The zip's directory (records stored, not compressed: a few KB at the file's end), our check, Lightning's load.
    assert opened[key] == 3, "our two checks and Lightning's load, nothing more"
    assert builds == ["meta", "real"], builds  # one shapes-only build for both checks, then the model


def test_resuming_from_a_config_file_reads_it_once_and_the_checkpoint_three_times(tmp_path, tiny_cifar, counting):
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  backbone: {BACKBONE}\n  lr: 0.01\n")
    args = ["fit", "-c", str(config), f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS]
    fit_in_process([*args, "--trainer.max_epochs=1"], tmp_path)
    ckpt = watch(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    key = watch(config)
    builds.clear()
    fit_in_process([*args, "--trainer.max_epochs=2", "--ckpt_path=last"], tmp_path)
    assert (opened[key], opened[ckpt]) == (1, 3)
    assert builds == ["meta", "real"], builds
