"""Which timm architectures suit 32x32 CIFAR images: does a 32x32 forward work, what feature map is
left at the end, how many parameters, and a rough training throughput.

    python benchmarks/timm_models.py                          # the default list, CPU, fp32, batch 64, 1 thread
    python benchmarks/timm_models.py --models resnet18,test_vit --steps 1

Each net is built as ``model=timm`` builds it (cifar_lab.models.timm_model: from scratch, 10 classes,
the extra arguments shown in the table), next to our CIFAR ResNet-18 (``model=resnet18``) for scale.
"final features" is ``forward_features`` on one 32x32 image: C x H x W for a conv net (H x W is
what the stem and stages left of the 32x32 input), tokens x width for a ViT. "img/s" times
``--steps`` training steps (forward, cross-entropy, backward, SGD step) at batch ``--batch`` after
one untimed step, on random tensors, fp32, one torch thread by default (on a shared machine two
threads spin-wait on each other at every small op: efficientnet_b0 ran 2 img/s so), ``torch.manual_seed(0)``:
throughput only, no accuracy, and rough on a shared machine. A net that fails at 32x32 shows the first line of its error.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifar_lab.errors import CifarLabError, one_line
from cifar_lab.models import ResNet18, timm_model
from cifar_lab.runtime.hardware import cpu_precision

VIT_32 = {"img_size": 32, "patch_size": 4}
# (name, the extra timm.create_model arguments: what +model.KEY=VALUE would pass)
DEFAULT_MODELS: list[tuple[str, dict[str, Any]]] = [
    ("resnet18", {}),
    ("resnet50", {}),
    ("efficientnet_b0", {}),
    ("mobilenetv3_small_100", {}),
    ("convnext_atto", {}),
    ("convnext_nano", {}),
    ("regnety_002", {}),
    ("vit_tiny_patch16_224", VIT_32),
    ("swin_tiny_patch4_window7_224", {}),
    ("swin_tiny_patch4_window7_224", {"img_size": 32, "window_size": 4}),
    ("inception_v3", {}),
]
NUM_CLASSES = 10


def _features(net: nn.Module) -> str:
    """The shape before pooling: timm's forward_features, or what our ResNet-18's last stage outputs."""
    seen: list[torch.Size] = []
    with torch.no_grad():
        if hasattr(net, "forward_features"):
            seen.append(net.eval().forward_features(torch.zeros(1, 3, 32, 32)).shape)
        else:
            hook = net.layer4.register_forward_hook(lambda module, args, out: seen.append(out.shape))
            net.eval()(torch.zeros(1, 3, 32, 32))
            hook.remove()
    return "x".join(str(d) for d in seen[0][1:])


def _images_per_s(net: nn.Module, batch: int, steps: int) -> float:
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, NUM_CLASSES, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()

    step()  # untimed: allocations, oneDNN primitive creation
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def measure(name: str, kwargs: dict[str, Any], batch: int, steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    row: dict[str, Any] = {"model": name, "args": " ".join(f"{k}={v}" for k, v in kwargs.items()) or "-"}
    try:
        net = (
            ResNet18(num_classes=NUM_CLASSES)
            if name == "ours:resnet18"
            else timm_model(NUM_CLASSES, name=name, **kwargs)
        )
        row["params_M"] = sum(p.numel() for p in net.parameters()) / 1e6
        with torch.no_grad():
            net.eval()(torch.zeros(2, 3, 32, 32))
        row["features"], row["img_s"] = _features(net), _images_per_s(net, batch, steps)
    except (CifarLabError, RuntimeError, ValueError, AssertionError) as err:
        row["error"] = one_line(err, limit=90)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated timm names (default: the built-in list)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per net")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine, no OpenMP spin-waits)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    known = dict(DEFAULT_MODELS)
    models = [(n, known.get(n, {})) for n in args.models.split(",")] if args.models else DEFAULT_MODELS
    if not args.models:
        models = [("ours:resnet18", {}), *models]
    print(f"CPU fp32, batch {args.batch}, {args.steps} timed steps, {torch.get_num_threads()} torch threads")
    print(f"bf16 on this CPU: {'yes' if cpu_precision() == 'bf16-mixed' else 'no (no avx512_bf16/amx_bf16)'}\n")
    print("| model | extra args | params (M) | final features at 32x32 | train img/s |")
    print("|---|---|---:|---|---:|")
    for name, kwargs in models:
        row = measure(name, kwargs, args.batch, args.steps)
        if "error" in row:
            print(f"| {name} | {row['args']} | {row.get('params_M', 0):.2f} | fails: {row['error']} | - |", flush=True)
        else:
            print(
                f"| {name} | {row['args']} | {row['params_M']:.2f} | {row['features']} | {row['img_s']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
