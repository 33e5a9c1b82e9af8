"""cifar_lab's submitit launchers (``hydra/launcher=slurm``, ``slurm_local``): those of
hydra-submitit-launcher, plus a requeue that continues the run. Hydra loads launchers only
from the ``hydra_plugins`` namespace package and imports every module here at start-up, so
none may import submitit (or need the optional ``[slurm]`` extra) to load."""
