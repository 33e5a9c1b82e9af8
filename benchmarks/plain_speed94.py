"""The speed94 recipe as a plain PyTorch loop: the yardstick for Lightning's overhead.

Same components as ``experiment=speed94`` (FastNet, the device loader, whitening init,
decoupled SGD, the schedule, Lookahead, TTA), no Lightning: a hand-written loop in the
style of airbench, so the two differ only in who runs the loop.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from cifar_lab.data.loader import AugmentSpec, DeviceLoader, normalize
from cifar_lab.data.split import stratified_sample
from cifar_lab.models import FastNet
from cifar_lab.recipes.tta import tta_logits
from cifar_lab.recipes.whitening import init_whitening
from cifar_lab.training.optim import apply_lr_scales, decoupled_sgd, param_groups, warmup_linear_decay


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def run_plain_speed94(
    arrays,
    epochs: float = 9.9,
    device: str = "cpu",
    seed: int = 0,
    bf16: bool = True,
    widths: tuple[int, int, int] = (64, 256, 256),
    batch_size: int = 1024,
) -> dict[str, float]:
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = True  # as trainer=gpu does for the Lightning run
    dev = torch.device(device)
    train_u8 = torch.from_numpy(arrays.train_images).to(dev)
    pixels = train_u8.reshape(-1, 3).double() / 255
    mean, std = pixels.mean(0).float(), pixels.std(0).float()
    train_x = normalize(train_u8, mean, std)
    train_y = torch.from_numpy(arrays.train_labels).long().to(dev)
    test_x = normalize(torch.from_numpy(arrays.test_images).to(dev), mean, std)
    test_y = torch.from_numpy(arrays.test_labels).long().to(dev)

    loader = DeviceLoader(
        train_x,
        train_y,
        batch_size,
        shuffle=True,
        drop_last=True,
        seed=seed,
        augment_spec=AugmentSpec(flip="alternating", translate=2),
    )
    total_steps = math.ceil(epochs * len(loader))
    net = FastNet(num_classes=arrays.num_classes, widths=list(widths)).to(dev).to(memory_format=torch.channels_last)
    optimizer = decoupled_sgd(
        param_groups(net, False, 64.0), lr=11.5, momentum=0.85, weight_decay=0.0153, batch_size=batch_size
    )
    apply_lr_scales(optimizer)
    scheduler = warmup_linear_decay(optimizer, total_steps, warmup_fraction=0.23, initial_factor=0.2, final_factor=0.07)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.2)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return net(x.contiguous(memory_format=torch.channels_last))

    start = _sync(dev)
    # 5000 images from every class alike, as experiment=speed94 draws them (the folder source stores classes in order)
    init_whitening(net.whiten, train_x[torch.from_numpy(stratified_sample(arrays.train_labels, 5000, seed))])
    average = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    def pull(decay: float) -> None:
        with torch.no_grad():
            for name, tensor in net.state_dict().items():
                if name in average:
                    average[name].lerp_(tensor, 1 - decay)
                    tensor.copy_(average[name])

    step = 0
    for epoch in range(math.ceil(epochs)):
        net.whiten.bias.requires_grad_(epoch < 3)
        net.train()
        for images, labels in loader:
            loss = criterion(forward(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step >= total_steps:
                pull(1.0)
                break
            if step % 5 == 0:
                pull(0.95**5 * (step / total_steps) ** 3)
        if step >= total_steps:
            break
    fit_end = _sync(dev)
    net.eval()
    with torch.no_grad():
        logits = torch.cat([tta_logits(forward, x, 2).float() for x in test_x.split(2000)])
    end = _sync(dev)
    return {
        "test/acc": (logits.argmax(1) == test_y).float().mean().item(),
        "train_time_s": end - start,
        "fit_time_s": fit_end - start,
        "steps": step,
    }
