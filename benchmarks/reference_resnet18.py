"""A plain-PyTorch reference loop for ResNet-18 on CIFAR-10: the yardstick for ``experiment=resnet18``.

    python benchmarks/reference_resnet18.py --data ../shared/data/cifar10-jpeg.tar.gz --epochs 26 --device cuda

It follows the recipe of KellerJordan/cifar10-zoo airbench/baselines/train_resnet18_94.py
(94.04% in 26 epochs, published, official CIFAR-10), written the way a user of that source
would write it: its own model, batching, augmentation, schedule and test pass, and none of
cifar_lab's code (cifar_lab is used only in ``__main__``, to read the JPEG archive).

The recipe:
  * CIFAR ResNet-18 (the kuangliu layout): 3x3 stride-1 stem conv+BN+ReLU, no max-pool, four
    stages of two BasicBlocks at widths ``width * (1, 2, 4, 8)`` with strides 1, 2, 2, 2, a 1x1
    conv+BN projection shortcut where the shape changes, global average pool, linear; PyTorch's
    default init.
  * batch 500, SGD with Nesterov momentum 0.9, lr 0.2 and weight decay 5e-4 on the mean
    cross-entropy (the source's lr/batch on a summed loss), decay on every parameter.
  * per step: lr factor linear from 0.2 at step 0 to 1 at 20% of the steps, then linear to 0 at
    the end (np.interp over [0, 0.2 T, T]).
  * each epoch, on the whole training tensor at once: random horizontal flip (p=0.5), random
    translate by up to 4 px with reflect padding, a 12x12 cutout lying fully inside the image
    (filled with 0, i.e. the mean, after normalization); a fresh shuffle, the last partial batch
    dropped.
  * test: flip TTA (the mean of the logits of the image and its mirror).

``experiment=resnet18`` runs the same recipe through cifar_lab (Lightning, the device loader,
the config); this file is what its accuracy and speed are compared against.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LR = 0.2
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
WARMUP_FRACTION = 0.2
INITIAL_FACTOR = 0.2
TRANSLATE = 4
CUTOUT = 12
EVAL_BATCH = 1000


# -- model -------------------------------------------------------------------------------
class Block(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the (projected where needed) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride == 1 and cin == cout:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x))


class CifarResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        cin = width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            blocks += [Block(cin, cout, 1 if i == 0 else 2), Block(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


# -- data --------------------------------------------------------------------------------
def to_tensor(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalized float32 (N, C, H, W) on ``device``."""
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255)
    return ((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).contiguous()


def flip_half(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(len(x), device=x.device, generator=gen) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """A random crop of the reflect-padded images: every image shifted by up to ``pad`` px per axis.

    One masked copy per shift value and axis (2 * (2 pad + 1) tensor ops), not per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    rows = torch.empty_like(padded[:, :, :h, :])
    for s in range(2 * pad + 1):
        sel = dy == s
        rows[sel] = padded[sel, :, s : s + h, :]
    out = torch.empty_like(x)
    for s in range(2 * pad + 1):
        sel = dx == s
        out[sel] = rows[sel, :, :, s : s + w]
    return out


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image, its top-left uniform over the positions inside."""
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n, 1), device=x.device, generator=gen)
    left = torch.randint(0, w - size + 1, (n, 1), device=x.device, generator=gen)
    r = torch.arange(h, device=x.device).view(1, h)
    c = torch.arange(w, device=x.device).view(1, w)
    in_rows = (r >= top) & (r < top + size)
    in_cols = (c >= left) & (c < left + size)
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return cutout(translate(flip_half(x, gen), TRANSLATE, gen), CUTOUT, gen)


# -- training ----------------------------------------------------------------------------
def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_reference_resnet18(
    arrays: Any,
    *,
    epochs: float,
    width: int = 64,
    device: str = "cpu",
    seed: int = 0,
    bf16: bool = False,
    batch_size: int = 500,
    threads: int | None = None,
) -> dict[str, float | int]:
    """Train and test the recipe once; accuracy and the training clock (data loading excluded)."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # data onto the device (not timed): normalized with the training split's channel statistics
    pixels = arrays.train_images.reshape(-1, arrays.train_images.shape[-1]).astype(np.float64) / 255
    mean = torch.tensor(pixels.mean(0), dtype=torch.float32, device=dev)
    std = torch.tensor(pixels.std(0), dtype=torch.float32, device=dev)
    del pixels
    train_x = to_tensor(arrays.train_images, mean, std, dev)
    train_y = torch.as_tensor(np.asarray(arrays.train_labels), dtype=torch.long, device=dev)
    test_x = to_tensor(arrays.test_images, mean, std, dev)
    test_y = torch.as_tensor(np.asarray(arrays.test_labels), dtype=torch.long, device=dev)

    steps_per_epoch = len(train_x) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_x)} training images make no batch of {batch_size}")
    total_steps = math.ceil(epochs * steps_per_epoch)
    lr_factor = np.interp(
        np.arange(total_steps + 1), [0, WARMUP_FRACTION * total_steps, total_steps], [INITIAL_FACTOR, 1.0, 0.0]
    )

    model = CifarResNet18(int(arrays.num_classes), width).to(dev).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return model(x.contiguous(memory_format=torch.channels_last))

    start = _clock(dev)
    step = 0
    model.train()
    while step < total_steps:
        images = augment(train_x, gen)
        order = torch.randperm(len(images), device=dev, generator=gen)
        for i in range(steps_per_epoch):
            if step >= total_steps:
                break
            idx = order[i * batch_size : (i + 1) * batch_size]
            for group in optimizer.param_groups:
                group["lr"] = LR * float(lr_factor[step])
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(images[idx].contiguous(memory_format=torch.channels_last)), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    fit_end = _clock(dev)

    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=dev)
    with torch.no_grad():
        for i in range(0, len(test_x), EVAL_BATCH):
            x = test_x[i : i + EVAL_BATCH]
            logits = 0.5 * (logits_of(x).float() + logits_of(x.flip(-1)).float())  # flip TTA
            correct += (logits.argmax(1) == test_y[i : i + EVAL_BATCH]).sum()
    acc = correct.item() / len(test_x)
    end = _clock(dev)

    fit_time = fit_end - start
    return {
        "test/acc": acc,
        "train_time_s": end - start,
        "fit_time_s": fit_time,
        "steps": step,
        "images_per_s": step * batch_size / fit_time if fit_time > 0 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an image-folder archive of CIFAR-10 (e.g. cifar10-jpeg.tar.gz)")
    parser.add_argument("--cache-dir", default=None, help="where the decoded arrays are cached")
    parser.add_argument("--epochs", type=float, default=26.0)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast around forward and loss")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    # reading the JPEG archive is data loading, not the recipe: the one use of cifar_lab here
    from cifar_lab.data.sources import ImageFolderSource

    arrays = ImageFolderSource(args.data, cache_dir=args.cache_dir).load()
    result = run_reference_resnet18(
        arrays,
        epochs=args.epochs,
        width=args.width,
        device=args.device,
        seed=args.seed,
        bf16=args.bf16,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
