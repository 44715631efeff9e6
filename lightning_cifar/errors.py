"""User-facing errors.

Everything raised as a :class:`LightningCifarError` is a mistake the user can fix
(a bad name, a bad value, missing files). The command line prints it as one line
and exits with its ``exit_code`` (2 for usage errors) instead of showing a traceback.
"""


def is_whole_number(value: object, at_least: int = 0) -> bool:
    """An int (true and false are not: YAML reads ``yes`` as one) of at least ``at_least``: the test before the
    one-line errors for counts of epochs, steps, images and bins."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


class LightningCifarError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2  # a usage error, as argparse reports them


class TrainingDivergedError(LightningCifarError):
    """The training loss stopped being a finite number."""

    exit_code = 1


class DiskFullError(LightningCifarError):
    """A write found no room: the disk is full, a quota is reached, or the process's file-size limit."""

    exit_code = 1  # the command failed; its input was fine


class UnknownBackboneError(LightningCifarError, LookupError):
    """No backbone is registered under the requested name."""


class BackboneLoadError(LightningCifarError):
    """A registered backbone could not be imported, built, or did not behave."""


class DuplicateBackboneError(LightningCifarError):
    """Two distributions register the same backbone name."""


class BackboneConfigError(LightningCifarError, ValueError):
    """A backbone was given parameters it cannot be built with."""


class DataError(LightningCifarError):
    """The dataset is missing, corrupted, or the data settings cannot work."""
