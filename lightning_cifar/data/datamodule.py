"""CIFAR-10 as a LightningDataModule that keeps the images as uint8 tensors.

torchvision downloads and verifies the official files (when allowed); they are
read with a restricted unpickler; afterwards every batch is a slice of one
in-memory tensor, fetched with a single indexing operation, and turned into
[0, 1] floats and augmented on the device the batch was moved to
(``on_after_batch_transfer``). Standardising the images is the model's job
(``Classifier(normalize=...)``), so a checkpoint needs no data settings to be used.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, VisionDataset
from torchvision.datasets.utils import check_integrity

from lightning_cifar.data import safe_pickle
from lightning_cifar.data.augment import get_augmentation
from lightning_cifar.errors import DataError, is_whole_number
from lightning_cifar.data.image_folder import MAX_IMAGE_PIXELS, load_image_folder

# The official label_names of batches.meta, for when the dataset is not loaded (predicting a folder).
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_SIZE = 50_000


class SafeCIFAR10(CIFAR10):
    """torchvision's CIFAR10 (download, MD5 checks, classes) reading its pickles with
    :mod:`lightning_cifar.data.safe_pickle`, so that a batch file can never run code."""

    def __init__(self, root: Union[str, Path], train: bool = True, download: bool = False) -> None:
        VisionDataset.__init__(self, root)
        self.train = train
        if download:
            self.download()
        listed = self.train_list if train else self.test_list
        for name, md5 in [*listed, (self.meta["filename"], self.meta["md5"])]:
            # torchvision's public check: with md5=None it only asks that the file exists.
            if not check_integrity(os.path.join(self.root, self.base_folder, name), md5):
                raise RuntimeError(f"Dataset file {name} not found or corrupted. You can use download=True to download it")
        images, self.targets = [], []
        for name, _ in listed:
            data, labels = self._read(name, safe_pickle.load_batch)
            images.append(data)
            self.targets.extend(labels)
        self.data = np.vstack(images).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC, as torchvision
        self.classes = self._read(self.meta["filename"], safe_pickle.load_class_names)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    def _read(self, name: str, reader: Callable[[Path], Any]) -> Any:
        path = Path(self.root) / self.base_folder / name
        try:
            return reader(path)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, MemoryError) as exc:
            raise DataError(f"CIFAR-10 file {path} is not a valid batch file: {exc}") from exc


class UnverifiedCIFAR10(SafeCIFAR10):
    """:class:`SafeCIFAR10` with the MD5 checks switched off.

    For files in the official format that are not the official files: a small
    test set, a re-packed copy. torchvision skips a check whose checksum is ``None``.
    """

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class TensorImages(Dataset):
    """Images and labels held as tensors, served a whole batch per index list."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # DataLoader hands the whole batch of indices over when this method
        # exists: one gather per batch instead of one Python call per image.
        idx = torch.as_tensor(indices, device=self.images.device)
        return self.images[idx], self.labels[idx]


def keep_batch(batch: Any) -> Any:
    """collate_fn for batches that ``__getitems__`` already assembled."""
    return batch


# Where the data is read from, or downloaded to, unless --data.data_dir says otherwise.
DEFAULT_DATA_DIR = "./data"

