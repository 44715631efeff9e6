"""Round three of hostile input (docs/reliability.md, cases 79 on): silent wrong results, small files that hang,
and tracebacks where one line is due. Each test failed on the code before its fix."""

import json
from pathlib import Path

import pytest

from tests.helpers.runs import SMALL_NET, TINY_DATA_ARGS, fit_in_process, one_line_error, scalars


@pytest.fixture(scope="module")
def unnormalized(tmp_path_factory, tiny_cifar):
    """A run trained with a setting that differs from the command line's default (--model.normalize=false): a
    checkpoint evaluated with the defaults instead of its own settings scores differently."""
    cwd = tmp_path_factory.mktemp("unnormalized")
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=32-true"]
    fit_in_process(["fit", *data, *SMALL_NET, "--model.normalize=false", "--trainer.max_epochs=2"], cwd)
    return cwd, data, cwd / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def accuracy_of_test(cli, cwd, data, ckpt, out):
    cli(["test", *data, f"--ckpt_path={ckpt}", f"--output={out}"], cwd)
    return scalars(out)["test/acc"][-1]


# -- 1. checkpoints named by URL ----------------------------------------------------------------------


def test_a_checkpoint_named_by_a_file_url_is_evaluated_with_its_own_settings(unnormalized, tmp_path, cli):
    cwd, data, ckpt = unnormalized
    by_path = accuracy_of_test(cli, cwd, data, ckpt, tmp_path / "path")
    for n, url in enumerate([f"file://{ckpt}", f"FILE://{ckpt}", f"file://localhost{ckpt}"]):
        assert accuracy_of_test(cli, cwd, data, url, tmp_path / f"url{n}") == by_path, url


@pytest.mark.parametrize("url", ["simplecache::file://{ckpt}", "s3://bucket/last.ckpt", "https://example.com/x.ckpt",
                                 "gs://bucket/x.ckpt", "file://otherhost{ckpt}"])
@pytest.mark.parametrize("command", ["test", "export"])
def test_other_urls_are_refused_in_one_line(unnormalized, tmp_path, cli, url, command):
    cwd, data, ckpt = unnormalized
    url = url.format(ckpt=ckpt)
    args = [command, *(data if command == "test" else []), f"--ckpt_path={url}"]
    line = one_line_error(cli(args, cwd, check=False))
    assert f"--ckpt_path={url}: a URL; lightning-cifar reads checkpoints from local files only" in line
    assert not list(cwd.glob("lightning_logs/version_0/test/*")) and not list(cwd.glob("*.onnx"))


def test_load_from_checkpoint_refuses_a_url_too(unnormalized):
    from lightning_cifar.errors import LightningCifarError
    from lightning_cifar.training.classifier import Classifier

    _, _, ckpt = unnormalized
    with pytest.raises(LightningCifarError, match="a URL; lightning-cifar reads checkpoints from local files only"):
        Classifier.load_from_checkpoint(f"simplecache::file://{ckpt}")
    assert Classifier.load_from_checkpoint(f"file://{ckpt}").hparams.normalize is False


# -- 2. resuming with settings that change the schedule ------------------------------------------------------


@pytest.fixture
def two_epochs(tmp_path, tiny_cifar):
    """Two epochs of 5 steps (160 training images, batch 32): last.ckpt stopped at step 10 of a 10-step one-cycle."""
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=32-true"]
    fit_in_process(["fit", *data, *SMALL_NET, "--trainer.max_epochs=2"], tmp_path)
    return tmp_path, data


def test_resuming_with_a_larger_batch_that_leaves_no_steps_is_refused(two_epochs, cli):
    cwd, data = two_epochs
    result = cli(["fit", *data, *SMALL_NET, "--data.batch_size=64", "--trainer.max_epochs=3", "--ckpt_path=last"],
                 cwd, check=False)
    line = one_line_error(result)
    assert "the checkpoint was trained on a onecycle schedule over 10 steps and stopped at step 10" in line
    assert "this fit plans a onecycle schedule over 6 steps" in line and "--data.batch_size" in line
    assert not (cwd / "lightning_logs" / "version_1").exists()  # the refused resume left no run folder


