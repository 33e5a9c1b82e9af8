"""Multi-process training with Hydra: one output folder per run, not one per rank.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the script with the parent's
command line. Under Hydra that is a trap: in a multirun the children re-expand the whole
sweep (`seed=0,1` -> more jobs), and their output folder is `hydra.run.dir`, not the
sweep job's folder. Here each child is instead started from the job's own saved, resolved
config (`<job dir>/.hydra/config.yaml`) with `hydra.run.dir=<job dir>`: the same config, the
same folder, no sweep; and it writes no `.hydra/` of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def job_subprocess_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and cwd that start DDP rank ``local_rank`` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    script = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).exists() else Path(get_original_cwd()) / sys.argv[0]
    command = [
        sys.executable,
        str(script),
        "--config-path",
        str(job_dir / hydra_cfg.output_subdir),
        "--config-name",
        "config",
        f"hydra.run.dir={job_dir}",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def route_ddp_children_through_job_config() -> None:
    """Make Lightning's subprocess launcher use ``job_subprocess_command`` (idempotent)."""
    from cifar_lab.training.lightning_internals import start_ddp_children_with

    start_ddp_children_with(job_subprocess_command)
