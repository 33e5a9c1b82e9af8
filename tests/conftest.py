"""Shared fixtures: compose the real Hydra config the way `python train.py` does."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cifar_lab.config.resolvers import register_resolvers

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
SHARED_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (CI runs ``-n 2`` on 2 cores), each worker keeps to a core of its own, so its
    runs see one usable core (``cpu_threads: null`` gives one torch thread) and its subprocesses
    inherit that: two workers with two spinning threads each on 2 cores make small ops many times
    slower. Without xdist nothing changes."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if workers <= len(cores):
        os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})
        os.environ["OMP_NUM_THREADS"] = "1"  # torch's default before a run sets its own


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
    register_resolvers()
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


# A one-epoch run of two steps, no logs or checkpoints: for subprocess runs that test what
# surrounds training (search launches, import guards), not training itself.
QUICK_RUN = [
    "data=synthetic",
    "model=seed_cnn",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "logger=none",
    "callbacks=none",
]

# A small fast net on a few synthetic images, checkpoints on: for fault and security tests
# (add logger=... to it).
TINY_RUN = [
    "model=fast",
    "model.widths=[8,16,16]",
    "data.source.train_per_class=20",
    "data.val_size=20",
    "data.batch_size=30",
]


# -- a real small sweep, shared by the report, eval/predict and notebook tests ------------------
SMALL_MULTIRUN = [
    "data=synthetic",
    "model=seed_cnn",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "optimizer.lr=0.01,0.05",
    "seed=0,1",
]


@pytest.fixture(scope="session")
def small_multirun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python train.py -m ...`: 2 learning rates x 2 seeds on synthetic data, with checkpoints,
    TensorBoard events and the test-end figures (~60 s on 2 cores, run once per session).
    Read it, never write into it: copy what a test wants to change."""
    import subprocess
    import sys

    sweep = tmp_path_factory.mktemp("small_multirun") / "sweep"
    result = subprocess.run(
        [sys.executable, "train.py", "-m", *SMALL_MULTIRUN, f"hydra.sweep.dir={sweep}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep
