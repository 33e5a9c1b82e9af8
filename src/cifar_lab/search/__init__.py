"""Hyperparameter search on Optuna (`hparams_search=optuna`): the search space, the study's
sampler, pruner and storage, and the job-side pruning callback (the search's report is
cifar_lab.reports.search).

Optuna is an optional extra (``pip install -e ".[search]"``): nothing here imports it at
module level, and :func:`require_optuna` turns its absence into one line saying what to install.
"""

from __future__ import annotations

from typing import Any

from cifar_lab.errors import ConfigError

INSTALL_HINT = "pip install -e \".[search]\" (or pip install 'optuna>=5')"


class SearchConfigError(ConfigError):
    """The search is misconfigured (space, sampler, pruner, storage) or Optuna is missing."""


def require_optuna() -> Any:
    """The optuna module, or a SearchConfigError naming the extra to install."""
    try:
        import optuna
    except ImportError:
        raise SearchConfigError(f"hparams_search=optuna needs Optuna, which is not installed: {INSTALL_HINT}") from None
    return optuna
