"""A sweep's jobs: every run folder under a root, its command-line overrides and metrics, and
the groups of jobs that differ only in the seed (the settings a report averages over)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar_lab.errors import CifarLabError
from cifar_lab.runtime.run_folder import HYDRA_DIR, LR_FIND_FILE, METRICS_FILE, MetricsNotAnObject, RunFolder, RunStatus

IGNORED_KEYS = ("seed",)


class ReportError(CifarLabError):
    """Nothing to report: a missing folder, or no jobs in it."""


@dataclass
class Job:
    """One run folder: its command-line overrides, metrics and whether it completed."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, Any]
    status: str  # "completed", or why not

    @property
    def failed(self) -> bool:
        return self.status != RunStatus.COMPLETED


@dataclass
class Group:
    """The jobs that share every override except the ignored ones (the seed)."""

    key: tuple[tuple[str, str], ...]
    jobs: list[Job] = field(default_factory=list)

    @property
    def completed(self) -> list[Job]:
        return [job for job in self.jobs if not job.failed]

    def values(self, metric: str) -> list[float]:
        out = []
        for job in self.completed:
            value = job.metrics.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out.append(float(value))
        return out


# -- finding jobs ----------------------------------------------------------------------------
def read_overrides(job_dir: Path) -> dict[str, str]:
    """``key=value`` lines of .hydra/overrides.yaml as a dict ('+'/'++' prefixes dropped)."""
    path = RunFolder(job_dir).overrides
    if not path.is_file():
        return {}
    import yaml  # comes with Hydra (omegaconf)

    try:
        entries = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    overrides: dict[str, str] = {}
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        if sep:
            overrides[key.lstrip("+~")] = value
    return overrides


def _read_job(job_dir: Path) -> Job | None:
    folder = RunFolder(job_dir)
    overrides = read_overrides(job_dir)
    if not folder.metrics.is_file():
        return Job(job_dir, overrides, {}, "failed: no metrics.json")
    try:
        metrics = folder.read_metrics()
    except MetricsNotAnObject:
        return Job(job_dir, overrides, {}, "failed: metrics.json is not an object")
    except (OSError, ValueError) as err:
        return Job(job_dir, overrides, {}, f"failed: unreadable metrics.json ({err.__class__.__name__})")
    if metrics.get("kind") == "eval":
        return None  # an eval of a checkpoint, not a training job
    status = str(metrics.get("status", RunStatus.COMPLETED.value))
    return Job(job_dir, overrides, metrics, status if status == RunStatus.COMPLETED else f"failed: status {status}")


def find_jobs(root: str | os.PathLike) -> list[Job]:
    """Every job folder under ``root`` (itself included): one with a metrics.json, or a
    Hydra job folder (.hydra/) without one, which is a job that died before writing it. An lr
    sweep's folder (tune=lr_find: lr_find.json, no metrics.json) trained nothing: not a job."""
    root = Path(root)
    if not root.exists():
        raise ReportError(f"{root} does not exist")
    if not root.is_dir():
        raise ReportError(f"{root} is not a folder")
    jobs = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        if LR_FIND_FILE in files and METRICS_FILE not in files:
            dirs[:] = []
            continue
        if METRICS_FILE in files or HYDRA_DIR in dirs:
            job = _read_job(here)
            if job is not None:
                jobs.append(job)
            dirs[:] = []  # checkpoints/, tensorboard/ ... hold no further jobs
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    if not jobs:
        raise ReportError(f"no jobs found under {root} (no metrics.json, no .hydra folder)")
    return sorted(jobs, key=lambda job: natural_key(str(job.path)))


# -- grouping --------------------------------------------------------------------------------
def natural_key(text: str) -> tuple:
    """Sort '10' after '9' and numbers by value: job folders and swept values read in order."""
    parts: list[Any] = []
    for chunk in text.replace("/", " / ").split():
        try:
            parts.append((0, float(chunk), ""))
        except ValueError:
            parts.append((1, 0.0, chunk))
    return tuple(parts)


def group_jobs(jobs: Iterable[Job], ignore: Sequence[str] = IGNORED_KEYS) -> list[Group]:
    groups: dict[tuple[tuple[str, str], ...], Group] = {}
    for job in jobs:
        key = tuple(sorted((k, v) for k, v in job.overrides.items() if k not in ignore))
        groups.setdefault(key, Group(key)).jobs.append(job)
    return sorted(groups.values(), key=lambda g: tuple((k, natural_key(v)) for k, v in g.key))


def varying_keys(groups: Sequence[Group]) -> list[str]:
    """Override keys whose value differs between groups (or is missing from some)."""
    keys: dict[str, set[str | None]] = {}
    all_keys = {k for g in groups for k, _ in g.key}
    for key in sorted(all_keys):
        keys[key] = {dict(g.key).get(key) for g in groups}
    return [k for k, values in keys.items() if len(values) > 1]


def common_overrides(groups: Sequence[Group]) -> dict[str, str]:
    varying = set(varying_keys(groups))
    return {k: v for k, v in groups[0].key if k not in varying} if groups else {}


def setting_label(group: Group, keys: Sequence[str]) -> str:
    settings = dict(group.key)
    label = " ".join(f"{k}={settings.get(k, '-')}" for k in keys)
    return label or "(all jobs)"
