"""What lightning-cifar relies on in its dependencies beyond their documented API.

Each test names the dependency, what we rely on and where; if one fails after an upgrade,
the message says what to look at.
"""

import inspect

import jsonargparse
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from torchvision.datasets import CIFAR10


def test_lightning_cli_runs_our_hooks_around_its_own_checkpoint_step(tmp_path, tiny_cifar, monkeypatch):
    """CifarCLI.parse_arguments applies a --ckpt_path file's model settings itself and hides the path from
    LightningCLI, whose own step would read the whole file again; before_instantiate_classes hands it back
    for the trainer's load (config_init, which the subcommand's arguments come from, is made after it).
    Only public hooks are overridden; this checks the order LightningCLI calls them in."""
    from lightning_cifar.cli.lightning_cli import CifarCLI, make_cli

    calls = []
    for name in ("parse_arguments", "before_instantiate_classes", "instantiate_classes"):
        real = getattr(CifarCLI, name)
        monkeypatch.setattr(CifarCLI, name, lambda self, *a, _n=name, _r=real: calls.append(_n) or _r(self, *a))
    monkeypatch.chdir(tmp_path)
    make_cli({"data": {"data_dir": str(tiny_cifar), "verify": False}, "trainer": {"logger": False}}, run=False)
    assert calls == ["parse_arguments", "before_instantiate_classes", "instantiate_classes"], (
        f"LightningCLI now calls {calls}: see CifarCLI.parse_arguments in lightning_cifar/cli/lightning_cli.py")
    if hasattr(LightningCLI, "_parse_ckpt_path"):
        source = inspect.getsource(LightningCLI.__init__)
        assert source.index("self.parse_arguments(") < source.index("self._parse_ckpt_path(") < source.index(
            "self.before_instantiate_classes("), "LightningCLI reads --ckpt_path's settings at another moment now"


