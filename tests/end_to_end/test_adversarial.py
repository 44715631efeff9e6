"""Round two of hostile input (docs/reliability.md, cases 56 on): size bombs, odd images and names,
formula cells, class names, and values that used to end in a traceback."""

import csv
import os
import pickle
import resource

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_cifar.data.image_folder import load_image_folder
from tests.helpers.cifar_files import CLASSES, write_tiny_cifar
from tests.helpers.image_files import write_png16, write_png_claiming
from tests.helpers.runs import SMALL_NET, TINY_DATA_ARGS, fit_in_process, one_line_error


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cifar):
    cwd = tmp_path_factory.mktemp("trained")
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=32-true"]
    fit_in_process(["fit", *data, *SMALL_NET, "--trainer.max_epochs=1"], cwd)
    return cwd, data, cwd / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def predict_rows(cli, cwd, ckpt, folder, *extra):
    out = cwd / "predicted"
    result = cli(["predict", f"--data.data_dir={cwd / 'no_data'}", "--data.download=false", *SMALL_NET,
                  "--trainer.precision=32-true", f"--ckpt_path={ckpt}", f"--data.predict_dir={folder}",
                  f"--predictions.output_dir={out}", *extra], cwd)
    with open(out / "predictions.csv", newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}, result.stdout + result.stderr


def peak_rss_growth(fn):
    """How far ``fn`` raised this process's peak resident memory, in bytes (0 if it stayed under the old peak)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # ru_maxrss is in KiB on Linux


# -- predict: size bombs and 16-bit images -------------------------------------------------------


def test_an_image_over_the_pixel_limit_is_skipped_unread_and_the_rest_predicted(trained, tmp_path, cli):
    cwd, _, ckpt = trained
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 30), "red").save(folder / "photo.png")
    Image.new("RGB", (100, 100), "blue").save(folder / "big.png")
    write_png_claiming(folder / "bomb.png", 20_000, 20_000)  # a few hundred bytes claiming 1.2 GB
    assert (folder / "bomb.png").stat().st_size < 2000
    rows, output = predict_rows(cli, cwd, ckpt, folder, "--data.max_image_pixels=5000")
    assert rows["photo.png"]["pred_class"] in CLASSES and rows["photo.png"]["error"] == ""
    assert rows["big.png"]["error"] == "10,000 pixels, over the limit of 5,000 (--data.max_image_pixels)"
    assert rows["bomb.png"]["error"].startswith("400,000,000 pixels, over the limit")
    assert "wrote 1 predictions (2 files skipped)" in output
    # The default limit (100 megapixels) also skips the bomb without decoding it.
    found = load_image_folder(folder)
    assert found.files == ["big.png", "photo.png"] and found.skipped[0][0] == "bomb.png"


def test_memory_follows_the_output_not_the_input(tmp_path):
    """A 1 x 1,000,000 PNG (3 KB) used to be resized to 32 x 32,000,000 before cropping: 5.6 GB."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (1_000_000, 1), "green").save(folder / "line.png")
    assert (folder / "line.png").stat().st_size < 10_000
    found = []
    grew = peak_rss_growth(lambda: found.append(load_image_folder(folder)))
    assert found[0].images.shape == (1, 3, 32, 32) and found[0].images[0, 1].float().mean() > 100  # green
    assert grew < 300 * 2**20, f"peak memory grew by {grew / 2**20:.0f} MiB"


def test_a_16_bit_png_is_scaled_like_its_8_bit_twin(trained, tmp_path, cli):
    cwd, _, ckpt = trained
    folder = tmp_path / "images"
    folder.mkdir()
    rgb8 = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb8).save(folder / "eight.png")
    write_png16(folder / "sixteen.png", rgb8.astype(np.uint16) * 257)  # the same colours, 16 bits each
    found = load_image_folder(folder)
    assert found.images.dtype == torch.uint8 and torch.equal(found.images[0], found.images[1])
    rows, _ = predict_rows(cli, cwd, ckpt, folder)  # side by side in one batch: they used not to stack
    assert rows["eight.png"]["top3"] == rows["sixteen.png"]["top3"] and rows["sixteen.png"]["error"] == ""


