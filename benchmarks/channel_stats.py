"""Normalization statistics of a training split: the float64 copy they were computed from before,
against the per-channel histograms of ``cifar_lab.data.datamodule.channel_stats``.

    python benchmarks/channel_stats.py --runs 3   # 45,000 random 32x32 RGB images, like CIFAR-10's split

Each method runs in its own process (peak RSS is per process); the table gives seconds and the
peak host memory above the images themselves, and whether the float32 results are equal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import numpy as np, torch
from cifar_lab.data.datamodule import channel_stats
images = np.random.default_rng(0).integers(0, 256, size=(int(sys.argv[2]), 32, 32, 3), dtype=np.uint8)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if sys.argv[1] == "float64 copy":
    pixels = torch.from_numpy(images).reshape(-1, 3).double() / 255.0
    mean, std = pixels.mean(0), pixels.std(0)
else:
    mean, std = (torch.as_tensor(v) for v in channel_stats(images))
seconds = time.perf_counter() - started
extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({"s": seconds, "mb": extra_mb, "stats": mean.float().tolist() + std.float().tolist()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=45_000)
    args = parser.parse_args()
    rows, stats = {}, {}
    for _ in range(args.runs):
        for method in ("float64 copy", "histograms"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, method, str(args.images)], capture_output=True, text=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.setdefault(method, []).append(result)
            stats[method] = result["stats"]
    print(f"| method | seconds (median of {args.runs}) | extra peak RSS (MB) | float32 stats equal |")
    print("|---|---|---|---|")
    for method, results in rows.items():
        seconds = statistics.median(r["s"] for r in results)
        mb = statistics.median(r["mb"] for r in results)
        print(f"| {method} | {seconds:.2f} | {mb:.0f} | {stats[method] == stats['float64 copy']} |")


if __name__ == "__main__":
    main()
