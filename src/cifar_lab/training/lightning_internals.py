"""Every use of Lightning's private (underscore) internals, each behind one small function.

Lightning may move or rename any of these in a minor release; tests/test_lightning_internals.py
checks each one is still where these functions expect it, and its failure names the symbol and
the cifar_lab feature that breaks. Nothing else in cifar_lab touches a Lightning ``_name``.
Lightning itself is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def fit_combined_loader(trainer: Any) -> Any:
    """The fit loop's CombinedLoader (``trainer.fit_loop._combined_loader``; None before fit builds it).

    ResumeCheckpoint restores the training loader's position into it: Lightning itself only does
    so when the loader is built after the checkpoint is read, which a per-step lr schedule
    (``estimated_stepping_batches``) defeats."""
    return trainer.fit_loop._combined_loader


def saved_loader_states(checkpoint: dict[str, Any]) -> list[Any]:
    """The training loaders' states in a checkpoint (``loops.fit_loop.state_dict.combined_loader``,
    what ``_FitLoop.on_save_checkpoint`` writes; [] without them).

    ResumeCheckpoint puts them back into the loaders (fit_combined_loader), and a resume checks
    the batch size they were saved with (checkpoints.model.check_resumable)."""
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    return list((fit_loop.get("state_dict") or {}).get("combined_loader") or [])


def keep_lightning_off_the_signals(trainer: Any) -> None:
    """Stop Lightning installing its SIGTERM/SIGUSR handlers (``trainer._signal_connector``).

    SIGTERM is ours (checkpoints.preemption.Preemption): Lightning's handler would stop without
    a consistent checkpoint."""
    trainer._signal_connector.register_signal_handlers = lambda: None


def flatten_hyperparams(params: Any) -> dict[str, Any]:
    """Hyperparameters flattened as Lightning's loggers flatten them before logging
    (``lightning.fabric.utilities.logger._convert_params`` and ``_flatten_dict``).

    Our MLFlowLogger (a resumed run's params) compares them with the run's logged params and
    logs the changed ones as tags instead: flattened as the parent flattens them, the keys it
    compares are the keys the parent logs (MLflow refuses a param logged again with another value)."""
    from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

    return _flatten_dict(_convert_params(params))


def start_ddp_children_with(command: Callable[[int], tuple[Sequence[str], str]]) -> None:
    """Have Lightning's DDP subprocess launcher start rank N with ``command(N)`` (its
    ``subprocess_script._hydra_subprocess_cmd``, what it calls under Hydra).

    Lightning's own re-runs the parent's command line: in a multirun the children re-expand the
    whole sweep and write to ``hydra.run.dir``, not the job's folder (runtime.distributed)."""
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = command
