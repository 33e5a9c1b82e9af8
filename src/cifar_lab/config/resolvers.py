"""The ``${cifar_lab.*:...}`` resolvers the YAML configs use: registered by the entry-point
module (importing tasks.train, which tasks.eval imports too) before Hydra composes, and by the
tests' compose helper; importing a rule does not register them."""

from __future__ import annotations

from omegaconf import OmegaConf

from cifar_lab.config.trainer import global_batch
from cifar_lab.runtime.hardware import cpu_precision
from cifar_lab.runtime.run_folder import run_name

RESOLVERS = {
    "cifar_lab.cpu_precision": cpu_precision,  # conf/trainer/cpu.yaml: bf16 where the CPU has it
    "cifar_lab.global_batch": global_batch,  # conf/optimizer/sgd_decoupled.yaml: the lr's batch
    "cifar_lab.run_name": run_name,  # conf/logger/mlflow.yaml, wandb.yaml: the run's name
}


def register_resolvers() -> None:
    """Make the resolvers known to OmegaConf (idempotent)."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
