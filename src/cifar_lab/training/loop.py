"""Where Lightning's fit loop stands, for per-step hooks that act only at an epoch's end or every
few steps."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

# steps between two reads of a device flag (a NaN loss) or two collective decisions (stop on a
# signal) on an accelerator: each is a host sync; on the CPU it is free, so it is every step there
SYNC_EVERY = 25


def sync_every(device: torch.device) -> int:
    """Training steps between two host syncs of the per-step checks on ``device``."""
    return 1 if device.type == "cpu" else SYNC_EVERY


def ends_epoch(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether the batch just trained (``on_train_batch_end``) is its epoch's last: the loader's
    last batch, or the step at which ``max_steps`` ends the run mid-epoch (``epochs=9.9``).
    The same as ``global_step >= trainer.estimated_stepping_batches`` or the loader's last batch,
    from plain attributes: that property is recomputed on every call."""
    max_steps = trainer.max_steps
    return batch_idx + 1 >= trainer.num_training_batches or 0 < max_steps <= trainer.global_step
