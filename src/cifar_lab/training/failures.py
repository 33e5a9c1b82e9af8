"""What a run leaves behind when it does not finish: one error line, and a metrics.json that says why.

Wrapped around the run by train.py, never woven through it: a full disk, a pre-emption signal,
a NaN loss or a crash each end with a status in metrics.json and, where there is one, the way
back in (the resume command, the last good checkpoint).
"""

from __future__ import annotations

import errno
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cifar_lab.errors import CifarLabError
from cifar_lab.runtime.logs import display_path
from cifar_lab.runtime.run_folder import RunFolder, RunStatus

log = logging.getLogger(__name__)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(CifarLabError):
    """The disk filled up while the run wrote its outputs."""


@contextmanager
def disk_full_as_error(cfg: DictConfig) -> Iterator[None]:
    """A full disk anywhere in the run is one DiskFullError line that says how to continue."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(
                f"the disk is full: could not write {display_path(Path(exc.filename)) if exc.filename else 'the outputs'} "
                f"of '{display_path(RunFolder.of(cfg).root)}' ({exc.strerror}); free space and resume with resume=latest"
            ) from None
        raise


def write_failure(cfg: DictConfig, trainer, status: RunStatus, error: str, **more: Any) -> None:
    """metrics.json of a run that stopped early: its status, why, and where it got to."""
    if not trainer.is_global_zero:
        return
    summary = {
        "status": status.value,
        "error": error,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seed": cfg.seed,
        **more,
    }
    try:
        RunFolder.of(cfg).write_metrics(summary)
    except OSError as exc:
        log.error("could not write metrics.json (%s)", exc.strerror or exc)


@contextmanager
def fit_failures(cfg: DictConfig, trainer, preemption) -> Iterator[None]:
    """Around ``trainer.fit``: record each way training can stop early, then re-raise it."""
    from cifar_lab.errors import NonFiniteLossError
    from cifar_lab.runtime.checkpoints.latest import find_latest, resume_command
    from cifar_lab.runtime.checkpoints.preemption import Preempted

    preemption.phase = "training"
    try:
        yield
    except Preempted as stop:
        command = resume_command(cfg)
        name = signal.Signals(stop.signum).name
        saved = "checkpoint saved" if stop.saved else "stopped at once (no new checkpoint)"
        stop.message = f"pre-empted by {name} at step {trainer.global_step}: {saved}; resume with: {command}"
        write_failure(cfg, trainer, RunStatus.PREEMPTED, f"pre-empted by {name}", resume=command)
        raise
    except NonFiniteLossError as err:
        good = find_latest(RunFolder.of(cfg).checkpoints)
        kept = f"; the last good checkpoint is {display_path(good)}" if good else "; no checkpoint was saved before it"
        write_failure(cfg, trainer, RunStatus.FAILED, f"{err}{kept}", failed_step=err.step)
        raise NonFiniteLossError(f"{err}{kept}", err.step) from None
    except CifarLabError:
        raise
    except Exception as exc:
        if not (isinstance(exc, OSError) and exc.errno in _DISK_FULL):
            write_failure(cfg, trainer, RunStatus.FAILED, f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
        raise
    finally:
        preemption.phase = "finishing"


def stop_if_signalled_after_training(preemption) -> None:
    """A signal during the test pass: the run completed and wrote its metrics, then stops."""
    from cifar_lab.runtime.checkpoints.preemption import Preempted

    if preemption.requested:
        stop = Preempted(preemption.signum)
        stop.message = (
            f"received {signal.Signals(preemption.signum).name} after training finished: the run "
            f"completed and wrote its metrics; nothing to resume"
        )
        raise stop
