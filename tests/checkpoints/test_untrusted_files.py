"""Batch files and checkpoints that could run code are refused before they can."""

import pickle
import shutil
import time

import jsonargparse
import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from lightning_cifar import CIFAR10DataModule, Classifier
from lightning_cifar.data.datamodule import UnverifiedCIFAR10
from lightning_cifar.errors import DataError, LightningCifarError
from tests.helpers.runs import TINY_DATA_ARGS, one_line_error, trainer


class TorchvisionUnverified(CIFAR10):
    """torchvision's own loader (plain pickle), as the reference for what the files hold."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class Payload:
    """Unpickling this calls exec(): the file named by ``marker`` appears if the code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.fixture
def data_copy(tmp_path, tiny_cifar):
    shutil.copytree(tiny_cifar, tmp_path / "data")
    return tmp_path / "data"


def batch_file(root, name):
    return root / "cifar-10-batches-py" / name


def load(root, train=True):
    dm = CIFAR10DataModule(root, verify=False, download=False, val_split=40)
    dm.setup("fit" if train else "test")
    return dm


@pytest.mark.parametrize("train", [True, False])
def test_the_restricted_loader_reads_what_torchvision_reads(tiny_cifar, train):
    ours, reference = UnverifiedCIFAR10(tiny_cifar, train=train), TorchvisionUnverified(tiny_cifar, train=train)
    assert np.array_equal(ours.data, reference.data) and ours.targets == reference.targets
    assert ours.classes == reference.classes and ours.class_to_idx == reference.class_to_idx


def test_files_written_by_numpy_1_load_too(data_copy, tiny_cifar):
    # numpy 1 names the array reconstructor numpy.core.multiarray (so do the official files); numpy 2 numpy._core.
    path = batch_file(data_copy, "data_batch_1")
    raw = path.read_bytes()
    assert raw.count(b"numpy._core.multiarray\n") == 1 and b"_codecs\nencode" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert np.array_equal(UnverifiedCIFAR10(data_copy).data, UnverifiedCIFAR10(tiny_cifar).data)


@pytest.mark.parametrize("name", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_crafted_batch_file_is_refused_and_its_code_never_runs(data_copy, tmp_path, name):
    marker = tmp_path / "pwned"
    entry = {"data": Payload(marker), "labels": [0]} if name != "batches.meta" else {"label_names": Payload(marker)}
    batch_file(data_copy, name).write_bytes(pickle.dumps(entry, protocol=2))

    with pytest.raises(DataError, match=rf"{name} is not a valid batch file: refuses to load (__builtin__|builtins).exec"):
        load(data_copy, train=name != "test_batch")
    assert not marker.exists()

    # The file is a real exploit: plain pickle runs its code.
    with open(batch_file(data_copy, name), "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_a_crafted_batch_file_stops_the_cli_with_one_line(data_copy, tmp_path, cli):
    marker = tmp_path / "pwned"
    batch_file(data_copy, "data_batch_3").write_bytes(pickle.dumps({"data": Payload(marker), "labels": []}, protocol=2))
    result = cli(["fit", f"--data.data_dir={data_copy}", *TINY_DATA_ARGS], tmp_path, check=False)
    line = one_line_error(result)
    assert result.returncode == 2 and "data_batch_3 is not a valid batch file" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[: len(raw) // 2], "data_batch_2 is not a valid batch file: .*truncated"),
        (lambda raw: b"", "data_batch_2 is not a valid batch file: Ran out of input"),
        (lambda raw: b"\x00garbage" * 10, "data_batch_2 is not a valid batch file"),
    ],
)
def test_truncated_or_garbled_files_name_the_file_when_unverified(data_copy, damage, message):
    path = batch_file(data_copy, "data_batch_2")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message):
        load(data_copy)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"data": np.zeros((4, 3072), np.float32), "labels": [0] * 4}, "uint8 array of N x 3072"),
        ({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, "uint8 array of N x 3072"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1]}, "list of 4 class indices"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "from 0 to 9"),
        ([1, 2, 3], "expected a dict with 'data' and 'labels'"),
    ],
)
def test_batch_files_with_the_wrong_content_are_named(data_copy, entry, message):
    batch_file(data_copy, "data_batch_4").write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DataError, match=f"data_batch_4 is not a valid batch file: .*{message}"):
        load(data_copy)


