"""Parameter initialisation in the style of open_lth (Frankle et al. 2020).

open_lth (github.com/facebookresearch/open_lth, ``models/initializers.py`` and
``models/bn_initializers.py``) builds every model with ``model_init='kaiming_normal'`` and
``batchnorm_init='uniform'``. :func:`init_open_lth` applies that rule in one place:

* ``nn.Linear`` / ``nn.Conv{1,2,3}d`` weights: Kaiming normal, fan-in mode, ReLU gain
  (He et al. 2015, eq. 10),

  .. math:: W_{ij} \\sim \\mathcal N\\!\\left(0, \\tfrac{2}{\\mathrm{fan\\_in}}\\right),
            \\qquad \\mathrm{fan\\_in} = C_\\text{in} / \\text{groups} \\cdot \\prod k,

  which is what ``torch.nn.init.kaiming_normal_`` does with its defaults (``a=0``,
  ``'leaky_relu'`` with slope 0 has gain :math:`\\sqrt 2`, identical to ``'relu'``);
* their biases: zero. (open_lth leaves biases at PyTorch's default
  :math:`\\mathcal U(\\pm 1/\\sqrt{\\mathrm{fan\\_in}})`; conelib zeroes them, as the
  NTK-parameterisation literature does, so that the only random tensors are the weights.)
* BatchNorm weight :math:`\\gamma \\sim \\mathcal U(0, 1)`, bias :math:`\\beta = 0`
  (open_lth ``bn_initializers.uniform``), running statistics reset to mean 0, variance 1;
* LayerNorm-type layers (``nn.LayerNorm``, ``nn.GroupNorm``,
  :class:`conelib.models.resnet.ChannelLayerNorm`): weight 1, bias 0.

Random draws are made on the generator's device (the CPU when ``generator`` is ``None``,
using the global CPU RNG) in float32 and then copied into the parameter, so one seed gives
the same parameters whatever device or dtype the model lives in.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from conelib.models.layers import ChannelLayerNorm

__all__ = ["init_open_lth", "kaiming_std"]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)
_LAYERNORMS = (nn.LayerNorm, nn.GroupNorm, ChannelLayerNorm)
_HANDLED = _WEIGHTED + _BATCHNORMS + _LAYERNORMS


def kaiming_std(weight: torch.Tensor) -> float:
    """Standard deviation of Kaiming-normal (fan-in, ReLU) init for ``weight``.

    :math:`\\sigma = \\sqrt{2 / \\mathrm{fan\\_in}}` with ``fan_in = weight[0].numel()``
    (input features of a linear layer; ``C_in/groups * kh * kw`` of a convolution), as in
    He et al. 2015, eq. 10 and ``torch.nn.init.kaiming_normal_``.
    """
    if weight.dim() < 2:
        raise ValueError(f"weight must have at least 2 dimensions, got shape {tuple(weight.shape)}")
    fan_in = weight[0].numel()
    return math.sqrt(2.0 / fan_in)


def _draw(shape: torch.Size, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    if kind == "normal":
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)


@torch.no_grad()
def init_open_lth(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Initialise every parameter of ``module`` in place with the open_lth rule (see module doc).

    Args:
        module: the model (or a single layer). Sub-modules are visited in
            ``module.modules()`` order, so a given generator state yields a deterministic result.
        generator: a ``torch.Generator`` for the draws; ``None`` uses the global CPU RNG.

    Returns:
        ``module`` itself, for chaining.

    Raises:
        ValueError: if ``module`` holds a sub-module with its own parameters whose type the
            rule does not cover (so no parameter is ever left at an unknown initialisation).
        TypeError: if ``generator`` is not a ``torch.Generator``.

    Example:
        >>> layer = init_open_lth(nn.Linear(784, 300), torch.Generator().manual_seed(0))
        >>> float(layer.bias.detach().abs().max())
        0.0
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    for name, sub in module.named_modules():
        own = list(sub.parameters(recurse=False))
        if isinstance(sub, _WEIGHTED):
            sub.weight.copy_(_draw(sub.weight.shape, "normal", generator) * kaiming_std(sub.weight))
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, _BATCHNORMS):
            if sub.weight is not None:
                sub.weight.copy_(_draw(sub.weight.shape, "uniform", generator))
                sub.bias.zero_()
            if sub.track_running_stats:
                sub.reset_running_stats()
        elif isinstance(sub, _LAYERNORMS):
            if getattr(sub, "weight", None) is not None:
                sub.weight.fill_(1.0)
            if getattr(sub, "bias", None) is not None:
                sub.bias.zero_()
        elif own:
            allowed = ", ".join(t.__name__ for t in _HANDLED)
            raise ValueError(
                f"init_open_lth: module {name or '<root>'!r} of type {type(sub).__name__} has parameters "
                f"but no initialisation rule; allowed layer types with parameters: {allowed}"
            )
    return module
