"""A layer-wise tangent forward: :math:`f(x;\\theta_s)` and :math:`J(x;\\theta_s)\\,\\delta` in one pass,
with the primal computed without autograd and the tangent as the only autograd graph.

The linearized model (:mod:`conelib.linearize`) evaluates

.. math:: f_{\\mathrm{lin}}(x;\\theta) = f(x;\\theta_s) + J(x;\\theta_s)\\,\\delta, \\qquad \\delta = \\theta - \\theta_s ,

and a training step differentiates it with respect to :math:`\\theta` (through :math:`\\delta`).
Everything at :math:`\\theta_s` is a constant of that derivative. :func:`torch.func.jvp` computes the
pair (primal, tangent) generically, but its primal runs through the forward-AD machinery and every
layer's tangent rule is whatever the operator's forward-mode formula does. Here the network is traced
once (:mod:`torch.fx`) and interpreted layer by layer with hand-written tangent rules: for each layer
:math:`y = g(a; w)` with primal input :math:`a`, input tangent :math:`\\dot a` and parameter
displacement :math:`\\dot w` (the slice of :math:`\\delta`),

.. math::

    y = g(a; w_s) \\ \\text{(under torch.no_grad)}, \\qquad
    \\dot y = \\partial_a g(a; w_s)\\,\\dot a + \\partial_w g(a; w_s)\\,\\dot w \\ \\text{(the autograd graph)}.

The rules:

* **Linear / Conv** (bilinear in input and weight): :math:`\\dot y = W_s \\dot a + \\dot W a + \\dot b`
  (two products; the first is skipped on the input layer, where :math:`\\dot a = 0`).
* **ReLU**: :math:`\\dot y = \\mathbb 1[h > 0] \\odot \\dot h` (``threshold_backward``: no mask is stored).
* **Max-pool**: the tangent at the primal's arg-max (a gather with the pool's indices).
* **BatchNorm (eval)**: a per-channel affine map,
  :math:`\\dot y = \\dot a\\,\\gamma_s/\\sqrt{v+\\epsilon} + \\hat a\\,\\dot\\gamma + \\dot\\beta`.
* **LayerNorm**: :math:`\\dot y = w_s \\odot P\\dot a + \\hat a \\odot \\dot w + \\dot b` (:math:`\\hat a`
  from the primal's normalisation) with
  :math:`P\\dot a = r(\\dot a - \\overline{\\dot a} - \\hat a\\,\\overline{\\hat a \\dot a})`
  (:math:`r` the inverse standard deviation, bars the means over the normalised axes). :math:`P` is
  symmetric, and it is exactly what torch's fused LayerNorm backward computes, so both the tangent
  and its adjoint are one fused kernel each.
* **tanh, sigmoid**: :math:`(1-y^2)\\dot h`, :math:`y(1-y)\\dot h`.
* **Linear maps** (flatten, reshape, views, mean, sum, average pools, zero padding, identity, dropout
  in eval mode, indexing, concatenation): the same map applied to the tangent.
* **Sums and products**: :math:`\\dot{(u+v)} = \\dot u + \\dot v`,
  :math:`\\dot{(uv)} = \\dot u v + u \\dot v` (residual additions, output scales).
* :class:`conelib.models.scaling.OutputScaled`:
  :math:`\\alpha(f(x;\\theta_s) - f(x;\\theta_0))` and :math:`\\alpha\\,\\dot f`.

Anything else falls back to :func:`torch.func.jvp` **for that layer alone** (a module through
:func:`torch.func.functional_call` with its own slice of :math:`\\theta_s` and :math:`\\delta`, a
function with its tensor arguments), and a network that :mod:`torch.fx` cannot trace (data-dependent
control flow) falls back to one :func:`torch.func.jvp` of the whole network.
:attr:`TangentForward.fallbacks` names every layer that fell back.

A tangent that is identically zero is carried as ``None`` (the input, and every layer before the
first parameter), so no work is spent on it.

Cost of a training step (per layer, in matrix products): primal 1, tangent 2 (1 on the input layer),
backward 2 (1 on the input layer) against 3 (2) for a standard step: about 5/3 of a standard step
on hidden layers and 3/2 on the input layer, before the elementwise work, which is lighter here
(no BatchNorm statistics, fused normalisation kernels). The primal products depend only on the
example, so :meth:`conelib.linearize.LinearizedModel.forward_examples` keeps them per training
example (``record`` / ``replay`` below) and a step then costs the tangent and the backward pass
only: 4 products on hidden layers, 2 on the input layer, like a standard step's there. For a
wide linear layer on a batch the weight term is formed from :math:`\\theta` itself,
:math:`W a + b - y` with :math:`y` the primal, which saves forming :math:`\\dot W`, the larger
array there. ``benchmarks/linearized_step.py`` measures all this against a standard step.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from conelib.models.layers import ChannelLayerNorm
from conelib.models.scaling import OutputScaled
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = ["Dual", "TangentForward", "module_rules"]

#: what a rule returns: ``(primal, tangent)``, the tangent ``None`` when it is identically zero
Pair = tuple[Any, Any]


class Dual:
    """A value of the program: its primal at :math:`\\theta_s` (no autograd) and its tangent
    :math:`J\\delta` (``None``: identically zero). Either may be a tuple for a layer with several
    outputs."""

    __slots__ = ("primal", "tangent")

    def __init__(self, primal: Any, tangent: Any = None) -> None:
        self.primal, self.tangent = primal, tangent

    def __repr__(self) -> str:
        return f"Dual({type(self.primal).__name__}, tangent={'0' if self.tangent is None else 'set'})"


def _p(v: Any) -> Any:
    """The primal of a value (constants are their own primal), recursively through lists/tuples/dicts."""
    if isinstance(v, Dual):
        return v.primal
    if isinstance(v, (list, tuple)):
        return type(v)(_p(u) for u in v)
    if isinstance(v, dict):
        return {k: _p(u) for k, u in v.items()}
    return v


def _moving(v: Any) -> bool:
    """Whether a (nested) argument carries a non-zero tangent."""
    if isinstance(v, Dual):
        return v.tangent is not None
    if isinstance(v, (list, tuple)):
        return any(_moving(u) for u in v)
    if isinstance(v, dict):
        return any(_moving(u) for u in v.values())
    return False


def _t(v: Any) -> Any:
    return v.tangent if isinstance(v, Dual) else None


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class _Delta(dict):
    """The displacement :math:`\\theta - \\theta_s` by name, each computed on first use (a
    layer that works with :math:`\\theta` directly never pays for it)."""

    def __init__(self, theta_s: Mapping[str, Tensor], theta: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.theta_s, self.theta = theta_s, theta

    def __missing__(self, name: str) -> Tensor:
        d = self[name] = self.theta[name] - self.theta_s[name]
        return d


class _Context:
    """One call of a program: the expansion point :math:`\\theta_s` and the parameters
    :math:`\\theta` (full name -> tensor; the displacement is derived on use), the node being
    evaluated, and the primal cache's records for this batch.

    ``record`` (a dict) collects the primal outputs of the bilinear layers (linear, convolution)
    and of constant sub-networks, by node; ``replay`` supplies them instead of recomputing them
    (see :meth:`conelib.linearize.LinearizedModel.forward_examples`)."""

    __slots__ = ("theta_s", "theta", "delta", "node", "record", "replay", "programs")

    def __init__(self, theta_s: Mapping[str, Tensor], theta: Mapping[str, Tensor],
                 record: dict[str, Tensor] | None = None, replay: Mapping[str, Tensor] | None = None,
                 programs: dict[str, TangentForward] | None = None) -> None:
        self.theta_s, self.theta = theta_s, theta
        self.delta = _Delta(theta_s, theta)
        self.node = "<root>"
        self.record, self.replay = record, replay
        self.programs = {} if programs is None else programs

    def program(self, net: nn.Module, prefix: str) -> TangentForward:
        """The program of a sub-network (the network inside an output scale), traced once and kept
        by the root program."""
        prog = self.programs.get(prefix)
        if prog is None or prog.net is not net:
            prog = self.programs[prefix] = TangentForward(net, prefix)
        return prog

    def moves(self, full_name: str) -> bool:
        """Whether a parameter is part of :math:`\\theta` (else it is a constant)."""
        return full_name in self.theta

    def at_s(self, full_name: str, value: Tensor | None) -> Tensor | None:
        """A parameter's value at :math:`\\theta_s` (a constant's own value)."""
        if value is None:
            return None
        return self.theta_s[full_name] if full_name in self.theta else value.detach()

    def param(self, full_name: str, value: Tensor | None) -> Pair:
        """(value at theta_s, displacement) of a parameter or buffer; constants (frozen parameters,
        buffers) have no displacement."""
        if value is None:
            return None, None
        if full_name not in self.theta:
            return value.detach(), None
        return self.theta_s[full_name], self.delta[full_name]

    def primal(self, compute: Callable[[], Tensor], key: str | None = None) -> Tensor:
        """A cacheable primal value (``compute()`` under ``torch.no_grad``), by node."""
        key = self.node if key is None else key
        if self.replay is not None:
            return self.replay[key]
        with torch.no_grad():
            y = compute()
        if self.record is not None:
            self.record[key] = y
        return y


# --------------------------------------------------------------------------------------------
# the rules on tensors
# --------------------------------------------------------------------------------------------


def _bilinear(ctx: _Context, op: Callable[..., Tensor], a: Tensor, da: Tensor | None, w: Tensor,
              dw: Tensor | None, b: Tensor | None, db: Tensor | None) -> Pair:
    """``op(input, weight, bias)``, bilinear in (input, weight) and affine in the bias:
    primal ``op(a, w, b)`` (the product the primal cache keeps), tangent ``op(a, dw, db) + op(da, w)``."""
    y = ctx.primal(lambda: op(a, w, b))
    t = None
    if dw is not None:
        t = op(a, dw, db)
    elif db is not None:  # rare: a trainable bias beside a frozen weight
        t = op(a, torch.zeros_like(w), db)
    if da is not None:
        td = op(da, w, None)
        t = td if t is None else t.add_(td)  # in place: the products' backward does not read their output
    return y, t


def _bilinear_module(ctx: _Context, op: Callable[..., Tensor], q: str, m: nn.Module, a: Tensor,
                     da: Tensor | None) -> Pair:
    """A linear or convolution module (weight ``q + "weight"``, bias ``q + "bias"``).

    When the weight has more entries than the output (a wide linear layer on a batch), the weight
    term is formed from :math:`\\theta` itself, ``op(a, theta_w, theta_b) - y``, which equals
    ``op(a, dw, db)`` (exactly in exact arithmetic; in floating point up to the rounding of ``y``,
    the primal's own) and skips forming ``dw = theta_w - w_s``, whose cost is then the larger."""
    wq, bq = f"{q}weight", f"{q}bias"
    w_s, b_s = ctx.at_s(wq, m.weight), ctx.at_s(bq, m.bias)
    mw, mb = ctx.moves(wq), m.bias is not None and ctx.moves(bq)
    y = ctx.primal(lambda: op(a, w_s, b_s))
    t = None
    if mw and y.numel() < w_s.numel():
        t = op(a, ctx.theta[wq], ctx.theta[bq] if mb else b_s).sub_(y)
    elif mw or mb:
        t = op(a, ctx.delta[wq] if mw else torch.zeros_like(w_s), ctx.delta[bq] if mb else None)
    if da is not None:
        td = op(da, w_s, None)
        t = td if t is None else t.add_(td)  # in place: the products' backward does not read their output
    return y, t


def _bilinear_batch_norm(ctx: _Context, op: Callable[..., Tensor], q: str, m: nn.Module, qb: str,
                         bn: nn.modules.batchnorm._BatchNorm, a: Tensor, da: Tensor | None) -> Pair:
    """A linear or convolution layer followed by an eval-mode BatchNorm, as one affine layer.

    With :math:`s = 1/\\sqrt{v + \\epsilon}` and :math:`z = W a + b`, the pair computes
    :math:`\\gamma s (z - \\mu) + \\beta = W' a + b'` with :math:`W' = W \\gamma s` (per output
    channel) and :math:`b' = (b - \\mu)\\gamma s + \\beta`. Its tangent is
    :math:`W'_s \\dot a + \\dot W' a + \\dot b'` with

    .. math:: \\dot W' = (\\dot W \\gamma_s + W_s \\dot\\gamma) s, \\qquad
              \\dot b' = (\\dot b \\gamma_s + (b_s - \\mu)\\dot\\gamma) s + \\dot\\beta ,

    so the normalisation costs weight-sized work only: no pass over the activations, forward or
    backward."""
    wq, bq, gq, betaq = f"{q}weight", f"{q}bias", f"{qb}weight", f"{qb}bias"
    w_s, b_s = ctx.at_s(wq, m.weight), ctx.at_s(bq, m.bias)
    g_s, beta_s = ctx.at_s(gq, bn.weight), ctx.at_s(betaq, bn.bias)
    shape = [-1] + [1] * (w_s.dim() - 1)
    with torch.no_grad():
        s = torch.rsqrt(bn.running_var + bn.eps)
        scale = s if g_s is None else s * g_s
        w_f = w_s * scale.view(shape)
        shift = -bn.running_mean if b_s is None else b_s - bn.running_mean
        b_f = shift * scale if beta_s is None else shift * scale + beta_s
    y = ctx.primal(lambda: op(a, w_f, b_f))
    dws: list[Tensor] = []
    dbs: list[Tensor] = []
    if ctx.moves(wq):
        dws.append(ctx.delta[wq] * scale.view(shape))
    if m.bias is not None and ctx.moves(bq):
        dbs.append(ctx.delta[bq] * scale)
    if g_s is not None and ctx.moves(gq):
        dg = ctx.delta[gq]
        dws.append(w_s * (dg * s).view(shape))
        dbs.append(dg * (shift * s))
    if beta_s is not None and ctx.moves(betaq):
        dbs.append(ctx.delta[betaq])
    dw = None if not dws else dws[0] if len(dws) == 1 else dws[0] + dws[1]
    db = None if not dbs else functools.reduce(operator.add, dbs)
    t = None
    if dw is not None:
        t = op(a, dw, db)
    elif db is not None:
        t = op(a, torch.zeros_like(w_s), db)
    if da is not None:
        td = op(da, w_f, None)
        t = td if t is None else t.add_(td)
    return y, t


def _relu(h: Tensor, dh: Tensor | None) -> Pair:
    with torch.no_grad():
        y = torch.relu(h)
    if dh is None:
        return y, None
    # 1[h > 0] * dh without a stored mask; the adjoint is the same map (torch's derivatives.yaml)
    return y, torch.ops.aten.threshold_backward(dh, h, 0)


def _max_pool(a: Tensor, da: Tensor | None, kernel_size: Any, stride: Any = None, padding: Any = 0,
              dilation: Any = 1, ceil_mode: bool = False, dims: int = 2) -> Pair:
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
    with torch.no_grad():
        y, idx = pool(a, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
    if da is None:
        return y, None
    # the indices address the flattened spatial axes of each (sample, channel) plane
    return y, da.flatten(-dims).gather(-1, idx.flatten(-dims)).view(y.shape)


def _batch_norm_eval(a: Tensor, da: Tensor | None, mean: Tensor, var: Tensor, w: Tensor | None,
                     dw: Tensor | None, b: Tensor | None, db: Tensor | None, eps: float) -> Pair:
    """Eval-mode BatchNorm ``(a - mean) / sqrt(var + eps) * w + b``, an affine map per channel
    (dim 1): tangent ``da * w / sqrt(var + eps) + a_hat * dw + db``, both terms fused eval-mode
    batch-norm calls (so are their adjoints)."""
    shape = [1, -1] + [1] * (a.dim() - 2)
    with torch.no_grad():
        y = F.batch_norm(a, mean, var, w, b, False, 0.0, eps)
    t = None
    if da is not None:
        t = F.batch_norm(da, torch.zeros_like(mean), var, w, None, False, 0.0, eps)
    if dw is not None:
        t2 = F.batch_norm(a, mean, var, dw, db, False, 0.0, eps)  # a_hat * dw + db
        t = t2 if t is None else t.add_(t2)  # in place: batch_norm's backward does not read its output
    elif db is not None:
        t = db.view(shape).expand(y.shape) if t is None else t + db.view(shape)
    return y, t


class _LayerNormTangent(torch.autograd.Function):
    """:math:`\\dot a \\mapsto P\\dot a`, :math:`P` the (symmetric) Jacobian of the normalisation at
    the primal input: forward and backward are both torch's fused LayerNorm backward, whose input
    gradient is :math:`P` applied to the upstream gradient."""

    @staticmethod
    def forward(da: Tensor, a: Tensor, shape: list[int], mean: Tensor, rstd: Tensor) -> Tensor:
        return torch.ops.aten.native_layer_norm_backward(da, a, shape, mean, rstd, None, None, [True, False, False])[0]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, a, shape, mean, rstd = inputs
        ctx.save_for_backward(a, mean, rstd)
        ctx.shape = shape

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple:
        a, mean, rstd = ctx.saved_tensors
        gin = torch.ops.aten.native_layer_norm_backward(g, a, ctx.shape, mean, rstd, None, None, [True, False, False])[0]
        return gin, None, None, None, None


def _layer_norm(a: Tensor, da: Tensor | None, shape: list[int], w: Tensor | None, dw: Tensor | None,
                b: Tensor | None, db: Tensor | None, eps: float) -> Pair:
    """LayerNorm ``a_hat * w + b`` over the trailing ``shape``: tangent ``w * P da + a_hat * dw + db``,
    with ``a_hat`` (and the statistics) from the primal's one normalisation."""
    shape = [int(s) for s in shape]
    with torch.no_grad():
        a_hat, mean, rstd = torch.native_layer_norm(a, shape, None, None, eps)
        if w is None:
            y = a_hat if b is None else a_hat + b
        else:
            y = a_hat * w if b is None else torch.addcmul(b, a_hat, w)
    t = None
    if dw is not None:
        t = a_hat * dw if db is None else torch.addcmul(db, a_hat, dw)
    elif db is not None:
        t = db.expand(y.shape)
    if da is not None:
        p = _LayerNormTangent.apply(da, a, shape, mean, rstd)
        if t is None:
            t = p if w is None else p * w
        else:
            t = t + p if w is None else torch.addcmul(t, p, w)
    return y, t


def _pointwise(fn: Callable[[Tensor], Tensor], deriv: Callable[[Tensor], Tensor]) -> Callable[..., Pair]:
    """An elementwise non-linearity with its derivative written in terms of its output."""

    def rule(h: Tensor, dh: Tensor | None) -> Pair:
        with torch.no_grad():
            y = fn(h)
            d = None if dh is None else deriv(y)
        return y, None if dh is None else dh * d

    return rule


_tanh = _pointwise(torch.tanh, lambda y: 1 - y * y)
_sigmoid = _pointwise(torch.sigmoid, lambda y: y * (1 - y))


# -- module rules: (module, name prefix, a, da, context) -> (y, dy), or None: fall back ----------


def _m_linear(m: nn.Linear, q: str, a: Tensor, da: Tensor | None, ctx: _Context) -> Pair:
    return _bilinear_module(ctx, F.linear, q, m, a, da)


def _m_conv(m: nn.modules.conv._ConvNd, q: str, a: Tensor, da: Tensor | None, ctx: _Context) -> Pair:
    return _bilinear_module(ctx, m._conv_forward, q, m, a, da)


def _m_batch_norm(m: nn.modules.batchnorm._BatchNorm, q: str, a: Tensor, da: Tensor | None,
                  ctx: _Context) -> Pair | None:
    if m.training or m.running_mean is None or m.running_var is None:
        return None  # batch statistics: not an affine map per channel
    return _batch_norm_eval(a, da, m.running_mean, m.running_var, *ctx.param(f"{q}weight", m.weight),
                            *ctx.param(f"{q}bias", m.bias), m.eps)


def _m_layer_norm(m: nn.LayerNorm, q: str, a: Tensor, da: Tensor | None, ctx: _Context) -> Pair:
    return _layer_norm(a, da, list(m.normalized_shape), *ctx.param(f"{q}weight", m.weight),
                       *ctx.param(f"{q}bias", getattr(m, "bias", None)), m.eps)


def _m_channel_layer_norm(m: nn.Module, q: str, a: Tensor, da: Tensor | None, ctx: _Context) -> Pair:
    y, t = _layer_norm(a.movedim(-3, -1), None if da is None else da.movedim(-3, -1), [m.num_channels],
                       *ctx.param(f"{q}weight", m.weight), *ctx.param(f"{q}bias", m.bias), m.eps)
    return y.movedim(-1, -3), None if t is None else t.movedim(-1, -3)


def _m_max_pool(m: nn.modules.pooling._MaxPoolNd, q: str, a: Tensor, da: Tensor | None,
                ctx: _Context) -> Pair | None:
    if m.return_indices:
        return None
    dims = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[type(m)]
    return _max_pool(a, da, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, dims)


def _m_linear_map(m: nn.Module, q: str, a: Tensor, da: Tensor | None, ctx: _Context) -> Pair:
    """A parameter-free module linear in its input: the same map on the tangent."""
    with torch.no_grad():
        y = m(a)
    return y, None if da is None else m(da)


def _m_pad(m: nn.Module, q: str, a: Tensor, da: Tensor | None, ctx: _Context) -> Pair | None:
    if getattr(m, "value", 0.0) != 0.0:
        return None  # padding with a non-zero constant is affine: its tangent pads with 0
    return _m_linear_map(m, q, a, da, ctx)


def _m_dropout(m: nn.Module, q: str, a: Tensor, da: Tensor | None, ctx: _Context) -> Pair | None:
    return None if m.training else (a, da)


def _m_pointwise(rule: Callable[..., Pair]) -> Callable[..., Pair]:
    return lambda m, q, a, da, ctx: rule(a, da)


def _m_output_scaled(m: nn.Module, q: str, a: Tensor, da: Tensor | None, ctx: _Context) -> Pair:
    """:math:`\\alpha (f(x;\\theta) - f(x;\\theta_0))`: the reference network is a constant."""
    key = f"{ctx.node}/reference"
    out = ctx.program(m.net, f"{q}net.").run(Dual(a, da), ctx)
    ref = ctx.primal(lambda: m._ref(a), key)
    with torch.no_grad():
        y = m.alpha * (out.primal - ref)
    return y, None if out.tangent is None else m.alpha * out.tangent


def _module_rules() -> dict[type, Callable[..., Pair | None]]:
    rules: dict[type, Callable[..., Pair | None]] = {
        nn.Linear: _m_linear, nn.Conv1d: _m_conv, nn.Conv2d: _m_conv, nn.Conv3d: _m_conv,
        nn.LayerNorm: _m_layer_norm, ChannelLayerNorm: _m_channel_layer_norm, OutputScaled: _m_output_scaled,
        nn.ReLU: _m_pointwise(_relu), nn.Tanh: _m_pointwise(_tanh), nn.Sigmoid: _m_pointwise(_sigmoid),
    }
    rules.update(dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _m_batch_norm))
    rules.update(dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _m_max_pool))
    rules.update(dict.fromkeys((nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _m_linear_map))
    rules.update(dict.fromkeys((nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
                                nn.ConstantPad3d), _m_pad))
    rules.update(dict.fromkeys((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d), _m_dropout))
    return rules


_MODULE_RULES: dict[type, Callable[..., Pair | None]] = {}


def module_rules() -> dict[type, Callable[..., Pair | None]]:
    """Module type -> its tangent rule, ``rule(module, prefix, a, da, ctx) -> (y, dy) | None``."""
    if not _MODULE_RULES:
        _MODULE_RULES.update(_module_rules())
    return _MODULE_RULES


# -- function and method rules: (args, kwargs) holding Duals and constants -> (y, dy) | None ----

#: methods and functions linear in their first argument (the others constants): the same call on
#: the tangent
_LINEAR_METHODS = frozenset({"flatten", "view", "reshape", "movedim", "permute", "transpose", "mean", "sum",
                             "squeeze", "unsqueeze", "contiguous", "expand", "t", "unflatten", "__getitem__",
                             "narrow", "select", "chunk", "split", "clone"})
_LINEAR_FUNCTIONS = frozenset({torch.flatten, torch.reshape, torch.movedim, torch.permute, torch.transpose,
                               torch.mean, torch.sum, torch.squeeze, torch.unsqueeze, operator.getitem,
                               F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                               F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.clone, torch.chunk,
                               torch.split, F.dropout})


def _linear_in_first(call: Callable[..., Any], args: tuple, kwargs: dict) -> Pair | None:
    """``call(x, *constants)``, linear in ``x``: the same call on the tangent."""
    if not args or not isinstance(args[0], Dual) or _moving(args[1:]) or _moving(kwargs):
        return None
    rest, kw = _p(args[1:]), _p(kwargs)
    if call is F.dropout and kw.get("training", rest[1] if len(rest) > 1 else True):
        return None
    x = args[0]
    with torch.no_grad():
        y = call(x.primal, *rest, **kw)
    return y, None if x.tangent is None else call(x.tangent, *rest, **kw)


def _broadcast(t: Tensor | None, y: Any) -> Tensor | None:
    if t is not None and isinstance(y, Tensor) and t.shape != y.shape:
        return t.expand(y.shape)
    return t


def _f_add(args: tuple, kwargs: dict, ctx: _Context, sign: int = 1) -> Pair | None:
    if kwargs or len(args) != 2:
        return None
    a, b = args
    with torch.no_grad():
        y = _p(a) + _p(b) if sign > 0 else _p(a) - _p(b)
    db = _t(b)
    return y, _broadcast(_add(_t(a), db if db is None or sign > 0 else -db), y)


def _f_sub(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
    return _f_add(args, kwargs, ctx, -1)


def _f_mul(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
    if kwargs or len(args) != 2:
        return None
    a, b = args
    pa, pb, da, db = _p(a), _p(b), _t(a), _t(b)
    with torch.no_grad():
        y = pa * pb
    return y, _broadcast(_add(None if da is None else da * pb, None if db is None else pa * db), y)


def _f_div(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
    if kwargs or len(args) != 2 or _moving(args[1]):
        return None  # division by a constant only
    a, b = args
    with torch.no_grad():
        y = _p(a) / _p(b)
    return y, None if _t(a) is None else _t(a) / _p(b)


def _f_neg(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
    if kwargs or len(args) != 1:
        return None
    with torch.no_grad():
        y = -_p(args[0])
    return y, None if _t(args[0]) is None else -_t(args[0])


def _f_unary(rule: Callable[..., Pair], **allowed: Any) -> Callable[[tuple, dict, _Context], Pair | None]:
    """A rule on one tensor argument; keyword arguments must take the listed (harmless) values."""

    def f(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
        if len(args) != 1 or not isinstance(args[0], Dual) or any(k not in allowed for k in kwargs):
            return None
        return rule(args[0].primal, args[0].tangent)

    return f


def _f_max_pool(dims: int) -> Callable[[tuple, dict, _Context], Pair | None]:
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")

    def f(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
        if not isinstance(args[0], Dual) or _moving(args[1:]) or _moving(kwargs):
            return None
        values = dict(zip(names, _p(args[1:])))
        values.update(_p(kwargs))
        if values.pop("return_indices", False) or set(values) - set(names):
            return None
        return _max_pool(args[0].primal, args[0].tangent, dims=dims, **values)

    return f


def _f_linear(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
    names = ("input", "weight", "bias")
    v = dict(zip(names, args))
    v.update(kwargs)
    if len(args) > 3 or set(v) - set(names) or not isinstance(v["input"], Dual) or not isinstance(v["weight"], Dual):
        return None
    b = v.get("bias")
    return _bilinear(ctx, F.linear, v["input"].primal, v["input"].tangent, v["weight"].primal, v["weight"].tangent,
                     _p(b), _t(b))


def _f_conv(op: Callable[..., Tensor]) -> Callable[[tuple, dict, _Context], Pair | None]:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")

    def f(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
        v = dict(zip(names, args))
        v.update(kwargs)
        if set(v) - set(names) or not isinstance(v["input"], Dual) or not isinstance(v["weight"], Dual) \
                or _moving([v.get(k) for k in names[3:]]):
            return None
        const = {k: _p(v[k]) for k in names[3:] if k in v}
        b = v.get("bias")

        def call(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
            return op(x, w, bias, **const)

        return _bilinear(ctx, call, v["input"].primal, v["input"].tangent, v["weight"].primal, v["weight"].tangent,
                         _p(b), _t(b))

    return f


def _f_layer_norm(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
    names = ("input", "normalized_shape", "weight", "bias", "eps")
    v = dict(zip(names, args))
    v.update(kwargs)
    if set(v) - set(names) or not isinstance(v["input"], Dual) or _moving(v["normalized_shape"]):
        return None
    w, b = v.get("weight"), v.get("bias")
    return _layer_norm(v["input"].primal, v["input"].tangent, list(_p(v["normalized_shape"])), _p(w), _t(w),
                       _p(b), _t(b), float(_p(v.get("eps", 1e-5))))


def _f_cat(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
    if set(kwargs) - {"dim"} or len(args) > 2 or not isinstance(args[0], (list, tuple)):
        return None
    parts = args[0]
    dim = _p(args[1]) if len(args) > 1 else _p(kwargs.get("dim", 0))
    primals = [_p(u) for u in parts]
    with torch.no_grad():
        y = torch.cat(primals, dim)
    if not _moving(parts):
        return y, None
    return y, torch.cat([torch.zeros_like(p) if _t(u) is None else _t(u) for p, u in zip(primals, parts)], dim)


def _f_relu(args: tuple, kwargs: dict, ctx: _Context) -> Pair | None:
    if len(args) != 1 or not isinstance(args[0], Dual) or set(kwargs) - {"inplace"}:
        return None
    return _relu(args[0].primal, args[0].tangent)


_FUNCTION_RULES: dict[Any, Callable[[tuple, dict, _Context], Pair | None]] = {
    operator.add: _f_add, torch.add: _f_add, operator.sub: _f_sub, torch.sub: _f_sub,
    operator.mul: _f_mul, torch.mul: _f_mul, operator.truediv: _f_div, torch.div: _f_div, operator.neg: _f_neg,
    torch.neg: _f_neg, F.relu: _f_relu, torch.relu: _f_relu, torch.tanh: _f_unary(_tanh), F.tanh: _f_unary(_tanh),
    torch.sigmoid: _f_unary(_sigmoid), F.sigmoid: _f_unary(_sigmoid),
    F.max_pool1d: _f_max_pool(1), F.max_pool2d: _f_max_pool(2), F.max_pool3d: _f_max_pool(3),
    F.linear: _f_linear, F.conv1d: _f_conv(F.conv1d), F.conv2d: _f_conv(F.conv2d), F.conv3d: _f_conv(F.conv3d),
    F.layer_norm: _f_layer_norm, torch.cat: _f_cat,
}
_METHOD_RULES: dict[str, Callable[[tuple, dict, _Context], Pair | None]] = {
    "add": _f_add, "__add__": _f_add, "sub": _f_sub, "__sub__": _f_sub, "mul": _f_mul, "__mul__": _f_mul,
    "div": _f_div, "__truediv__": _f_div, "neg": _f_neg, "relu": _f_relu, "tanh": _f_unary(_tanh),
    "sigmoid": _f_unary(_sigmoid),
}


# --------------------------------------------------------------------------------------------
# the torch.func.jvp fallback, for one layer
# --------------------------------------------------------------------------------------------


def _jvp_call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Pair:
    """``fn(*args, **kwargs)`` through :func:`torch.func.jvp` over the Duals with a tangent (the
    other arguments are closed over)."""
    flat, spec = tree_flatten((args, kwargs), is_leaf=lambda v: isinstance(v, Dual))
    primals = [v.primal if isinstance(v, Dual) else v for v in flat]
    moving = [i for i, v in enumerate(flat) if isinstance(v, Dual) and v.tangent is not None]

    def call(*xs: Any) -> Any:
        values = list(primals)
        for i, x in zip(moving, xs):
            values[i] = x
        a, k = tree_unflatten(values, spec)
        return fn(*a, **k)

    if not moving:
        with torch.no_grad():
            return call(), None
    return jvp(call, tuple(primals[i] for i in moving), tuple(flat[i].tangent for i in moving))


def _jvp_module(m: nn.Module, q: str, args: tuple, kwargs: dict, ctx: _Context) -> Pair:
    """A module through :func:`torch.func.functional_call`: its parameters at theta_s, with their
    displacement as tangent (its buffers as they are)."""
    params = {n: Dual(*ctx.param(f"{q}{n}", p)) for n, p in m.named_parameters()}

    def call(p: dict[str, Tensor], *a: Any, **k: Any) -> Any:
        return functional_call(m, p, a, k)

    return _jvp_call(call, (params, *args), kwargs)


# --------------------------------------------------------------------------------------------
# the program
# --------------------------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    """Leaves: the modules with a rule and, as fx's default, torch.nn's own modules."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m) in module_rules() or super().is_leaf_module(m, module_qualified_name)


class TangentForward:
    """The layer-wise tangent program of a network (see the module docstring).

    Calling it with ``(x, theta_s, theta)`` returns :math:`(f(x;\\theta_s), J(x;\\theta_s)\\delta)`
    with :math:`\\delta = \\theta - \\theta_s`; ``theta_s`` and ``theta`` map the full names of the
    trainable parameters (``prefix`` + the network's own names) to their value at the expansion
    point and their current value. ``theta`` may be differentiable: the tangent is then
    differentiable with respect to it, and it is the only autograd graph built. Parameters absent
    from ``theta`` (frozen ones) and buffers are constants, read from the network at call time.

    Args:
        net: the network (kept by reference). It should be in eval mode, as
            :class:`conelib.linearize.LinearizedModel` keeps it: the trace records ``self.training``
            branches as they are when traced, and BatchNorm / dropout rules refuse train mode.
        prefix: prefix of ``net``'s parameter names in ``theta_s`` / ``theta``.

    Attributes:
        graph: the :mod:`torch.fx` graph; ``None`` when the root module has a rule of its own, or
            when tracing failed (the whole network then goes through :func:`torch.func.jvp`).
        fallbacks: the layers evaluated with :func:`torch.func.jvp`, each with the reason (filled as
            they first run); ``"<whole network>: ..."`` when tracing failed.

    Forward hooks of the network's submodules are not run.
    """

    def __init__(self, net: nn.Module, prefix: str = "") -> None:
        self.net = net
        self.prefix = prefix
        self.fallbacks: list[str] = []
        self.graph: fx.Graph | None = None
        self._whole = False
        self._programs: dict[str, TangentForward] = {}  # of sub-networks, by prefix
        self._fused: dict[fx.Node, fx.Node] = {}  # linear / conv node -> the BatchNorm node it feeds alone
        if type(net) in module_rules():
            return
        try:
            self.graph = _Tracer().trace(net)
        except Exception as err:  # noqa: BLE001 - whatever stops the trace: the generic path
            self._whole = True
            self.fallbacks.append(f"<whole network>: torch.fx cannot trace it ({type(err).__name__}: {err})")
        self._fused = {} if self.graph is None else _batch_norm_pairs(net, self.graph)

    def _note(self, where: str, why: str) -> None:
        line = f"{where}: {why}"
        if line not in self.fallbacks:
            self.fallbacks.append(line)

    def __call__(self, x: Tensor, theta_s: Mapping[str, Tensor], theta: Mapping[str, Tensor], *,
                 record: dict[str, Tensor] | None = None, replay: Mapping[str, Tensor] | None = None) -> Pair:
        """``(f(x; theta_s), J(x; theta_s) (theta - theta_s))``. With ``record`` (a dict), the primal
        outputs of the bilinear layers are put there by node name; with ``replay`` (such a dict, for
        the same ``x`` and ``theta_s``), they are taken from it instead of being computed."""
        out = self.run(Dual(x, None), _Context(theta_s, theta, record, replay, self._programs))
        return out.primal, out.tangent

    def run(self, x: Dual, ctx: _Context) -> Dual:
        """The program on a Dual input (used for sub-networks)."""
        net, q = self.net, self.prefix
        if self.graph is None:
            ctx.node = f"{q}<root>"
            rule = module_rules().get(type(net))
            out = None if rule is None else rule(net, q, x.primal, x.tangent, ctx)
            if out is None:
                if not self._whole:
                    self._note("<root>", f"{type(net).__name__} has no tangent rule in this configuration")
                out = _jvp_module(net, q, (x,), {}, ctx)
            return Dual(*out)
        return self._interpret(x, ctx)

    def _interpret(self, x: Dual, ctx: _Context) -> Dual:
        env: dict[fx.Node, Any] = {}
        net, q, rules = self.net, self.prefix, module_rules()

        def load(a: Any) -> Any:
            return fx.node.map_aggregate(a, lambda v: env[v] if isinstance(v, fx.Node) else v)

        seen_input = False
        done: set[fx.Node] = set()  # BatchNorm nodes computed with their linear / conv layer
        for node in self.graph.nodes:
            op = node.op
            if node in done:
                continue
            if op == "placeholder":
                if seen_input:
                    raise ValueError("a linearized network must take exactly one input tensor")
                seen_input = True
                env[node] = x
            elif op == "get_attr":
                value = _fetch_attr(net, node.target)
                env[node] = Dual(*ctx.param(f"{q}{node.target}", value)) if isinstance(value, Tensor) else value
            elif op == "call_module":
                m = net.get_submodule(node.target)
                args, kwargs = load(node.args), load(node.kwargs)
                bn_node = self._fused.get(node)
                if bn_node is not None and isinstance(args[0], Dual):
                    bn = net.get_submodule(bn_node.target)
                    if not bn.training and bn.running_mean is not None and bn.running_var is not None:
                        ctx.node = f"{q}{node.name}"
                        fn = F.linear if isinstance(m, nn.Linear) else m._conv_forward
                        env[bn_node] = Dual(*_bilinear_batch_norm(ctx, fn, f"{q}{node.target}.", m,
                                                                  f"{q}{bn_node.target}.", bn, *_pd(args[0])))
                        done.add(bn_node)
                        continue
                rule = rules.get(type(m))
                out = None
                if rule is not None and len(args) == 1 and isinstance(args[0], Dual) and not kwargs:
                    ctx.node = f"{q}{node.name}"
                    out = rule(m, f"{q}{node.target}.", args[0].primal, args[0].tangent, ctx)
                if out is None:
                    self._note(f"module {node.target} ({type(m).__name__})", "no tangent rule, torch.func.jvp")
                    out = _jvp_module(m, f"{q}{node.target}.", args, kwargs, ctx)
                env[node] = Dual(*out)
            elif op in ("call_function", "call_method"):
                ctx.node = f"{q}{node.name}"
                env[node] = Dual(*self._call(node, load(node.args), load(node.kwargs), ctx))
            elif op == "output":
                out = load(node.args[0])
                if not isinstance(out, Dual) or not isinstance(out.primal, Tensor):
                    raise ValueError("a linearized network must return one tensor")
                return out
        raise ValueError("the traced network has no output")

    def _call(self, node: fx.Node, args: tuple, kwargs: dict, ctx: _Context) -> Pair:
        target = node.target
        method = node.op == "call_method"
        if not _moving(args) and not _moving(kwargs):  # constant in theta (e.g. before the first layer)
            pa, pk = _p(args), _p(kwargs)
            with torch.no_grad():
                y = getattr(pa[0], target)(*pa[1:], **pk) if method else target(*pa, **pk)
            return y, None
        if method:
            rule = _METHOD_RULES.get(target)

            def fn(s: Any, *a: Any, **k: Any) -> Any:
                return getattr(s, target)(*a, **k)

            name = f"method .{target}()"
            linear = target in _LINEAR_METHODS
        else:
            rule = _FUNCTION_RULES.get(target)
            fn = target
            name = f"function {getattr(target, '__module__', '')}.{getattr(target, '__name__', repr(target))}"
            linear = target in _LINEAR_FUNCTIONS
        out = rule(args, kwargs, ctx) if rule is not None else None
        if out is None and linear:
            out = _linear_in_first(fn, args, kwargs)
        if out is None:
            self._note(name, "no tangent rule, torch.func.jvp")
            out = _jvp_call(fn, args, kwargs)
        return out


def _pd(d: Dual) -> tuple[Any, Any]:
    return d.primal, d.tangent


_BN_AFTER: dict[type, tuple[type, ...]] = {
    nn.Linear: (nn.BatchNorm1d,), nn.Conv1d: (nn.BatchNorm1d,), nn.Conv2d: (nn.BatchNorm2d,),
    nn.Conv3d: (nn.BatchNorm3d,),
}


def _batch_norm_pairs(net: nn.Module, graph: fx.Graph) -> dict[fx.Node, fx.Node]:
    """Linear / convolution nodes whose only user is a BatchNorm module applied to them alone."""
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs or len(node.users) != 1:
            continue
        after = _BN_AFTER.get(type(net.get_submodule(node.target)))
        (user,) = node.users
        if after and user.op == "call_module" and user.args == (node,) and not user.kwargs \
                and type(net.get_submodule(user.target)) in after:
            pairs[node] = user
    return pairs


def _fetch_attr(net: nn.Module, target: str) -> Any:
    obj: Any = net
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