def test_resuming_for_more_epochs_says_how_the_learning_rate_changes(two_epochs, cli):
    cwd, data = two_epochs
    result = cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=4", "--ckpt_path=last"], cwd)
    assert ("re-plans it as a onecycle schedule over 20 steps: at the restored step 10 the learning rate goes from"
            " 0.00x to 0.62x the base rate" in result.stderr)
    lr = scalars(cwd / "lightning_logs" / "version_1")["train/lr"]
    assert lr and max(lr) > 0  # it trained on; the larger-batch resume above trained at 0 throughout before


def test_resuming_with_the_same_settings_says_nothing_about_the_schedule(two_epochs, cli):
    cwd, data = two_epochs
    result = cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=2", "--ckpt_path=last"], cwd)
    assert "re-plans" not in result.stderr and result.returncode == 0


# -- 3. a study pointed at other data ---------------------------------------------------------------------------


def test_a_study_does_not_report_runs_of_other_data_as_this_datas(tmp_path, tiny_cifar, cli):
    import shutil

    from tests.helpers.cifar_files import write_tiny_cifar
    from tests.helpers.studies import tiny_study, write_study

    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, seeds=[0], baselines=[], axes=[
        {"name": "width", "kind": "width", "param": "width_mult", "values": [1]}]))
    out = tmp_path / "out"
    cli(["study", "-c", str(config), "--out", str(out)], tmp_path)
    (result,) = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    assert result["data_fingerprint"]
    # The same files elsewhere are the same data: the run counts as done.
    shutil.copytree(tiny_cifar, tmp_path / "copy")
    again = cli(["study", "-c", str(config), "--out", str(out), f"--data.data_dir={tmp_path / 'copy'}"], tmp_path)
    assert "1 of 1 runs already done; 0 to run" in again.stdout
    # Other files are other data, at any path: refused before anything is reused or trained.
    other = write_tiny_cifar(tmp_path / "other", seed=1)
    line = one_line_error(cli(["study", "-c", str(config), "--out", str(out), f"--data.data_dir={other}"], tmp_path,
                              check=False))
    assert f"--out {out}: 1 of its runs were trained on other data (fingerprint {result['data_fingerprint']})" in line
    assert [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")] == [result]


# -- 4. --ckpt_path=best by score, never by age --------------------------------------------------------------


def kept_checkpoint(path, score, best_path, best_score):
    """A checkpoint as Lightning's ModelCheckpoint leaves it: its callback state records this file's score
    (current_score) and the best so far when it was written."""
    import torch

    state = {"monitor": "val/acc", "current_score": torch.tensor(score), "best_model_path": str(best_path),
             "best_model_score": torch.tensor(best_score), "best_k_models": {}, "kth_best_model_path": "",
             "kth_value": torch.tensor(score), "last_model_path": "", "dirpath": str(path.parent)}
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.6.0",
                "callbacks": {"ModelCheckpoint{'monitor': 'val/acc', 'mode': 'max'}": state}}, path)
    return path


def test_the_best_checkpoint_is_chosen_by_every_kept_files_score_not_by_their_age(tmp_path):
    import os

    from lightning_cifar.checkpoints.run_folders import best_in, find_checkpoint

    run = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    run.mkdir(parents=True)
    first = kept_checkpoint(run / "epoch000-val_acc0.3000.ckpt", 0.3, run / "epoch000-val_acc0.3000.ckpt", 0.3)
    second = kept_checkpoint(run / "epoch001-val_acc0.5000.ckpt", 0.5, run / "epoch001-val_acc0.5000.ckpt", 0.5)
    kept_checkpoint(run / "last.ckpt", 0.5, second, 0.5)
    later = second.stat().st_mtime + 3600
    os.utime(first, (later, later))  # a sync or a `touch` made the worse, older file the newest
    assert best_in(run).path == second
    assert find_checkpoint("best", tmp_path).path == second
    # A renamed file keeps its own recorded score; a file without a state is scored by its name.
    os.rename(second, run / "renamed.ckpt")
    assert best_in(run).path == run / "renamed.ckpt"


# -- 5. SIGTERM --------------------------------------------------------------------------------------------------


def sigterm_at(stage, batch=1, epoch=0):
    return ('--trainer.callbacks+={"class_path": "tests.helpers.signals.SigtermAt", "init_args": {"stage": "%s",'
            ' "batch": %d, "epoch": %d}}' % (stage, batch, epoch))


