"""Training throughput of the full-width recipe nets: a plain PyTorch loop vs cifar_lab's Lightning path.

    python benchmarks/large_throughput.py                                  # all four nets, CPU, fp32, batch 32
    python benchmarks/large_throughput.py --device cuda --bf16 --batch 500 --steps 20 --warmup 5
    python benchmarks/large_throughput.py --models resnet18 --batch 4 --steps 2 --warmup 1 --repeats 1  # smoke

For ResNet-18 (width 64), WRN-16-8, WRN-28-10 (dropout 0.3) and VGG-16 at full width, on one set of
in-memory random tensors (normal images, random labels, ``torch.manual_seed(0)``), at one batch
size and precision, it times the same number of training steps after the same warm-up steps, two ways:

  plain      a hand-written loop: forward, F.cross_entropy, zero_grad(set_to_none=True), backward,
             Nesterov SGD step (lr 0.1, momentum 0.9, weight decay 5e-4 on every parameter);
             channels_last, bf16 autocast around forward and loss with --bf16. Each step's batch is
             gathered from the tensors by a shuffled index, as the device loader does.
  lightning  cifar_lab.training.module.ImageClassifier around the same net and optimizer, trained by
             a bare lightning Trainer (no logger, checkpoints, progress bar, validation) on a
             cifar_lab.data.loader.DeviceLoader over the same tensors; a callback reads the clock at
             the first timed step's on_train_batch_start and the last one's on_train_batch_end.

Both start from the same initial weights (seeded). One untimed plain step per net primes the
process first; then the repeats alternate which way runs first, and the table gives medians. The ratio is plain img/s over lightning img/s, i.e. Lightning's time per
image over the plain loop's (1.00: no overhead). Throughput only, on random data: no accuracy.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from cifar_lab.data.loader import DeviceLoader
from cifar_lab.models import VGG16, ResNet18, WideResNet
from cifar_lab.runtime.hardware import cpu_precision
from cifar_lab.training.module import ImageClassifier

NUM_CLASSES = 10
SGD = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: ResNet18(num_classes=NUM_CLASSES),
    "wrn16_8": lambda: WideResNet(num_classes=NUM_CLASSES, depth=16, width=8),
    "wrn28_10": lambda: WideResNet(num_classes=NUM_CLASSES, depth=28, width=10, dropout=0.3),
    "vgg16": lambda: VGG16(num_classes=NUM_CLASSES),
}
MODEL_SEED = 1


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _quiet_lightning() -> None:
    """No banner lines (GPU/TPU available, ...) and none of the warnings a bare benchmark trips."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in (
        ".*does not have many workers.*",
        ".*log_every_n_steps.*",
        ".*is not a `torch.utils.data.DataLoader`.*",
        ".*Tensor Cores.*",
        ".*max_epochs.*",
        ".*LeafSpec.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    try:
        from lightning.fabric.utilities.warnings import PossibleUserWarning

        warnings.filterwarnings("ignore", category=PossibleUserWarning)
    except ImportError:
        pass


def _build(name: str) -> nn.Module:
    torch.manual_seed(MODEL_SEED)  # both ways start from the same weights
    return MODELS[name]()


def plain_ips(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    warmup: int,
    steps: int,
    bf16: bool,
) -> float:
    """Images/s of ``steps`` steps of the hand-written loop, after ``warmup`` steps."""
    device = images.device
    model = _build(name).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), **SGD)
    model.train()
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    order = torch.randperm(len(images), device=device, generator=gen)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = _sync(device)
        idx = order[i * batch : (i + 1) * batch]
        x = images[idx].contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    elapsed = _sync(device) - start
    return steps * batch / elapsed


