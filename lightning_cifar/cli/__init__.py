"""The command line: ``lightning-cifar`` / ``lightning`` (:func:`main`).

``commands`` dispatches; ``lightning_cli`` is the LightningCLI behind fit / validate / test / predict;
``summary``, ``export`` and the ``study`` package are the other commands; ``config_files`` checks the
``-c`` files as they are read (the memory check before a network is built is ``models.footprint``).
"""

from lightning_cifar.cli.commands import main
from lightning_cifar.cli.program import DEBUG_ENV, PROG

__all__ = ["DEBUG_ENV", "PROG", "main"]
