"""Linearized networks: the first-order Taylor model of a network around a parameter point.

Given a network :math:`f(x; \\theta)` and a parameter point :math:`\\theta_s` (for the switching
experiment: the parameters after :math:`s` steps of standard training), the *linearized model* is

.. math::

    f_{\\mathrm{lin}}(x; \\theta) = f(x; \\theta_s) + J(x; \\theta_s)\\,(\\theta - \\theta_s),
    \\qquad J(x; \\theta_s) = \\frac{\\partial f(x; \\theta)}{\\partial \\theta}\\Big|_{\\theta_s},

(Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under gradient
descent", eq. 5; Fort et al. 2020, Section 5 "linearized training"; Zhou et al. 2025, Figure 2).
It is linear in :math:`\\theta` but not in :math:`x`: the features are the per-example gradients
at :math:`\\theta_s`, frozen. Trained by gradient flow on a loss :math:`L`, its outputs on the
training inputs evolve as

.. math::

    \\dot f_{\\mathrm{lin}} = -J J^\\top \\nabla_f L = -H(\\theta_s)\\,\\nabla_f L ,

kernel gradient descent with the *frozen* eNTK :math:`H(\\theta_s)` (Jacot et al. 2018): the
"completely lazy regime" of the paper. One SGD step with learning rate :math:`\\eta` (no momentum,
no weight decay) changes the outputs exactly by :math:`-\\eta J J^\\top \\nabla_f L`, because
:math:`f_{\\mathrm{lin}}` is linear in :math:`\\theta` (the tests check this against
:func:`conelib.empirical_ntk`).

How it is computed. :math:`J(\\theta - \\theta_s)` is a Jacobian-vector product, evaluated with
forward-mode AD (:func:`torch.func.jvp` over :func:`torch.func.functional_call`) in one pass that
also yields :math:`f(x; \\theta_s)`; no Jacobian is ever materialised, so a step costs a small
multiple of a network step whatever the number of parameters. Gradients with respect to
:math:`\\theta` flow back through the JVP with ordinary autograd, so the module trains with any
``torch.optim`` optimizer, and in particular with :func:`conelib.train.train` unchanged.

BatchNorm and dropout: as in the eNTK (:mod:`conelib.ntk`), the network inside is **always in
eval mode**: BatchNorm uses its running statistics, frozen at their values at :math:`\\theta_s`,
and dropout is off. :meth:`LinearizedModel.train` switches only the wrapper's flag, never the
inner network's, so the linearized function is the same in training and in evaluation. The
linearization is therefore that of the function the network computes at test time; for a
BatchNorm network early in training this differs from the train-mode function (use a LayerNorm
or norm-free variant when that matters, as the paper profile does).

Weight decay, when the optimizer applies it, acts on :math:`\\theta` (pulling it towards 0, not
towards :math:`\\theta_s`), exactly as in the network's own update, so switching from standard
to linearized training changes the model and nothing else.

Example:
    >>> from conelib.models import build
    >>> net = build("lenet_300_100", input_shape=(1, 8, 8), seed=0)
    >>> lin = linearize(net)
    >>> x = torch.randn(4, 1, 8, 8)
    >>> torch.allclose(lin(x), net.eval()(x))  # at theta = theta_s
    True
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

__all__ = ["LinearizedModel", "linearize"]


class _Anchor(nn.Module):
    """Holds the expansion point :math:`\\theta_s` as buffers, in a module tree that mirrors the
    network's, so that its ``state_dict`` keys are the network's parameter names."""

    def add(self, name: str, value: Tensor) -> None:
        *path, leaf = name.split(".")
        module: nn.Module = self
        for part in path:
            child = module._modules.get(part)
            if child is None:
                child = nn.Module()
                module.add_module(part, child)
            module = child
        module.register_buffer(leaf, value)


class LinearizedModel(nn.Module):
    """The first-order Taylor model :math:`f(x;\\theta_s) + J(x;\\theta_s)(\\theta-\\theta_s)`.

    Built from a copy of ``model``: its parameters at construction are the expansion point
    :math:`\\theta_s`, kept frozen as buffers under ``anchor.<name>``; the trainable parameters
    :math:`\\theta` are those of the copy, ``net.<name>`` (initialised to :math:`\\theta_s`,
    same names, shapes and order as ``model.parameters()``, so an optimizer state of the
    network -- momentum buffers -- can be loaded into an optimizer of the linearized model).
    ``state_dict()`` therefore holds :math:`\\theta` (``net.*``), the network's buffers
    (``net.*``, e.g. BatchNorm running statistics) and :math:`\\theta_s` (``anchor.*``), and
    round-trips through :func:`conelib.train.save_checkpoint` / ``load_checkpoint``.

    Parameters of ``model`` with ``requires_grad=False`` stay constants (not part of
    :math:`\\theta`), as in :mod:`conelib.ntk`.

    Attributes:
        net: the network with parameters :math:`\\theta`, always in eval mode. ``lin.net(x)`` is
            the *non-linear* network at the linearized model's parameters, :math:`f(x;\\theta)`.
        anchor: the buffers :math:`\\theta_s`.

    Args:
        model: the network; it is deep-copied and left untouched. Its current parameters are
            :math:`\\theta_s`; it must have at least one trainable parameter.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(model, LinearizedModel):
            raise ValueError("model is already a LinearizedModel; linearize its .net to re-expand it "
                             "around its current parameters")
        net = copy.deepcopy(model)
        net.eval()
        names = [name for name, p in net.named_parameters() if p.requires_grad]
        if not names:
            raise ValueError("model has no trainable parameters (requires_grad=True) to linearize in")
        anchor = _Anchor()
        for name, p in net.named_parameters():
            if p.requires_grad:
                anchor.add(name, p.detach().clone())
        self.net = net
        self.anchor = anchor
        self._names: tuple[str, ...] = tuple(names)

    # -- the expansion point and the displacement -------------------------------------------

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters in :math:`\\theta` (the network's trainable parameters)."""
        return self._names

    def theta_s(self) -> dict[str, Tensor]:
        """The expansion point :math:`\\theta_s` by parameter name (the frozen buffers), in the
        order of :attr:`param_names`."""
        buffers = dict(self.anchor.named_buffers())
        return {name: buffers[name] for name in self._names}

    def theta(self) -> dict[str, Tensor]:
        """The current parameters :math:`\\theta` by name (the trainable ``nn.Parameter`` s)."""
        params = dict(self.net.named_parameters())
        return {name: params[name] for name in self._names}

    def delta(self) -> dict[str, Tensor]:
        """The displacement :math:`\\theta - \\theta_s` by parameter name (differentiable)."""
        theta, anchor = self.theta(), self.theta_s()
        return {name: theta[name] - anchor[name] for name in self._names}

    def displacement_norm(self) -> float:
        """:math:`\\lVert\\theta - \\theta_s\\rVert_2` over all parameters."""
        with torch.no_grad():
            return float(torch.sqrt(sum((d.double() ** 2).sum() for d in self.delta().values())))

    # -- modes -------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> LinearizedModel:
        """Set the wrapper's training flag; the inner network stays in eval mode (see module doc)."""
        if not isinstance(mode, bool):
            raise ValueError(f"mode must be a bool (True: training, False: evaluation); got {mode!r}")
        self.training = mode
        self.net.eval()
        return self

    # -- the function --------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """:math:`f(x;\\theta_s) + J(x;\\theta_s)(\\theta - \\theta_s)` for a batch ``x``.

        One :func:`torch.func.jvp` of :math:`p \\mapsto f(x; p)` at :math:`p = \\theta_s` with
        tangent :math:`\\theta - \\theta_s`; differentiable with respect to :math:`\\theta`.
        """
        self.net.eval()  # also when someone called net.train() directly
        anchor = self.theta_s()
        primals = {name: anchor[name] for name in self._names}
        tangents = self.delta()

        def f(params: dict[str, Tensor]) -> Tensor:
            return functional_call(self.net, params, (x,))

        out, dout = jvp(f, (primals,), (tangents,))
        return out + dout

    def network_output(self, x: Tensor) -> Tensor:
        """The non-linear network at the current parameters, :math:`f(x;\\theta)` (eval mode)."""
        self.net.eval()
        return self.net(x)

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.theta().values())
        return f"linearized in {len(self._names)} parameter tensors ({n} parameters); inner network in eval mode"


def linearize(model: nn.Module) -> LinearizedModel:
    """The first-order Taylor model of ``model`` around its current parameters.

    Shorthand for :class:`LinearizedModel` ``(model)``; ``model`` itself is not modified. The
    result lives on ``model``'s device and dtype and trains with the same optimizers, schedules
    and :func:`conelib.train.train` as the network.

    Example:
        >>> import torch
        >>> from conelib.models import build
        >>> net = build("lenet_300_100", input_shape=(1, 8, 8), seed=0)
        >>> lin = linearize(net)
        >>> sorted(lin.state_dict())[:2]
        ['anchor.fc.bias', 'anchor.fc.weight']
    """
    return LinearizedModel(model)