class CIFAR10DataModule(pl.LightningDataModule):
    """CIFAR-10 with a fixed, seeded validation split and on-device augmentation."""

    num_classes = 10

    def __init__(
        self,
        data_dir: Union[str, Path] = DEFAULT_DATA_DIR,
        batch_size: int = 256,
        val_split: Union[int, float] = 5000,
        num_workers: int = 0,
        augment: Literal["none", "crop_flip", "seed", "shift_flip", "shift_alt_flip"] = "crop_flip",
        seed: int = 42,
        download: bool = True,
        verify: bool = True,
        eval_batch_size: int = 1000,
        predict_dir: Optional[str] = None,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        """
        Args:
            data_dir: folder that holds (or will hold) ``cifar-10-batches-py/``.
            batch_size: training batch size.
            val_split: images held out of the training set for validation, as a
                count or a fraction; the same images for a given ``seed``; never augmented.
                0 trains on all 50,000 (as the seed notebook did) and validates on nothing.
            num_workers: DataLoader worker processes. Batches are slices of an
                in-memory tensor, so 0 is usually fastest.
            augment: training augmentation: ``none``, ``crop_flip`` (translate by up
                to 4 px with reflection, horizontal flip), ``seed`` (the seed
                notebook's rotation/shift/zoom/flip), ``shift_alt_flip`` (translate by up
                to 2 px, each image mirrored in every other epoch, as the CIFAR-10 speedruns) or
                ``shift_flip`` (the same with random flips, to measure what the alternation buys).
            seed: seed of the train/validation split.
            download: download the dataset when it is not in ``data_dir``.
            verify: check the files against torchvision's official MD5 sums. Turn off
                only for files in the official format that are not the official ones.
            eval_batch_size: batch size for validation, test and prediction.
            predict_dir: a folder of PNG/JPEG images for ``predict`` (any size and
                colour mode: converted to RGB, shorter side resized to 32 px, centre
                cropped to 32x32); unset, ``predict`` classifies the CIFAR-10 test set.
            max_image_pixels: ``predict_dir`` images with more pixels than this are skipped
                unread (listed with the reason); the default, 100 megapixels, is far above any photo.
        """
        super().__init__()
        # Stored as a string: checkpoints keep these hparams and are read with
        # weights_only=True, which refuses pathlib objects.
        data_dir = os.fspath(data_dir)
        self.save_hyperparameters()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                raise DataError(f"{name}={value}: must be a positive number of images")
        if num_workers < 0:
            raise DataError(f"num_workers={num_workers}: must be 0 or more")
        if int(max_image_pixels) < 1:
            raise DataError(f"max_image_pixels={max_image_pixels}: must be a positive number of pixels")
        self.augmentation = get_augmentation(augment)
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.val_split, self.num_workers, self.seed = val_split, num_workers, seed
        self.download, self.verify = download, verify
        self.predict_dir, self.max_image_pixels = predict_dir, int(max_image_pixels)
        self.classes: list[str] = list(CIFAR10_CLASSES)
        self.predict_files: list[str] = []
        self.predict_skipped: list[tuple[str, str]] = []
        self.train_set: Optional[TensorImages] = None
        self.val_set: Optional[TensorImages] = None
        self.test_set: Optional[TensorImages] = None
        self.predict_set: Optional[TensorImages] = None

    # -- loading ------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return self.data_dir / CIFAR10.base_folder

    def _dataset_class(self) -> type[CIFAR10]:
        return SafeCIFAR10 if self.verify else UnverifiedCIFAR10

    def _files(self, train: bool) -> list[tuple[str, Optional[str]]]:
        listed = CIFAR10.train_list if train else CIFAR10.test_list
        return [(name, md5) for name, md5 in listed] + [(CIFAR10.meta["filename"], CIFAR10.meta["md5"])]

    def _check_files(self, train: bool) -> None:
        """Name the first missing or corrupted file, with what to do about it."""
        if not self.folder.is_dir():
            raise DataError(
                f"no CIFAR-10 at {self.folder}: point --data.data_dir at the folder that contains"
                f" {CIFAR10.base_folder}/, or allow --data.download=true on a machine with internet"
            )
        for name, md5 in self._files(train):
            path = self.folder / name
            if not path.is_file():
                raise DataError(
                    f"CIFAR-10 file {path} is missing; restore it, or delete {self.folder}"
                    " and run again with --data.download=true to download the dataset"
                )
            if self.verify and not check_integrity(str(path), md5):
                raise DataError(
                    f"CIFAR-10 file {path} fails torchvision's MD5 check (corrupted, truncated or"
                    " not the official file); re-download it, or pass --data.verify=false to load"
                    " files in the official format that are not the official ones"
                )

    def _predicting_a_folder(self) -> bool:
        return self.predict_dir is not None and self.trainer is not None and self.trainer.state.fn == "predict"

    def prepare_data(self) -> None:
        if not self.download or self._have_files() or self._predicting_a_folder():
            return
        try:
            for train in (True, False):
                self._dataset_class()(str(self.data_dir), train=train, download=True)
        except Exception as exc:
            raise DataError(
                f"could not download CIFAR-10 into {self.data_dir} ({type(exc).__name__}: {exc});"
                " offline, point --data.data_dir at a folder that already contains"
                f" {CIFAR10.base_folder}/ (e.g. --data.data_dir=../shared/cifar10)"
            ) from exc

    def _have_files(self) -> bool:
        return all((self.folder / name).is_file() for t in (True, False) for name, _ in self._files(t))

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        self._check_files(train)
        try:
            ds = self._dataset_class()(str(self.data_dir), train=train, download=False)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"could not read CIFAR-10 from {self.folder}: {type(exc).__name__}: {exc}") from exc
        self.classes = list(ds.classes)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(ds.targets, dtype=torch.long)

    def _val_count(self, n_train: int) -> int:
        split = self.val_split
        count = int(round(split * n_train)) if isinstance(split, float) and 0 < split < 1 else split
        if not is_whole_number(count) or count >= n_train:
            raise DataError(
                f"val_split={split!r}: must be a number of images from 0 (train on all, no validation) to"
                f" {n_train - 1} or a fraction between 0 and 1 of the {n_train} training images"
            )
        return count

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self._load(train=True)
            n_val = self._val_count(len(labels))
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
            val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
            self.train_set = TensorImages(images[train_idx], labels[train_idx])
            self.val_set = TensorImages(images[val_idx], labels[val_idx]) if n_val else None
        if stage == "predict" and self.predict_dir is not None:
            if self.predict_set is None:
                found = load_image_folder(Path(self.predict_dir), self.max_image_pixels)
                unlabelled = torch.full((len(found.files),), -1, dtype=torch.long)
                self.predict_set = TensorImages(found.images, unlabelled)
                self.predict_files, self.predict_skipped = found.files, found.skipped
        elif stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = TensorImages(*self._load(train=False))
            if len(self.test_set) == 0:  # Lightning would test nothing and exit 0 with no metrics
                raise DataError(f"the test set in {self.folder} (test_batch) holds no images; nothing to"
                                f" {getattr(stage, 'value', stage) or 'test'}")
        self._move_to_accelerator()

    def _move_to_accelerator(self) -> None:
        """On a GPU, keep the whole uint8 dataset there (150 MB): batches never cross the bus."""
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is None or device.type != "cuda" or self.num_workers > 0:
            return
        for ds in (self.train_set, self.val_set, self.test_set, self.predict_set):
            if ds is not None:
                ds.images, ds.labels = ds.images.to(device), ds.labels.to(device)

    # -- batches ------------------------------------------------------------------

    def _loader(self, dataset: Optional[TensorImages], train: bool) -> DataLoader:
        if dataset is None:
            raise DataError("the data module was not set up for this stage; call setup() first")
        batch_size = self.batch_size if train else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(dataset) >= batch_size,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available() and dataset.images.device.type == "cpu",
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> Union[DataLoader, list]:
        if self.val_set is None and self.train_set is not None:  # val_split=0: every image trains
            if self.trainer is not None and self.trainer.state.fn == "validate":
                raise DataError("val_split=0 holds out no validation images; `validate` needs --data.val_split > 0")
            # Lightning skips validation (and warns that the list is empty: the CLI and the study hide that
            # warning, lightning_cifar.cli.program.EXPECTED_WARNINGS, since it only repeats the user's choice).
            return []
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set if self.predict_dir is not None else self.test_set, train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 images -> float images in [0, 1] (the model's input), augmented when training."""
        if isinstance(batch, Tensor):  # images alone: the model summary's example input
            return self.to_float(batch)
        images, labels = batch
        x = self.to_float(images)
        if self.trainer is not None and self.trainer.training:
            x = self.augmentation(x, images, self.trainer.current_epoch)
        return x, labels

    def train_images(self, count: int) -> Tensor:
        """The first ``count`` training images (never validation ones) as float images in [0, 1], shape
        (count, 3, 32, 32): what a backbone that sets layers from the data (a whitening layer) is set from
        (``Classifier.initialise_from_data``). Available once the data module is set up for ``fit``."""
        if self.train_set is None:
            raise DataError("train_images(): the data module is not set up for fit; call setup('fit') first")
        return self.to_float(self.train_set.images[:count])

    @staticmethod
    def to_float(images: Tensor) -> Tensor:
        """uint8 pixels to floats in [0, 1]."""
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data_dir={os.fspath(self.data_dir)!r}, batch_size={self.batch_size})"
