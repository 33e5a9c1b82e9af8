"""Side-by-side speed benchmark: prints a Markdown table and writes JSON.

    python benchmarks/speed.py --data ../shared/data/cifar10-jpeg.tar.gz --device cpu --runs 3

Compares, on the same data and machine, in one process tree:
  seed      the seed document's loop as written (DataLoader, per-image transforms, batch 32)
  exp_seed  `python train.py experiment=seed` (same net and optimizer, in-memory loader), in
            fp32 NCHW as the seed loop computes
  exp_seed_bf16  the same with trainer=cpu/gpu's precision (bf16 where the CPU has it) and
            channels_last: the precision gain as its own row
  plain94   the speed94 recipe as a plain PyTorch loop (benchmarks/plain_speed94.py)
  speed94   `python train.py experiment=speed94` (the same recipe through Lightning)
  cpu90     `python train.py experiment=cpu90` (the CPU recipe, at its own length)
  airbench  airbench94 from the `airbench` package, when importable (GPU only)
  ref_resnet18   the ResNet-18 recipe of KellerJordan/cifar10-zoo as a plain PyTorch loop
            (benchmarks/reference_resnet18.py: its own model, batching and augmentation)
  resnet18  `python train.py experiment=resnet18` (the same recipe through cifar_lab), and each
            piece as its own row on top of it: resnet18_ema (module.ema_decay),
            resnet18_ta (data.policy=trivialaugment), resnet18_mix (MixUp and CutMix)
            (all at --width and --large-epochs)

The CPU table of experiment=resnet18 vs the reference loop at a reduced width (2 cores):

    python benchmarks/speed.py --data ../shared/data/cifar10-jpeg.tar.gz --device cpu --runs 3 \
        --systems ref_resnet18,resnet18,resnet18_ema,resnet18_ta,resnet18_mix --width 16 --large-epochs 2 \
        --json benchmarks/results/resnet18_cpu.json

The CPU table of experiment=cpu90 vs speed94 vs seed (2 cores, shared JPEG copy):

    python benchmarks/speed.py --data ../shared/data/cifar10-jpeg.tar.gz --device cpu --runs 3 \
        --systems cpu90,speed94,exp_seed --speed-epochs 5 --json benchmarks/results/cpu90_cpu.json

Times are each system's own training clock (init + training + final test pass, data loading
excluded, as airbench counts). Report medians and ratios: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# experiment=resnet18, and each piece as a row of its own on top of it (same length and width);
# resnet18_ema's decay is --ema-decay (the recipe's own default is no EMA)
LARGE_ROWS = {
    "resnet18": [],
    "resnet18_ema": [],
    "resnet18_ta": ["data.policy=trivialaugment"],
    "resnet18_mix": ["module.mixup_alpha=1.0", "module.cutmix_alpha=1.0"],
}
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark scripts

SYSTEMS = (
    "seed",
    "exp_seed",
    "exp_seed_bf16",
    "plain94",
    "speed94",
    "cpu90",
    "airbench",
    "ref_resnet18",
    *LARGE_ROWS,
)
# the seed loop computes in fp32 with NCHW tensors: exp_seed does too, so the two differ only in
# the loader and the loop; exp_seed_bf16 is experiment=seed as trainer=cpu/gpu runs it (bf16
# autocast where the CPU has it, channels_last), the precision gain as its own row
FP32_NCHW = ["trainer.precision=32-true", "module.channels_last=false"]


def load_arrays(data: str, cache_dir: str | None):
    from cifar_lab.data.sources import ImageFolderSource

    return ImageFolderSource(data, cache_dir=cache_dir).load()


def run_train_py(overrides: list[str], workdir: Path) -> dict:
    """One `python train.py ...` run in a fresh process; its metrics.json."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    cmd = [sys.executable, str(REPO / "train.py"), *overrides, f"hydra.run.dir={run_dir}", "logger=none"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    from cifar_lab.runtime.run_folder import RunFolder

    return RunFolder(run_dir).read_metrics()


