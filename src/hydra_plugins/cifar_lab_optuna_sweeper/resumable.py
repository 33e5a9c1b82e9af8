"""Hydra's Optuna sweeper, made resumable: `hparams_search=optuna` (conf/hparams_search/).

Two gaps of the stock sweeper are closed here:

* sqlite cannot create the folder of its database file: the folder is made first, so the
  storage can live in the (not yet existing) sweep folder.
* job folders are numbered from 0 in every session, so resuming a stopped study in the same
  sweep folder would overwrite earlier trials' folders: numbering continues after the trials
  the study already holds, which makes job folder N the study's trial N.
* a resumed launch reseeds the sampler (fresh entropy): seeded as in the first launch, it
  would propose the same first trials again.

* a job returning NaN (train's main does, for a failed job in a sweep) makes the stock
  sweeper crash (Optuna refuses the NaN, then refuses a FAIL state with a value): such a job
  is turned into a failed job, which the sweeper records as a FAIL trial. With
  ``max_failure_rate: 1.0`` no failed trial ends the study.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def sqlite_file(storage: Any) -> Path | None:
    """The database file of a ``sqlite:///PATH`` storage URL (None for other storages)."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        name = storage[len("sqlite:///"):]
        return Path(name) if name and name != ":memory:" else None
    return None


class FailedTrial(RuntimeError):
    """A job that returned NaN: the run failed (its train.log says why)."""


def _is_nan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


class _NaNAsFailure:
    """Wraps a launcher: a job that returned NaN comes back as a failed job."""

    def __init__(self, launcher: Any) -> None:
        self._launcher = launcher

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns = self._launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for ret in returns:
            if ret.status == JobStatus.COMPLETED and _is_nan(ret._return_value):
                ret.status = JobStatus.FAILED
                ret.return_value = FailedTrial(f"job {ret.overrides} returned NaN: it failed")
        return returns

    def __getattr__(self, name: str) -> Any:
        return getattr(self._launcher, name)


class ResumableOptunaSweeper(OptunaSweeper):
    """The stock OptunaSweeper with a sqlite folder made, job numbers continued and NaN
    jobs recorded as failed trials."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweeper.launcher = _NaNAsFailure(self.sweeper.launcher)

    def sweep(self, arguments: List[str]) -> None:
        impl = self.sweeper
        database = sqlite_file(impl.storage)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        impl.job_idx = self._trials_so_far()
        if impl.job_idx:
            log.info("resuming study %r: %d trials already in %s", impl.study_name, impl.job_idx, impl.storage)
            # a sampler seeded as in the first launch would propose its first trials again
            reseed = getattr(impl.sampler, "reseed_rng", None)
            if callable(reseed):
                reseed()
        try:
            return super().sweep(arguments)
        except ValueError:
            # the stock sweeper asks for the best trial at the end, which fails when every
            # trial failed: the trials are recorded, so say so instead of a traceback
            if self._completed_trials() == 0:
                log.error("no trial of study %r completed: see the job folders' train.log", impl.study_name)
                return None
            raise

    def _study(self) -> Any:
        impl = self.sweeper
        if impl.storage is None or impl.study_name is None:
            return None
        import optuna

        try:
            return optuna.load_study(study_name=impl.study_name, storage=impl.storage)
        except KeyError:  # no such study yet
            return None

    def _trials_so_far(self) -> int:
        study = self._study()
        return len(study.trials) if study is not None else 0

    def _completed_trials(self) -> int:
        import optuna

        study = self._study()
        if study is None:
            return 0
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
