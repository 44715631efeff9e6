"""Command line: ``fit``/``validate``/``test``/``predict`` (LightningCLI, in :mod:`lightning_cli`)
plus our own commands.

``lightning-cifar`` and its alias ``lightning`` both call :func:`main`. Lightning is imported
only by the commands that train or load a model: ``backbones`` and ``summary`` answer in the
time it takes to import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import signal
import sys
import threading
from typing import Callable, Iterator, Optional, Sequence

from lightning_cifar import registry
from lightning_cifar.cli.config_files import check_cli_config_files
from lightning_cifar.cli.program import DEBUG_ENV, PROG, expected_warnings_hidden
from lightning_cifar.cli.summary import summary_command
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import no_room, no_room_error
from lightning_cifar.models.measure import count_parameters


def backbones_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} backbones",
        description="List registered backbones: name, parameters for 10 classes, description.",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'cnn_*'")
    args = parser.parse_args(list(argv))
    names = registry.list_backbones(args.pattern)
    if not names:
        raise LightningCifarError(
            f"no backbone matches {args.pattern!r}; registered: {', '.join(registry.list_backbones()) or '(none)'}"
        )
    width = max(len(n) for n in names)
    for name in names:
        try:
            params = count_parameters(registry.create_backbone(name, num_classes=10))
            line = f"{name:<{width}}  {params:>11,}  {registry.describe_backbone(name)}"
        except LightningCifarError as exc:
            line = f"{name:<{width}}  {'BROKEN':>11}  {exc}"
        print(line, flush=True)
    return 0


# The commands below import Lightning (seconds) or matplotlib and scipy when they run, not when the console
# script starts: `backbones` and `summary` answer in the time it takes to import torch.


def study_command(argv: Sequence[str]) -> int:
    from lightning_cifar.study.command import study_command as run_study  # start-up time: Lightning, matplotlib

    return run_study(argv)


def options_command(argv: Sequence[str]) -> int:
    from lightning_cifar.cli.options import options_command as run_options  # start-up time: Lightning

    return run_options(argv)


def export_command(argv: Sequence[str]) -> int:
    from lightning_cifar.cli.export import export_command as run_export  # start-up time: Lightning

    return run_export(argv)


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "backbones": backbones_command,
    "study": study_command,
    "summary": summary_command,
    "export": export_command,
    "options": options_command,
}


def run_lightning_cli(argv: Optional[Sequence[str]]) -> None:
    """Run LightningCLI; ``argv=None`` reads ``sys.argv`` as LightningCLI expects."""
    from lightning_cifar.cli.lightning_cli import make_cli  # start-up time: Lightning

    try:
        make_cli(argv)
    finally:
        import torch.distributed as dist  # imported with Lightning above: costs nothing here

        # Lightning leaves a DDP run's process group open; at interpreter exit gloo's threads then now and then
        # abort the process ("terminate called without an active exception", exit -6) after a finished fit:
        # about 1 run in 8 of tests/end_to_end/test_ddp.py. Closing it here, in every process, ends them first.
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def no_room_in_threads_left_to_the_main_thread() -> Iterator[None]:
    """TensorBoard writes events from a thread; when the disk fills, that thread dies with a traceback, and the main
    thread raises the same error at its next write, which :func:`main` reports in one line. The thread's traceback
    would be a second report of it, a page long: other threads' errors still print theirs."""
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not no_room(args.exc_value):
            default(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = default


def main(args: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"  # also reaches processes Lightning launches for DDP
        args = argv
    try:
        with expected_warnings_hidden(), no_room_in_threads_left_to_the_main_thread():
            if argv and argv[0] in COMMANDS:
                raise SystemExit(COMMANDS[argv[0]](argv[1:]))
            if argv and not argv[0].startswith("-") and argv[0] not in LIGHTNING_COMMANDS:
                close = difflib.get_close_matches(argv[0], [*LIGHTNING_COMMANDS, *COMMANDS], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise LightningCifarError(f"unknown command {argv[0]!r}{hint}; commands:"
                                          f" {', '.join([*LIGHTNING_COMMANDS, *COMMANDS])}")
            check_cli_config_files(argv)
            run_lightning_cli(None if args is None else argv)
    except LightningCifarError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except SystemExit as exc:
        # Lightning's stop on SIGTERM is a SystemExit without a code, status 0: a terminated command must not look
        # like a finished one to the script that runs it. (By name: importing Lightning here would slow start-up.)
        if type(exc).__name__ != "SIGTERMException":
            raise
        print(f"{PROG}: terminated by SIGTERM", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except OSError as exc:
        if no_room(exc) and not os.environ.get(DEBUG_ENV):  # a writer of Lightning's or TensorBoard's, not ours
            print(f"{PROG}: error: {no_room_error(exc, exc.filename)}", file=sys.stderr)
            raise SystemExit(1) from None
        if exc.errno != errno.ENAMETOOLONG or os.environ.get(DEBUG_ENV):
            raise
        name = max(str(exc.filename or "").split(os.sep), key=lambda part: len(part.encode()))
        print(f"{PROG}: error: {exc.filename}: a name in this path is longer than the file system allows (255 bytes"
              f" per name; this one is {len(name.encode())}); choose a shorter one", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:
        # The reader went away (`lightning-cifar summary | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