class ShapeWithoutBytes:
    """numpy's reconstructor asked for a full-size array and never filled: today's 200 KB bomb that
    became 200,000 blank images."""

    def __init__(self, shape, state=None):
        self.shape, self.state = shape, state

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, self.shape, b"B")) + ((self.state,) if self.state is not None else ())


@pytest.mark.parametrize(
    "data, message",
    [
        # an array sized by the file's shape field, with no pixel bytes at all
        (ShapeWithoutBytes((200_000, 3072)), r"refuses numpy _reconstruct\(ndarray, \(200000, 3072\)\)"),
        # numpy's own layout (an empty array, then its state), but the state's shape has no bytes behind it
        (ShapeWithoutBytes((0,), (1, (20_000, 3072), np.dtype("u1"), False, b"\x00")),
         "needs 61,440,000 bytes of data, the file holds 1"),
        # an object array of 2e8 entries: refused before numpy allocates its 1.6 GB of pointers
        (ShapeWithoutBytes((0,), (1, (200_000_000,), np.dtype("O"), False, [])), "refuses an array of dtype"),
        # more numbers than the format allows, even with the bytes there
        (ShapeWithoutBytes((0,), (1, (60_001, 3072), np.dtype("u1"), False, b"\x00")), "the format holds at most"),
    ],
)
def test_an_array_is_only_as_large_as_the_bytes_the_file_holds(data_copy, data, message):
    batch_file(data_copy, "data_batch_1").write_bytes(pickle.dumps({"data": data, "labels": [0]}, protocol=2))
    assert batch_file(data_copy, "data_batch_1").stat().st_size < 1000
    with pytest.raises(DataError, match=f"data_batch_1 is not a valid batch file: .*{message}"):
        load(data_copy)


# -- checkpoints -------------------------------------------------------------------------------


def crafted_checkpoint(path, marker):
    """A file torch.load(weights_only=False) would execute: a real checkpoint layout plus a payload."""
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0", "evil": Payload(marker)}, path)
    return path


@pytest.mark.parametrize("command", ["test", "validate", "predict", "fit", "export"])
def test_a_crafted_checkpoint_is_refused_before_it_runs(tmp_path, tiny_cifar, command, cli):
    marker = tmp_path / "pwned"
    ckpt = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS] if command != "export" else []
    line = one_line_error(cli([command, *data, f"--ckpt_path={ckpt}"], tmp_path, check=False))
    assert "evil.ckpt" in line and "weights_only" in line and "holds exec" in line
    assert not marker.exists() and not list(tmp_path.glob("*.onnx"))
    with pytest.raises(Exception):
        torch.load(ckpt, weights_only=True)
    torch.load(ckpt, weights_only=False)  # the exploit is real
    assert marker.exists()


