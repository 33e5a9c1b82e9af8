"""FastNet: the airbench94 network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds").

Layout: whitening conv (k x k, no padding) -> GELU -> 3 conv groups -> global max pool -> Linear -> x1/9.
Faithful to airbench94 except where noted:

* BatchNorm ``momentum`` uses airbench's convention (the fraction of the old running statistic
  that is *kept*); torch's ``momentum`` is the fraction *replaced*, so we pass ``1 - momentum``.
  airbench's 0.6 therefore becomes torch momentum 0.4, with eps 1e-12.
* BatchNorm weights are frozen at 1 and only the biases train: a per-channel scale right before
  a GELU is redundant with the next conv's scale, and freezing it removes that degree of freedom
  (airbench trains the biases with a 64x larger lr; that is the optimizer's job, and the BN
  parameters live under names containing "norm" so it can find them as airbench does).
* The whitening conv's weight is frozen (``requires_grad=False``): it is set from data by
  ``cifar_lab.recipes.whitening.init_whitening`` and acts as fixed preprocessing; its bias
  trains (airbench trains it for the first 3 epochs only, then freezes it; that schedule is
  ``recipes.whitening.FreezeWhiteningBias``'s job, ``whiten_bias_trainable`` only sets the starting state).
* No half precision / channels_last here: precision is the trainer's choice.
"""

from __future__ import annotations

import torch
from torch import nn

from cifar_lab.errors import ConfigError
from cifar_lab.models._checks import (
    check_bool,
    check_float,
    check_int,
    check_int_list,
    check_num_classes,
)


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with airbench's momentum convention and the scale (weight) frozen at 1."""

    def __init__(self, num_features: int, momentum: float = 0.6, eps: float = 1e-12) -> None:
        super().__init__(num_features, eps=eps, momentum=1.0 - momentum)
        self.weight.requires_grad_(False)


class DiracConv(nn.Conv2d):
    """3x3 'same' conv without bias; optionally identity-initialised.

    With ``dirac=True`` the first ``in_channels`` filters start as the identity (as in airbench),
    an implicit residual connection that lets a plain (non-residual) stack train fast.
    """

    def __init__(self, in_channels: int, out_channels: int, dirac: bool = True) -> None:
        self._dirac = dirac  # read by reset_parameters, which nn.Conv2d.__init__ calls
        super().__init__(in_channels, out_channels, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "_dirac", False):
            w = self.weight.data
            torch.nn.init.dirac_(w[: w.size(1)])


class ConvGroup(nn.Module):
    """conv -> pool -> BN -> GELU -> conv -> BN -> GELU (pooling before BN, as airbench).

    With ``residual=True`` (airbench96) a third conv follows and the last two convs form a
    residual branch: ``x + BN(conv3(GELU(BN(conv2(x)))))``, then GELU after the sum.
    """

    def __init__(
        self,
        channels_in: int,
        channels_out: int,
        momentum: float,
        eps: float,
        dirac: bool,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = DiracConv(channels_in, channels_out, dirac)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(channels_out, momentum, eps)
        self.conv2 = DiracConv(channels_out, channels_out, dirac)
        self.norm2 = FrozenScaleBatchNorm(channels_out, momentum, eps)
        self.residual = residual
        if residual:
            self.conv3 = DiracConv(channels_out, channels_out, dirac)
            self.norm3 = FrozenScaleBatchNorm(channels_out, momentum, eps)
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        if not self.residual:
            return self.activ(self.norm2(self.conv2(x)))
        branch = self.norm3(self.conv3(self.activ(self.norm2(self.conv2(x)))))
        return self.activ(x + branch)


class FastNet(nn.Module):
    """airbench94's net; 1,972,792 parameters at the defaults and 10 classes.

    ``residual=True`` with ``widths=(128, 512, 512)`` is airbench96's net (10 convs).

    ``self.whiten`` is the patch-whitening conv (``2 * 3 * kernel_size**2`` output channels:
    each whitened direction with both signs, so the following GELU keeps all information).
    Call ``init_whitening(model.whiten, train_images)`` before training; until then it holds
    the default conv init.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        widths: list[int] | tuple[int, ...] = (64, 256, 256),
        kernel_size: int = 2,
        batchnorm_momentum: float = 0.6,
        batchnorm_eps: float = 1e-12,
        scaling_factor: float = 1 / 9,
        dirac_init: bool = True,
        whiten_bias_trainable: bool = True,
        residual: bool = False,
    ) -> None:
        super().__init__()
        name = "FastNet"
        k = check_num_classes(num_classes, name)
        w = check_int_list(widths, "widths", name, length=3)
        ks = check_int(kernel_size, "kernel_size", name, minimum=1)
        if ks > 9:  # keeps airbench's 3x3 map before the head pool at 32x32
            raise ConfigError(
                f"model.kernel_size={ks} is invalid for FastNet: the whitening kernel must be 1..9 "
                "so 32x32 inputs still reach the 3x3 head (airbench uses 2)"
            )
        momentum = check_float(batchnorm_momentum, "batchnorm_momentum", name, 0.0, 1.0, high_open=True)
        eps = check_float(batchnorm_eps, "batchnorm_eps", name, 0.0, 1.0, low_open=True)
        self.scaling_factor = check_float(
            scaling_factor, "scaling_factor", name, 0.0, float("inf"), low_open=True, high_open=True
        )
        dirac = check_bool(dirac_init, "dirac_init", name)
        check_bool(whiten_bias_trainable, "whiten_bias_trainable", name)
        res = check_bool(residual, "residual", name)

        self.num_classes = k
        whiten_width = 2 * 3 * ks * ks
        self.whiten = nn.Conv2d(3, whiten_width, kernel_size=ks, padding=0, bias=True)
        nn.init.zeros_(self.whiten.bias)  # airbench zeroes it; the whitening recipe keeps it at 0
        self.whiten.weight.requires_grad_(False)
        self.whiten.bias.requires_grad_(whiten_bias_trainable)
        self.activ = nn.GELU()
        self.layers = nn.Sequential(
            ConvGroup(whiten_width, w[0], momentum, eps, dirac, res),
            ConvGroup(w[0], w[1], momentum, eps, dirac, res),
            ConvGroup(w[1], w[2], momentum, eps, dirac, res),
        )
        # airbench's MaxPool(3) over the 3x3 map that 32x32 (and 28x28) inputs reach; a global
        # max is the same there and also takes the smaller maps of progressive-size crops
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(w[2], k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.activ(self.whiten(x)))
        # Scaling the logits down (1/9) acts like a lower head learning rate / temperature that
        # airbench found helps with its very high learning rate.
        return self.head(self.flatten(self.pool(x))) * self.scaling_factor
