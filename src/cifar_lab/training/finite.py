"""The non-finite-loss guard: stop at the first NaN/inf training loss, naming its step, without a
host sync per step (the flag stays on the device and is read every few steps).

Every read of the flag that can stop a run is collective under DDP (all ranks gather their flags
and stop together), since a rank that raised alone would leave the others waiting in the next
collective: the periodic reads inside the batch loop and the read before each checkpoint, which
every rank makes because every rank runs Lightning's ``Trainer.save_checkpoint``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from cifar_lab.errors import NonFiniteLossError
from cifar_lab.training.loop import SYNC_EVERY, ends_epoch, sync_every


class FiniteLossGuard(pl.Callback):
    """Raises NonFiniteLossError once a training loss was NaN or infinite, and before any
    checkpoint of diverged weights is written. Every training run has one (``training.build.build_tricks``).

    The first bad step and its loss are kept on the device (tensor ops only: no sync per step)
    and read every step on the CPU, every ``training.loop.SYNC_EVERY`` steps elsewhere, at each
    epoch's and the run's last step, and before every checkpoint (:func:`check_before_save`). So
    a run stops at most ``SYNC_EVERY - 1`` steps after the bad one on a GPU, and never saves its
    weights.
    """

    def __init__(self) -> None:
        self._bad_step: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None
        self._every = SYNC_EVERY  # steps between checks: sync_every(device), set at train start

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._every = sync_every(pl_module.device)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self.track(loss.detach(), trainer.global_step + 1)  # the optimizer step this loss is for

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # the epoch's and the run's last step too: under DDP the shared check must happen inside
        # the batch loop, since at epoch end rank 0's progress bar runs metric syncs the others do not
        if trainer.global_step % self._every == 0 or ends_epoch(trainer, batch_idx):
            self.check(trainer, all_ranks=True)

    def track(self, loss: torch.Tensor, step: int) -> None:
        """Record ``step`` if ``loss`` is the first non-finite one (tensor ops only: no sync)."""
        if self._bad_step is None or self._bad_step.device != loss.device:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=torch.float32, device=loss.device)
        first = ~torch.isfinite(loss) & (self._bad_step < 0)
        self._bad_step = torch.where(first, torch.full_like(self._bad_step, step), self._bad_step)
        self._bad_loss = torch.where(first, loss.float(), self._bad_loss)

    def check(self, trainer: pl.Trainer, all_ranks: bool = False) -> None:
        """Raise NonFiniteLossError if any loss tracked so far was NaN or infinite.

        ``all_ranks``: under DDP, gather every rank's flag so that all ranks stop at the same
        step: a rank that stopped alone would leave the others waiting forever in the next
        gradient all-reduce. Only for calls every rank makes at the same step.
        """
        if self._bad_step is None:
            return
        # (first bad step, its loss) per rank; float32 holds step numbers exactly up to 2**24
        state = torch.stack([self._bad_step.float(), self._bad_loss])
        rank, world_size = None, trainer.world_size
        if all_ranks and world_size > 1:
            states = trainer.strategy.all_gather(state).reshape(-1, 2)
            bad = (states[:, 0] >= 0).nonzero().flatten()
            if len(bad):
                rank = int(bad[states[bad, 0].argmin()])
                state = states[rank]
        step, value = (float(v) for v in state.tolist())  # the one host sync
        if step >= 0:
            where = f" on rank {rank} of {world_size}" if rank is not None else ""
            raise NonFiniteLossError(
                f"the training loss became {value} at step {int(step)} (epoch {trainer.current_epoch}){where}; "
                f"training stopped, weights of that step were not saved; lower optimizer.lr, set "
                f"trainer.gradient_clip_val, or check the data",
                step=int(step),
            )


def check_before_save(trainer: pl.Trainer) -> None:
    """The guard's collective check before a checkpoint is written: never a file of diverged weights.

    For the LightningModule's ``on_save_checkpoint``, the one save hook that Lightning runs on every
    rank for every checkpoint (callbacks' hook is skipped for weights-only ones), inside
    ``Trainer.save_checkpoint``, which every rank calls at the same step: so the gather is matched,
    and a NaN seen by any rank stops all of them before rank 0 writes.
    """
    for callback in trainer.callbacks:
        if isinstance(callback, FiniteLossGuard):
            callback.check(trainer, all_ranks=True)
