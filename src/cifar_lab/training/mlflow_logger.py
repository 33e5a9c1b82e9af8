"""Lightning's MLFlowLogger, with params that survive a resume.

MLflow refuses a param logged again with another value ("Changing param values is not
allowed"), and a resumed run logs its config again: it differs at least in ``resume`` or
``ckpt_path``, and may in what the resume changed (a longer ``trainer.max_epochs``). The param
keeps the value the run was first logged with; the new value is the tag ``resumed/<key>``
(tags may change), so nothing typed is lost and the resumed run finishes.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from cifar_lab.training.lightning_internals import flatten_hyperparams

log = logging.getLogger(__name__)

# MLFlowLogger.log_hyperparams stores str(value)[:250]; what is compared against the run's params
PARAM_CHARS = 250
# MLflow's limit on a tag value
TAG_CHARS = 8000
RESUMED_TAG = "resumed/"


class MLFlowLogger(LightningMLFlowLogger):
    """``lightning.pytorch.loggers.MLFlowLogger`` whose ``log_hyperparams`` writes a value that
    differs from the run's logged param as the tag ``resumed/<key>`` instead of failing."""

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        # Lightning's own flattening (the parent flattens again: a no-op on flat keys)
        flat = flatten_hyperparams(params)
        logged = self.experiment.get_run(self.run_id).data.params
        changed = {k: v for k, v in flat.items() if k in logged and logged[k] != str(v)[:PARAM_CHARS]}
        super().log_hyperparams({k: v for k, v in flat.items() if k not in changed})
        for key, value in changed.items():
            self.experiment.set_tag(self.run_id, RESUMED_TAG + key, str(value)[:TAG_CHARS])
        if changed:
            log.info(
                "mlflow: params keep the values the run was first logged with; now different, as tags %s*: %s",
                RESUMED_TAG,
                ", ".join(sorted(changed)),
            )
