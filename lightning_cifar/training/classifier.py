"""Classifier: a LightningModule around any registered backbone."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Literal, Optional, Union

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lightning_cifar.checkpoints.compatibility import check_checkpoint_fits, checkpoint_normalize
from lightning_cifar.checkpoints.reading import check_checkpoint, local_checkpoint_path
from lightning_cifar.errors import LightningCifarError, is_whole_number
from lightning_cifar.models.measure import IMAGE_SHAPE, count_parameters
from lightning_cifar.models.whitening import PatchWhitening
from lightning_cifar.registry import create_backbone
from lightning_cifar.training import rng_state
from lightning_cifar.training.callbacks.loss_guard import NonFiniteLossGuard
from lightning_cifar.training.callbacks.termination import StopOnSigterm
from lightning_cifar.training.input_norm import Standardize
from lightning_cifar.training.optimizers import MuonWithSGD, parameter_groups
from lightning_cifar.training.schedules import CHECKPOINT_KEY as SCHEDULE_KEY
from lightning_cifar.training.schedules import lr_multiplier, plan, resumed_schedule

# Training images a backbone's data-set layers (a whitening layer) are computed from, as the speedruns.
DATA_INIT_IMAGES = 5000
# One image, so that the "Total Flops" of Lightning's model summary are per image.
EXAMPLE_INPUT_SHAPE = (1, *IMAGE_SHAPE)


# Test-time augmentation: the views of each image whose logits are averaged. ``True`` and ``False``,
# the values of lightning-cifar 0.2 and earlier checkpoints, mean "mirror" and "none".
TTA_CHOICES = ("none", "mirror", "mirror_shift")


def tta_mode(tta: Union[bool, str]) -> str:
    if tta is True or tta is False:
        return "mirror" if tta else "none"
    if tta not in TTA_CHOICES:
        allowed = ", ".join(map(repr, TTA_CHOICES))
        raise LightningCifarError(f"tta={tta!r}: allowed values are {allowed} (or true/false)")
    return str(tta)


def _mirrored(net: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    return (net(x) + net(x.flip(3))) / 2


def evaluation_logits(net: Callable[[Tensor], Tensor], x: Tensor, tta: Union[bool, str]) -> Tensor:
    """``net(x)``; with ``mirror`` the mean over each image and its mirror image; with ``mirror_shift``
    (the CIFAR-10 speedruns' six views) half that, plus half the mirror-averaged logits of the image
    moved one pixel up-left and one pixel down-right (reflected at the border)."""
    mode = tta_mode(tta)
    if mode == "none":
        return net(x)
    if mode == "mirror":
        return _mirrored(net, x)
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = (_mirrored(net, padded[..., :h, :w]) + _mirrored(net, padded[..., 2:, 2:])) / 2
    return (_mirrored(net, x) + shifted) / 2


def keras_init(module: torch.nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every convolution and linear layer, as Keras' Conv2D and
    Dense start (PyTorch's default draws them up to about 1.7x narrower)."""
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)