def test_a_terminated_fit_exits_143_keeping_the_epochs_that_ended(tmp_path, tiny_cifar, cli):
    import torch

    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=32-true"]
    result = cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=5", sigterm_at("train", epoch=1)], tmp_path,
                 check=False)
    assert result.returncode == 143, result.stderr[-2000:]
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"SIGTERM: fit stopped during epoch 2 of 5; {last.relative_to(tmp_path)} is the last checkpoint saved" in \
        result.stderr.replace(str(tmp_path) + "/", "")
    assert "terminated by SIGTERM" in result.stderr
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the epoch that ended, kept to resume from
    # Stopped in its first epoch, a fit keeps nothing: no run folder is left behind.
    again = cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=5", sigterm_at("train")], tmp_path, check=False)
    assert again.returncode == 143 and "no epoch had ended, so nothing was kept" in again.stderr
    assert not (tmp_path / "lightning_logs" / "version_1").exists()


@pytest.mark.parametrize("command", ["test", "validate", "predict"])
def test_a_terminated_evaluation_exits_143_and_writes_nothing(unnormalized, tmp_path, cli, command):
    from PIL import Image

    cwd, data, ckpt = unnormalized
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 20, 200)).save(photos / f"{i}.png")
    extra = [f"--data.predict_dir={photos}"] if command == "predict" else []
    out = tmp_path / "out"
    result = cli([command, *data, "--data.eval_batch_size=10" if command != "predict" else "--data.eval_batch_size=1",
                  *extra, f"--ckpt_path={ckpt}", f"--output={out}", sigterm_at(command)], cwd, check=False)
    assert result.returncode == 143, result.stderr[-2000:]
    assert f"SIGTERM: {command} stopped before its end; nothing of it was written" in result.stderr
    assert not out.exists() or not any(out.rglob("*.*")), sorted(out.rglob("*"))


# -- 6, 7. small files that expand without end --------------------------------------------------------------
# Each in a fresh process with a deadline: on the code before the fix they ran until killed.

HANG_DEADLINE = 60


def shared_lists(levels):
    """[x, x] where x = [y, y] ...: a few bytes pickled (pickle keeps one copy of each), 2^levels paths walked."""
    value = [0]
    for _ in range(levels):
        value = [value, value]
    return value


def self_containing():
    value = [1]
    value.append(value)
    return value


def nested(depth):
    value = [0]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("payload, message", [
    (lambda: shared_lists(60), "holds more than 100,000 values once its repeated parts"),
    (self_containing, "contains itself"),
    (lambda: nested(5000), "nests more than 64 levels deep"),
])
@pytest.mark.parametrize("command", ["test", "export"])
def test_checkpoint_hyperparameters_that_never_end_are_refused_at_once(unnormalized, tmp_path, command, payload,
                                                                       message):
    import sys

    import torch

    from tests.helpers.runs import run_cli

    cwd, data, ckpt = unnormalized
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["backbone_kwargs"] = {"widths": payload()}
    planted = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # pickling 5,000 nested lists needs it; reading them back must not
    try:
        torch.save(checkpoint, planted)
    finally:
        sys.setrecursionlimit(limit)
    assert planted.stat().st_size < 200_000
    # test finds it as --ckpt_path=last; export takes a path
    args = [command, *(data if command == "test" else []), f"--ckpt_path={'last' if command == 'test' else planted}"]
    line = one_line_error(run_cli(args, tmp_path, check=False, timeout=HANG_DEADLINE))
    assert "last.ckpt" in line and message in line


