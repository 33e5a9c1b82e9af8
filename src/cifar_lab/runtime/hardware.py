"""What the run asks of the machine it is on: CPU threads, and whether a GPU is there."""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import DictConfig

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_precision(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The fastest sound Lightning precision for training on this CPU.

    bf16 autocast is ~1.8x faster where the CPU computes bf16 natively (AVX512-BF16, AMX);
    elsewhere it is emulated and slower than fp32, so fp32 is the safe answer.
    """
    try:
        flags = Path(cpuinfo_path).read_text(errors="ignore")
    except OSError:  # not Linux: no cheap, torch-free way to know
        return "32-true"
    return "bf16-mixed" if any(flag in flags for flag in _BF16_CPU_FLAGS) else "32-true"


def usable_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

    torch sizes its thread pool from the cores it sees, which in a container can be the host's;
    more threads than the quota allows thrash instead of helping.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path(cgroup_root, "cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity mask is the limit
    return max(1, count)


def set_cpu_threads(cfg: DictConfig) -> None:
    """CPU training: one intra-op thread per usable core, shared by the processes of this node.

    Applies to ``accelerator: cpu``, and to ``auto`` where no GPU is visible (the default
    trainer on a laptop); an explicit ``cpu_threads`` applies to every run."""
    import torch

    threads = cfg.get("cpu_threads")
    if threads is None:
        accelerator = str(cfg.trainer.get("accelerator", "auto"))
        if not (accelerator == "cpu" or (accelerator == "auto" and not gpu_visible())):
            return  # GPU runs keep torch's own choice for their host-side work
        devices = cfg.trainer.get("devices", 1)
        processes = int(devices) if str(devices).isdigit() and int(devices) > 0 else 1
        threads = max(1, usable_cpus() // processes)
    torch.set_num_threads(int(threads))


def trains_on_gpu(trainer_cfg: DictConfig) -> bool:
    """Whether this trainer config trains on a GPU (``gpu``/``cuda``, or ``auto`` with one visible)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpu_visible())


def resolved_precision(trainer_cfg: DictConfig) -> str:
    """``trainer.precision``, with ``auto`` made concrete for the device the run trains on:
    bf16-mixed on a GPU with bf16 (Ampere and newer), as trainer=gpu; on the CPU what trainer=cpu
    picks (bf16-mixed where the CPU has native bf16, else 32-true); 32-true on older GPUs."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    if precision != "auto":
        return precision
    if trains_on_gpu(trainer_cfg):
        import torch

        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    return cpu_precision()


def set_matmul_precision(cfg: DictConfig) -> None:
    """``float32_matmul_precision`` (high: TF32 matmuls and convs) for GPU runs; CPU runs keep
    torch's default, so their fp32 results stay bit-for-bit what they were."""
    import torch

    if trains_on_gpu(cfg.trainer):
        torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "highest")))


def gpu_visible() -> bool:
    """Whether Lightning's ``accelerator: auto`` would pick a GPU (its own checks: NVML-based
    for CUDA, so no CUDA context exists before a fork-based strategy starts)."""
    from lightning.fabric.accelerators import CUDAAccelerator, MPSAccelerator

    return CUDAAccelerator.is_available() or MPSAccelerator.is_available()
