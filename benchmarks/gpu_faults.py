"""The issue-25 checks that need a GPU, in one short script for benchmarks/gpu_run.sh (part faults).

    python benchmarks/gpu_faults.py --cache-dir /tmp/cifar_lab_cache

1. The epoch order that DDP shards cut is the CPU one, for a loader whose images live on the GPU.
2. DeviceWarmup leaves the CUDA generator as it found it, on a net with dropout.
3. module.compile with a mode trains 0.2 epochs of experiment=wrn16_8 (the design card's net) on the GPU.
Prints one line per check (PASS/FAIL and what was compared); exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import torch


def order_is_the_cpu_one() -> tuple[bool, str]:
    from cifar_lab.data.loader import DeviceLoader

    def loader(device: str, rank: int) -> DeviceLoader:
        images = torch.zeros(50_000, 3, 1, 1, device=device)
        labels = torch.zeros(50_000, dtype=torch.long, device=device)
        return DeviceLoader(images, labels, 500, shuffle=True, seed=0, rank=rank, world_size=4)

    same = all(torch.equal(loader("cuda", r).epoch_order(3).cpu(), loader("cpu", r).epoch_order(3)) for r in range(4))
    return same, "4 shards of epoch 3, cuda vs cpu loader"


def warmup_restores_cuda_rng() -> tuple[bool, str]:
    from cifar_lab.models import WideResNet
    from cifar_lab.recipes import device_warmup
    from cifar_lab.training.module import ImageClassifier

    module = ImageClassifier(WideResNet(10, depth=16, width=2, dropout=0.3), torch.optim.SGD, num_classes=10)
    module = module.cuda()
    datamodule = SimpleNamespace(
        batch_size=64, eval_batch_size=64, train_sample=lambda n, device: torch.zeros(n, 3, 32, 32, device=device)
    )
    trainer = SimpleNamespace(
        datamodule=datamodule, world_size=1, precision_plugin=SimpleNamespace(forward_context=nullcontext), callbacks=[]
    )
    type(module).trainer = property(lambda self: trainer)  # this process only builds this one module
    before = torch.cuda.get_rng_state()
    seconds = device_warmup.warm_up_device(module)
    return seconds > 0 and torch.equal(before, torch.cuda.get_rng_state()), f"warm-up took {seconds:.2f} s"


def compiled_run(data: str, cache_dir: str) -> tuple[bool, str]:
    command = [
        sys.executable, "train.py", "experiment=wrn16_8", "trainer=gpu", "logger=none", "callbacks=none",
        "module.compile=max-autotune-no-cudagraphs", "epochs=0.2",
        f"paths.cache_dir={cache_dir}", "hydra.run.dir=/tmp/gpu_faults_compile",
        *(["data=folder", f"data.path={data}"] if data else ["data=synthetic"]),
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    tail = (result.stderr.strip().splitlines() or [""])[-1][:200]
    return (
        result.returncode == 0,
        f"60 compiled steps in {time.perf_counter() - started:.0f} s (rc {result.returncode}) {tail}",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="", help="a data.path for data=folder (default: data=synthetic)")
    parser.add_argument("--cache-dir", default="/tmp/cifar_lab_cache")
    args = parser.parse_args()
    checks = [
        ("shard order", order_is_the_cpu_one),
        ("warm-up RNG", warmup_restores_cuda_rng),
        ("compile mode", lambda: compiled_run(args.data, args.cache_dir)),
    ]
    failed = 0
    for name, check in checks:
        try:
            ok, detail = check()
        except Exception as exc:  # a check that crashes is a failed check; the others still run
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
