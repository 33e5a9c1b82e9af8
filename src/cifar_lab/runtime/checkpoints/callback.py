"""ResumeCheckpoint: the Lightning callback that writes ``checkpoints/resume.ckpt``.

Apart from checkpoints.preemption and checkpoints.latest so that the signal handling and
``find_latest`` load without Lightning.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint

from cifar_lab.runtime.checkpoints.preemption import Preempted, Preemption
from cifar_lab.training.lightning_internals import fit_combined_loader, saved_loader_states
from cifar_lab.training.loop import sync_every


class ResumeCheckpoint(Checkpoint):
    """Writes ``checkpoints/resume.ckpt`` every ``every_n_steps`` training steps (None: never) and
    when pre-empted, then stops training by raising :class:`Preempted`.

    A ``Checkpoint`` subclass, so Lightning runs it after every other callback's batch-end hook
    (e.g. Lookahead's weight averaging): the saved state is the state the next step starts from.

    It also restores the training loader's position (``DeviceLoader.load_state_dict``) from the
    loop state Lightning saved: Lightning itself only does so when the loader is built after
    the checkpoint is read, which a per-step lr schedule (``estimated_stepping_batches``) defeats.

    Under DDP the decision to stop is collective: ranks receive a signal at different steps, or
    only one does (a signal to one process), and a rank that saved and stopped alone would leave
    the others waiting in the save's barrier or the next all-reduce. The ranks agree inside the
    batch loop, every ``sync_every`` steps (each agreement is a host sync) and at each epoch's
    last step, and after the fit: a signal during validation stops the run at the next of those.
    """

    def __init__(self, path: str | Path, every_n_steps: int | None, preemption: Preemption | None = None) -> None:
        self.path = Path(path)  # the run folder's resume.ckpt (RunFolder.resume_checkpoint)
        self.every_n_steps = every_n_steps
        self.preemption = preemption
        self._saved_step = -1
        self._agreed: int | None = None  # under DDP: the signal all ranks agreed to stop on
        self._loader_states: list[dict[str, Any]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # temp files of writes cut short by a kill (never read: only renamed files count)
        if trainer.is_global_zero and self.path.parent.is_dir():
            for stale in self.path.parent.glob(".*.ckpt.*.tmp"):
                stale.unlink(missing_ok=True)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._loader_states = saved_loader_states(checkpoint)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        states, self._loader_states = self._loader_states, []
        combined = fit_combined_loader(trainer)
        if not states or combined is None:
            return
        loaders = [dl for dl in combined.flattened if hasattr(dl, "load_state_dict") and hasattr(dl, "state_dict")]
        for loader, state in zip(loaders, states):
            loader.load_state_dict(state)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._saved_step or not self.path.is_file():
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_step = trainer.global_step

    def _stop_if_preempted(self, trainer: pl.Trainer) -> None:
        # under DDP, only what the ranks agreed on in the batch loop: elsewhere a collective
        # could meet rank 0's own (its progress bar syncs metrics at epoch ends)
        signum = self._agreed if trainer.world_size > 1 else signalled(trainer, self.preemption)
        if signum is not None:
            self._save(trainer)
            raise Preempted(signum)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if trainer.world_size > 1 and (last or step % sync_every(pl_module.device) == 0):
            self._agreed = signalled(trainer, self.preemption)
        if last:
            # the epoch's end (validation, epoch hooks) is still to come: ModelCheckpoint's
            # last.ckpt, or the hooks below when pre-empted, save after it
            return
        if self.every_n_steps and step % self.every_n_steps == 0:
            self._save(trainer)
        self._stop_if_preempted(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._stop_if_preempted(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_preempted(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {}

    @property
    def state_key(self) -> str:
        return "cifar_lab.ResumeCheckpoint"


def signalled(trainer: pl.Trainer, preemption: Preemption | None) -> int | None:
    """The signal that stops the run, if any rank received one (None: go on).

    Collective under DDP: call it where every rank is at the same point. A rank that was not
    signalled itself reports SIGTERM (what a scheduler sends)."""
    requested = preemption is not None and preemption.requested
    if trainer.world_size > 1:
        requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
    if not requested:
        return None
    return (preemption.signum if preemption is not None else None) or signal.SIGTERM
