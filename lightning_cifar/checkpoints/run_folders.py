"""Where runs keep their checkpoints, and which one ``--ckpt_path=last`` / ``best`` names.

Every ``fit`` writes ``lightning_logs/version_N/checkpoints/`` (``checkpoints/`` with
``--trainer.logger=false``): ``last.ckpt`` (rewritten after every epoch) and the best epochs by
the monitored metric (one by default, ``--checkpoint.save_top_k`` of them). ``last`` and ``best``
come from the run that wrote a checkpoint most recently; ``best`` is decided by the score, never by age.
``--ckpt_path=FOLDER`` names the run itself: its best checkpoint (else its last).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from pytorch_lightning.callbacks import ModelCheckpoint

LOG_DIR_NAME = "lightning_logs"
UNLOGGED_DIR_NAME = "checkpoints"  # where Lightning puts checkpoints of a run without a logger
LAST_NAME = ModelCheckpoint.CHECKPOINT_NAME_LAST
# What the CLI's checkpoint callback monitors, and how it names the files it keeps
# ("epoch007-val_acc0.8123.ckpt"; a "/" in the name would make sub-folders).
MONITOR = "val/acc"
CHECKPOINT_FILENAME = "epoch{epoch:03d}-val_acc{val/acc:.4f}"
FILENAME_SCORE = re.compile(r"val_acc(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Found:
    path: Path
    why: str


def version_number(folder: Path) -> Optional[int]:
    """N of a ``version_N`` run folder; None for any other name."""
    digits = folder.name[len("version_"):]
    return int(digits) if folder.name.startswith("version_") and digits.isdigit() else None


def run_checkpoint_dirs(root: Path) -> list[Path]:
    """Every run's checkpoint folder under ``root``, the run that wrote a checkpoint last first:
    ``lightning_logs/version_N/checkpoints``, and ``checkpoints`` (a run with ``--trainer.logger=false``)."""
    runs = [d for d in (root / LOG_DIR_NAME).glob("version_*/checkpoints") if version_number(d.parent) is not None]
    runs += [root / UNLOGGED_DIR_NAME]
    newest = {d: max((p.stat().st_mtime_ns for p in d.glob("*.ckpt")), default=None) for d in runs if d.is_dir()}
    written = [d for d, t in newest.items() if t is not None]
    # Ties (copied folders, coarse clocks) go to the higher version number.
    rank = {d: version_number(d.parent) for d in written}
    return sorted(written, key=lambda d: (newest[d], -1 if rank[d] is None else rank[d]), reverse=True)


def describe_run(ckpt_dir: Path, root: Path) -> str:
    where = ckpt_dir.relative_to(root) if ckpt_dir.is_relative_to(root) else ckpt_dir
    return f"the run in {where.parent}" if ckpt_dir.parent != root else f"the run without a logger ({where})"


def _callback_states(path: Path) -> list[dict[str, Any]]:
    """The ModelCheckpoint states stored in a checkpoint (tensors memory-mapped, not read)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable or refused: it cannot tell us anything
        return []
    callbacks = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
    if not isinstance(callbacks, dict):
        return []
    return [state for state in callbacks.values() if isinstance(state, dict) and "best_model_path" in state]


def _score(value: Any) -> Optional[float]:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def own_score(path: Path) -> Optional[float]:
    """The monitored score a checkpoint file was kept for: what its own checkpoint callback recorded when it wrote
    the file (``current_score``, ours: ``val/acc``), else the ``val_acc`` in its name."""
    for state in _callback_states(path):
        if state.get("monitor") == MONITOR:
            score = _score(state.get("current_score"))
            if score is not None:
                return score
    found = FILENAME_SCORE.search(path.stem)
    return float(found.group(1)) if found else None


def best_in(ckpt_dir: Path) -> Optional[Found]:
    """The run's best checkpoint by the score of every kept file (``val/acc``, higher is better; a tie goes to the
    later epoch by name), never by the files' age: a copied, touched or synced folder keeps its best. None if the
    run has no scored checkpoint."""
    scored = [(score, p) for p in ckpt_dir.glob("*.ckpt") if not p.stem.startswith(LAST_NAME)
              if (score := own_score(p)) is not None]
    if not scored:
        return None
    score, path = max(scored, key=lambda sp: (sp[0], sp[1].name))
    return Found(path, f"best {MONITOR} {score:.4f} of the {len(scored)} scored checkpoint"
                       f"{'s' if len(scored) != 1 else ''} kept")


def find_checkpoint(alias: str, root: Path) -> Optional[Found]:
    """The ``last`` or ``best`` checkpoint of the run under ``root`` that wrote a checkpoint last and has one."""
    for ckpt_dir in run_checkpoint_dirs(root):
        if alias == LAST_NAME and (ckpt_dir / f"{LAST_NAME}.ckpt").is_file():
            return Found(ckpt_dir / f"{LAST_NAME}.ckpt",
                         f"last checkpoint of {describe_run(ckpt_dir, root)}, the newest run with checkpoints")
        if alias == "best":
            found = best_in(ckpt_dir)
            if found is not None:
                return Found(found.path, f"{found.why}; {describe_run(ckpt_dir, root)}, the newest run with one")
    return None


def checkpoint_of_run(folder: Path) -> Optional[Found]:
    """The checkpoint ``--ckpt_path=FOLDER`` names, for a run folder (``lightning_logs/version_N``) or its
    ``checkpoints/``: the run's best by score, else its ``last.ckpt``; None if it holds neither."""
    ckpt_dir = folder / UNLOGGED_DIR_NAME if (folder / UNLOGGED_DIR_NAME).is_dir() else folder
    found = best_in(ckpt_dir)
    if found is not None:
        return Found(found.path, f"{found.why}; the run you named")
    last = ckpt_dir / f"{LAST_NAME}.ckpt"
    return Found(last, "last checkpoint of the run you named (it has no scored one)") if last.is_file() else None


def claim_version(folder: Path) -> int:
    """The next ``version_N`` under ``folder``, created here: ``mkdir`` fails for all but one of several
    processes that want the same N, so two runs started at the same moment never share a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = [n for n in map(version_number, folder.glob("version_*")) if n is not None]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (folder / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1
