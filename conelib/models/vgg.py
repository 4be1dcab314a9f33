"""CIFAR VGG-16 (Simonyan & Zisserman 2015), as in open_lth ``models/cifar_vgg.py`` (``cifar_vgg_16``).

Plan (numbers are output channels times the width :math:`w`, ``M`` a 2x2 max-pool)::

    64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512

Each number is a 3x3 convolution (padding 1, with bias, as open_lth), a norm layer and a ReLU.
open_lth then applies ``AvgPool2d(2)`` to the 2x2 map that a 32x32 image has become and a
linear layer :math:`512 \\to` classes; here the pooling is a global average over the spatial
axes, which is the same operation on 32x32 inputs and keeps the linear head
:math:`512w \\to` classes valid for larger images.

Small images: the four max-pools take 32 to 2 and open_lth's final 2x2 average pool to 1, so
:attr:`VGG16.min_side` is 32. A smaller input (a 28x28 MNIST digit, an 8x8 scikit-learn digit)
is zero-padded centrally to 32x32 by a parameter-free ``nn.ZeroPad2d`` first layer (see
:func:`conelib.models.resnet.center_pad`). The number of input channels is ``input_shape[0]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conelib.models.layers import NORMS, center_pad, make_norm, scaled

__all__ = ["VGG16_PLAN", "ConvModule", "VGG16"]

VGG16_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)


class ConvModule(nn.Module):
    """3x3 convolution (padding 1, bias) -> norm -> ReLU."""

    def __init__(self, f_in: int, f_out: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, kernel_size=3, padding=1)
        self.norm = make_norm(norm, f_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class VGG16(nn.Module):
    """VGG-16 for CIFAR-sized images (open_lth ``cifar_vgg_16``).

    Args:
        input_shape: ``(C, H, W)`` of one image.
        num_classes: number of logits.
        width: channel multiplier :math:`w` (64w ... 512w channels).
        norm: one of :data:`conelib.models.resnet.NORMS`.
    """

    min_side: int = 32

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: float, norm: str) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.pad = center_pad(input_shape, self.min_side)
        layers: list[nn.Module] = []
        f_in = input_shape[0]
        for spec in VGG16_PLAN:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                f_out = scaled(int(spec), width)
                layers.append(ConvModule(f_in, f_out, norm))
                f_in = f_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(f_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.pad(x))
        x = x.mean(dim=(-2, -1))  # global average pooling (= open_lth's AvgPool2d(2) on 32x32 inputs)
        return self.fc(x)
