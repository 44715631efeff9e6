"""Seeing what a model learned: the report after test, predicting image files, export, summary."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.functional.classification import multiclass_calibration_error

from lightning_cifar import CIFAR10DataModule, Classifier, registry
from lightning_cifar.cli.export import load_for_export
from lightning_cifar.cli.summary import forward_flops
from lightning_cifar.models.measure import count_parameters
from lightning_cifar.training.callbacks.evaluation_report import ScoredImages, calibration_bins
from lightning_cifar.training.input_norm import CIFAR10_MEAN
from tests.helpers.cifar_files import CLASSES
from tests.helpers.runs import (
    SMALL_NET,
    TINY_DATA_ARGS,
    fit_in_process,
    one_line_error,
    run_cli,
    scalars,
    tiny_test_set,
)

REPORT_FILES = ["confusion_matrix.png", "per_class_accuracy.png", "reliability_diagram.png", "confident_mistakes.png"]


@pytest.fixture(scope="module")
def tested(tmp_path_factory, tiny_cifar):
    """fit for 3 epochs, then `test --ckpt_path=last`, in one folder."""
    cwd = tmp_path_factory.mktemp("tested")
    # fp32, so that the independent evaluations below reproduce the logged numbers closely.
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=32-true"]
    fit_in_process(["fit", *data, *SMALL_NET, "--trainer.max_epochs=3"], cwd)
    result = run_cli(["test", *data, *SMALL_NET, "--ckpt_path=last"], cwd)  # the console script, end to end
    ckpt = cwd / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    return cwd, ckpt, cwd / "lightning_logs" / "version_0" / "test" / "version_0", result


def independent_predictions(ckpt, tiny_cifar):
    model = Classifier.load_from_checkpoint(ckpt, weights_only=True).eval()
    images, labels = tiny_test_set(tiny_cifar)
    with torch.no_grad():
        probs = model.predict_logits(images).softmax(1)
    return probs, labels


def test_test_writes_the_report_as_files(tested, tiny_cifar):
    _, ckpt, run, result = tested
    folder = run / "test_report"
    for name in REPORT_FILES:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width >= 500 and image.height >= 300, name
    probs, labels = independent_predictions(ckpt, tiny_cifar)
    preds = probs.argmax(1)
    with open(folder / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == CLASSES
    for c, row in enumerate(rows):  # the same numbers an independent evaluation of the checkpoint gives
        assert int(row["images"]) == int((labels == c).sum())
        assert int(row["correct"]) == int(((labels == c) & (preds == c)).sum())
    with open(folder / "confusion_matrix.csv") as f:
        matrix = [list(map(int, r[1:])) for r in list(csv.reader(f))[1:]]
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (labels.numpy(), preds.numpy()), 1)
    assert matrix == expected.tolist()
    assert "per-class test accuracy:" in result.stdout + result.stderr


def test_test_logs_the_report_to_tensorboard(tested, tiny_cifar):
    _, ckpt, run, _ = tested
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert {f"test/{n[:-4]}" for n in REPORT_FILES} <= set(events.Tags()["images"])
    logged = scalars(run)
    probs, labels = independent_predictions(ckpt, tiny_cifar)
    ece = float(multiclass_calibration_error(probs, labels, num_classes=10, n_bins=15, norm="l1"))
    assert logged["test/ece"][-1] == pytest.approx(ece, abs=1e-5)
    cat = CLASSES.index("cat")
    cat_acc = float(((probs.argmax(1) == cat) & (labels == cat)).sum() / (labels == cat).sum())
    assert logged["test/acc_class/cat"][-1] == pytest.approx(cat_acc, abs=1e-6)


def test_the_reliability_diagrams_bins_are_torchmetrics_bins():
    """The diagram draws our bins and its title gives torchmetrics' ECE: the count-weighted gap of our bins
    must be that ECE, or the picture and its number disagree."""
    generator = torch.Generator().manual_seed(0)
    probs = (torch.randn(500, 10, generator=generator) * 3).softmax(1)
    targets = torch.randint(0, 10, (500,), generator=generator)
    for n_bins in (5, 15):
        expected = float(multiclass_calibration_error(probs, targets, num_classes=10, n_bins=n_bins, norm="l1"))
        bins = calibration_bins(probs, targets, n_bins)
        assert int(bins.counts.sum()) == 500
        gap = float((bins.counts / 500 * (bins.accuracy - bins.confidence).abs()).sum())
        assert gap == pytest.approx(expected, abs=1e-6)


def test_confident_mistakes_are_wrong_and_most_confident_first():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.99, 0.01]])
    scored = ScoredImages(probs, torch.tensor([0, 0, 1, 1, 1]), ["a", "b"])
    assert scored.confident_mistakes(10).tolist() == [4, 1, 2]
    assert scored.confident_mistakes(1).tolist() == [4]
    assert scored.confusion().tolist() == [[1, 1], [2, 1]]
    assert scored.per_class_accuracy().tolist() == pytest.approx([0.5, 1 / 3])


# -- predicting image files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    exact = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(exact).save(folder / "exact_32.png")
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(folder / "wide.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8), "L").save(folder / "grey.JPEG")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "sub" / "tiny.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (folder / "notes.txt").write_text("not an image")
    return folder, exact


def test_predict_classifies_every_image_in_a_folder_and_lists_the_broken(tested, image_folder, tmp_path, cli):
    _, ckpt, _, _ = tested
    folder, exact = image_folder
    out = tmp_path / "out"
    # No CIFAR-10 anywhere: predicting a folder needs only the checkpoint.
    result = cli(["predict", f"--data.data_dir={tmp_path / 'no_data'}", "--data.download=false", *SMALL_NET,
                      "--trainer.precision=32-true",
                      f"--ckpt_path={ckpt}", f"--data.predict_dir={folder}", f"--predictions.output_dir={out}"],
                     tmp_path)
    with open(out / "predictions.csv") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    readable = ["alpha.png", "exact_32.png", "grey.JPEG", "palette.png", "sub/tiny.png", "wide.jpg"]
    assert sorted(rows) == sorted(readable + ["broken.png"])
    assert rows["broken.png"]["pred_class"] == "" and rows["broken.png"]["error"]
    for name in readable:
        row = rows[name]
        top3 = row["top3"].split("; ")
        assert row["error"] == "" and row["pred_class"] in CLASSES and len(top3) == 3
        assert top3[0] == f"{row['pred_class']} {float(row['prob']):.3f}"
    output = result.stdout + result.stderr
    assert "skipped broken.png:" in output and "exact_32.png" in output
    assert "wrote 6 predictions (1 files skipped)" in output

    # An image that is already 32x32 RGB reaches the network pixel for pixel.
    model = Classifier.load_from_checkpoint(ckpt, weights_only=True).eval()
    x = CIFAR10DataModule.to_float(torch.from_numpy(exact).permute(2, 0, 1)[None])
    with torch.no_grad():
        probs = model.predict_logits(x).softmax(1)[0]
    assert rows["exact_32.png"]["pred_class"] == CLASSES[int(probs.argmax())]
    assert float(rows["exact_32.png"]["prob"]) == pytest.approx(float(probs.max()), abs=1e-5)


def test_a_folder_with_no_readable_images_is_one_line(tested, tmp_path, cli):
    _, ckpt, _, _ = tested
    (tmp_path / "empty").mkdir()
    result = cli(["predict", *SMALL_NET, f"--ckpt_path={ckpt}", f"--data.predict_dir={tmp_path / 'empty'}",
                  "--data.download=false"], tmp_path, check=False)
    assert "no readable PNG/JPEG images in" in one_line_error(result)
    result = cli(["predict", *SMALL_NET, f"--ckpt_path={ckpt}", "--data.predict_dir=nowhere",
                  "--data.download=false"], tmp_path, check=False)
    assert "predict_dir='nowhere' is not a folder" in one_line_error(result)


# -- export ------------------------------------------------------------------------------------


def checkpoint_logits(ckpt, images):
    """What a user gets from the checkpoint in Python: [0, 1] images in, logits out (TTA off)."""
    model = Classifier.load_from_checkpoint(ckpt, weights_only=True).eval()
    assert not model.hparams.tta
    with torch.no_grad():
        return model(images)


def test_torchscript_export_gives_the_checkpoints_logits(tested, tmp_path, cli):
    _, ckpt, _, _ = tested
    out = tmp_path / "model.pt"
    cli(["export", f"--ckpt_path={ckpt}", "--format=torchscript", f"--output={out}"], tmp_path)
    images = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exported = torch.jit.load(str(out))(images)
    assert (exported - checkpoint_logits(ckpt, images)).abs().max() < 1e-4


def test_an_export_averages_the_tta_views_the_checkpoint_names(tested, tmp_path, cli):
    _, ckpt, _, _ = tested
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["tta"] = "mirror_shift"
    source = tmp_path / "six_views.ckpt"
    torch.save(checkpoint, source)
    out = tmp_path / "six_views.pt"
    cli(["export", f"--ckpt_path={source}", "--format=torchscript", f"--output={out}"], tmp_path)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    model = Classifier.load_from_checkpoint(source, weights_only=True).eval()
    with torch.no_grad():
        exported, expected, plain = torch.jit.load(str(out))(images), model.predict_logits(images), model(images)
    assert (exported - expected).abs().max() < 1e-4 and (exported - plain).abs().max() > 1e-3


def test_onnx_export_gives_the_checkpoints_logits(tested, tmp_path, cli):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    _, ckpt, _, _ = tested
    source = tmp_path / "model.ckpt"
    source.write_bytes(ckpt.read_bytes())
    result = cli(["export", f"--ckpt_path={source}"], tmp_path)
    out = tmp_path / "model.onnx"
    assert f"wrote {out}" in result.stdout
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (exported,) = session.run(["logits"], {"images": images.numpy()})
    assert np.abs(exported - checkpoint_logits(source, images).numpy()).max() < 1e-4


def test_export_never_writes_over_its_input_and_replaces_only_with_overwrite(tested, tmp_path, cli):
    _, ckpt, _, _ = tested
    source = tmp_path / "model.pt"  # a checkpoint that happens to carry TorchScript's suffix
    source.write_bytes(ckpt.read_bytes())
    before = source.read_bytes()
    result = cli(["export", f"--ckpt_path={source}", "--format=torchscript"], tmp_path)
    assert f"wrote {tmp_path / 'model.torchscript.pt'}" in result.stdout and source.read_bytes() == before

    for extra in ([], ["--overwrite"]):
        line = one_line_error(cli(["export", f"--ckpt_path={source}", "--format=torchscript", f"--output={source}",
                                   *extra], tmp_path, check=False))
        assert f"--output={source} is the checkpoint being exported" in line and source.read_bytes() == before

    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"someone's file")
    line = one_line_error(cli(["export", f"--ckpt_path={source}", "--format=torchscript", f"--output={taken}"],
                              tmp_path, check=False))
    assert f"{taken} already exists; pass --overwrite" in line and taken.read_bytes() == b"someone's file"
    cli(["export", f"--ckpt_path={source}", "--format=torchscript", f"--output={taken}", "--overwrite"], tmp_path)
    assert torch.jit.load(str(taken)) is not None and source.read_bytes() == before


def test_export_refuses_bad_formats_and_missing_files(tested, tmp_path, cli):
    _, ckpt, _, _ = tested
    assert "--format='keras': allowed values are 'onnx', 'torchscript'" in one_line_error(
        cli(["export", f"--ckpt_path={ckpt}", "--format=keras"], tmp_path, check=False))
    assert "--ckpt_path=gone.ckpt: no such file" in one_line_error(
        cli(["export", "--ckpt_path=gone.ckpt"], tmp_path, check=False))
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))


def test_exported_module_builds_in_the_standardisation(tested):
    _, ckpt, _, _ = tested
    net = load_for_export(str(ckpt))
    assert net.input_norm.enabled and torch.allclose(net.input_norm.mean.flatten(), torch.tensor(CIFAR10_MEAN))


# -- summary -----------------------------------------------------------------------------------


def test_summary_shows_falling_kernels_shapes_params_and_flops(tmp_path, cli):
    out = cli(["summary", "--model.backbone=cnn_base"], tmp_path).stdout
    convs = [line.split() for line in out.splitlines() if " Conv2d " in line]
    assert [c[2] for c in convs] == ["7x7", "5x5", "3x3"]
    assert [c[3] for c in convs] == ["32x32x32", "64x16x16", "128x8x8"]
    net = registry.create_backbone("cnn_base")
    assert f"total parameters: {count_parameters(net):,}" in out
    assert f"FLOPs per image (forward): {forward_flops(net):,}" in out
    wide = cli(["summary", "--model.backbone=cnn_base", '--model.backbone_kwargs={"width_mult": 2}'], tmp_path).stdout
    assert "total parameters: 512,586" in wide  # = cnn_wide


def test_summary_reads_the_model_from_a_config_and_names_bad_kwargs(tmp_path, cli):
    config = tmp_path / "fit.yaml"
    config.write_text("model:\n  backbone: mlp_seed\n")
    assert "total parameters: 404,010" in cli(["summary", "-c", str(config)], tmp_path).stdout
    line = one_line_error(cli(["summary", "--model.backbone=cnn_base", '--model.backbone_kwargs={"depth": 3}'],
                              tmp_path, check=False))
    assert "depth" in line and "widths" in line
