"""Model zoo of the paper's experiments and its registry.

The paper (Zhou et al. 2025, sec. 4 "Main Experimental Setup") follows Frankle et al. 2020
(open_lth) and Ainsworth et al. 2023 (Git Re-Basin): LeNet on MNIST, ResNet-20 and VGG-16 on
CIFAR-10. :func:`build` makes any of them for any image shape, width and normalisation, with
open_lth's initialisation (:func:`conelib.models.init.init_open_lth`).

* ``lenet_300_100``: the MLP 300w-100w (open_lth ``mnist_lenet_300_100``); any image side;
  default norm ``none`` (the only one allowed).
* ``lenet5``: conv 6w, 16w; fc 120w, 84w; minimum side 12; norm ``none`` only.
* ``resnet20``: CIFAR ResNet-20, 16w/32w/64w channels; minimum side 8; default ``batchnorm``.
* ``vgg16``: CIFAR VGG-16, 64w ... 512w channels; minimum side 32; default ``batchnorm``.

How small images enter conv nets: a conv model whose input side is below its minimum
zero-pads the input centrally up to the minimum in a registered, parameter-free
``nn.ZeroPad2d`` first layer (``model.pad``; ``nn.Identity`` when nothing is padded). So a
28x28 MNIST digit enters VGG-16 as 32x32 (as LeCun et al. 1998 fed LeNet-5), and 8x8
scikit-learn digits enter LeNet-5 as 12x12 and VGG-16 as 32x32. Channels come from
``input_shape[0]``. The parameter shapes of ResNet-20 and VGG-16 do not depend on the image
side (global average pooling), so a padded and an unpadded model built with one seed share
their parameters.

Example:
    >>> model = build("resnet20", input_shape=(3, 32, 32), seed=0)
    >>> model.conelib_spec["norm"]
    'batchnorm'
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from conelib.models.init import init_open_lth, kaiming_std
from conelib.models.lenet import LeNet5, LeNet300100
from conelib.models.layers import NORMS, ChannelLayerNorm, center_pad, make_norm, scaled
from conelib.models.resnet import ResNet20
from conelib.models.vgg import VGG16

__all__ = [
    "MODELS",
    "NORMS",
    "build",
    "default_norm",
    "ChannelLayerNorm",
    "LeNet300100",
    "LeNet5",
    "ResNet20",
    "VGG16",
    "center_pad",
    "make_norm",
    "scaled",
    "init_open_lth",
    "kaiming_std",
]

MODELS: tuple[str, ...] = ("lenet5", "lenet_300_100", "resnet20", "vgg16")

# name -> (constructor(input_shape, num_classes, width, norm), allowed norms; the first is the default)
_REGISTRY: dict[str, tuple[Callable[[tuple[int, int, int], int, int, str], nn.Module], tuple[str, ...]]] = {
    "lenet5": (lambda s, k, w, n: LeNet5(s, k, w), ("none",)),
    "lenet_300_100": (lambda s, k, w, n: LeNet300100(s, k, w), ("none",)),
    "resnet20": (ResNet20, ("batchnorm", "layernorm", "none")),
    "vgg16": (VGG16, ("batchnorm", "layernorm", "none")),
}


def default_norm(name: str) -> str:
    """The normalisation ``build(name)`` uses when ``norm`` is ``None`` (``'batchnorm'`` for
    resnet20 and vgg16, ``'none'`` for the LeNets)."""
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {MODELS}, got {name!r}")
    return _REGISTRY[name][1][0]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive int, got {value!r}") from None
    if out < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return out


def _positive_width(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ValueError(f"width must be a positive number (a multiplier such as 0.5, 1 or 2), got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def _input_shape(value: Any) -> tuple[int, int, int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), three positive ints; got {value!r}")
    c, h, w = (_positive_int(v, "input_shape entries") for v in value)
    return (c, h, w)


def build(
    name: str,
    *,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    width: float = 1,
    norm: str | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build and initialise the model called ``name``.

    Args:
        name: one of :data:`MODELS`.
        input_shape: ``(C, H, W)`` of one image: (1, 28, 28) MNIST, (3, 32, 32) CIFAR-10,
            (1, 8, 8) scikit-learn digits. Conv nets pad smaller sides (see the module doc).
        num_classes: number of logits.
        width: channel / hidden-size multiplier (see each model); fractional widths round
            each size to the nearest integer, at least 1.
        norm: one of :data:`NORMS`, or ``None`` for the model's default (``'batchnorm'`` for
            resnet20 and vgg16, ``'none'`` for the LeNets, which accept only ``'none'``).
        seed: if given, the parameters are a deterministic function of it (drawn from a private
            ``torch.Generator``), and the global RNG state is left untouched
            (``torch.random.fork_rng``). If ``None``, the global CPU RNG is used.

    Returns:
        The model on the CPU in float32, in train mode, with its resolved hyperparameters in
        ``model.conelib_spec`` (a dict with keys name, input_shape, num_classes, width, norm,
        seed; ``build(**model.conelib_spec)`` rebuilds it).

    Raises:
        ValueError: unknown ``name`` or ``norm``, a norm the model does not allow, or a
            non-positive ``width``, a non-positive / non-int ``num_classes`` or ``input_shape`` entry.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"name must be one of {MODELS}, got {name!r}")
    constructor, allowed = _REGISTRY[name]
    if norm is None:
        norm = allowed[0]
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (or None for the model's default), got {norm!r}")
    if norm not in allowed:
        raise ValueError(f"norm={norm!r} is not available for {name!r}; allowed: {allowed}")
    shape = _input_shape(input_shape)
    num_classes = _positive_int(num_classes, "num_classes")
    width = _positive_width(width)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")

    if seed is None:
        model = constructor(shape, num_classes, width, norm)
        init_open_lth(model)
    else:
        # Construction runs torch's default init on the global RNG: fork it so that state is
        # restored; the parameters themselves all come from the seeded private generator.
        with torch.random.fork_rng(devices=[]):
            model = constructor(shape, num_classes, width, norm)
        init_open_lth(model, torch.Generator().manual_seed(seed))
    model.conelib_spec = {
        "name": name,
        "input_shape": shape,
        "num_classes": num_classes,
        "width": width,
        "norm": norm,
        "seed": seed,
    }
    return model
