"""The program's name, its debug switch, and the Lightning warnings its runs cause on purpose: known to every
command, and light (importing this must not import Lightning)."""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

PROG = "lightning-cifar"
# Set, or --debug given: usage errors show their traceback. Also reaches processes Lightning launches for DDP.
DEBUG_ENV = "LIGHTNING_CIFAR_DEBUG"

# Warnings of Lightning's that our runs cause knowingly, each with why it tells the user nothing.
EXPECTED_WARNINGS = (
    # Emitted by Lightning's own internals on every run; nothing a user can act on.
    r".*isinstance\(treespec, LeafSpec\).*",
    # `lightning-cifar study` builds each run's CLI from a mapping while sys.argv holds the study's own words.
    r"LightningCLI's args parameter is intended",
    # The model summary's size in MB assumes fp32 under bf16; the FLOPs it shows are right.
    r"Precision .* is not supported by the model summary",
    # --data.val_split=0: the data module gives no validation loader, on purpose.
    r"Total length of `list` across ranks is zero",
)


@contextlib.contextmanager
def expected_warnings_hidden() -> Iterator[None]:
    """While a command runs: :data:`EXPECTED_WARNINGS` hidden, every other filter as it was, and restored after."""
    with warnings.catch_warnings():
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield
