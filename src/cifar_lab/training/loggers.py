"""The experiment loggers of a run: the extras they need, MLflow's local store, and resume continuity.

A resumed run continues the run it resumes in every logger: TensorBoard's run is the run
folder's ``tensorboard/`` (``purge_step`` drops the steps the killed process logged after its
checkpoint); MLflow's and W&B's runs live outside the folder, so the run's id (Lightning's
``logger.version``) is saved in each checkpoint under :data:`RUN_IDS_KEY` and handed back to
the logger's constructor (``run_id``, ``id``) when a checkpoint is resumed. The id lives in the
checkpoint, not beside it: a run that restarts from scratch (no checkpoint yet) is a new run.

No torch or Lightning at import: ``config.check.validate_config`` checks the extras before they load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cifar_lab.errors import ConfigError
from cifar_lab.instantiate import instantiate_at

# where a checkpoint keeps the ids of the logger runs it belongs to: {config name: {logger, version}}
RUN_IDS_KEY = "cifar_lab_loggers"
# the constructor argument that makes each logger class continue a run, by class name
RESUME_ARGUMENT = {"MLFlowLogger": "run_id", "WandbLogger": "id"}
# the extra (pyproject.toml) and the modules each logger class needs
EXTRAS = {"MLFlowLogger": ("mlflow", ("mlflow",)), "WandbLogger": ("wandb", ("wandb",))}
# MLflow's sqlite store also needs these (mlflow-skinny leaves them out; the mlflow extra has them)
SQLITE_MODULES = ("sqlalchemy", "alembic")
SQLITE_PREFIX = "sqlite:///"


def logger_class(entry: Any) -> str:
    """The class name of a logger entry's ``_target_`` ("" for none)."""
    target = entry.get("_target_") if isinstance(entry, dict) or OmegaConf.is_dict(entry) else None
    return str(target or "").rsplit(".", 1)[-1]


def _entries(cfg: DictConfig) -> dict[str, Any]:
    node = cfg.get("logger")
    entries = OmegaConf.to_container(node, resolve=False) if node else {}
    return {name: entry for name, entry in entries.items() if entry and "_target_" in entry}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_logger_extras(cfg: DictConfig) -> None:
    """One ConfigError line when a logger's optional extra is not installed (before torch loads)."""
    for name, entry in _entries(cfg).items():
        extra = EXTRAS.get(logger_class(entry))
        if extra is None:
            continue
        modules = extra[1]
        uri = OmegaConf.select(cfg, f"logger.{name}.tracking_uri", default=None)
        if isinstance(uri, str) and uri.startswith("sqlite:"):
            modules = (*modules, *SQLITE_MODULES)
        missing = [module for module in modules if not _installed(module)]
        if missing:
            # the library itself there (e.g. mlflow-skinny alone): say what else its store needs
            which = f" ({', '.join(missing)} not installed)" if modules[0] not in missing else ""
            raise ConfigError(f"logger={name} needs the {extra[0]} extra: pip install 'cifar_lab[{extra[0]}]'{which}")


def prepare_local_store(entry: dict[str, Any]) -> None:
    """An MLflow entry's local sqlite store: its folder made, and (artifact_location null) the
    artifacts beside the database as an absolute URI: MLflow's default is ./mlruns of the
    working directory, which `mlflow ui` started elsewhere could not find."""
    uri = entry.get("tracking_uri")
    if not isinstance(uri, str) or not uri.startswith(SQLITE_PREFIX):
        return  # a server or another store: its own artifact root
    database = Path(uri[len(SQLITE_PREFIX) :])
    database.parent.mkdir(parents=True, exist_ok=True)
    if entry.get("artifact_location") is None:
        entry["artifact_location"] = (database.parent.resolve() / "artifacts").as_uri()


def continue_runs(entries: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    """Point each logger entry at the run ``checkpoint`` belongs to (entries changed in place)."""
    saved = checkpoint.get(RUN_IDS_KEY) or {}
    for name, entry in entries.items():
        cls = logger_class(entry)
        if cls == "TensorBoardLogger":
            # steps the killed process logged after its checkpoint are purged (they are trained again)
            entry["purge_step"] = int(checkpoint.get("global_step", 0))
        argument, run = RESUME_ARGUMENT.get(cls), saved.get(name) or {}
        if argument and run.get("logger") == cls and run.get("version") and entry.get(argument) is None:
            entry[argument] = run["version"]  # a run id typed on the command line wins


def build_loggers(cfg: DictConfig, checkpoint: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
    """cfg.logger's loggers (continuing the runs of ``checkpoint`` when resumed), as a list and by
    config name (what training.run_ids.RunIds records in every checkpoint)."""
    check_logger_extras(cfg)
    node = cfg.get("logger")
    entries = OmegaConf.to_container(node, resolve=True) if node else {}
    entries = {name: entry for name, entry in entries.items() if entry and "_target_" in entry}
    for entry in entries.values():
        if logger_class(entry) == "MLFlowLogger":
            prepare_local_store(entry)
    if checkpoint is not None:
        continue_runs(entries, checkpoint)
    named = {name: instantiate_at(f"logger.{name}", entry) for name, entry in entries.items()}
    return list(named.values()), named
