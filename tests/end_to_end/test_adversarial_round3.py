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
