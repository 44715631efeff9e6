"""Deprecated: moved to :mod:`lightning_cifar.tools.timing` in 0.3; this alias goes in 0.4.

Kept because configs name these callbacks by class path (``--trainer.callbacks+=lightning_cifar.timing.X``),
and a run folder's saved ``config.yaml`` should still run.
"""

import warnings

from lightning_cifar.tools.timing import *  # noqa: F401,F403
from lightning_cifar.tools.timing import __all__  # noqa: F401

warnings.warn("lightning_cifar.timing has moved to lightning_cifar.tools.timing; the old name goes in 0.4",
              DeprecationWarning, stacklevel=2)
