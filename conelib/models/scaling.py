"""Chizat, Oyallon and Bach (2019), "On lazy training in differentiable programming": the output scale.

For a network :math:`f(x;\\theta)` with initial parameters :math:`\\theta_0` and a scale
:math:`\\alpha > 0`, the *centred, scaled* model is

.. math:: h_\\alpha(x;\\theta) = \\alpha\\,\\big(f(x;\\theta) - f(x;\\theta_0)\\big),

trained on the loss :math:`L(h_\\alpha)/\\alpha^2` (:data:`loss_scale`). In function space
:math:`\\dot h_\\alpha = -J J^\\top \\nabla_h L` for every :math:`\\alpha`, while the parameters move
:math:`1/\\alpha` as far: a large :math:`\\alpha` makes training lazy (the kernel stays at its initial
value), a small one rich. Centring makes :math:`h_\\alpha = 0` at initialisation, so the initial
outputs do not blow up with :math:`\\alpha`.

The eNTK of :math:`h_\\alpha` is :math:`\\alpha^2 J J^\\top`: the kernel distance, which is
scale-invariant, is that of :math:`f`'s kernel at the same :math:`\\theta`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["OutputScaled", "loss_scale"]


class OutputScaled(nn.Module):
    """:math:`\\alpha (f(x;\\theta) - f(x;\\theta_0))` with :math:`\\theta_0` a frozen copy of ``model``'s
    parameters at construction (buffers, not parameters, so optimisers and the eNTK see only
    :math:`\\theta`). The reference network always runs in eval mode and without gradients."""

    def __init__(self, model: nn.Module, alpha: float) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha (output_scale) must be > 0, got {alpha!r}")
        self.net = model
        self.alpha = float(alpha)
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_ref", ref)  # not a submodule: its parameters are no parameters of h
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _apply(self, fn, recurse=True):  # keep the reference on the same device / dtype
        super()._apply(fn, recurse)
        self._ref._apply(fn, recurse)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f0 = self._ref(x)
        return self.alpha * (self.net(x) - f0)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, centred at the initial parameters"


def loss_scale(alpha: float | None) -> float:
    """The factor :math:`1/\\alpha^2` of the training loss (1 without an output scale)."""
    return 1.0 if alpha is None else 1.0 / float(alpha) ** 2
