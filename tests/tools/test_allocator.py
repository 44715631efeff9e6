"""KeepFreedMemory: a CPU run's large blocks come back from glibc's heap instead of fresh pages from the kernel."""

import ctypes
import resource
from types import SimpleNamespace

import pytest
import torch

from lightning_cifar.tools import allocator
from lightning_cifar.tools.allocator import KeepFreedMemory
from tests.helpers.runs import SMALL_NET, TINY_DATA_ARGS, fit_in_process

needs_glibc = pytest.mark.skipif(allocator.glibc() is None, reason="glibc's mallopt only")
# The smallest probe block: over glibc's largest adaptive mmap threshold (32 MiB), a fresh mapping each time by
# default (page_faults_per_block makes it larger still where the heap holds more free memory).
BLOCK = 256 * 2**20


def on(device: str) -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def free_heap_bytes() -> int:
    """All the free memory glibc's heaps hold (``mallinfo2``'s ``fordblks``; 0 before glibc 2.33, which lacks it)."""
    libc = allocator.glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return 0
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().fordblks


def page_faults_per_block(blocks: int = 4) -> float:
    """Minor page faults for each of ``blocks`` large tensors allocated, written and freed in turn (after one
    first block, which may fault wherever it comes from). Each is larger than all the heap's free memory: a hole
    that earlier runs in this process left in the heap (a test suite's do) would serve it without a fault
    whatever glibc's settings, where a new block has to come from the kernel, mapped afresh or grown onto the heap."""
    size = max(BLOCK, free_heap_bytes() + 64 * 2**20)
    torch.empty(size // 4).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(blocks):
        torch.empty(size // 4).fill_(1.0)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / blocks


def conv_gradients() -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution's gradients over an input larger than glibc's mmap threshold (on its own pages by default)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(130, 16, 64, 64, requires_grad=True)
    conv(x).square().mean().backward()
    return conv.weight.grad, x.grad


@needs_glibc
def test_a_cpu_run_reuses_freed_memory_and_restores_glibc_after():
    """Measured in a fresh process: the heap that the suite's earlier tests leave in this one made the default and
    the kept allocations fault alike (one failure in two full runs, session 24)."""
    import subprocess
    import sys

    from tests.helpers.runs import REPO, SUBPROCESS_TIMEOUT

    result = subprocess.run([sys.executable, "-c", "import tests.tools.test_allocator as t; t.reuse_check()"],
                            cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]


def reuse_check() -> None:
    pages = BLOCK / resource.getpagesize()
    callback = KeepFreedMemory()
    try:
        by_default = page_faults_per_block()
        default_gradients = conv_gradients()
        callback.setup(on("cpu"), None, "fit")
        assert callback.active
        same_gradients = all(torch.equal(a, b) for a, b in zip(default_gradients, conv_gradients()))
        del default_gradients  # nothing of ours left in the heap when glibc's defaults return
        page_faults_per_block()  # the heap grows to the block's size once (with two threads, over a few blocks)
        kept = page_faults_per_block()
    finally:
        callback.teardown(on("cpu"), None, "fit")
    assert not callback.active
    # Where a block lies changes no result: a seeded run is the same run with or without this.
    assert same_gradients
    after = page_faults_per_block()
    # By default each block is mapped afresh (a fault per page, fewer where huge pages are on); kept, it is reused.
    assert by_default > 0 and after > 0
    assert kept < by_default / 4 and kept < pages / 100, (by_default, kept)


@pytest.mark.parametrize("callback, trainer", [(KeepFreedMemory(enabled=False), on("cpu")),
                                               (KeepFreedMemory(), on("cuda"))])
def test_it_changes_nothing_when_disabled_or_on_a_gpu(callback, trainer, monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", calls.append)
    callback.setup(trainer, None, "fit")
    assert not callback.active and calls == []


def test_it_changes_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(allocator.os, "confstr", lambda name: None)
    callback = KeepFreedMemory()
    callback.setup(on("cpu"), None, "fit")
    assert not callback.active


def test_the_cli_adds_it_to_every_run_and_takes_its_option(tmp_path, cli):
    assert "allocator:\n  enabled: true" in cli(["fit", "--print_config"], tmp_path).stdout
    assert "allocator:\n  enabled: false" in cli(["test", "--print_config", "--allocator.enabled=false"],
                                                 tmp_path).stdout


@needs_glibc
def test_a_fit_leaves_glibc_as_it_found_it(tmp_path, tiny_cifar):
    """The CLI's fit sets the allocator for the run and Lightning's teardown gives glibc its defaults back: a large
    block is mapped afresh again afterwards (kept, it would come back from the heap without a fault)."""
    fit_in_process(["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--trainer.max_epochs=1"],
                   tmp_path)
    assert page_faults_per_block() > 0
