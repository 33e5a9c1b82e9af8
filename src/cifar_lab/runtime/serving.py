"""The net as a server runs it: raw images in, logits and probabilities out, in one graph.

``cifar-lab export`` traces this module, so the exported file needs neither cifar_lab nor the
training statistics beside it: the checkpoint's mean/std, the eval mode and the test-time
augmentation eval scores with are all inside the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifar_lab.recipes.tta import tta_logits
from cifar_lab.runtime.export_spec import INPUT_DTYPES


class ServingModel(nn.Module):
    """(N, 3, H, W) raw images -> (logits, probabilities), each (N, classes), float32.

    The arithmetic is ``data.loader.normalize``'s (scale to [0, 1], subtract the mean, divide by
    the std, in that order, in float32), on NCHW instead of NHWC, so the exported model sees the
    very tensors eval feeds the net. ``tta_level`` is eval's (``recipes.tta``): the views are
    averaged inside the graph. The input dtype and TTA level are fixed when the module is built:
    tracing bakes the branches in.
    """

    def __init__(
        self, net: nn.Module, mean: Sequence[float], std: Sequence[float], input_dtype: str, tta_level: int
    ) -> None:
        super().__init__()
        if input_dtype not in INPUT_DTYPES:
            raise ValueError(f"input_dtype={input_dtype!r} is not one of {INPUT_DTYPES}")
        self.net = net.eval()
        self.scaled = input_dtype == "uint8"
        self.tta_level = int(tta_level)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float()
        if self.scaled:
            x = x / 255.0
        x = (x - self.mean) / self.std
        logits = tta_logits(self.net, x, self.tta_level).float()
        return logits, logits.softmax(-1)
