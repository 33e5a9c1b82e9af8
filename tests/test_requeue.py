"""A sweep job stopped by its time limit or pre-empted is requeued and continues (hydra/launcher=slurm).

Real processes, real signals: `python train.py -m hydra/launcher=slurm_local` runs the job
under submitit's local executor, whose controller restarts a job that asks to be requeued (as
SLURM requeues it). The job gets USR2 (what SLURM sends before the time limit, with submitit's
``--signal``), then, once requeued and training again, SIGTERM (pre-emption).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.test_resume import RUN, TOTAL_STEPS, _newest

LAUNCHER = "hydra/launcher=slurm_local"


def _job_processes(root: Path) -> set[int]:
    """The pids of the submitit jobs (``python -m submitit.core._submit``) writing under ``root``."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:  # ended meanwhile
            continue
        if b"submitit.core._submit" in argv and any(str(root).encode() in a for a in argv):
            pids.add(int(proc.name))
    return pids


def _wait_for(condition, sweep: subprocess.Popen, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert sweep.poll() is None, f"the sweep ended before {what}: {sweep.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)
    return found


def _status(job: Path) -> dict:
    try:
        return json.loads((job / "metrics.json").read_text())
    except (OSError, ValueError):  # not written yet
        return {}


def _stop(sweep: subprocess.Popen, root: Path, job: Path, signum: int, after_step: int, old: set[int]) -> int:
    """Send ``signum`` to a job process not in ``old`` once it has saved a step after
    ``after_step``; wait for the metrics.json of the pre-emption; return the step it stopped at
    (two signals of the same name could not be told apart there)."""
    pids = _wait_for(lambda: _job_processes(root) - old, sweep, "(re)started job process")
    _wait_for(lambda: _newest(job)[0] > after_step, sweep, f"checkpoint after step {after_step}")
    for pid in pids:
        os.kill(pid, signum)
    said = f"pre-empted by {signal.Signals(signum).name}"
    stopped = _wait_for(lambda: _status(job).get("error") == said and _status(job), sweep, said)
    assert stopped["status"] == "preempted"
    assert stopped["resume"].startswith("python train.py ")  # not submitit's runner, should the requeue fail
    old |= pids
    return stopped["steps"]


def test_a_stopped_sweep_job_is_requeued_and_continues_in_its_folder(tmp_path):
    """USR2 (time limit), then SIGTERM (pre-emption): each saves resume.ckpt and requeues the job
    with resume=latest; the job continues in the same folder (the sweep folder's ${now:} too)
    and completes; the sweep ends well (submitit_local, today's requeue, starts it from scratch)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "train.py", "-m", LAUNCHER, *RUN, "logger=none", f"paths.log_dir={tmp_path}"]
    sweep = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        job = _wait_for(lambda: next(tmp_path.glob("multiruns/train/*/0"), None), sweep, "job folder")
        seen: set[int] = set()
        first = _stop(sweep, tmp_path, job, signal.SIGUSR2, 1, seen)
        second = _stop(sweep, tmp_path, job, signal.SIGTERM, first, seen)
        _, stderr = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        for pid in _job_processes(tmp_path):
            os.kill(pid, signal.SIGKILL)
    assert sweep.returncode == 0, stderr[-3000:]

    assert 0 < first < second < TOTAL_STEPS
    assert [p.relative_to(tmp_path).parts[-1] for p in tmp_path.glob("multiruns/train/*/*[0-9]")] == ["0"]
    assert len(list(job.parent.glob(".submitit/*/*_result.pkl"))) == 1  # one submitit job, run three times
    metrics = _status(job)
    assert (metrics["status"], metrics["steps"], metrics["resumed"]) == ("completed", TOTAL_STEPS, True)
    log = (job / "train.log").read_text()  # the job's log, appended by each run
    assert log.count("resume=latest: continuing from") == 2 and log.count("requeueing the job") == 2
    overrides = (job / ".hydra" / "overrides.yaml").read_text().splitlines()
    assert overrides[-1] == "- resume=latest" and overrides.count("- resume=latest") == 1
