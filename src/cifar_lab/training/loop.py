"""Where Lightning's fit loop stands, for per-step hooks that act only at an epoch's end."""

from __future__ import annotations

import lightning.pytorch as pl


def ends_epoch(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether the batch just trained (``on_train_batch_end``) is its epoch's last: the loader's
    last batch, or the step at which ``max_steps`` ends the run mid-epoch (``epochs=9.9``).
    The same as ``global_step >= trainer.estimated_stepping_batches`` or the loader's last batch,
    from plain attributes: that property is recomputed on every call."""
    max_steps = trainer.max_steps
    return batch_idx + 1 >= trainer.num_training_batches or 0 < max_steps <= trainer.global_step