def test_load_from_checkpoint_refuses_them_too(unnormalized, tmp_path):
    import subprocess
    import sys

    import torch

    _, _, ckpt = unnormalized
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["backbone_kwargs"] = {"widths": shared_lists(60)}
    torch.save(checkpoint, tmp_path / "bomb.ckpt")
    code = ("from lightning_cifar.training.classifier import Classifier\n"
            "try:\n    Classifier.load_from_checkpoint('bomb.ckpt')\nexcept Exception as exc:\n    print(exc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=HANG_DEADLINE)
    assert "holds more than 100,000 values" in done.stdout, done.stderr[-2000:]


def alias_bomb(levels=9):
    """About 1 KB of YAML whose anchors spell out to 10^levels strings."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return lines


def test_a_yaml_alias_bomb_in_a_config_file_is_refused_at_once(tmp_path, tiny_cifar):
    from tests.helpers.runs import run_cli

    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(["model:", "  backbone_kwargs:", *(f"    {line}" for line in alias_bomb())]) + "\n")
    assert config.stat().st_size < 2000
    line = one_line_error(run_cli(["fit", "-c", str(config), f"--data.data_dir={tiny_cifar}"], tmp_path, check=False,
                                  timeout=HANG_DEADLINE))
    assert f"config {config}: holds more than 100,000 values once its repeated parts (YAML aliases" in line


def test_a_yaml_alias_bomb_in_a_study_file_is_refused_at_once(tmp_path, tiny_cifar):
    import yaml

    from tests.helpers.runs import run_cli
    from tests.helpers.studies import tiny_study

    study = yaml.safe_dump(tiny_study(tiny_cifar))
    bomb = tmp_path / "study.yaml"
    bomb.write_text(study + "\n".join(["x-anchors:", *(f"  {line}" for line in alias_bomb())]) + "\n")
    result = run_cli(["study", "-c", str(bomb), "--out", str(tmp_path / "out"), "--dry-run"], tmp_path, check=False,
                     timeout=HANG_DEADLINE)
    assert "holds more than 100,000 values once its repeated parts" in one_line_error(result)


# -- 8, 9. checkpoints that unpack or build far beyond their size ----------------------------------------------


def test_a_checkpoint_with_a_compressed_record_is_refused_before_it_is_unpacked(unnormalized, tmp_path, cli):
    import zipfile

    import torch

    cwd, data, ckpt = unnormalized
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = "x" * 100_000_000  # 100 MB of plain data, compressible to ~100 KB
    plain = tmp_path / "plain.ckpt"
    torch.save(checkpoint, plain)
    crafted = tmp_path / "deflated.ckpt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(crafted, "w", zipfile.ZIP_DEFLATED) as target:
        for record in source.infolist():
            target.writestr(record.filename, source.read(record.filename))
    assert crafted.stat().st_size < 2_000_000
    for command in ("test", "export"):
        args = [command, *(data if command == "test" else []), f"--ckpt_path={crafted}"]
        line = one_line_error(cli(args, cwd, check=False))
        assert "deflated.ckpt: refused: its record" in line and "is compressed" in line


@pytest.mark.parametrize("way", ["export", "load_from_checkpoint"])
def test_export_and_load_from_checkpoint_check_memory_as_test_does(unnormalized, tmp_path, cli, monkeypatch, way):
    from lightning_cifar.errors import LightningCifarError
    from lightning_cifar.models import footprint
    from lightning_cifar.training.classifier import Classifier

    cwd, data, ckpt = unnormalized
    monkeypatch.setattr(footprint, "available_bytes", lambda accelerator: (1_000, "a tiny machine"))
    expected = "running it on batches of 1 needs at least"
    if way == "export":
        line = one_line_error(cli(["export", f"--ckpt_path={ckpt}", f"--output={tmp_path / 'm.onnx'}"], cwd,
                                  check=False))
        assert expected in line and "a tiny machine" in line and not (tmp_path / "m.onnx").exists()
    else:
        with pytest.raises(LightningCifarError, match=expected):
            Classifier.load_from_checkpoint(ckpt)
    # as test does, at its evaluation batch size
    assert "running it on batches of 50 needs" in one_line_error(cli(["test", *data, f"--ckpt_path={ckpt}"], cwd,
                                                                        check=False))


# -- 10, 11. predict: animated images and files far larger than an image ---------------------------------------


def test_an_animated_image_is_read_by_its_first_frame_and_the_folder_still_predicted(tmp_path):
    import numpy as np
    from PIL import Image

    from lightning_cifar.data.image_folder import load_image_folder

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 30), "red").save(folder / "photo.png")
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(300)]
    frames[0] = Image.new("RGB", (64, 64), "blue")
    frames[0].save(folder / "moving.png", format="GIF", save_all=True, append_images=frames[1:], duration=10)
    found = load_image_folder(folder)
    assert found.files == ["moving.png", "photo.png"] and found.skipped == []
    blue = found.images[0].float().mean(dim=(1, 2))
    assert blue[2] > 200 and blue[0] < 30  # the first frame, blue; not a stack of 300 frames


def test_a_file_larger_than_any_image_of_the_pixel_limit_is_skipped_unread(tmp_path):
    from PIL import Image

    from lightning_cifar.data.image_folder import load_image_folder

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 30), "red").save(folder / "photo.png")
    big = folder / "huge.png"
    Image.new("RGB", (10, 10), "green").save(big)
    with open(big, "r+b") as f:
        f.truncate(50 * 2**20)  # a valid header, then 50 MB of holes (sparse: no disk used)
    found = load_image_folder(folder, max_pixels=10_000)
    assert found.files == ["photo.png"]
    assert found.skipped == [("huge.png", "52,428,800 bytes, more than an image of 10,000 pixels needs"
                                          " (--data.max_image_pixels)")]


# -- 12. checkpoints with the right keys and the wrong kinds of value --------------------------------------------


def wrong_kinds():
    import torch

    return {
        "state_dict text": (lambda c: c.update(state_dict="weights"), "its state_dict is a str, not a mapping"),
        "state_dict list": (lambda c: c.update(state_dict=[1, 2]), "its state_dict is a list, not a mapping"),
        "settings list": (lambda c: c.update(hyper_parameters=[1, 2]), "its hyper_parameters is a list, not a mapping"),
        "kwargs list": (lambda c: c["hyper_parameters"].update(backbone_kwargs=[1, 2]),
                        "hyper_parameters.backbone_kwargs is a list, not a mapping of keyword arguments"),
        "backbone int": (lambda c: c["hyper_parameters"].update(backbone=7), "hyper_parameters.backbone is 7, not a"),
        "lr tensor": (lambda c: c["hyper_parameters"].update(lr=torch.tensor(0.1)),
                      "hyper_parameters.lr is a tensor; settings are plain values"),
        "lr text": (lambda c: c["hyper_parameters"].update(lr="fast"),  # was jsonargparse's usage, then its error
                    '.lr": Expected a <class \'float\'>. Got value: fast'),
    }


@pytest.mark.parametrize("case", list(wrong_kinds()))
@pytest.mark.parametrize("command", ["test", "export"])
def test_wrong_kinds_of_value_in_a_checkpoint_are_named_in_one_line(unnormalized, tmp_path, cli, case, command):
    import torch

    cwd, data, ckpt = unnormalized
    change, message = wrong_kinds()[case]
    checkpoint = torch.load(ckpt, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, tmp_path / "odd.ckpt")
    args = [command, *(data if command == "test" else []), f"--ckpt_path={tmp_path / 'odd.ckpt'}"]
    assert message in one_line_error(cli(args, cwd, check=False))


def test_a_tensor_record_shorter_than_its_header_says_is_named_in_one_line(unnormalized, tmp_path, cli):
    import zipfile

    cwd, data, ckpt = unnormalized
    short = tmp_path / "short.ckpt"
    with zipfile.ZipFile(ckpt) as source, zipfile.ZipFile(short, "w", zipfile.ZIP_STORED) as target:
        smallest = min((r for r in source.infolist() if "/data/" in r.filename), key=lambda r: r.file_size)
        for record in source.infolist():
            content = source.read(record.filename)
            target.writestr(record, content[:-4] if record is smallest else content)  # 4 bytes short
    for command in ("test", "export"):
        args = [command, *(data if command == "test" else []), f"--ckpt_path={short}"]
        line = one_line_error(cli(args, cwd, check=False))
        assert "short.ckpt: its tensor record data/" in line and "the file was cut short or altered" in line


# -- 14, 17. small ones --------------------------------------------------------------------------------------


def test_fit_from_best_without_a_scored_checkpoint_is_one_line_and_leaves_no_folder(tmp_path, tiny_cifar, cli):
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET]
    line = one_line_error(cli(["fit", *data, "--ckpt_path=best"], tmp_path, check=False))
    assert "--ckpt_path=best: no scored best checkpoint under" in line and "leave --ckpt_path out" in line
    assert not (tmp_path / "lightning_logs" / "version_0").exists()


def test_a_name_longer_than_the_file_system_allows_is_one_line(unnormalized, tmp_path, cli):
    cwd, data, ckpt = unnormalized
    long = "x" * 300
    for args in (["test", *data, f"--ckpt_path={tmp_path / long}.ckpt"],
                 ["export", f"--ckpt_path={ckpt}", f"--output={tmp_path / long}.onnx"],
                 ["predict", *data, f"--ckpt_path={ckpt}", f"--data.predict_dir={tmp_path / long}"],
                 ["fit", *SMALL_NET, f"--data.data_dir={tmp_path / long}", "--data.download=false"]):
        line = one_line_error(cli(args, cwd, check=False))
        assert "a name in this path is longer than the file system allows (255 bytes per name; this one is 30" in line


def test_double_precision_is_refused_in_one_line(tmp_path, tiny_cifar, cli):
    line = one_line_error(cli(["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=64-true"],
                              tmp_path, check=False))
    assert "--trainer.precision=64-true: not supported; allowed: 32-true, bf16-mixed" in line


def test_an_unknown_command_lists_every_command(tmp_path, cli):
    line = one_line_error(cli(["tets"], tmp_path, check=False))
    assert line.endswith("unknown command 'tets' (did you mean 'test'?); commands: fit, validate, test, predict,"
                         " backbones, study, summary, export, options")


def test_fifos_and_devices_in_a_predict_folder_are_listed_as_skipped_unopened(tmp_path):
    import os

    from PIL import Image

    from lightning_cifar.data.image_folder import load_image_folder

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 30), "red").save(folder / "photo.png")
    os.mkfifo(folder / "pipe.png")  # opening it to read would wait for a writer forever
    os.symlink("/dev/zero", folder / "endless.jpg")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    found = load_image_folder(folder)
    assert found.files == ["photo.png"]
    reason = "not a regular file (a FIFO, socket, device or broken link); not opened"
    assert found.skipped == [("dangling.png", reason), ("endless.jpg", reason), ("pipe.png", reason)]


@pytest.mark.parametrize("kwargs", [{"width_mult": True}, {"blocks": True}])
def test_true_is_not_a_number_of_filters_or_blocks(kwargs):
    from lightning_cifar.errors import LightningCifarError
    from lightning_cifar.registry import create_backbone

    with pytest.raises(LightningCifarError, match="true/false|must be a number"):
        create_backbone("convpool", num_classes=10, widths=[4, 8], kernels=[3, 3], **kwargs)


# -- 15. two study processes on one output folder -----------------------------------------------------------------


def test_two_study_processes_on_one_folder_train_each_run_once(tmp_path, tiny_cifar):
    import subprocess

    from tests.helpers.runs import SUBPROCESS_TIMEOUT, script
    from tests.helpers.studies import tiny_study, write_study

    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, seeds=[0, 1]))  # 8 runs
    out = tmp_path / "out"
    logs = [tmp_path / f"study{i}.log" for i in range(2)]
    procs = []
    for log in logs:
        with open(log, "w") as f:
            procs.append(subprocess.Popen([script("lightning-cifar"), "study", "-c", str(config), "--out", str(out)],
                                          cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT))
    for proc in procs:
        assert proc.wait(timeout=SUBPROCESS_TIMEOUT) == 0
    trained = [line for log in logs for line in log.read_text().splitlines() if ": test acc " in line]
    assert len(trained) == 8, "\n".join(trained)  # each run once, by one of the two
    assert len(list(out.glob("runs/*/result.json"))) == 8


# -- 13. output folders that cannot be written -----------------------------------------------------------------


def test_unwritable_output_folders_are_refused_before_the_work(unnormalized, tmp_path, tiny_cifar, cli):
    from tests.helpers.studies import tiny_study, write_study

    cwd, data, ckpt = unnormalized
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")  # nothing can be made under it, whoever runs the test (root too)
    line = one_line_error(cli(["export", f"--ckpt_path={ckpt}", f"--output={blocked / 'm.onnx'}"], cwd, check=False))
    assert f"cannot write to {blocked}" in line and "--output=FILE" in line

    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(photos / "a.png")
    result = cli(["predict", *data, f"--ckpt_path={ckpt}", f"--data.predict_dir={photos}",
                  f"--predictions.output_dir={blocked / 'out'}"], cwd, check=False)
    assert f"cannot write to {blocked / 'out'}" in one_line_error(result) and "predicted" not in result.stderr

    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, seeds=[0]))
    line = one_line_error(cli(["study", "-c", str(config), "--out", str(blocked / "study")], tmp_path, check=False))
    assert f"cannot write to {blocked / 'study'}" in line and "--out DIR" in line


# -- 13. a disk that fills while writing -----------------------------------------------------------------------


def file_size_limit(limit_bytes):
    """For a child process: a write past ``limit_bytes`` fails as on a disk that filled (EFBIG; Python ignores the
    SIGXFSZ that would otherwise kill the process), with no file system to mount and no root."""
    import resource

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_export_that_finds_no_room_is_one_line_and_keeps_the_old_file(unnormalized, tmp_path, fmt):
    import os
    import subprocess

    from tests.helpers.runs import SUBPROCESS_TIMEOUT, script

    _, _, ckpt = unnormalized
    output = tmp_path / f"model.{fmt}"
    output.write_bytes(b"the export before")
    result = subprocess.run([script("lightning-cifar"), "export", f"--ckpt_path={ckpt}", f"--format={fmt}",
                             f"--output={output}", "--overwrite"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=SUBPROCESS_TIMEOUT,
                            preexec_fn=file_size_limit(4096))  # the model takes about 10 KB
    line = one_line_error(result, exit_code=1)  # TorchScript's writer aborted in C++ (134); ONNX's, a traceback
    assert f"{output}: no room to write it (File too large: the process's file-size limit" in line
    assert output.read_bytes() == b"the export before"
    assert [p.name for p in tmp_path.iterdir()] == [output.name]  # no temporary file left to fill the disk


@pytest.fixture
def disk_fills(monkeypatch):
    """Give it a test of (folder, file name): from the first file ``files.atomic_write_bytes`` writes that passes
    it, every write goes to /dev/full, where the kernel fails it with ENOSPC, as on a disk that just filled (the
    temporary file is still made, and must still be taken back, as on a real disk)."""
    import os
    import tempfile

    import lightning_cifar.files as files

    rules, full = [], []
    real = tempfile.mkstemp

    def mkstemp(prefix="", suffix="", dir=None):
        fd, tmp = real(prefix=prefix, suffix=suffix, dir=dir)
        if full or any(rule(Path(dir), prefix[1:-1]) for rule in rules):  # prefix: ".NAME."
            full.append(True)
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, tmp

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)
    return rules.append


def test_a_fit_whose_checkpoint_finds_no_room_says_what_it_kept(tmp_path, tiny_cifar, cli, disk_fills):
    import torch

    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    disk_fills(lambda folder, name: name == "last.ckpt" and (folder / name).exists())  # full after epoch 1
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=32-true"]
    result = cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=3"], tmp_path, check=False)
    line = one_line_error(result, exit_code=1)
    assert f"{checkpoints / 'last.ckpt'}: no room to write it (No space left on device" in line
    assert "an older file of that name is intact" in line
    assert f"the disk is full: fit stopped during epoch 2 of 3; {checkpoints / 'last.ckpt'} is the last checkpoint" \
        " saved: resume with --ckpt_path=last" in result.stderr
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not list(checkpoints.glob(".*.tmp"))


def test_a_fit_whose_event_file_finds_no_room_is_one_line(tmp_path, tiny_cifar, cli, monkeypatch):
    import errno
    import os

    from tensorboard.summary.writer.record_writer import RecordWriter

    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    real = RecordWriter.write

    def write(self, data):  # TensorBoard writes events from a thread of its own
        if last.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=32-true"]
    result = cli(["fit", *data, *SMALL_NET, "--trainer.max_epochs=3"], tmp_path, check=False)
    line = one_line_error(result, exit_code=1)  # the writer thread's traceback is not printed beside it
    assert "TensorBoard's events or Lightning's): no room to write it (No space left on device)" in line
    assert f"{last} is the last checkpoint saved: resume with --ckpt_path=last" in result.stderr
    assert "Exception in thread" not in result.stderr


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, tiny_cifar):
    """A tiny study of four runs, finished and reported; tests copy it."""
    from tests.helpers.studies import tiny_study, write_study

    root = tmp_path_factory.mktemp("finished_study")
    config = write_study(root / "study.yaml", tiny_study(tiny_cifar, seeds=[0]))
    fit_in_process(["study", "-c", str(config), "--out", str(root / "out")], root)
    return config, root / "out"


def test_a_report_that_finds_no_room_is_one_line_and_keeps_the_old_report(finished_study, tmp_path, cli,
                                                                         disk_fills):
    import shutil

    config, finished = finished_study
    out = shutil.copytree(finished, tmp_path / "out")
    before = (out / "report.md").read_bytes()
    disk_fills(lambda folder, name: name == "report.md")
    line = one_line_error(cli(["study", "-c", str(config), "--out", str(out), "--report-only"], tmp_path,
                              check=False), exit_code=1)
    assert f"{out / 'report.md'}: no room to write it (No space left on device" in line
    assert (out / "report.md").read_bytes() == before and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("content, problem", [
    ("{broken", "not readable as JSON"),
    ('{"version": 1}', "is a result of format version 1; this version reads 2"),
    ("[]", "holds a JSON list, not a run's result"),
])
def test_a_result_file_the_study_cannot_read_stops_it_in_one_line(finished_study, tmp_path, content, problem):
    import shutil

    from tests.helpers.runs import run_cli

    config, finished = finished_study
    out = shutil.copytree(finished, tmp_path / "out")
    broken = sorted(out.glob("runs/*/result.json"))[0]
    broken.write_text(content)
    # In a process of its own, with a deadline: this used to print "3 of 4 runs already done; 1 to run" forever.
    line = one_line_error(run_cli(["study", "-c", str(config), "--out", str(out)], tmp_path, check=False,
                                  timeout=120))
    assert f"{broken}: {problem}" in line and "; move it (or its run folder) out of the way to train run" in line
    assert broken.read_text() == content


# -- 16. plugins that misbehave (trusted code, but the messages should still help) ------------------------------


class IntegerLogits:
    def __call__(self, num_classes=10):
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(3 * 32 * 32, num_classes)

            def forward(self, x):
                return self.fc(x.flatten(1)).round().long()

        return Net()


def plugin(name, factory):
    from lightning_cifar.registry import register_backbone

    register_backbone(name, factory, replace=True)
    return name


@pytest.fixture
def plugins():
    import torch

    from lightning_cifar.registry import unregister_backbone

    class NanLogits(torch.nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 32 * 32, num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float("nan")

    class NoParameters(torch.nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.num_classes = num_classes

        def forward(self, x):
            return x.flatten(1)[:, : self.num_classes]

    def double_default(num_classes=10):
        torch.set_default_dtype(torch.float64)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, num_classes))

    names = {"int": plugin("r3_int_logits", IntegerLogits()), "nan": plugin("r3_nan_logits", NanLogits),
             "none": plugin("r3_no_params", NoParameters), "double": plugin("r3_double", double_default)}
    try:
        yield names
    finally:
        torch.set_default_dtype(torch.float32)
        for name in names.values():
            unregister_backbone(name)


@pytest.mark.parametrize("kind, message", [
    ("int", "returns torch.int64 logits in eval mode; logits must be floating point"),
    ("nan", "returns NaN or infinite logits for a (2, 3, 32, 32) batch of zeros in eval mode, before any training"),
    ("double", "left torch's default dtype at torch.float64"),
    ("none", "has no trainable parameters: there is nothing to fit"),
])
def test_a_misbehaving_plugin_is_named_in_one_line_before_training(plugins, tmp_path, tiny_cifar, cli, kind, message):
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.precision=32-true"]
    line = one_line_error(cli(["fit", *data, f"--model.backbone={plugins[kind]}", "--trainer.max_epochs=1"],
                              tmp_path, check=False))
    assert message in line
    assert not (tmp_path / "lightning_logs" / "version_0").exists()


def test_a_loss_that_is_nan_at_the_first_step_is_not_blamed_on_the_learning_rate():
    import torch

    from lightning_cifar.errors import TrainingDivergedError
    from lightning_cifar.training.callbacks.loss_guard import NonFiniteLossGuard

    guard = NonFiniteLossGuard()
    with pytest.raises(TrainingDivergedError) as first:
        guard.observe(torch.tensor(float("nan")), step=0, epoch=0, lr=0.1)
    assert "not the learning rate" in str(first.value) and "No checkpoint had been saved" in str(first.value)
    assert "checkpoint saved before this step is kept" not in str(first.value)
