"""The non-finite-loss guard: stop at the first NaN/inf training loss, naming its step, without a
host sync per step (the flag stays on the device and is read every few steps)."""

from __future__ import annotations

import torch

from cifar_lab.errors import NonFiniteLossError


class FiniteLossGuard:
    """The first step whose loss was not finite (-1: none) and that loss, kept on the device."""

    def __init__(self) -> None:
        self._bad_step: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None

    def track(self, loss: torch.Tensor, step: int) -> None:
        """Record ``step`` if ``loss`` is the first non-finite one (tensor ops only: no sync)."""
        if self._bad_step is None or self._bad_step.device != loss.device:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=torch.float32, device=loss.device)
        first = ~torch.isfinite(loss) & (self._bad_step < 0)
        self._bad_step = torch.where(first, torch.full_like(self._bad_step, step), self._bad_step)
        self._bad_loss = torch.where(first, loss.float(), self._bad_loss)

    def check(self, module, all_ranks: bool = False) -> None:
        """Raise NonFiniteLossError if any loss tracked so far was NaN or infinite.

        ``all_ranks``: under DDP, gather every rank's flag so that all ranks stop at the same
        step: a rank that stopped alone would leave the others waiting forever in the next
        gradient all-reduce. Only for calls every rank makes at the same step.
        """
        if self._bad_step is None:
            return
        # (first bad step, its loss) per rank; float32 holds step numbers exactly up to 2**24
        state = torch.stack([self._bad_step.float(), self._bad_loss])
        rank, world_size = None, module.trainer.world_size
        if all_ranks and world_size > 1:
            states = module.all_gather(state).reshape(-1, 2)
            bad = (states[:, 0] >= 0).nonzero().flatten()
            if len(bad):
                rank = int(bad[states[bad, 0].argmin()])
                state = states[rank]
        step, value = (float(v) for v in state.tolist())  # the one host sync
        if step >= 0:
            where = f" on rank {rank} of {world_size}" if rank is not None else ""
            raise NonFiniteLossError(
                f"the training loss became {value} at step {int(step)} (epoch {module.current_epoch}){where}; "
                f"training stopped, weights of that step were not saved; lower optimizer.lr, set "
                f"trainer.gradient_clip_val, or check the data",
                step=int(step),
            )
