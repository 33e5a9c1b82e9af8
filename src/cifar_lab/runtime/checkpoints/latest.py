"""Where a run resumes from: its newest checkpoint (``resume=latest``) and the command that resumes it.

A run resumes in its own output folder: ``python train.py ... hydra.run.dir=<run folder>
resume=latest`` picks the newest of ``checkpoints/resume.ckpt`` (step and pre-emption saves)
and ``checkpoints/last*.ckpt`` (epoch ends), and continues bit for bit where it stopped.

No torch or Lightning here: train.py checks ``resume`` before the heavy imports (the Lightning
callback that writes ``resume.ckpt`` is :mod:`cifar_lab.runtime.checkpoints.callback`).
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from cifar_lab.runtime.run_folder import RESUME_FILE, RunFolder

log = logging.getLogger(__name__)


def find_latest(checkpoint_dir: str | Path) -> Path | None:
    """The newest resumable checkpoint in ``checkpoint_dir`` (None when there is none).

    Only complete files count: checkpoints are written to hidden temp files and renamed.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    candidates = [p for p in [folder / RESUME_FILE, *folder.glob("last*.ckpt")] if p.is_file()]
    if not candidates:
        return None
    # ties (same mtime): prefer the epoch-end last.ckpt, saved after the step checkpoint
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name != RESUME_FILE))


def without_resume(overrides: list[str]) -> list[str]:
    """``overrides`` less those that say where a run starts from (its folder, resume, ckpt_path):
    what a resumed run keeps, before it adds ``resume=latest``."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.run.dir=", "resume=", "ckpt_path="))]


def resume_command(cfg) -> str:
    """The command line that continues this run in its own folder: the run's command-line
    overrides (Hydra's, when it runs under Hydra) less where it started from, then
    ``hydra.run.dir=<its folder> resume=latest``."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "train.py"
    if "submitit" in Path(argv0).parts:  # a sweep job run by submitit (python -m submitit.core._submit)
        argv0 = "train.py"
    program = f"python {argv0}" if argv0.endswith(".py") else Path(argv0).name
    keep = without_resume(overrides)
    run = RunFolder.of(cfg).root
    try:
        run = run.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    parts = [*keep, f"hydra.run.dir={run}", "resume=latest"]
    return " ".join([program, *(shlex.quote(p) for p in parts)])


def checkpoint_dirs(cfg) -> list[Path]:
    """Where this run's checkpoints go: checkpoints/ of the run folder (and ModelCheckpoint's)."""
    from omegaconf import OmegaConf

    dirs = [RunFolder.of(cfg).checkpoints]
    configured = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    if configured and Path(str(configured)) not in dirs:
        dirs.append(Path(str(configured)))
    return dirs


def resume_path(cfg) -> Path | None:
    """The checkpoint to continue from: ckpt_path, or with resume=latest the run folder's newest
    (config.check.validate_config checked both settings)."""
    from cifar_lab.runtime.logs import display_path

    if cfg.get("ckpt_path"):
        return Path(str(cfg.ckpt_path))
    if cfg.get("resume") != "latest":
        return None
    found = [p for p in (find_latest(d) for d in checkpoint_dirs(cfg)) if p is not None]
    if not found:
        log.warning(
            "resume=latest: no checkpoint in %s yet, starting from scratch", display_path(checkpoint_dirs(cfg)[0])
        )
        return None
    latest = max(found, key=lambda p: p.stat().st_mtime_ns)
    log.info("resume=latest: continuing from %s", display_path(latest))
    return latest
