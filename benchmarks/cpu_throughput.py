"""Training throughput of FastNet shapes on this CPU: the table behind experiment=cpu90's widths.

    python benchmarks/cpu_throughput.py                       # the candidates cpu90 was chosen from
    python benchmarks/cpu_throughput.py --widths 32,192,192 --batch 256 --fp32
    python benchmarks/cpu_throughput.py --widths 32,192,192 --size 28,32 --frozen-groups 0,1,2
    python benchmarks/cpu_throughput.py --widths 32,192,192 --size 28,32 --compile  # eager vs compiled

One train step = forward + backward + Nesterov SGD step on random data, at the given batch, in
channels_last with bf16 autocast (as trainer=cpu picks where the CPU has native bf16). The
whitening filters are fixed, as in training; ``--frozen-groups K`` also freezes the whitening bias
and the first K conv groups (callbacks.freeze: backward skips them); ``--compile`` adds rows with
the net under torch.compile (the forward that module.compile compiles), and the seconds its first step took (compilation).
Prints a Markdown table of images/s (median of timed steps after warm-up steps). Throughput
only: accuracy at a time budget needs real runs (benchmarks/speed.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from cifar_lab.models import FastNet

CANDIDATES = [
    ((64, 256, 256), 1024),
    ((64, 256, 256), 256),
    ((64, 192, 192), 256),
    ((48, 160, 160), 256),
    ((32, 192, 192), 256),
    ((32, 160, 160), 256),
    ((32, 128, 128), 256),
]


def images_per_s(
    widths: tuple[int, ...],
    batch: int,
    bf16: bool,
    steps: int,
    warmup: int,
    size: int = 32,
    frozen_groups: int = 0,
    compiled: bool = False,
) -> tuple[float, float]:
    """Images/s of the timed steps, and the seconds the first step took."""
    torch.manual_seed(0)
    net = FastNet(num_classes=10, widths=list(widths)).to(memory_format=torch.channels_last)
    forward = torch.compile(net) if compiled else net
    if frozen_groups:
        for p in [net.whiten.bias, *net.layers[:frozen_groups].parameters()]:
            p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.85, nesterov=True)
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times[warmup:]), times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", help="one shape, e.g. 32,192,192 (default: the cpu90 candidates)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--size", default="32", help="image sides, e.g. 28,32 (progressive size trains at both)")
    parser.add_argument("--frozen-groups", default="0", help="conv groups frozen, e.g. 0,1,2 (callbacks.freeze)")
    parser.add_argument("--compile", action="store_true", help="also time the net under torch.compile")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    shapes = [(tuple(int(w) for w in args.widths.split(",")), args.batch)] if args.widths else CANDIDATES
    print(f"threads={torch.get_num_threads()}, {'fp32' if args.fp32 else 'bf16 autocast'}, channels_last\n")
    sizes = [int(v) for v in args.size.split(",")]
    frozen = [int(v) for v in args.frozen_groups.split(",")]
    if any(k not in (0, 1, 2, 3) for k in frozen):
        parser.error(f"--frozen-groups {args.frozen_groups}: each value must be 0..3 (FastNet has 3 conv groups)")
    modes = (False, True) if args.compile else (False,)
    print(
        "| widths | batch | size | frozen groups | compiled | images/s | first step (s) |\n|---|---|---|---|---|---|---|"
    )
    for widths, batch in shapes:
        for size in sizes:
            for k in frozen:
                for compiled in modes:
                    rate, first = images_per_s(widths, batch, not args.fp32, args.steps, args.warmup, size, k, compiled)
                    print(
                        f"| {'/'.join(map(str, widths))} | {batch} | {size} | {k} | {'yes' if compiled else 'no'} "
                        f"| {rate:.0f} | {first:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
