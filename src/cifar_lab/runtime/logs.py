"""Where a run's words go: the console and log file (through Hydra); the experiment loggers' summary
and figures are cifar_lab.training.publish's."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

# Lightning's info lines that the run plan (training.plan) replaces or that are no use to a
# user: its advertisements for its cloud products, the device lines (the plan names the
# device and precision once), and notes on its own defaults. Matched at the start of the message.
LIGHTNING_NOISE = re.compile(
    "|".join(
        (
            "💡 Tip:",  # litlogger / litmodels advertisements
            "GPU available:",
            "TPU available:",
            "Trainer already configured with model summary callbacks",
            "Loading `train_dataloader` to estimate number of stepping batches",
            r"`Trainer\(\w+=1\.0\)` was configured so ",  # a limit at its default, 1.0: all batches
        )
    )
)
# the logger Lightning's rank_zero_info writes to (lightning.pytorch.utilities.rank_zero)
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class DropLightningNoise(logging.Filter):
    """Drops the records whose message starts with one of :data:`LIGHTNING_NOISE` (a standard
    logging filter: Lightning has no switch for its tips; tests/test_console.py fails if they
    come back under another wording or logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return LIGHTNING_NOISE.match(str(record.msg)) is None


def route_library_logs_through_hydra() -> None:
    """Lightning and torchmetrics add their own console handlers; Hydra's already print
    (and also write the run's log file), so drop theirs to print each line once.

    Also silence what a user can neither act on nor understand: Lightning's use of a
    torch-deprecated pytree class (a warning per fit, fixed in Lightning, not here), and the
    :data:`LIGHTNING_NOISE` lines."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    info = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if not any(isinstance(f, DropLightningNoise) for f in info.filters):
        info.addFilter(DropLightningNoise())
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it is below it (no user folders in logs)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
