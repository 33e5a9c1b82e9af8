"""A submitit job that SLURM stops (its time limit, or pre-emption) is requeued to continue.

hydra-submitit-launcher's ``checkpoint()`` resubmits the job's call unchanged, so a requeued
job starts from scratch; and submitit's time-limit handler (USR2) ends the job mid-step, with
no checkpoint. Here the run treats USR2 as it treats SIGTERM (the running step finishes,
``checkpoints/resume.ckpt`` is saved, ``metrics.json`` says preempted), and then submitit's
own handler requeues the call with ``resume=latest``: the same job number, so the same job
folder (``hydra.sweep.dir`` and its ``${now:}`` are the pickled config's), which the run
continues. submitit counts the requeues at the time limit (``max_num_timeout``) and not
those of pre-emption, and requeues from the first task only.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from cifar_lab.runtime.checkpoints.latest import without_resume
from cifar_lab.runtime.checkpoints.preemption import PreemptedExit, also_preempt_on

log = logging.getLogger(__name__)


def _time_limit_signal() -> signal.Signals:
    """The signal submitit has SLURM send before the time limit (USR2, or $SUBMITIT_PREEMPT_SIGNAL)."""
    from submitit.core.job_environment import JobEnvironment

    return getattr(signal, "SIG" + JobEnvironment.USR_SIG)


def _submitit_requeue(handler: Any) -> bool:
    """Whether ``handler`` is submitit's checkpoint-and-requeue (installed before the job ran)."""
    from submitit.core.job_environment import SignalHandler

    return getattr(handler, "__func__", None) is SignalHandler.checkpoint_and_try_requeue


class RequeueOnStop:
    """Mixed into hydra-submitit-launcher's launchers (``launcher.py``): ``__call__`` runs a job
    inside submitit's process, ``checkpoint`` is what submitit requeues."""

    def __call__(self, sweep_overrides: list[str], *args: Any) -> Any:
        warning = _time_limit_signal()
        requeue = signal.getsignal(warning)
        try:
            with also_preempt_on(warning):
                return super().__call__(sweep_overrides, *args)  # type: ignore[misc]
        except PreemptedExit as stop:
            if stop.signum not in (signal.SIGTERM, warning) or not _submitit_requeue(requeue):
                raise  # Ctrl-C, or not in a submitit job: stop as any run does
            log.warning("%s: requeueing the job with resume=latest", signal.Signals(stop.signum).name)
            requeue(stop.signum, None)  # checkpoint() below, then requeue and exit (or refuse: the job fails)
            raise  # not the first task: that one requeues the job

    def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
        """The call submitit requeues: this job's, continuing in its folder (``resume=latest``)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, [*without_resume(list(sweep_overrides)), "resume=latest"], *args, **kwargs)
