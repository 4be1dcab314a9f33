"""CIFAR ResNet-20 (He et al. 2016, sec. 4.2), open_lth style, plus the layers the conv nets share.

Architecture (open_lth ``models/cifar_resnet.py``, ``cifar_resnet_20``): a 3x3 stem convolution
to :math:`16w` channels, then three stages of three basic blocks with :math:`16w, 32w, 64w`
channels (stride 2 at the first block of stages 2 and 3), global average pooling and a linear
head. A basic block computes

.. math:: y = \\mathrm{ReLU}\\big(N_2(C_2\\,\\mathrm{ReLU}(N_1(C_1 x))) + s(x)\\big),

with :math:`s` the identity, or a strided 1x1 convolution followed by a norm layer when the
shape changes (He et al.'s option B, as open_lth). With ``norm='batchnorm'`` or
``'layernorm'`` the convolutions carry no bias (the norm's shift replaces it); with
``norm='none'`` they do.

Small images: global average pooling makes the network accept any side; inputs with a side
below :attr:`ResNet20.min_side` (= 8, so the last stage still sees a 2x2 map) are zero-padded
centrally to 8 by a parameter-free ``nn.ZeroPad2d`` first layer (see :func:`center_pad`).

Shared building blocks live in :mod:`conelib.models.layers`.

Everything is torch.func friendly: no in-place ops, no data-dependent control flow.
BatchNorm works under ``torch.func.vmap`` only in eval mode (running statistics cannot be
updated under vmap), so compute eNTKs with ``model.eval()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conelib.models.layers import NORMS, ChannelLayerNorm, center_pad, make_norm, scaled

__all__ = ["NORMS", "ChannelLayerNorm", "make_norm", "center_pad", "BasicBlock", "ResNet20"]

class BasicBlock(nn.Module):
    """Basic residual block of He et al. 2016 (two 3x3 convolutions), open_lth style."""

    def __init__(self, f_in: int, f_out: int, stride: int, norm: str) -> None:
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(f_in, f_out, kernel_size=3, stride=stride, padding=1, bias=bias)
        self.norm1 = make_norm(norm, f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, kernel_size=3, stride=1, padding=1, bias=bias)
        self.norm2 = make_norm(norm, f_out)
        if stride != 1 or f_in != f_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(f_in, f_out, kernel_size=1, stride=stride, bias=bias),
                make_norm(norm, f_out),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR-sized images (He et al. 2016; open_lth ``cifar_resnet_20[_16w]``).

    Args:
        input_shape: ``(C, H, W)`` of one image; ``C`` is the stem's input channels.
        num_classes: number of logits.
        width: channel multiplier :math:`w` (stages have 16w, 32w, 64w channels).
        norm: one of :data:`NORMS`.

    Width 1 with BatchNorm on 3x32x32 has 272,474 parameters (about 0.27 M, He et al. Table 6).
    """

    min_side: int = 8

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: float, norm: str) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        bias = norm == "none"
        plan = [scaled(16, width), scaled(32, width), scaled(64, width)]
        self.pad = center_pad(input_shape, self.min_side)
        self.conv = nn.Conv2d(input_shape[0], plan[0], kernel_size=3, stride=1, padding=1, bias=bias)
        self.norm = make_norm(norm, plan[0])
        blocks: list[nn.Module] = []
        f_in = plan[0]
        for stage, f_out in enumerate(plan):
            for index in range(3):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(f_in, f_out, stride, norm))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(plan[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(self.pad(x))))
        out = self.blocks(out)
        out = out.mean(dim=(-2, -1))  # global average pooling
        return self.fc(out)