class Classifier(pl.LightningModule):
    """Image classifier whose network is a registered backbone, chosen by name.

    Input: float images in [0, 1], shape (N, 3, 32, 32); the model standardises them
    with the CIFAR-10 channel mean and std itself (``normalize``). Output: logits.
    """

    def __init__(
        self,
        backbone: str = "cnn_base",
        backbone_kwargs: Optional[dict[str, Any]] = None,
        num_classes: int = 10,
        normalize: bool = True,
        optimizer: Literal["sgd", "adam", "adamw", "muon"] = "sgd",
        lr: float = 0.05,
        eps: float = 1e-8,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        scheduler: Literal["onecycle", "cosine", "none"] = "onecycle",
        warmup: float = 0.2,
        start_factor: float = 0.0,
        end_factor: float = 0.0,
        label_smoothing: float = 0.1,
        channels_last: bool = True,
        tta: Union[bool, str] = False,  # checked by tta_mode: a one-line error, not jsonargparse's page
        compile: bool = False,
        init: Literal["torch", "keras"] = "torch",
        muon_lr: float = 0.02,
        muon_momentum: float = 0.95,
        muon_normalize: bool = False,
        bias_lr: Optional[float] = None,
        whiten_bias_epochs: Optional[int] = None,
    ) -> None:
        """
        Args:
            backbone: registered backbone name (``lightning-cifar backbones`` lists them).
            backbone_kwargs: keyword arguments for the backbone factory, e.g.
                ``{"widths": [32, 64, 128], "kernels": [7, 5, 3]}``.
            num_classes: number of classes (linked from the data module by the CLI).
            normalize: standardise the [0, 1] input images with the CIFAR-10 channel mean and
                std (inside the model, so a loaded checkpoint or an exported model needs none);
                off, the network sees the [0, 1] pixels (as in the seed notebook).
            optimizer: ``sgd`` (with momentum, Nesterov by default), ``adam``, ``adamw``, or ``muon``:
                ``torch.optim.Muon`` for the convolution filters (``muon_lr``, ``muon_momentum``) and
                SGD (``lr``, ``momentum``, ``weight_decay``) for the rest, as the CIFAR-10 speedruns.
            lr: peak learning rate.
            eps: Adam's and AdamW's epsilon (PyTorch's default 1e-8; Keras uses 1e-7).
            momentum: SGD momentum (Adam's beta1 is left at its default).
            nesterov: Nesterov momentum for SGD.
            weight_decay: L2 penalty (decoupled for AdamW).
            scheduler: ``onecycle`` (linear warm-up, linear decay to ``end_factor``), ``cosine``
                (warm-up, cosine decay to ``end_factor``) or ``none``; stepped every batch.
            warmup: fraction of all training steps spent warming up.
            start_factor: the rate at the first step, as a fraction of the peak (0: the warm-up starts near zero).
            end_factor: the rate at the last step, as a fraction of the peak; airbench94's triangular schedule is
                ``warmup=0.23, start_factor=0.2, end_factor=0.07``.
            label_smoothing: cross-entropy label smoothing (0 = plain cross-entropy).
            channels_last: keep conv activations in NHWC layout (faster on CPU and GPU).
            tta: test-time augmentation for evaluation and prediction: ``mirror`` (or true) averages
                the logits of each image and its mirror image; ``mirror_shift`` also those of the image
                moved by one pixel up-left and down-right (six views, as the CIFAR-10 speedruns);
                ``none`` (or false) evaluates the image alone.
            compile: run the backbone through ``torch.compile`` (falls back to eager
                mode with a warning where compilation is unavailable).
            init: initial weights of the backbone's convolutions and linear layers: ``torch``
                (PyTorch's defaults) or ``keras`` (Glorot-uniform weights, zero biases, as the seed
                notebook's Keras layers start).
            muon_lr: Muon's peak learning rate (``optimizer=muon``), scaled by the same schedule.
            muon_momentum: Muon's momentum (``optimizer=muon``).
            muon_normalize: before each Muon step, rescale every filter bank to Frobenius norm
                sqrt(output channels), as airbench94_muon does (``optimizer=muon``; batch norm must follow
                each convolution, or this changes what the network computes).
            bias_lr: peak learning rate of the vectors (biases, batch-norm shifts and scales), whose weight
                decay is then scaled by ``lr / bias_lr`` (the same decay per step with SGD and AdamW, where a
                step decays by rate times decay; not so with Adam's adaptive L2); null: ``lr``, like the rest.
            whiten_bias_epochs: train the whitening layer's bias for this many epochs only, then keep it (as
                airbench94 does, for 3): the whitening layer's output then needs no gradient, so the backward
                pass stops at the first trainable convolution; null trains it throughout.
        """
        super().__init__()
        # Only the init arguments go into hparams: LightningCLI and
        # load_from_checkpoint feed them straight back into __init__.
        self.save_hyperparameters()
        if lr <= 0:
            raise LightningCifarError(f"lr={lr}: must be > 0")
        if not 0.0 <= warmup < 1.0:
            raise LightningCifarError(f"warmup={warmup}: must be a fraction in [0, 1)")
        for name, factor in (("start_factor", start_factor), ("end_factor", end_factor)):
            if not 0.0 <= factor <= 1.0:
                raise LightningCifarError(f"{name}={factor}: must be a fraction of the peak rate, in [0, 1]")
            if factor and scheduler == "none":
                raise LightningCifarError(f"{name}={factor} shapes a schedule, and scheduler='none' has none:"
                                          " use --model.scheduler=onecycle or cosine, or leave it at 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise LightningCifarError(f"label_smoothing={label_smoothing}: must be in [0, 1)")
        if not 0.0 <= momentum < 1.0:
            raise LightningCifarError(f"momentum={momentum}: must be in [0, 1)")
        if weight_decay < 0:
            raise LightningCifarError(f"weight_decay={weight_decay}: must be 0 or more")
        if eps <= 0:
            raise LightningCifarError(f"eps={eps}: must be > 0")
        if bias_lr is not None and not bias_lr > 0:
            raise LightningCifarError(f"bias_lr={bias_lr}: must be > 0, or null for lr")
        if muon_lr <= 0 or not 0.0 <= muon_momentum < 1.0:
            raise LightningCifarError(f"muon_lr={muon_lr}, muon_momentum={muon_momentum}: need muon_lr > 0 and a"
                                      " momentum in [0, 1)")
        tta_mode(tta)
        if whiten_bias_epochs is not None and not is_whole_number(whiten_bias_epochs):
            raise LightningCifarError(f"whiten_bias_epochs={whiten_bias_epochs!r}: must be a whole number of epochs,"
                                      " 0 or more, or null to train the whitening bias throughout")
        self.input_norm = Standardize(normalize)
        self.backbone = create_backbone(backbone, num_classes=num_classes, **(backbone_kwargs or {}))
        if whiten_bias_epochs is not None and not self._whitening_layers():
            raise LightningCifarError(f"whiten_bias_epochs={whiten_bias_epochs}: backbone {backbone!r} has no"
                                      " whitening layer (convpool's whiten option adds one); leave it null")
        if init == "keras":
            keras_init(self.backbone)
        elif init != "torch":
            raise LightningCifarError(f"init={init!r}: allowed values are 'torch', 'keras'")
        self.num_params = count_parameters(self.backbone)
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        # Not a registered submodule: the compiled wrapper shares the backbone's
        # weights, and checkpoints must keep the plain backbone's parameter names.
        object.__setattr__(self, "_compiled", torch.compile(self.backbone) if compile else None)
        self._schedule: Optional[dict[str, Any]] = None  # the learning-rate plan of this fit, saved with checkpoints
        self._resumed: Optional[tuple[dict[str, Any], int]] = None  # a resumed checkpoint's plan and step
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        # Lets Lightning's model summary count FLOPs at the start of every run.
        self.example_input_array = torch.zeros(EXAMPLE_INPUT_SHAPE)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> "Classifier":
        """Lightning's ``load_from_checkpoint``, refusing first a local checkpoint that holds more than
        plain data or names classes in its hyperparameters (see ``checkpoints.reading.read_checkpoint``)."""
        if isinstance(checkpoint_path, str) or hasattr(checkpoint_path, "__fspath__"):  # else an open file
            label = f"checkpoint {os.fspath(checkpoint_path)}"
            checkpoint_path = local_checkpoint_path(os.fspath(checkpoint_path), label)  # a URL refused, file:// a path
            check_checkpoint_fits(check_checkpoint(checkpoint_path, trusted=False, label=label), label)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def configure_callbacks(self) -> list[pl.Callback]:
        # Part of the model, so every Trainer gets it: the CLI's, the study's, a user's own
        # (once: Lightning asks again at every fit/test and would announce a replacement).
        if self._trainer is not None and any(isinstance(cb, NonFiniteLossGuard) for cb in self.trainer.callbacks):
            return []
        return [NonFiniteLossGuard(), StopOnSigterm()]

    def forward(self, x: Tensor) -> Tensor:
        """Logits for float images in [0, 1] of shape (N, 3, 32, 32)."""
        x = self.input_norm(x)
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except Exception as exc:  # no compiler, unsupported op, ...: eager mode still works
                rank_zero_warn(f"torch.compile failed, continuing without it: {type(exc).__name__}: {exc}")
                object.__setattr__(self, "_compiled", None)
        return self.backbone(x)

    def predict_logits(self, x: Tensor) -> Tensor:
        """Logits for evaluation, averaged over the ``tta`` views."""
        return evaluation_logits(self, x, self.hparams.tta)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy (with the configured label smoothing), computed in fp32."""
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.hparams.label_smoothing)

    # -- steps --------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.train_acc(logits.detach(), y)
        n = y.shape[0]
        # Showing a per-step value in the progress bar reads it back every step:
        # free on the CPU, a device sync on a GPU.
        on_cpu = self.device.type == "cpu"
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=on_cpu, batch_size=n)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=True, batch_size=n)
        lr = self.optimizers().param_groups[0]["lr"]
        self.log("train/lr", lr, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str, metric: MulticlassAccuracy) -> Tensor:
        x, y = batch
        logits = self.predict_logits(x)
        metric.update(logits, y)
        self.log(f"{stage}/loss", self.loss(logits, y), on_epoch=True, sync_dist=True, batch_size=y.shape[0])
        return logits

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.log("val/acc", acc, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        # The logits reach callbacks (the classification report) through on_test_batch_end.
        return self._eval_step(batch, "test", self.test_acc)

    def on_test_epoch_end(self) -> None:
        acc = self.test_acc.compute()
        self.test_acc.reset()
        self.log("test/acc", acc)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        probs = self.predict_logits(x).float().softmax(dim=1)
        out = {"probs": probs, "preds": probs.argmax(dim=1)}
        if y is not None and bool((y >= 0).all()):  # images from a folder come labelled -1
            out["targets"] = y
        return out

    # -- checkpoints ----------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[rng_state.KEY] = rng_state.collect()
        if self._schedule is not None:  # what a resumed fit compares its own plan with
            checkpoint[SCHEDULE_KEY] = dict(self._schedule)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        legacy = checkpoint_normalize(checkpoint)
        if legacy is not None:  # lightning-cifar 0.1: standardised by the data module, or not at all
            self.input_norm.enabled = legacy
            self.hparams.normalize = legacy
        # Only when resuming a fit: testing or loading weights should not reseed anything.
        resuming = self._trainer is not None and self.trainer.state.fn == "fit"
        if rng_state.KEY in checkpoint and resuming:
            rng_state.restore(checkpoint[rng_state.KEY])
        # Before configure_optimizers (Lightning restores the modules first): the schedule the weights were trained
        # on, and the step they stopped at. Checkpoints of lightning-cifar 0.2 do not say; they resume unchecked.
        if resuming and isinstance(checkpoint.get(SCHEDULE_KEY), dict):
            self._resumed = (checkpoint[SCHEDULE_KEY], int(checkpoint.get("global_step", 0)))

    # -- fit set-up ---------------------------------------------------------------

    def on_fit_start(self) -> None:
        if self.logger is not None:
            self.logger.log_metrics({"model/params": float(self.num_params)}, step=0)
        # After Lightning restored a checkpoint, so a resumed run keeps the layers it had.
        self.initialise_from_data(getattr(self.trainer, "datamodule", None))
        ddp_kwargs = getattr(self.trainer.strategy, "_ddp_kwargs", None)
        if (self.hparams.get("whiten_bias_epochs") is not None and self.trainer.world_size > 1
                and not (ddp_kwargs or {}).get("find_unused_parameters")):
            # DDP expects a gradient for every parameter that required one when it wrapped the model.
            raise LightningCifarError(
                f"whiten_bias_epochs={self.hparams.whiten_bias_epochs} stops the whitening bias's gradient, which DDP"
                " waits for: use --trainer.strategy=ddp_find_unused_parameters_true, or leave it null")

    def _whitening_layers(self) -> list[PatchWhitening]:
        return [m for m in self.backbone.modules() if isinstance(m, PatchWhitening)]

    def on_train_epoch_start(self) -> None:
        epochs = self.hparams.get("whiten_bias_epochs")
        if epochs is not None:  # set at every epoch's start, so a resumed fit keeps the plan
            for layer in self._whitening_layers():
                layer.bias.requires_grad_(self.current_epoch < epochs)

    def initialise_from_data(self, datamodule: Any) -> None:
        """Give a backbone that sets layers from the data (a whitening layer) training images, standardised as
        it will see them. The model-data contract: the data module's ``train_images(count)`` returns float
        images in [0, 1] of shape (count, 3, 32, 32) (:meth:`CIFAR10DataModule.train_images`). A backbone
        says it needs them with ``initialise_from_data(images)`` and, once they are set, ``needs_data()`` False."""
        initialise = getattr(self.backbone, "initialise_from_data", None)
        needs_data = getattr(self.backbone, "needs_data", None)
        if not callable(initialise) or (callable(needs_data) and not needs_data()):
            return
        provide = getattr(datamodule, "train_images", None)
        if not callable(provide):
            given = (f"the data module {type(datamodule).__name__}" if datamodule is not None
                     else "a fit without a data module")
            raise LightningCifarError(
                f"backbone {self.hparams.backbone!r} sets a layer from training images before training (a whitening"
                f" layer), and {given} has no train_images(count) method to give them; use CIFAR10DataModule, or add"
                " train_images(count) returning float images in [0, 1] of shape (count, 3, 32, 32)")
        with torch.no_grad():
            initialise(self.input_norm(provide(DATA_INIT_IMAGES).to(self.device)))

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer the settings name, over this model's parameters, without its schedule (which needs the
        trainer): what ``configure_optimizers`` steps, and what ``benchmarks/muon_precision.py`` times."""
        hp = self.hparams
        if not any(p.requires_grad for p in self.backbone.parameters()):
            raise LightningCifarError(f"backbone {hp.backbone!r} has no trainable parameters: there is nothing to fit"
                                      " (validate, test and predict work without training)")
        params: Any = self.parameters()
        if hp.optimizer != "muon":  # MuonWithSGD splits them itself: filters to Muon, the rest into these groups
            params = parameter_groups(params, hp.lr, hp.weight_decay, hp.bias_lr)
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov and hp.momentum > 0,
                weight_decay=hp.weight_decay,
            )
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, eps=hp.eps, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, eps=hp.eps, weight_decay=hp.weight_decay)
        elif hp.optimizer == "muon":
            opt = MuonWithSGD(params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov,
                              weight_decay=hp.weight_decay, muon_lr=hp.muon_lr, muon_momentum=hp.muon_momentum,
                              normalize_filters=hp.muon_normalize, bias_lr=hp.bias_lr)
        else:
            raise LightningCifarError(f"optimizer={hp.optimizer!r}: allowed values are 'sgd', 'adam', 'adamw', 'muon'")
        return opt

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = self.make_optimizer()
        if hp.scheduler == "none":
            self._schedule = plan("none", 0, 0.0, 0.0, 0.0)
            return opt
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise LightningCifarError(
                f"scheduler={hp.scheduler!r} needs a finite run: set --trainer.max_epochs or"
                " --trainer.max_steps, or use --model.scheduler=none"
            )
        self._schedule = plan(hp.scheduler, int(total), hp.warmup, hp.start_factor, hp.end_factor)
        if self._resumed is not None:
            saved, step = self._resumed
            change = resumed_schedule(saved, self._schedule, step, f"--ckpt_path={self.trainer.ckpt_path}")
            if change is not None:
                rank_zero_info(change)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_multiplier(hp.scheduler, int(total), hp.warmup, hp.start_factor, hp.end_factor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