def run_airbench(arrays, device: str, seed: int, workdir: Path, warmup: bool) -> dict:
    """airbench94 on our decoded arrays (it reads cifar10/{train,test}.pt from its cwd)."""
    import airbench
    import numpy as np
    import torch

    data_dir = workdir / "cifar10"
    if not (data_dir / "test.pt").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # the official files' mixed order (a fixed shuffle), not the folder source's class order:
        # airbench's whitening init takes the first 5000 training images
        order = np.random.default_rng(0).permutation(len(arrays.train_labels))
        train = (arrays.train_images[order], arrays.train_labels[order])
        for split, images, labels in (("train", *train), ("test", arrays.test_images, arrays.test_labels)):
            torch.save(
                {
                    "images": torch.from_numpy(images),
                    "labels": torch.from_numpy(labels),
                    "classes": list(arrays.classes),
                },
                data_dir / f"{split}.pt",
            )
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        torch.manual_seed(seed)
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        # built outside the clock: data loading is not training time, for either system
        train_loader = airbench.CifarLoader(
            "cifar10", train=True, batch_size=1024, aug={"flip": True, "translate": 2}, altflip=True
        )
        if warmup:  # the first airbench run of this process
            airbench.warmup94(train_loader=train_loader, verbose=False)  # cudnn autotune, kernel loads
        torch.cuda.synchronize()
        start = time.perf_counter()
        model = airbench.train94(train_loader=train_loader, verbose=False)
        acc = airbench.evaluate(model, test_loader, tta_level=2)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        # train94 also builds its net and loads the test file from disk inside that clock;
        # speed94's clock has neither, so time them alone and take them out
        setup = _airbench_setup_seconds(airbench)
        return {"test/acc": acc, "train_time_s": wall - setup, "wall_s": wall, "setup_s": setup}
    finally:
        os.chdir(cwd)


