"""What the run asks of the machine it is on: CPU threads, and whether a GPU is there."""

from __future__ import annotations

from omegaconf import DictConfig


def set_cpu_threads(cfg: DictConfig) -> None:
    """CPU training: one intra-op thread per usable core, shared by the processes of this node.

    Applies to ``accelerator: cpu``, and to ``auto`` where no GPU is visible (the default
    trainer on a laptop); an explicit ``cpu_threads`` applies to every run."""
    import torch

    from cifar_lab.config import usable_cpus

    threads = cfg.get("cpu_threads")
    if threads is None:
        accelerator = str(cfg.trainer.get("accelerator", "auto"))
        if not (accelerator == "cpu" or (accelerator == "auto" and not gpu_visible())):
            return  # GPU runs keep torch's own choice for their host-side work
        devices = cfg.trainer.get("devices", 1)
        processes = int(devices) if str(devices).isdigit() and int(devices) > 0 else 1
        threads = max(1, usable_cpus() // processes)
    torch.set_num_threads(int(threads))


def gpu_visible() -> bool:
    """Whether Lightning's ``accelerator: auto`` would pick a GPU (its own checks: NVML-based
    for CUDA, so no CUDA context exists before a fork-based strategy starts)."""
    from lightning.fabric.accelerators import CUDAAccelerator, MPSAccelerator

    return CUDAAccelerator.is_available() or MPSAccelerator.is_available()
