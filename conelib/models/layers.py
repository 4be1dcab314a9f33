"""Layers the conv nets share: normalisation choices, central padding, width scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NORMS", "ChannelLayerNorm", "make_norm", "center_pad", "scaled"]

NORMS: tuple[str, ...] = ("batchnorm", "layernorm", "none")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis at every spatial position, with a per-channel affine.

    For an input :math:`x \\in \\mathbb R^{N \\times C \\times H \\times W}` and each
    :math:`(n, h, w)`,

    .. math:: y_{nchw} = \\gamma_c \\frac{x_{nchw} - \\mu_{nhw}}{\\sqrt{\\sigma^2_{nhw} + \\epsilon}} + \\beta_c,
       \\quad \\mu_{nhw} = \\tfrac1C \\sum_c x_{nchw},
       \\quad \\sigma^2_{nhw} = \\tfrac1C \\sum_c (x_{nchw} - \\mu_{nhw})^2 .

    This is flax's ``nn.LayerNorm`` applied to NHWC activations, the normalisation of the
    LayerNorm ResNet-20 / VGG-16 of Git Re-Basin (Ainsworth et al. 2023). It is computed with
    ``torch.nn.functional.layer_norm`` on a channels-last view. Unlike BatchNorm it has no
    running statistics and behaves identically in train and eval mode, so it works under
    ``torch.func.vmap`` in both. Accepts ``(N, C, H, W)`` or unbatched ``(C, H, W)``.

    Args:
        num_channels: :math:`C`.
        eps: :math:`\\epsilon` (torch's default 1e-5; flax uses 1e-6).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(num_channels, int) or isinstance(num_channels, bool) or num_channels < 1:
            raise ValueError(f"num_channels must be a positive int, got {num_channels!r}")
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.movedim(-3, -1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.movedim(-1, -3)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def make_norm(norm: str, num_channels: int) -> nn.Module:
    """The 2-d normalisation layer called ``norm`` for ``num_channels`` channels.

    ``'batchnorm'``: ``nn.BatchNorm2d`` (open_lth; Ioffe & Szegedy 2015);
    ``'layernorm'``: :class:`ChannelLayerNorm` (Git Re-Basin);
    ``'none'``: ``nn.Identity``.
    """
    if norm == "batchnorm":
        return nn.BatchNorm2d(num_channels)
    if norm == "layernorm":
        return ChannelLayerNorm(num_channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def center_pad(input_shape: tuple[int, int, int], min_side: int) -> nn.Module:
    """First layer that zero-pads images smaller than ``min_side`` centrally up to ``min_side``.

    For a side :math:`s < m` the total padding :math:`m - s` is split as
    :math:`\\lfloor (m-s)/2 \\rfloor` before and the rest after (so 28 -> 32 pads 2 and 2,
    as LeCun et al. 1998 fed 28x28 MNIST digits to LeNet-5 in a 32x32 field). Sides that are
    already large enough are left alone. Returns a parameter-free ``nn.ZeroPad2d`` when
    padding is needed, else ``nn.Identity``.
    """
    _, h, w = input_shape
    ph, pw = max(min_side - h, 0), max(min_side - w, 0)
    if ph == 0 and pw == 0:
        return nn.Identity()
    return nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def scaled(base: int, width: float) -> int:
    """Channel / hidden size ``base`` times the width multiplier, rounded, at least 1.

    ``width`` may be fractional (0.25 gives a quarter-width network), as in width sweeps.
    """
    return max(1, int(round(base * width)))
