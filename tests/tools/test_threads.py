"""ThreadsForLoad: torch's thread count follows the cores other processes leave free while a CPU fit runs."""

from types import SimpleNamespace

import pytest
import torch
import yaml

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.tools import threads
from lightning_cifar.tools.threads import ThreadsForLoad
from tests.helpers.runs import SMALL_NET, TINY_DATA_ARGS, fit_in_process

CPU_MODULE = SimpleNamespace(device=torch.device("cpu"))


@pytest.fixture
def machine(monkeypatch):
    """Two cores; the test says how busy the other processes and we keep them, second by second."""
    state = SimpleNamespace(t=0.0, busy=0.0, own=0.0)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads, "clock", lambda: state.t)
    monkeypatch.setattr(threads, "read_busy_seconds", lambda cores: state.busy if cores == {0, 1} else None)
    monkeypatch.setattr(threads, "own_cpu_seconds", lambda: state.own)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PL_GLOBAL_SEED"):  # an unseeded run, unless a test seeds it
        monkeypatch.delenv(name, raising=False)
    # An earlier test's deterministic Trainer leaves torch's global switch on.
    monkeypatch.setattr(threads.torch, "are_deterministic_algorithms_enabled", lambda: False)

    def run(seconds: float, ours: float, others: float) -> None:
        state.t += seconds
        state.own += ours * seconds
        state.busy += (ours + others) * seconds

    state.run = run
    before = torch.get_num_threads()
    yield state
    torch.set_num_threads(before)


def step(callback: ThreadsForLoad) -> None:
    callback.on_train_batch_end(None, CPU_MODULE, None, None, 0)


def test_one_busy_core_leaves_one_thread_and_the_second_comes_back_when_it_is_free(machine):
    torch.set_num_threads(2)
    callback = ThreadsForLoad(interval_s=2.0)
    callback.on_train_start(None, CPU_MODULE)
    machine.run(0.25, ours=2.0, others=1.0)
    step(callback)
    assert torch.get_num_threads() == 2  # not measured yet: the first look comes after half a second
    machine.run(0.5, ours=1.0, others=1.0)
    step(callback)
    assert torch.get_num_threads() == 1 and callback.changes == [(1, 1.0)]
    machine.run(1.0, ours=1.0, others=0.0)
    step(callback)
    assert torch.get_num_threads() == 1  # then every interval_s
    machine.run(1.0, ours=1.0, others=0.1)  # the other process stopped; a little background noise stays
    step(callback)
    assert torch.get_num_threads() == 2 and callback.changes[-1] == (2, 0.05)  # over both seconds
    machine.run(2.0, ours=1.0, others=0.5)  # half a core taken already stalls a second thread at every barrier
    step(callback)
    assert torch.get_num_threads() == 1
    callback.teardown(None, CPU_MODULE, "fit")
    assert torch.get_num_threads() == 2  # restored for whatever the process does next


@pytest.mark.parametrize("why_not", ["OMP_NUM_THREADS", "disabled", "deterministic", "gpu", "no /proc/stat"])
def test_the_thread_count_is_left_alone_where_the_user_chose_it_or_it_cannot_be_measured(machine, monkeypatch, why_not):
    torch.set_num_threads(2)
    module = CPU_MODULE
    callback = ThreadsForLoad(enabled=why_not != "disabled")
    if why_not == "OMP_NUM_THREADS":
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
    elif why_not == "deterministic":
        monkeypatch.setattr(threads.torch, "are_deterministic_algorithms_enabled", lambda: True)
    elif why_not == "gpu":
        module = SimpleNamespace(device=torch.device("cuda", 0))
    elif why_not == "no /proc/stat":
        monkeypatch.setattr(threads, "read_busy_seconds", lambda cores: None)
    callback.on_train_start(None, module)
    machine.run(5.0, ours=1.0, others=1.0)
    callback.on_train_batch_end(None, module, None, None, 0)
    assert torch.get_num_threads() == 2 and callback.changes == []


def test_busy_seconds_are_read_from_the_named_cores_of_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice, in clock ticks
    stat.write_text("cpu  400 0 100 900 50 0 0 0 0 0\n"
                    "cpu0 300 0 50 400 20 0 0 10 0 0\n"
                    "cpu1 100 0 50 500 30 0 0 0 0 0\n"
                    "intr 1 2 3\n")
    ticks = threads.CLOCK_TICKS
    assert threads.read_busy_seconds({0}, str(stat)) == pytest.approx(360 / ticks)  # steal counts: not ours to use
    assert threads.read_busy_seconds({0, 1}, str(stat)) == pytest.approx(510 / ticks)
    assert threads.read_busy_seconds({5}, str(stat)) is None
    assert threads.read_busy_seconds({0}, str(tmp_path / "missing")) is None


def test_a_seeded_run_keeps_its_thread_count_under_load_unless_told_to_follow_it(machine, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    torch.set_num_threads(2)
    for enabled, expected in ((None, 2), (True, 1)):
        callback = ThreadsForLoad(enabled=enabled)
        callback.on_train_start(None, CPU_MODULE)
        machine.run(5.0, ours=1.0, others=1.0)
        step(callback)
        assert torch.get_num_threads() == expected, enabled
        callback.teardown(None, CPU_MODULE, "fit")
        assert torch.get_num_threads() == 2


def test_a_fixed_count_holds_for_the_fit_and_is_restored_after(machine):
    torch.set_num_threads(2)
    callback = ThreadsForLoad(count=1)
    callback.on_train_start(None, CPU_MODULE)
    assert torch.get_num_threads() == 1
    machine.run(5.0, ours=1.0, others=0.0)  # a free machine does not bring the second thread back
    step(callback)
    assert torch.get_num_threads() == 1 and callback.changes == []
    callback.teardown(None, CPU_MODULE, "fit")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("kwargs, message", [({"count": 0}, "threads.count=0: must be a positive number"),
                                             ({"count": 2, "enabled": True}, "exclude each other")])
def test_impossible_thread_settings_are_refused(kwargs, message):
    with pytest.raises(LightningCifarError, match=message):
        ThreadsForLoad(**kwargs)


@pytest.mark.parametrize("seed, enabled, recorded", [("3", None, "count"), ("false", None, None), ("3", "true", None)])
def test_a_seeded_fit_writes_its_thread_count_into_its_saved_config(tmp_path, tiny_cifar, seed, enabled, recorded):
    args = ["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--trainer.max_epochs=1",
            f"--seed_everything={seed}"] + ([f"--threads.enabled={enabled}"] if enabled else [])
    fit_in_process(args, tmp_path)
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["threads"]["count"] == (torch.get_num_threads() if recorded else None)


def test_the_cli_adds_it_to_every_fit_and_takes_its_options(tmp_path, cli):
    result = cli(["fit", "--print_config", "--threads.interval_s=5"], tmp_path)
    assert "threads:\n  enabled: null\n  interval_s: 5.0\n  count: null" in result.stdout
    from tests.helpers.runs import one_line_error

    error = one_line_error(cli(["fit", "--threads.interval_s=0", "--trainer.max_epochs=1", "--data.data_dir=none"],
                               tmp_path, check=False))
    assert "interval_s=0" in error