@pytest.mark.parametrize("trainer_args", [{}, {"enable_checkpointing": False}, {"deterministic": True}])
def test_our_callbacks_and_checkpoint_writer_reach_the_trainer(tmp_path, tiny_cifar, monkeypatch, trainer_args):
    """CifarCLI.instantiate_trainer hands them to LightningCLI's public instantiate_trainer(**kwargs),
    using its public config_init and subcommand attributes."""
    from lightning_cifar.checkpoints.writing import AtomicCheckpointIO
    from lightning_cifar.cli.lightning_cli import make_cli
    from lightning_cifar.training.callbacks.checkpointing import LatestCheckpoint
    from lightning_cifar.training.callbacks.evaluation_report import ClassificationReport
    from lightning_cifar.training.callbacks.predictions import PredictionsCSV

    monkeypatch.chdir(tmp_path)
    cli = make_cli({"data": {"data_dir": str(tiny_cifar), "verify": False},
                    "trainer": {"logger": False, **trainer_args}}, run=False)
    kinds = {type(cb) for cb in cli.trainer.callbacks}
    assert {PredictionsCSV, ClassificationReport} <= kinds, "see CifarCLI.instantiate_trainer"
    assert (LatestCheckpoint in kinds) is (trainer_args.get("enable_checkpointing") is not False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # cudnn autotuning picks algorithms by timing: off when the user asks for determinism.
    assert torch.backends.cudnn.benchmark is (not trainer_args.get("deterministic"))


def test_an_epochs_validation_ends_before_its_on_train_epoch_end(tmp_path, tiny_dm):
    """study.runner.EpochMetrics scores the training subset in on_train_epoch_end, meaning to score the
    weights the epoch's validation just scored (Lightning validates inside the epoch loop)."""
    from lightning_cifar import Classifier
    from tests.helpers.runs import trainer

    order = []

    class Hooks(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                order.append(("validation_end", trainer.global_step))

        def on_train_epoch_end(self, trainer, pl_module):
            order.append(("train_epoch_end", trainer.global_step))

    model = Classifier(backbone="convpool", backbone_kwargs={"widths": [4], "kernels": [3]})
    trainer(tmp_path, callbacks=[Hooks()], max_epochs=2).fit(model, datamodule=tiny_dm)
    assert order == [("validation_end", 5), ("train_epoch_end", 5), ("validation_end", 10), ("train_epoch_end", 10)], (
        f"Lightning now calls {order}: EpochMetrics (lightning_cifar/study/runner.py) must score the training"
        " subset where the weights are the ones validation scored")


def test_model_checkpoint_offers_what_latest_checkpoint_uses():
    """LatestCheckpoint writes last.ckpt itself through these."""
    for name in ("format_checkpoint_name", "CHECKPOINT_NAME_LAST", "save_last", "last_model_path",
                 "save_weights_only"):
        assert hasattr(ModelCheckpoint(), name), f"ModelCheckpoint.{name} is gone: see lightning_cifar/training/callbacks/checkpointing.py"
    state = ModelCheckpoint(monitor="val/acc").state_dict()
    for key in ("best_model_path", "best_model_score", "monitor"):
        assert key in state, f"ModelCheckpoint.state_dict() lacks {key!r}: see lightning_cifar/checkpoints/run_folders.py"
    for name in ("is_last_batch", "sanity_checking", "fast_dev_run", "save_checkpoint"):
        assert hasattr(pl.Trainer, name) or name in inspect.signature(pl.Trainer).parameters, (
            f"Trainer.{name} is gone: see lightning_cifar/training/callbacks/checkpointing.py and loss_guard.py")


def test_lightning_checkpoints_keep_hyperparameters_where_we_check_them():
    """checkpoint_io.read_checkpoint looks for class paths under these keys; model.checkpoint_normalize
    reads the data module's settings from the second."""
    assert pl.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY == "hyper_parameters"
    assert pl.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY == "datamodule_hyper_parameters"


def test_jsonargparse_can_be_told_never_to_build_classes_inside_any():
    """lightning_cifar/__init__.py closes the class_path-in-Any hole with this setting."""
    parameters = inspect.signature(jsonargparse.set_parsing_settings).parameters
    assert "instantiate_subclass_spec_in_any" in parameters, (
        "jsonargparse lost instantiate_subclass_spec_in_any: checkpoints could run code again;"
        " see lightning_cifar/__init__.py")
    from jsonargparse._common import get_parsing_setting

    assert get_parsing_setting("instantiate_subclass_spec_in_any") is False


def test_torchvision_cifar10_still_describes_its_files():
    """data.SafeCIFAR10 reads the file lists, checksums and download address from these attributes."""
    for name in ("base_folder", "url", "filename", "tgz_md5", "train_list", "test_list", "meta", "download"):
        assert hasattr(CIFAR10, name), f"torchvision's CIFAR10.{name} is gone: see lightning_cifar/data/datamodule.py"
    assert len(CIFAR10.train_list) == 5 and CIFAR10.meta["filename"] == "batches.meta"


def test_torch_reports_native_bf16_on_the_cpu():
    """hardware.cpu_has_native_bf16 asks this private op, falling back to fp32 if it disappears."""
    if not hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"):
        pytest.fail("torch.ops.mkldnn._is_mkldnn_bf16_supported is gone: default_precision falls back to"
                    " 32-true everywhere on the CPU; see lightning_cifar/hardware.py")


def test_torch_muon_looks_up_its_orthogonalisation_at_every_step(monkeypatch):
    """optimizers.MuonWithSGD swaps torch.optim._muon._zeropower_via_newtonschulz for a float32 one on a CPU
    without native bfloat16: that works while torch's step looks the function up in its module at each call."""
    import torch.optim._muon as torch_muon

    calls = []
    original = torch_muon._zeropower_via_newtonschulz
    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz",
                        lambda grad, *args, **kwargs: calls.append(grad.shape) or original(grad, *args, **kwargs))
    matrix = torch.nn.Parameter(torch.randn(4, 6))
    matrix.grad = torch.randn(4, 6)
    torch.optim.Muon([matrix], lr=0.1).step()
    assert calls == [(4, 6)], "torch.optim.Muon no longer calls _zeropower_via_newtonschulz: see optimizers.py"
