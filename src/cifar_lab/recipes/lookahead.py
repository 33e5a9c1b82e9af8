"""Lookahead / EMA of weights (airbench): every few steps the weights are pulled back toward a
slow-moving average, which smooths the end of a short, high-lr run. Works with any model."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Lookahead(pl.Callback):
    """Every ``every`` steps: ``avg = lerp(avg, w, 1 - a); w = avg`` with
    ``a = decay * (step / total_steps) ** warmup_power`` (so early steps barely average), and
    the weights become the average at the last step.
    """

    def __init__(self, every: int = 5, decay: float = 0.95**5, warmup_power: float = 3.0) -> None:
        # ValueErrors naming the argument: train.py reports them as `callbacks.lookahead: <message>`
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer (steps between pulls)")
        if not _is_number(decay) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay!r} must be a number in [0, 1)")
        if not _is_number(warmup_power) or warmup_power < 0:
            raise ValueError(f"warmup_power={warmup_power!r} must be a number >= 0")
        self.every = every
        self.decay = decay
        self.warmup_power = warmup_power
        self.average: dict[str, torch.Tensor] | None = None
        self.total_steps = 0
        # (averages, live tensors) paired once per fit: no state_dict walk every pull
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def _tensors(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        """Float weights and buffers (BatchNorm statistics too) of the network."""
        model = getattr(pl_module, "net", pl_module)
        return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.total_steps = int(trainer.estimated_stepping_batches)
        if self.average is None:  # not restored from a checkpoint
            self.average = {k: v.detach().clone() for k, v in self._tensors(pl_module).items()}
        else:
            self.average = {k: v.to(pl_module.device) for k, v in self.average.items()}
        # state_dict tensors share storage with the parameters and buffers, which training
        # updates in place, so the pairing holds for the whole fit
        tensors = self._tensors(pl_module)
        self._pairs = ([self.average[name] for name in tensors], list(tensors.values()))

    @torch.no_grad()
    def _pull(self, pl_module: pl.LightningModule, decay: float) -> None:
        averages, current = self._pairs
        # one fused kernel per dtype group instead of two launches per tensor (GPU launch-bound)
        torch._foreach_lerp_(averages, current, 1.0 - decay)
        torch._foreach_copy_(current, averages)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step >= self.total_steps:
            self._pull(pl_module, decay=1.0)  # finish on the average
        elif step % self.every == 0:
            self._pull(pl_module, decay=self.decay * (step / self.total_steps) ** self.warmup_power)

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.average = state_dict.get("average")