# -- names that are not UTF-8, or that a spreadsheet would run ----------------------------------------


def test_a_file_name_that_is_not_utf8_is_written_escaped(trained, tmp_path, cli):
    cwd, _, ckpt = trained
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (32, 32), "red").save(os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    Image.new("RGB", (32, 32), "blue").save(folder / "plain.png")
    rows, _ = predict_rows(cli, cwd, ckpt, folder)
    assert sorted(rows) == ["caf\\xe9.png", "plain.png"] and all(r["pred_class"] in CLASSES for r in rows.values())


def test_cells_a_spreadsheet_would_run_are_neutralised(trained, tmp_path, cli):
    cwd, _, ckpt = trained
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM(1).png", "ok.png"):
        Image.new("RGB", (32, 32), "red").save(folder / name)
    rows, _ = predict_rows(cli, cwd, ckpt, folder)
    assert sorted(rows) == sorted(["'=HYPERLINK(1).png", "'+1.png", "'-2.png", "'@SUM(1).png", "ok.png"])


@pytest.fixture(scope="module")
def hostile_class_names(tmp_path_factory):
    """The tiny data set with class names that are TeX to matplotlib and formulas to a spreadsheet."""
    root = write_tiny_cifar(tmp_path_factory.mktemp("hostile_names"))
    names = ["$x^2$ costs $5", "=1+1", "@cmd", *CLASSES[3:]]
    with open(root / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": 40, "label_names": names, "num_vis": 3072}, f, protocol=2)
    return root, names


def test_class_names_are_plain_text_in_the_report(hostile_class_names, tmp_path, cli):
    root, names = hostile_class_names
    data = [f"--data.data_dir={root}", *TINY_DATA_ARGS, "--trainer.precision=32-true", *SMALL_NET]
    cli(["fit", *data, "--trainer.max_epochs=1"], tmp_path)
    cli(["test", *data, "--ckpt_path=last"], tmp_path)
    folder = tmp_path / "lightning_logs" / "version_0" / "test" / "version_0" / "test_report"
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "reliability_diagram.png"):
        assert (folder / name).stat().st_size > 10_000
    with open(folder / "per_class.csv", newline="") as f:
        shown = [row["class"] for row in csv.DictReader(f)]
    assert shown == ["$x^2$ costs $5", "'=1+1", "'@cmd", *CLASSES[3:]]


# -- values that used to end in a traceback ------------------------------------------------------


@pytest.mark.parametrize("option, message", [
    ("--report.calibration_bins=0", "report.calibration_bins=0: must be a positive number of bins"),
    ("--report.mistakes=-5", "report.mistakes=-5: must be 0 or a positive number of images"),
])
def test_report_settings_are_checked_before_the_test_runs(trained, tmp_path, cli, option, message):
    _, data, ckpt = trained
    result = cli(["test", *data, *SMALL_NET, f"--ckpt_path={ckpt}", option], tmp_path, check=False)
    assert message in one_line_error(result)
    assert not (tmp_path / "lightning_logs").exists() or not any((tmp_path / "lightning_logs").rglob("events.*"))


@pytest.mark.parametrize("option, message", [
    ("--model.momentum=-1", "momentum=-1.0: must be in [0, 1)"),
    ("--model.weight_decay=-1", "weight_decay=-1.0: must be 0 or more"),
    ("--model.eps=0", "eps=0.0: must be > 0"),
])
def test_optimizer_settings_out_of_range_are_one_line(trained, tmp_path, cli, option, message):
    _, data, _ = trained
    assert message in one_line_error(cli(["fit", *data, *SMALL_NET, option], tmp_path, check=False))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_on_a_machine_without_one_is_one_line(trained, tmp_path, cli):
    _, data, _ = trained
    line = one_line_error(cli(["fit", *data, *SMALL_NET, "--trainer.accelerator=gpu"], tmp_path, check=False))
    assert "--trainer.accelerator=gpu: this machine has no GPU" in line and "--trainer.accelerator=cpu" in line


@pytest.fixture
def odd_checkpoints(trained, tmp_path):
    _, _, ckpt = trained
    good = torch.load(ckpt, weights_only=True)
    torch.save(good["state_dict"], tmp_path / "weights.pt")
    altered = {**good, "state_dict": {k: (v[:1] if v.ndim else v) for k, v in good["state_dict"].items()}}
    torch.save(altered, tmp_path / "altered.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    torch.save({"state_dict": {}, "evil": SystemCall(str(tmp_path / "pwned"))}, tmp_path / "system.ckpt")
    return tmp_path


class SystemCall:
    """Unpickling this calls os.system (posix.system): the marker file appears if it ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("name, message", [
    ("weights.pt", "weights.pt: a bare state_dict (weights only, no hyperparameters), not a Lightning checkpoint"),
    ("altered.ckpt", "altered.ckpt: its weights do not fit the network its hyperparameters describe"
                     " (backbone.features.0.weight is 1x3x5x5 in the file, 8x3x5x5 in convpool"),
    ("empty.ckpt", "empty.ckpt: the file is empty (0 bytes), not a checkpoint"),
    ("system.ckpt", "system.ckpt: refused: it holds posix.system, which is not plain data"),
])
@pytest.mark.parametrize("command", ["test", "export"])
def test_checkpoints_that_are_not_ours_are_one_line(trained, odd_checkpoints, cli, name, message, command):
    _, data, _ = trained
    args = [command, *(data if command == "test" else []), f"--ckpt_path={odd_checkpoints / name}"]
    line = one_line_error(cli(args, odd_checkpoints, check=False))
    assert message in line and "--weights_only=false" not in line  # advice that export does not take
    assert not (odd_checkpoints / "pwned").exists()


def test_a_file_url_is_the_local_file_it_names(trained, tmp_path, cli):
    _, data, ckpt = trained
    # No SMALL_NET: the network must come from the file's hyperparameters, as for a path.
    tested = cli(["test", *data, f"--ckpt_path={ckpt.as_uri()}"], tmp_path)
    assert "test/acc" in tested.stdout
    by_path = cli(["test", *data, f"--ckpt_path={ckpt}"], tmp_path)
    accuracy = lambda out: [line.split()[-1] for line in out.splitlines() if "test/acc" in line]  # noqa: E731
    assert accuracy(tested.stdout) == accuracy(by_path.stdout)


def test_export_to_a_folder_is_refused_and_leaves_nothing(trained, tmp_path, cli):
    _, _, ckpt = trained
    (tmp_path / "out").mkdir()
    result = cli(["export", f"--ckpt_path={ckpt}", "--format=torchscript", f"--output={tmp_path / 'out'}",
                  "--overwrite"], tmp_path, check=False)
    assert "is a folder; give the file to write" in one_line_error(result)
    assert list((tmp_path / "out").iterdir()) == [] and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("content, message", [
    ("", "is empty; a config file maps options to values"),
    ("- max_epochs\n", "holds a list, not a mapping of options to values"),
    (None, "is a folder; pass a YAML file"),
])
def test_config_files_that_are_not_a_mapping_name_the_file(tmp_path, cli, content, message):
    path = tmp_path / "my.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    line = one_line_error(cli(["fit", "-c", str(path)], tmp_path, check=False))
    assert f"config {path} {message}" in line


# -- plugins ---------------------------------------------------------------------------------------

EXITS_AT_IMPORT = "import sys\nsys.exit(3)\n"


def plugin_net(forward: str) -> str:
    """The source of a plugin module whose network returns ``forward`` (an expression of x and logits)."""
    return f"""
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(3072, num_classes))

        def forward(self, x):
            logits = self.body(x)
            return {forward}

    def build(num_classes=10):
        return Net(num_classes)
"""


# An auxiliary output in training only; an output written for batches of two.
TUPLE_WHEN_TRAINING = plugin_net("(logits, x.mean()) if self.training else logits")
SHAPE_FROM_BATCH_SIZE = plugin_net("logits[:2]")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    from lightning_cifar import registry
    from tests.helpers.cifar_files import make_distribution

    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    make_distribution(site, "rude-plugins", {"exits_net": "exits_mod:build", "tuple_net": "tuple_mod:build",
                                             "batch_two_net": "batch_two_mod:build"},
                      {"exits_mod": EXITS_AT_IMPORT, "tuple_mod": TUPLE_WHEN_TRAINING,
                       "batch_two_mod": SHAPE_FROM_BATCH_SIZE})
    registry.refresh()
    yield
    monkeypatch.undo()
    registry.refresh()


def test_a_plugin_that_exits_at_import_breaks_only_itself(plugins, tmp_path, cli, trained):
    listed = cli(["backbones"], tmp_path)
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "BROKEN" in lines["exits_net"] and "SystemExit: 3" in lines["exits_net"]
    assert "cnn_base" in lines and "mlp_seed" in lines  # the ones after it are listed too
    _, data, _ = trained
    line = one_line_error(cli(["fit", *data, "--model.backbone=exits_net"], tmp_path, check=False))
    assert "backbone 'exits_net' (exits_mod:build, from rude-plugins 0.1) failed to import: SystemExit: 3" in line


@pytest.mark.parametrize("name, message", [
    ("tuple_net", "maps a (2, 3, 32, 32) batch in train mode to tuple, expected a tensor (2, 10)"),
    ("batch_two_net", "maps a (3, 3, 32, 32) batch in eval mode to (2, 10), expected a tensor (3, 10)"),
])
def test_the_output_check_probes_train_mode_and_a_second_batch_size(plugins, name, message):
    from lightning_cifar import registry
    from lightning_cifar.errors import BackboneLoadError

    with pytest.raises(BackboneLoadError) as err:
        registry.create_backbone(name)
    assert message in str(err.value)


def test_the_output_check_leaves_the_module_and_the_random_stream_as_they_were():
    from lightning_cifar import registry

    torch.manual_seed(0)
    checked = registry.create_backbone("cnn_base", dropout=0.3)
    after_checked = torch.rand(3)
    torch.manual_seed(0)
    unchecked = registry.create_backbone("cnn_base", dropout=0.3, check=False)
    after_unchecked = torch.rand(3)
    assert torch.equal(after_checked, after_unchecked)  # dropout in the train-mode probe drew nothing
    for (name, a), (_, b) in zip(checked.state_dict().items(), unchecked.state_dict().items()):
        assert torch.equal(a, b), name  # batch-norm statistics untouched
    assert checked.training


# -- runs and files -----------------------------------------------------------------------------


def test_runs_that_start_together_claim_different_folders(tmp_path):
    import threading

    from lightning_cifar.checkpoints.run_folders import claim_version

    (tmp_path / "version_0").mkdir()  # an earlier run
    start, claimed = threading.Barrier(8), []

    def claim():
        start.wait(timeout=30)
        claimed.append(claim_version(tmp_path))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(claimed) == list(range(1, 9))


def test_two_fits_started_at_once_keep_separate_run_folders(tmp_path, tiny_cifar):
    import subprocess
    import sys
    import time

    from tests.helpers.runs import SUBPROCESS_TIMEOUT

    # Both processes sleep until the same moment, then fit: the listing Lightning did put both in version_0.
    at = time.time() + 8
    code = ("import time, sys; from lightning_cifar.cli import main; time.sleep(max(0, float(sys.argv[1]) - time.time()));"
            " main(sys.argv[2:])")
    args = ["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--trainer.max_epochs=1"]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(at), *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=SUBPROCESS_TIMEOUT) for p in procs] == [0, 0]
    runs = sorted(d.name for d in (tmp_path / "lightning_logs").iterdir())
    assert runs == ["version_0", "version_1"]
    for run in runs:
        names = sorted(p.name for p in (tmp_path / "lightning_logs" / run / "checkpoints").iterdir())
        assert "last.ckpt" in names and not any(n.startswith("last-v") for n in names)


def test_last_and_best_find_a_run_without_a_logger(trained, tmp_path, cli):
    _, data, _ = trained
    cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=1"], tmp_path)  # an older run, logged
    cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=2", "--trainer.logger=false"], tmp_path)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    for alias in ("last", "best"):
        result = cli(["test", *data, f"--ckpt_path={alias}"], tmp_path)
        output = result.stdout + result.stderr
        assert f"--ckpt_path={alias}: using checkpoints/" in output and "the run without a logger" in output


def test_testing_an_empty_test_set_is_refused(tmp_path, trained, cli):
    _, _, ckpt = trained
    root = write_tiny_cifar(tmp_path / "data", test_size=0)
    data = [f"--data.data_dir={root}", *TINY_DATA_ARGS, *SMALL_NET]
    line = one_line_error(cli(["test", *data, f"--ckpt_path={ckpt}"], tmp_path, check=False))
    assert "the test set in" in line and "holds no images; nothing to test" in line


def test_model_settings_given_with_a_checkpoint(trained, tmp_path, cli):
    """The checkpoint's settings are used and listed; a conflicting one is refused, not silently replaced;
    runtime ones (tta) are honoured."""
    _, data, ckpt = trained
    base = ["test", *data, f"--ckpt_path={ckpt}"]  # no SMALL_NET: the architecture comes from the file
    listed = cli(base, tmp_path)
    assert "model settings from the checkpoint: backbone=convpool, backbone_kwargs=" in listed.stdout + listed.stderr
    refused = cli([*base, "--model.lr=0.3"], tmp_path, check=False)
    assert "--model.lr=0.3 differs from the checkpoint's lr=0.05" in one_line_error(refused)
    refused = cli(["fit", *data, f"--ckpt_path={ckpt}", "--model.backbone=cnn_base"], tmp_path, check=False)
    assert "--model.backbone=cnn_base differs from the checkpoint's backbone=convpool" in one_line_error(refused)
    cli([*base, "--model.tta=true"], tmp_path)
    evaluations = sorted((ckpt.parent.parent / "test").iterdir(), key=lambda d: int(d.name[8:]))  # next to the run
    assert "tta: true" in (evaluations[-1] / "hparams.yaml").read_text()


# -- networks too large for the machine -------------------------------------------------------------------


def test_a_network_that_cannot_fit_is_refused_before_it_is_built(trained, tmp_path, cli, monkeypatch):
    from lightning_cifar.models import footprint as memory_check

    _, data, _ = trained
    # This machine's 24 GiB, fixed: on a larger machine the network would fit, and the test would train it.
    monkeypatch.setattr(memory_check, "available_bytes", lambda accelerator: (24 * 2**30, "a 24 GiB machine"))
    huge = ["--model.backbone=convpool", '--model.backbone_kwargs={"widths": [6000, 6000, 6000]}', "--data.batch_size=256"]
    grew = []
    result = []
    grew.append(peak_rss_growth(lambda: result.append(cli(["fit", *data, *huge], tmp_path, check=False))))
    line = one_line_error(result[0])
    assert "1,224,978,010 parameters; training it on batches of 256 needs at least 26.2 GiB" in line
    assert "--check_memory=false" in line
    assert grew[0] < 1 * 2**30, f"peak memory grew by {grew[0] / 2**30:.1f} GiB"  # 4.9 GB of weights never allocated


def test_the_memory_check_uses_the_machines_memory_and_can_be_switched_off(trained, tmp_path, cli, monkeypatch):
    from lightning_cifar.models import footprint as memory_check

    _, data, _ = trained
    monkeypatch.setattr(memory_check, "available_bytes", lambda accelerator: (50_000, "a tiny machine"))
    line = one_line_error(cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=1"], tmp_path, check=False))
    assert "more than a tiny machine (0.0 GiB)" in line
    cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=1", "--check_memory=false"], tmp_path)
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
