"""The command line: ``lightning-cifar`` / ``lightning`` (:func:`main`).

``commands`` dispatches; ``lightning_cli`` is the LightningCLI behind fit / validate / test / predict;
``summary``, ``export`` and the ``study`` package are the other commands; ``config_files`` and
``memory_check`` are the checks made before anything is built.
"""

from lightning_cifar.cli.commands import main
from lightning_cifar.cli.program import DEBUG_ENV, PROG

__all__ = ["DEBUG_ENV", "PROG", "main"]