def _airbench_setup_seconds(airbench, repeats: int = 3) -> float:
    """Median seconds of what train94 does besides training: make_net94() and the test loader."""
    import torch

    if not hasattr(airbench, "make_net94"):
        print(
            "this airbench has no make_net94: its time includes building the net and the test loader", file=sys.stderr
        )
        return 0.0
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        airbench.make_net94()
        airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def summarize(name: str, runs: list[dict]) -> dict:
    accs = [r["test/acc"] for r in runs]
    times = [r["train_time_s"] for r in runs]
    out = {
        "system": name,
        "n": len(runs),
        "acc_mean": statistics.mean(accs),
        "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "time_median_s": statistics.median(times),
        "runs": runs,
    }
    if all("fit_time_s" in r and "steps" in r for r in runs):
        out["s_per_step_median"] = statistics.median(r["fit_time_s"] / max(r["steps"], 1) for r in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder/archive of train/<class>, test/<class> images")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=3, help="seeds per system")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds are first-seed .. first-seed+runs-1 (extend an earlier sample with fresh seeds)",
    )
    parser.add_argument(
        "--systems", default="seed,exp_seed,plain94,speed94,airbench", help=f"comma-separated, from {','.join(SYSTEMS)}"
    )
    parser.add_argument("--seed-epochs", type=int, default=10, help="epochs of the seed loop / experiment=seed")
    parser.add_argument("--speed-epochs", type=float, default=9.9, help="epochs of plain94 / speed94")
    parser.add_argument("--width", type=int, default=16, help="ResNet-18 base width of ref_resnet18 / resnet18*")
    parser.add_argument("--large-epochs", type=float, default=26, help="epochs of ref_resnet18 / resnet18*")
    parser.add_argument("--ema-decay", type=float, default=0.99, help="module.ema_decay of resnet18_ema")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default="benchmarks/results/speed.json")
    args = parser.parse_args()

    if args.runs < 1 or args.first_seed < 0:
        parser.error(f"--runs must be >= 1 and --first-seed >= 0 (got {args.runs}, {args.first_seed})")
    seeds = list(range(args.first_seed, args.first_seed + args.runs))
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    data = str(Path(args.data).resolve())
    arrays = load_arrays(data, args.cache_dir)
    workdir = Path(tempfile.mkdtemp(prefix="cifar_lab_bench_"))
    trainer = "trainer=gpu" if args.device == "cuda" else "trainer=cpu"
    common = ["data=folder", f"data.path={data}", trainer] + (
        [f"paths.cache_dir={args.cache_dir}"] if args.cache_dir else []
    )

    if "airbench" in systems:
        try:
            import airbench  # noqa: F401
        except ImportError:
            print("airbench is not importable (pip install airbench): skipping it", file=sys.stderr)
            systems.remove("airbench")
        if args.device != "cuda" and "airbench" in systems:
            print("airbench94 needs a CUDA GPU: skipping it", file=sys.stderr)
            systems.remove("airbench")

    from cifar_lab.runtime.hardware import cpu_precision

    # the precision trainer=gpu / trainer=cpu picks, so the plain loop computes alike
    bf16 = args.device == "cuda" or cpu_precision() == "bf16-mixed"
    results: dict[str, list[dict]] = {s: [] for s in systems}
    partial = Path(args.json).with_suffix(".partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    for seed in seeds:  # interleave systems so drift hits all alike
        for system in systems:
            if system == "seed":
                from seed_loop import run_seed_loop

                r = run_seed_loop(arrays, epochs=args.seed_epochs, device=args.device, seed=seed)
            elif system == "exp_seed":
                r = run_train_py(
                    ["experiment=seed", *common, *FP32_NCHW, f"seed={seed}", f"trainer.max_epochs={args.seed_epochs}"],
                    workdir,
                )
            elif system == "exp_seed_bf16":
                r = run_train_py(
                    ["experiment=seed", *common, f"seed={seed}", f"trainer.max_epochs={args.seed_epochs}"], workdir
                )
            elif system == "plain94":
                from plain_speed94 import run_plain_speed94

                r = run_plain_speed94(arrays, epochs=args.speed_epochs, device=args.device, seed=seed, bf16=bf16)
            elif system == "speed94":
                r = run_train_py(
                    ["experiment=speed94", *common, f"seed={seed}", f"epochs={args.speed_epochs}"], workdir
                )
            elif system == "cpu90":
                r = run_train_py(["experiment=cpu90", *common, f"seed={seed}"], workdir)
            elif system == "ref_resnet18":
                from reference_resnet18 import run_reference_resnet18

                r = run_reference_resnet18(
                    arrays, epochs=args.large_epochs, width=args.width, device=args.device, seed=seed, bf16=bf16
                )
            elif system in LARGE_ROWS:
                size = [f"model.width={args.width}", f"epochs={args.large_epochs}", f"seed={seed}"]
                ema = [f"module.ema_decay={args.ema_decay}"] if system == "resnet18_ema" else []
                r = run_train_py(["experiment=resnet18", *common, *size, *LARGE_ROWS[system], *ema], workdir)
            else:
                r = run_airbench(arrays, args.device, seed, workdir, warmup=seed == seeds[0])
            r = {
                "seed": seed,
                **{k: r[k] for k in ("test/acc", "train_time_s", "fit_time_s", "steps", "wall_s", "setup_s") if k in r},
            }
            print(f"# {system} seed={seed}: acc={r['test/acc']:.4f} time={r['train_time_s']:.2f}s", flush=True)
            results[system].append(r)
            partial.write_text(json.dumps(results, indent=2))  # a long run's finished jobs survive a crash

    summary = [summarize(s, rs) for s, rs in results.items() if rs]
    by_name = {s["system"]: s for s in summary}
    print(f"\n{args.device}, data={Path(data).name}, n={args.runs} seeds each ({seeds[0]}..{seeds[-1]})\n")
    print("| system | n | test acc (mean ± std) | median time (s) | median s/step |")
    print("|---|---|---|---|---|")
    for s in summary:
        step = f"{s['s_per_step_median']:.4f}" if "s_per_step_median" in s else "-"
        print(
            f"| {s['system']} | {s['n']} | {100 * s['acc_mean']:.2f} ± {100 * s['acc_std']:.2f}% | {s['time_median_s']:.2f} | {step} |"
        )
    ratios = {}
    for slow, fast in (
        ("seed", "exp_seed"),
        ("exp_seed", "exp_seed_bf16"),
        ("plain94", "speed94"),
        ("airbench", "speed94"),
        ("speed94", "cpu90"),
        ("exp_seed", "cpu90"),
        ("ref_resnet18", "resnet18"),
        *(("resnet18", row) for row in LARGE_ROWS if row != "resnet18"),
    ):
        if slow in by_name and fast in by_name:
            ratios[f"{fast}/{slow} time"] = by_name[fast]["time_median_s"] / by_name[slow]["time_median_s"]
            if "s_per_step_median" in by_name[fast] and "s_per_step_median" in by_name[slow]:
                ratios[f"{fast}/{slow} s/step"] = (
                    by_name[fast]["s_per_step_median"] / by_name[slow]["s_per_step_median"]
                )
    if ratios:
        print("\n| ratio | value |\n|---|---|")
        for k, v in ratios.items():
            print(f"| {k} | {v:.3f} |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "device": args.device,
                "data": Path(data).name,
                "runs": args.runs,
                "seeds": seeds,
                "summary": summary,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