def test_a_missing_checkpoint_path_is_one_line(tmp_path, tiny_cifar, cli):
    result = cli(["test", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--ckpt_path=nope.ckpt"], tmp_path,
                 check=False)
    assert "--ckpt_path=nope.ckpt: no such file" in one_line_error(result)


# -- hyperparameters that name a class ---------------------------------------------------------
# Plain dicts and strings pass weights_only loading, but LightningCLI and load_from_checkpoint parse
# the hyperparameters with jsonargparse, which would build the class a `class_path` names.


def popen_payload(marker):
    return {"x": {"class_path": "subprocess.Popen", "init_args": {"args": f"touch {marker}", "shell": True}}}


def never_created(marker, grace=0.5):
    """The payload would run `touch` in a child process: give it time to show up before saying it did not."""
    time.sleep(grace)
    return not marker.exists()


@pytest.fixture(scope="module")
def honest_checkpoint(tmp_path_factory, tiny_cifar):
    folder = tmp_path_factory.mktemp("honest")
    dm = CIFAR10DataModule(tiny_cifar, verify=False, download=False, val_split=40, batch_size=32)
    t = trainer(folder, max_steps=1, limit_val_batches=0)
    t.fit(Classifier("convpool", backbone_kwargs={"widths": [4, 8], "kernels": [3, 3]}), dm)
    path = folder / "honest.ckpt"
    t.save_checkpoint(path)
    return path


def class_path_checkpoint(honest, path, marker):
    """As `lightning-cifar fit` writes it (load_from_checkpoint then parses the hyperparameters with
    jsonargparse, through Lightning's instantiator), with a payload in backbone_kwargs."""
    checkpoint = torch.load(honest, weights_only=True)
    checkpoint["hyper_parameters"]["_instantiator"] = "pytorch_lightning.cli.instantiate_module"
    checkpoint["hyper_parameters"]["backbone_kwargs"] = popen_payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    torch.load(path, weights_only=True)  # plain data: weights_only loading alone lets it through
    return path


@pytest.mark.parametrize("command, ckpt_arg, where", [
    ("test", None, "evil.ckpt"),
    ("validate", None, "evil.ckpt"),
    ("predict", None, "evil.ckpt"),
    ("fit", None, "evil.ckpt"),
    ("fit", "last", "lightning_logs/version_0/checkpoints/last.ckpt"),
    ("test", "best", "lightning_logs/version_0/checkpoints/epoch000-val_acc0.5000.ckpt"),
    ("export", None, "evil.ckpt"),
])
def test_a_checkpoint_whose_hyperparameters_name_a_class_is_refused(tmp_path, tiny_cifar, honest_checkpoint, cli,
                                                                     command, ckpt_arg, where):
    marker = tmp_path / "pwned.txt"
    ckpt = class_path_checkpoint(honest_checkpoint, tmp_path / where, marker)
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS] if command != "export" else []
    line = one_line_error(cli([command, *data, f"--ckpt_path={ckpt_arg or ckpt}"], tmp_path, check=False))
    assert "refused: its hyperparameters name a class to build" in line and "subprocess.Popen" in line
    assert where.split("/")[-1] in line
    assert never_created(marker)


def test_load_from_checkpoint_refuses_a_class_path_too(tmp_path, honest_checkpoint):
    marker = tmp_path / "pwned.txt"
    ckpt = class_path_checkpoint(honest_checkpoint, tmp_path / "evil.ckpt", marker)
    with pytest.raises(LightningCifarError, match="hyperparameters name a class to build"):
        Classifier.load_from_checkpoint(ckpt)
    assert never_created(marker)


def test_without_our_refusal_jsonargparse_still_builds_no_class(tmp_path, tiny_cifar, honest_checkpoint, cli,
                                                              monkeypatch):
    """The root: jsonargparse is set never to instantiate a class_path inside `Any`. With our own
    refusal switched off, the payload reaches the parser as a plain dict and runs nothing."""
    marker = tmp_path / "pwned.txt"
    ckpt = class_path_checkpoint(honest_checkpoint, tmp_path / "evil.ckpt", marker)
    monkeypatch.setattr("lightning_cifar.checkpoints.reading.class_paths", lambda value, where: iter(()))
    line = one_line_error(cli(["test", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, f"--ckpt_path={ckpt}"],
                              tmp_path, check=False))
    assert "does not take 'x'" in line  # the dict went to the backbone, unbuilt
    with pytest.raises(LightningCifarError, match="does not take 'x'"):
        Classifier.load_from_checkpoint(ckpt)
    assert never_created(marker)

    # The payload is real: with jsonargparse's old default, loading the same file runs the command.
    jsonargparse.set_parsing_settings(instantiate_subclass_spec_in_any=True)
    try:
        with pytest.raises(Exception):  # the Popen object is built, then fails to be deep-copied
            Classifier.load_from_checkpoint(ckpt)
    finally:
        jsonargparse.set_parsing_settings(instantiate_subclass_spec_in_any=False)
    deadline = time.time() + 30
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists()
