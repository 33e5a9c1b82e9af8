"""The launchers ``hydra/launcher=slurm`` and ``slurm_local`` name (conf/hydra/launcher/):
hydra-submitit-launcher's, with :class:`RequeueOnStop`. Without the ``[slurm]`` extra this
module defines nothing (Hydra imports it on every run: an ImportError would be a warning).

No ``from __future__ import annotations``: Hydra runs this module before it is in
``sys.modules``, where a dataclass cannot resolve string annotations."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from hydra_plugins.cifar_lab_submitit.requeue import RequeueOnStop

try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
except ImportError:  # hydra/launcher=slurm then says submitit_slurm is missing
    pass
else:

    class RequeueingSlurmLauncher(RequeueOnStop, SlurmLauncher):
        """One SLURM job per sweep point; a stopped job is requeued and continues."""

    class RequeueingLocalLauncher(RequeueOnStop, LocalLauncher):
        """The same on this machine (submitit's local executor restarts a requeued job): for tests."""

    @dataclass
    class RequeueingLocalConf(LocalQueueConf):
        _target_: str = "hydra_plugins.cifar_lab_submitit.launcher.RequeueingLocalLauncher"
        # time-limit requeues before the job fails (submitit_slurm has it, submitit_local not)
        max_num_timeout: int = 3

    ConfigStore.instance().store(
        group="hydra/launcher", name="cifar_lab_submitit_local", node=RequeueingLocalConf, provider="cifar_lab"
    )
