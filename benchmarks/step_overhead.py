"""Host work per training step: the speed94 recipe through Lightning against the plain loop.

    python benchmarks/step_overhead.py --runs 3 --steps 3000 --batch 16

Both train FastNet at near-zero compute (widths 8/8/8, batch 16) on generated images, so the
step time is almost all host work: Python, hooks, logging, metric updates, checks. On a GPU,
where airbench's whole step takes a few milliseconds, that host work is what decides whether
speed94 through Lightning keeps up with a hand-written loop. Systems are interleaved, one fresh
process per run, and the table reports the median microseconds per step (fit time / steps:
whitening init + training steps, no data loading, no test pass) and the ratio.

  plain    benchmarks/plain_speed94.py: the same recipe and components, a hand-written loop
  speed94  python train.py experiment=speed94 (Lightning, the recipe's callbacks and metrics)
  speed94@compare   the same from another checkout (--compare PATH): before/after a change
  speed94+NAME      speed94 with extra overrides (--variant NAME=OVERRIDES): what a piece costs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark scripts


def _synthetic(images_per_class: int, seed: int = 0):
    from cifar_lab.data.sources import SyntheticSource

    return SyntheticSource(train_per_class=images_per_class, test_per_class=20, seed=seed).load()


def run_plain(args: argparse.Namespace, seed: int) -> dict:
    """The plain loop in a child process (as the Lightning run gets one): fresh allocator, no warm caches."""
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks');"
        "import torch;"
        f"torch.set_num_threads({args.threads});"
        "from plain_speed94 import run_plain_speed94;"
        "from step_overhead import _synthetic;"
        f"r = run_plain_speed94(_synthetic({args.per_class}), epochs={args.epochs(args)}, seed={seed}, bf16={args.bf16},"
        f" widths=({args.widths}), batch_size={args.batch});"
        "print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_lightning(args: argparse.Namespace, seed: int, workdir: Path, extra: list[str], repo: Path = REPO) -> dict:
    """``python train.py experiment=speed94`` of the checkout ``repo`` (its own src/ first on the path)."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    cmd = [
        sys.executable,
        str(repo / "train.py"),
        "experiment=speed94",
        "data=synthetic",
        "trainer=cpu",
        f"data.source.train_per_class={args.per_class}",
        "data.val_size=0",
        f"data.batch_size={args.batch}",
        f"model.widths=[{args.widths}]",
        f"epochs={args.epochs(args)}",
        f"seed={seed}",
        f"cpu_threads={args.threads}",
        "logger=none",
        f"trainer.precision={'bf16-mixed' if args.bf16 else '32-true'}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    from cifar_lab.runtime.run_folder import RunFolder

    return RunFolder(run_dir).read_metrics()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per system (interleaved)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per run")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--widths", default="8,8,8", help="FastNet's three group widths")
    parser.add_argument("--per-class", type=int, default=500, help="generated training images per class (10 classes)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: host work, not thread sync, is measured)"
    )
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="fp32 instead of bf16 autocast")
    parser.add_argument("--lightning-extra", default="", help="extra overrides for the Lightning run, space-separated")
    parser.add_argument(
        "--compare",
        default=None,
        metavar="CHECKOUT",
        help="also run speed94 from another checkout (e.g. a git worktree of the previous commit): before/after",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="also run speed94 with these space-separated overrides, e.g. 'no_log=~callbacks.epoch_log'",
    )
    parser.add_argument("--json", default=None, help="also write the runs and the table here")
    args = parser.parse_args()
    if args.runs < 1 or args.steps < 1:
        parser.error("--runs and --steps must be >= 1")
    steps_per_epoch = args.per_class * 10 // args.batch
    args.epochs = lambda a: round(a.steps / steps_per_epoch, 6)
    extra = args.lightning_extra.split()

    workdir = Path(tempfile.mkdtemp(prefix="cifar_lab_overhead_"))
    results: dict[str, list[dict]] = {"plain": [], "speed94": []}
    if args.compare:
        results["speed94@compare"] = []
    variants = {}
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        if not name or not overrides:
            parser.error(f"--variant {spec!r}: write NAME=OVERRIDES, e.g. no_log=~callbacks.epoch_log")
        variants[f"speed94+{name}"] = overrides.split()
        results[f"speed94+{name}"] = []
    for seed in range(args.runs):  # interleaved: drift hits every system alike
        results["plain"].append(run_plain(args, seed))
        results["speed94"].append(run_lightning(args, seed, workdir, extra))
        if args.compare:
            results["speed94@compare"].append(run_lightning(args, seed, workdir, extra, Path(args.compare).resolve()))
        for name, overrides in variants.items():
            results[name].append(run_lightning(args, seed, workdir, extra + overrides))
        for name in results:
            r = results[name][-1]
            print(
                f"# {name} run {seed}: {1e6 * r['fit_time_s'] / r['steps']:.0f} us/step over {r['steps']} steps",
                flush=True,
            )

    us = {name: statistics.median(1e6 * r["fit_time_s"] / r["steps"] for r in runs) for name, runs in results.items()}
    precision = "bf16" if args.bf16 else "fp32"
    print(
        f"\nFastNet widths {args.widths}, batch {args.batch}, {args.steps} steps, {precision}, "
        f"{args.threads} thread(s), median of {args.runs}\n"
    )
    print("| system | us/step (median) | min | max |\n|---|---|---|---|")
    for name, runs in results.items():
        per = [1e6 * r["fit_time_s"] / r["steps"] for r in runs]
        print(f"| {name} | {us[name]:.0f} | {min(per):.0f} | {max(per):.0f} |")
    print()
    for name in (n for n in results if n != "plain"):
        print(f"{name} / plain: {us[name] / us['plain']:.3f}x; difference {us[name] - us['plain']:.0f} us/step")
    if args.compare:
        print(f"(speed94@compare: {args.compare})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {"args": {k: v for k, v in vars(args).items() if k != "epochs"}, "us_per_step": us, "runs": results},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
