"""The LeNet models: open_lth's 300-100 MLP and the convolutional LeNet-5 (LeCun et al. 1998).

* :class:`LeNet300100` is what open_lth calls ``mnist_lenet_300_100`` (Frankle & Carbin 2019,
  the "LeNet" of the paper's MNIST experiments): flatten, then
  :math:`d \\to 300w \\to \\mathrm{ReLU} \\to 100w \\to \\mathrm{ReLU} \\to K` with
  :math:`d = C H W`. It takes images of any shape and never pads.
* :class:`LeNet5` is the modern ReLU/max-pool reading of LeCun et al.'s LeNet-5:
  conv 5x5 (:math:`C \\to 6w`, padding 2) -> ReLU -> max-pool 2 -> conv 5x5
  (:math:`6w \\to 16w`) -> ReLU -> max-pool 2 -> flatten -> :math:`120w` -> ReLU -> :math:`84w`
  -> ReLU -> :math:`K`. On a side :math:`s` the feature map ends at
  :math:`\\lfloor(\\lfloor s/2\\rfloor - 4)/2\\rfloor` (5 for :math:`s = 28`, giving the classic
  :math:`16 \\cdot 5 \\cdot 5 = 400` features), which is at least 1 only for :math:`s \\ge 12`:
  :attr:`LeNet5.min_side` is 12 and smaller images (8x8 scikit-learn digits) are zero-padded
  centrally to 12 by a parameter-free ``nn.ZeroPad2d`` first layer.

Neither model has a normalisation layer (their only allowed ``norm`` is ``'none'``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from conelib.models.layers import center_pad, scaled

__all__ = ["LeNet300100", "LeNet5", "lenet5_feature_side"]


class LeNet300100(nn.Module):
    """Fully-connected LeNet-300-100 (open_lth ``mnist_lenet_300_100``).

    Args:
        input_shape: ``(C, H, W)`` of one image; the input layer has ``C*H*W`` features.
        num_classes: number of logits :math:`K`.
        width: multiplier :math:`w` of the hidden sizes 300 and 100.
    """

    min_side: int = 1

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), scaled(300, width))
        self.fc2 = nn.Linear(scaled(300, width), scaled(100, width))
        self.fc = nn.Linear(scaled(100, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(-3)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc(x)


def lenet5_feature_side(side: int) -> int:
    """Side of LeNet-5's last feature map for an input side ``side`` (after any padding).

    conv 5x5 pad 2 keeps :math:`s`; max-pool 2 gives :math:`\\lfloor s/2 \\rfloor`; conv 5x5
    without padding subtracts 4; max-pool 2 halves again (floor).
    """
    return (side // 2 - 4) // 2


class LeNet5(nn.Module):
    """Convolutional LeNet-5 with ReLU and max-pooling (see the module docstring).

    Args:
        input_shape: ``(C, H, W)`` of one image; ``C`` input channels, sides below 12 are padded.
        num_classes: number of logits :math:`K`.
        width: multiplier :math:`w` of the channels (6, 16) and hidden sizes (120, 84).
    """

    min_side: int = 12

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: float) -> None:
        super().__init__()
        c, h, w = input_shape
        self.pad = center_pad(input_shape, self.min_side)
        self.conv1 = nn.Conv2d(c, scaled(6, width), kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(scaled(6, width), scaled(16, width), kernel_size=5)
        flat = scaled(16, width) * lenet5_feature_side(max(h, self.min_side)) * lenet5_feature_side(max(w, self.min_side))
        self.fc1 = nn.Linear(flat, scaled(120, width))
        self.fc2 = nn.Linear(scaled(120, width), scaled(84, width))
        self.fc = nn.Linear(scaled(84, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(self.pad(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(-3)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc(x)
