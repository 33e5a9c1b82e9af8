"""Shared fixtures: compose the real Hydra config the way `python train.py` does."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
SHARED_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

# the smallest sensible run: synthetic data, CPU, no progress bar redraws
FAST_OVERRIDES = [
    "data=synthetic",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
]


def compose_config(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """The composed config of `python train.py OVERRIDES`, writing into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.paths.cache_dir = str(output_dir / "cache")
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, fast: bool = True) -> DictConfig:
        return compose_config((FAST_OVERRIDES if fast else []) + list(overrides), tmp_path)

    yield make
    GlobalHydra.instance().clear()
