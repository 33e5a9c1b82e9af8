"""Where a run's words go: the console and log file (through Hydra); the experiment loggers' summary
and figures are cifar_lab.training.publish's."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path


def route_library_logs_through_hydra() -> None:
    """Lightning and torchmetrics add their own console handlers; Hydra's already print
    (and also write the run's log file), so drop theirs to print each line once.

    Also silence what a user can neither act on nor understand: Lightning's use of a
    torch-deprecated pytree class (a warning per fit, fixed in Lightning, not here)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it is below it (no user folders in logs)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
