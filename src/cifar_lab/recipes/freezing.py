"""Stop training a net's first layers for the last epochs (FreezeOut, Brock et al. 2017).

Late in a short run, with the learning rate decayed, the first layers barely move, yet on a CPU
their backward pass is the dearest per multiply-add: few channels at full resolution, memory-bound.
Freezing them (``requires_grad`` off) lets autograd skip their weight gradients and the input
gradient of the layer after them: experiment=cpu90's net trains 1.1-1.3x more images/s on 2
cores with its first conv group frozen, and ~2x with the second one too
(benchmarks/cpu_throughput.py). Works with any model whose submodules have names
(``net.whiten``, ``net.layers.0``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from torch import nn

from cifar_lab.config.callbacks import check_freeze, check_freeze_fits
from cifar_lab.errors import ConfigError


class FreezeParameters(pl.Callback):
    """From epoch ``from_epoch`` on, the parameters that :meth:`select` picks stop training.

    One device: ``requires_grad`` goes off, so backward skips them. Under DDP, which forbids that
    mid-run, their gradients are dropped before each optimizer step instead: the same updates,
    without the saving. At the end of the fit they train again (a later fit in the same process
    must not inherit the freeze). Subclasses say which parameters: :class:`FreezeLayers`, and
    ``recipes.whitening.FreezeWhiteningBias``.
    """

    def __init__(self, from_epoch: int) -> None:
        self.from_epoch = from_epoch
        self._params: list[nn.Parameter] = []
        self._applied = False  # requires_grad is off (one device)

    def select(self, trainer: pl.Trainer, net: nn.Module) -> list[nn.Parameter]:
        """The parameters to freeze (called once per fit, at setup)."""
        raise NotImplementedError

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # each parameter once, and only those that train at all
        seen: dict[int, nn.Parameter] = {}
        for p in self.select(trainer, getattr(pl_module, "net", pl_module)):
            if p.requires_grad:
                seen.setdefault(id(p), p)
        self._params = list(seen.values())
        self._applied = False

    def frozen(self, trainer: pl.Trainer) -> bool:
        return trainer.current_epoch >= self.from_epoch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # checked every step, not at epoch start: Lightning skips on_train_epoch_start when it
        # resumes from a checkpoint written mid-epoch
        if not self._applied and trainer.world_size == 1 and self.frozen(trainer):
            for p in self._params:
                p.requires_grad_(False)
                p.grad = None
            self._applied = True

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if trainer.world_size > 1 and self.frozen(trainer):
            for p in self._params:
                p.grad = None  # the optimizer skips parameters without a gradient

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for p in self._params:
            p.requires_grad_(True)
        self._applied = False


class FreezeLayers(FreezeParameters):
    """From epoch ``from_epoch`` on, the parameters of ``modules`` (names inside the module's
    ``net``) stop training (see :class:`FreezeParameters`). BatchNorm layers among them keep their
    batch statistics and running averages up to date, as before. Weight averaging
    (``callbacks.lookahead``) still averages them: a frozen layer moves once, to its average, at
    the next pull, then stays.
    """

    def __init__(self, modules: Sequence[str], from_epoch: int) -> None:
        check_freeze(modules, from_epoch)
        super().__init__(from_epoch)
        self.modules = list(modules)

    def select(self, trainer: pl.Trainer, net: nn.Module) -> list[nn.Parameter]:
        names = dict(net.named_modules())
        missing = [m for m in self.modules if m not in names]
        if missing:
            top = ", ".join(name for name, _ in net.named_children())
            raise ConfigError(
                f"callbacks.freeze.modules names {', '.join(missing)}, which the net does not have; "
                f"its top-level submodules are: {top}"
            )
        max_epochs = trainer.max_epochs
        check_freeze_fits(self.from_epoch, max_epochs if max_epochs is not None and max_epochs >= 0 else None)
        return [p for name in self.modules for p in names[name].parameters()]