class StepClock(pl.Callback):
    """Clock readings around the timed steps: batches ``first`` .. ``last`` of the (single) epoch."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.start: float | None = None
        self.end: float | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.first:
            self.start = _sync(pl_module.device)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.last:
            self.end = _sync(pl_module.device)


def lightning_ips(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    warmup: int,
    steps: int,
    bf16: bool,
) -> float:
    """Images/s of ``steps`` steps of ImageClassifier under a bare Trainer, after ``warmup`` steps."""
    module = ImageClassifier(
        _build(name),
        optimizer=functools.partial(torch.optim.SGD, **SGD),
        scheduler=None,
        num_classes=NUM_CLASSES,
        channels_last=True,
        # the plain loop decays every parameter: one optimizer group either way (the module's
        # default leaves norm weights and biases undecayed, in a second group)
        exclude_norm_and_bias_from_decay=False,
    )
    loader = DeviceLoader(images, labels, batch, shuffle=True, drop_last=True)
    clock = StepClock(warmup, warmup + steps - 1)
    trainer = pl.Trainer(
        accelerator="gpu" if images.device.type == "cuda" else "cpu",
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="bf16-mixed" if bf16 else "32-true",
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=loader)
    if clock.start is None or clock.end is None:
        raise RuntimeError(f"{name}: the timed steps did not all run (global_step={trainer.global_step})")
    return steps * batch / (clock.end - clock.start)


def measure(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    args: argparse.Namespace,
    bf16: bool,
) -> dict[str, Any]:
    """``args.repeats`` runs each way, alternating which goes first."""
    runs: dict[str, list[float]] = {"plain": [], "lightning": []}
    ways = {"plain": plain_ips, "lightning": lightning_ips}
    # one untimed step first: the process's first use of these shapes (allocator growth, oneDNN
    # primitives, cuDNN autotuning) would otherwise land on whichever way runs first
    plain_ips(name, images, labels, args.batch, 0, 1, bf16)
    for repeat in range(args.repeats):
        for way in ("plain", "lightning") if repeat % 2 == 0 else ("lightning", "plain"):
            if args.threads:
                torch.set_num_threads(args.threads)
            ips = ways[way](name, images, labels, args.batch, args.warmup, args.steps, bf16)
            runs[way].append(ips)
            print(f"  {name} repeat {repeat} {way}: {ips:.1f} img/s", flush=True)
    plain, lightning = statistics.median(runs["plain"]), statistics.median(runs["lightning"])
    return {
        "model": name,
        "params": sum(p.numel() for p in _build(name).parameters()),
        "precision": "bf16-mixed" if bf16 else "32-true",
        "plain_ips": plain,
        "lightning_ips": lightning,
        "ratio": plain / lightning,
        "n": args.repeats,
        "runs": runs,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | params | precision | plain img/s | lightning img/s | lightning/plain time per image | n |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['precision']} | {r['plain_ips']:.1f} | "
            f"{r['lightning_ips']:.1f} | {r['ratio']:.3f} | {r['n']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="runs each way (the table gives medians)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA, or a CPU with native bf16)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: pick from {', '.join(MODELS)}")
    if min(args.batch, args.steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch, --steps and --repeats must be positive, --warmup non-negative")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")

    _quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the warm-up steps absorb the autotuning, both ways
    bf16 = args.bf16
    if bf16 and device.type == "cpu" and cpu_precision() != "bf16-mixed":
        print(
            "--bf16 skipped: this CPU has no native bf16 (AVX512-BF16/AMX), autocast would emulate it; measuring fp32"
        )
        bf16 = False

    torch.manual_seed(0)
    n = args.batch * (args.warmup + args.steps)  # one epoch of the loader: no epoch boundary in the run
    images = torch.randn(n, 3, 32, 32, device=device)
    labels = torch.randint(0, NUM_CLASSES, (n,), device=device)

    print(
        f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} warmup={args.warmup} "
        f"steps={args.steps} repeats={args.repeats} precision={'bf16-mixed' if bf16 else '32-true'}",
        flush=True,
    )
    rows = [measure(name, images, labels, args, bf16) for name in names]
    print()
    print(markdown(rows))
    if args.json:
        meta = {
            "device": args.device,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "batch": args.batch,
            "warmup": args.warmup,
            "steps": args.steps,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "lightning": pl.__version__,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
