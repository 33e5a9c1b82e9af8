"""`hparams_search=optuna`: a Hydra sweeper on Optuna's public ask-and-tell API.

Each batch of trials is asked from the study, launched through whatever launcher Hydra
has (jobs in this process, SLURM, submitit), and told back: the job's value, PRUNED when
the job marked itself pruned, FAIL when it failed or returned NaN (the study goes on).
Job folder N is trial N, also when a rerun of the same command continues the study.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cifar_lab.errors import exits_on_user_error
from cifar_lab.search.study import TRIAL_KEY  # no Optuna import: Hydra scans this module at start-up

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Hydra instantiates it from ``hydra.sweeper`` (conf/hydra/sweeper/cifar_optuna.yaml)."""

    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        seed: int | None = None,
        sampler: str = "tpe",
        sampler_options: Mapping[str, Any] | None = None,
        pruner: str | None = "median",
        pruner_options: Mapping[str, Any] | None = None,
        pruning_metric: str = "val/acc",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.sampler, self.sampler_options = sampler, sampler_options
        self.pruner, self.pruner_options = pruner, pruner_options
        self.params = params
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run the search; a configuration mistake is one ``error:`` line and exit status 2."""
        with exits_on_user_error():
            self._sweep(arguments)

    def _sweep(self, arguments: Sequence[str]) -> None:
        from cifar_lab.search import SearchConfigError, require_optuna
        from cifar_lab.search.space import parse_space
        from cifar_lab.search.study import make_pruner, make_sampler, n_trials, open_storage, storage_url

        if self.direction not in ("maximize", "minimize"):
            raise SearchConfigError(f"hydra.sweeper.direction={self.direction!r}: write maximize or minimize")
        counts = (
            ("n_trials", self.n_trials, "trials to run in this launch"),
            ("n_jobs", self.n_jobs, "trials at once"),
        )
        for key, value, what in counts:
            if type(value) is not int or value < 1:  # n_trials=0 would run nothing and exit 0
                raise SearchConfigError(f"hydra.sweeper.{key}={value!r} must be a positive integer ({what})")
        optuna = require_optuna()  # after the checks of plain values, which need no Optuna
        space = parse_space(self.params, arguments)
        storage = open_storage(storage_url(self.storage, Path.cwd()))
        done = n_trials(storage, self.study_name)
        # seeded, yet not the same first proposals again when a rerun continues the study
        seed = None if self.seed is None else int(self.seed) + done
        make_pruner(self.pruner, self.pruner_options)  # the jobs build it: fail here, before any job
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            load_if_exists=True,
            direction=self.direction,
            sampler=make_sampler(self.sampler, self.sampler_options, seed),
        )
        if study.direction.name.lower() != self.direction:
            raise SearchConfigError(
                f"study {self.study_name!r} in {self.storage} was created to "
                f"{study.direction.name.lower()}, not {self.direction}: pick another study_name"
            )
        if done:
            log.info("continuing study %r: %d trials already in it", self.study_name, done)
        left = self.n_trials
        while left > 0:
            batch = [study.ask(space.distributions()) for _ in range(min(self.n_jobs, left))]
            overrides = [space.job_overrides(t.params) + [f"+{TRIAL_KEY}={t.number}"] for t in batch]
            for trial, job in zip(batch, self._launch(overrides, [t.number for t in batch])):
                self._tell(study, storage, trial.number, job)
            left -= len(batch)
        self._log_best(study)

    def _launch(self, overrides: list[list[str]], numbers: list[int]) -> list[Any]:
        """Launch a batch so that job folder N is trial N (one by one if the numbers have gaps,
        as when another process asks trials of the same study)."""
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(overrides, initial_job_idx=numbers[0]))
        return [self.launcher.launch([o], initial_job_idx=n)[0] for o, n in zip(overrides, numbers)]

    def _tell(self, study: Any, storage: Any, number: int, job: Any) -> None:
        from optuna.trial import TrialState

        from cifar_lab.search.study import PRUNED_ATTR, trial_id

        if job.status != JobStatus.COMPLETED:
            log.warning("trial %d: the job failed (its log says why): recorded as FAIL", number)
            study.tell(number, state=TrialState.FAIL)
            return
        attrs = storage.get_trial_user_attrs(trial_id(storage, self.study_name, number))
        value = job.return_value
        if PRUNED_ATTR in attrs:
            study.tell(number, state=TrialState.PRUNED)
            log.info("trial %d: pruned after epoch %s", number, attrs[PRUNED_ATTR])
        elif not isinstance(value, (int, float)) or not math.isfinite(value):
            log.warning(
                "trial %d returned %r (the run failed: its train.log says why): recorded as FAIL", number, value
            )
            study.tell(number, state=TrialState.FAIL)
        else:
            study.tell(number, float(value))
            log.info("trial %d: %s", number, value)

    def _log_best(self, study: Any) -> None:
        from optuna.trial import TrialState

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            log.error("no trial of study %r completed: see the job folders' train.log", self.study_name)
            return
        best = study.best_trial
        log.info("best trial %d: %s with %s", best.number, best.value, best.params)
