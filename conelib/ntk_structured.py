"""A structured eNTK: layer by layer, from input Grams and backpropagated signals.

For an ``nn.Linear`` layer :math:`z = W a + b` (:math:`W \\in \\mathbb{R}^{O \\times K}`) applied
to an example :math:`x_i`, the derivative of logit :math:`f_c` with respect to :math:`W` is the
outer product :math:`g_{ic} a_i^\\top` of the *signal* :math:`g_{ic} = \\partial f_c(x_i) / \\partial z_i`
and the layer's *input* :math:`a_i`. Its contribution to the eNTK is therefore

.. math::

    \\Theta^{(W, b)}(x_i, x_j)_{cd} = \\langle g_{ic}, g_{jd} \\rangle \\,
        \\big(\\langle a_i, a_j \\rangle + 1\\big),

a Gram of signals times a Gram of inputs (the :math:`+1` is the bias), which costs
:math:`O(n^2 (c^2 O + K))` instead of the :math:`O(n^2 c^2 O K)` of a Jacobian contraction and
never forms a Jacobian. This is the "structured derivatives" idea of Novak, Sohl-Dickstein &
Schoenholz (2022, "Fast finite width neural tangent kernel", ICML, sec. 3.3 and 4), which
neural-tangents implements on JAX jaxprs; here it is written for PyTorch modules.

A layer applied at several *positions* :math:`s = 1..S` per example (the :math:`H' W'` output
pixels of an ``nn.Conv2d``, whose inputs are the image patches :math:`p_{is}` of ``F.unfold``; or
an ``nn.Linear`` applied to a sequence) has the per-example weight derivative
:math:`G_{ic} = \\sum_s g_{ics} \\, p_{is}^\\top` (the bias derivative is :math:`\\sum_s g_{ics}`, which
is the same formula with a constant 1 appended to every patch). Its kernel contribution can be
computed in two ways, chosen per layer by their FLOP counts (:func:`layer_costs`):

``"jacobian"`` (form, then contract)
    :math:`G_{ic} \\in \\mathbb{R}^{O \\times K}` by one batched matmul per example
    (:math:`2 c S O K` FLOPs), then :math:`\\langle G_{ic}, G_{jd} \\rangle` for all pairs
    (:math:`2 c^2 O K` FLOPs per pair; :math:`2 c O K` for the trace). Wins when
    :math:`S` is large (early convolutions).
``"gram"`` (Grams of positions)
    :math:`\\sum_{s,t} \\langle g_{ics}, g_{jdt} \\rangle \\langle p_{is}, p_{jt} \\rangle`:
    a Gram of patches (:math:`2 S^2 K` per pair) and of signals (:math:`2 S^2 c O` per pair, then
    :math:`2 c^2 S O`). With :math:`S = 1` (every ``nn.Linear`` of an MLP) this is the formula above.

The signals of all layers come from **one** batched backward pass per logit: a forward hook adds
a zero *probe* tensor to the output of every structured layer, and
``vmap(jacrev(f, argnums=probes))`` differentiates the logits with respect to those probes. The
layer inputs are returned from the same forward pass (``has_aux``). No weight gradient is ever
computed for a structured layer.

Every other trainable parameter (normalisation affines, embeddings, ...) and every layer that
the structured form cannot handle exactly goes through the Jacobian path (per-example Jacobians by
``vmap(jacrev)``), restricted to those parameters and computed in the same pass. A layer is
structured only when :func:`plan_structured` can prove the formula exact for it, on one traced
forward pass:

* it is an ``nn.Linear`` or an ``nn.Conv2d`` (``groups=1``) whose ``forward`` is not overridden;
* its weight is trainable and owned by no other module (no tied weights);
* it is called exactly once per forward pass (weight sharing, e.g. a layer applied twice, is
  detected and falls back), and its weight and bias are used by no operation outside its own
  ``forward`` (watched with a :class:`torch.overrides.TorchFunctionMode`).

The examples of a batch must be independent (true in eval mode, which :mod:`conelib.ntk` uses).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vjp, vmap
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "LAYER_MODES",
    "StructuredLayer",
    "StructuredPlan",
    "plan_structured",
    "layer_costs",
    "choose_layer_modes",
    "structured_cost",
    "structured_ntk",
]

#: how a structured layer's contribution is contracted (see the module docstring)
LAYER_MODES: tuple[str, ...] = ("jacobian", "gram")

_KINDS: tuple[str, ...] = ("full", "trace", "logit_sum")


@dataclass(frozen=True)
class StructuredLayer:
    """One layer whose kernel contribution is computed from its input and its signal.

    Attributes:
        module: qualified name of the module (``model.get_submodule(module)``).
        op: ``"linear"`` or ``"conv2d"``.
        weight: name of the weight in ``model.named_parameters()``.
        bias: name of the trainable bias, or ``None`` (no bias, or a frozen one).
        out_features: :math:`O` (output features / channels).
        in_features: :math:`K` (input features, or :math:`C_{in} k_h k_w` for a convolution).
        positions: :math:`S`, positions per example at which the layer is applied.
        in_shape, out_shape: the module's input and output shapes for one example
            (as seen inside the per-example function, i.e. with its batch dimension of 1).
        kernel_size, stride, dilation: convolution geometry.
        pad: ``(left, right, top, bottom)`` padding applied before ``F.unfold``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
    """

    module: str
    op: str
    weight: str
    bias: str | None
    out_features: int
    in_features: int
    positions: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    padding_mode: str = "zeros"

    @property
    def k_aug(self) -> int:
        """:math:`K` plus one column of ones when the bias is trainable."""
        return self.in_features + (1 if self.bias is not None else 0)

    @property
    def n_params(self) -> int:
        return self.out_features * self.k_aug


@dataclass(frozen=True)
class StructuredPlan:
    """Which parameters take the structured path and which the Jacobian path.

    Attributes:
        layers: the structured layers, in forward order.
        rest: names of the other trainable parameters (Jacobian path).
        skipped: ``(module, reason)`` for every Linear/Conv2d left to the Jacobian path.
        n_logits: number of outputs of one example.
    """

    layers: tuple[StructuredLayer, ...]
    rest: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    n_logits: int = 1


# --------------------------------------------------------------------------------------------
# planning: which layers are provably structured
# --------------------------------------------------------------------------------------------


class _UsageWatch(TorchFunctionMode):
    """Record every torch operation that touches a watched parameter outside its owner module."""

    def __init__(self, watched: dict[int, str]) -> None:
        super().__init__()
        self.watched = watched
        self.stack: list[str] = []
        self.outside: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        for leaf in tree_flatten((args, kwargs))[0]:
            if isinstance(leaf, Tensor):
                owner = self.watched.get(id(leaf))
                if owner is not None and (not self.stack or self.stack[-1] != owner):
                    self.outside.add(owner)
        return func(*args, **kwargs)


def _conv_padding(m: nn.Conv2d) -> tuple[int, int, int, int] | None:
    """(left, right, top, bottom) as ``nn.Conv2d`` pads, or ``None`` if not expressible."""
    kh, kw = m.kernel_size
    dh, dw = m.dilation
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0, 0, 0)
        if m.padding == "same":
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        return None
    ph, pw = m.padding
    return (pw, pw, ph, ph)


def _candidate_reason(m: nn.Module) -> str | None:
    """Why ``m`` cannot be structured by its type alone (``None``: it can, if used cleanly)."""
    if isinstance(m, nn.Linear):
        if type(m).forward is not nn.Linear.forward:
            return "nn.Linear subclass with its own forward"
        return None
    if isinstance(m, nn.Conv2d):
        if type(m).forward is not nn.Conv2d.forward:
            return "nn.Conv2d subclass with its own forward"
        if m.groups != 1:
            return f"grouped convolution (groups={m.groups})"
        if m.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            return f"padding_mode={m.padding_mode!r}"
        if _conv_padding(m) is None:
            return f"padding={m.padding!r}"
        return None
    return "not Linear/Conv2d"


def plan_structured(model: nn.Module, example: Tensor) -> StructuredPlan:
    """Decide, on one traced forward pass of ``example[:1]``, which layers are structured.

    The model should already be in the mode in which the kernel is evaluated (eval mode).
    See the module docstring for the conditions; every Linear/Conv2d that fails one is listed in
    :attr:`StructuredPlan.skipped` with the reason, and its parameters join
    :attr:`StructuredPlan.rest`.
    """
    trainable = [(k, v) for k, v in model.named_parameters() if v.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters (requires_grad=True): its eNTK is zero")
    name_of = {id(v): k for k, v in trainable}
    owners: dict[int, int] = {}
    for mod in model.modules():
        for p in mod._parameters.values():  # noqa: SLF001 - ownership, incl. tied weights
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1

    skipped: dict[str, str] = {}
    candidates: dict[str, nn.Module] = {}
    for mname, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Conv2d)):
            continue
        reason = _candidate_reason(mod)
        w = mod.weight
        if reason is None and (not isinstance(w, nn.Parameter) or id(w) not in name_of):
            reason = "weight is not a trainable parameter"
        if reason is None and owners.get(id(w), 0) > 1:
            reason = "weight shared with another module"
        b = mod.bias
        if reason is None and b is not None and b.requires_grad and owners.get(id(b), 0) > 1:
            reason = "bias shared with another module"
        if reason is None:
            candidates[mname] = mod
        else:
            skipped[mname] = reason

    watched: dict[int, str] = {}
    for mname, mod in candidates.items():
        watched[id(mod.weight)] = mname
        if mod.bias is not None:
            watched[id(mod.bias)] = mname
    watch = _UsageWatch(watched)
    calls: dict[str, int] = {k: 0 for k in candidates}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def pre(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, _inputs: tuple) -> None:
            calls[name] += 1
            watch.stack.append(name)

        return hook

    def post(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, inputs: tuple, out: Tensor) -> None:
            watch.stack.pop()
            shapes[name] = (tuple(inputs[0].shape), tuple(out.shape))

        return hook

    handles = []
    for mname, mod in candidates.items():
        handles.append(mod.register_forward_pre_hook(pre(mname)))
        handles.append(mod.register_forward_hook(post(mname)))
    p0 = trainable[0][1]
    x = example[:1].to(device=p0.device, dtype=p0.dtype)
    try:
        with torch.no_grad(), watch:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    n_logits = int(out.reshape(1, -1).shape[1])

    layers: list[StructuredLayer] = []
    for mname, mod in candidates.items():
        if calls[mname] == 0:
            skipped[mname] = "not called in the forward pass"
            continue
        if calls[mname] > 1:
            skipped[mname] = f"called {calls[mname]} times per forward pass (weight sharing)"
            continue
        if mname in watch.outside:
            skipped[mname] = "its weight or bias is used outside its forward"
            continue
        in_shape, out_shape = shapes[mname]
        bias = name_of[id(mod.bias)] if mod.bias is not None and id(mod.bias) in name_of else None
        if isinstance(mod, nn.Linear):
            layers.append(
                StructuredLayer(
                    module=mname, op="linear", weight=name_of[id(mod.weight)], bias=bias,
                    out_features=mod.out_features, in_features=mod.in_features,
                    positions=max(1, math.prod(in_shape) // mod.in_features),
                    in_shape=in_shape, out_shape=out_shape,
                )
            )
        else:
            kh, kw = mod.kernel_size
            pad = _conv_padding(mod)
            assert pad is not None
            layers.append(
                StructuredLayer(
                    module=mname, op="conv2d", weight=name_of[id(mod.weight)], bias=bias,
                    out_features=mod.out_channels, in_features=mod.in_channels * kh * kw,
                    positions=math.prod(out_shape) // mod.out_channels,
                    in_shape=in_shape, out_shape=out_shape,
                    kernel_size=(kh, kw), stride=tuple(mod.stride), dilation=tuple(mod.dilation),  # type: ignore[arg-type]
                    pad=pad, padding_mode=mod.padding_mode,
                )
            )
    claimed = {l.weight for l in layers} | {l.bias for l in layers if l.bias is not None}
    rest = tuple(k for k, _ in trainable if k not in claimed)
    return StructuredPlan(tuple(layers), rest, tuple(sorted(skipped.items())), n_logits)


# --------------------------------------------------------------------------------------------
# cost model
# --------------------------------------------------------------------------------------------


def _pairs(n1: int, n2: int, symmetric: bool) -> float:
    return n1 * (n1 + 1) / 2 if symmetric else float(n1 * n2)


def layer_costs(layer: StructuredLayer, n1: int, n2: int, kind: str, c: int, symmetric: bool) -> dict[str, float]:
    """FLOPs of one layer's kernel contribution in each of :data:`LAYER_MODES`.

    With :math:`N` example pairs (:math:`n_1 n_2`, or :math:`n(n+1)/2` when symmetric), ``c``
    logits (1 for ``logit_sum``), :math:`K' = K + [\\text{bias}]`:

    * ``jacobian``: :math:`2 (n_1 + n_2) c S O K'` to form, plus :math:`2 N c^2 O K'` (full) or
      :math:`2 N c O K'` (trace) to contract;
    * ``gram`` with :math:`S = 1`: :math:`2 N K' + 2 N c^2 O + N c^2` (full),
      :math:`2 N K' + 2 N c O + N` (trace);
    * ``gram`` with :math:`S > 1`: :math:`2 N S^2 K' + 2 N S^2 c O`, plus :math:`2 N c^2 S O`
      (full) or :math:`N S^2` (trace).
    """
    S, O, K = layer.positions, layer.out_features, layer.k_aug
    N = _pairs(n1, n2, symmetric)
    n_form = n1 if symmetric else n1 + n2
    cc = c * c if kind == "full" else c
    jac = 2.0 * n_form * c * S * O * K + 2.0 * N * cc * O * K
    if S == 1:
        gram = 2.0 * N * K + 2.0 * N * cc * O + N * cc
    else:
        gram = 2.0 * N * S * S * K + 2.0 * N * S * S * c * O + (2.0 * N * cc * S * O if kind == "full" else N * S * S)
    return {"jacobian": jac, "gram": gram}


def _gram_block_bytes(layer: StructuredLayer, b1: int, b2: int, kind: str, c: int, item: int) -> float:
    """Largest intermediate of the ``gram`` mode on a (b1, b2) block."""
    S, O = layer.positions, layer.out_features
    if S == 1:
        return float(b1 * b2 * c * c * item)
    big = b1 * b2 * S * (S + (c * O if kind == "full" else S))
    return float(big * item)


def choose_layer_modes(
    plan: StructuredPlan, n1: int, n2: int, kind: str, symmetric: bool,
    block: tuple[int, int] | None = None, memory_limit: float = math.inf, itemsize: int = 4,
) -> dict[str, str]:
    """Per layer, the mode of lower :func:`layer_costs` whose block intermediates fit in memory."""
    c = 1 if kind == "logit_sum" else plan.n_logits
    b1, b2 = block if block is not None else (n1, n2)
    modes = {}
    for layer in plan.layers:
        cost = layer_costs(layer, n1, n2, kind, c, symmetric)
        mode = min(cost, key=cost.__getitem__)
        if mode == "gram" and layer.positions > 1 and _gram_block_bytes(layer, b1, b2, kind, c, itemsize) > memory_limit / 4:
            mode = "jacobian"
        modes[layer.module] = mode
    return modes


def structured_cost(
    plan: StructuredPlan, forward_flops: float, n1: int, n2: int, kind: str, symmetric: bool = False,
    n_rest_params: int | None = None,
) -> float:
    """Approximate FLOPs of :func:`structured_ntk` for a kernel block.

    Signals: one forward pass and, per logit, one backward pass that computes input gradients
    only (about one forward each): :math:`F (1 + c)` per example. Parameters left to the
    Jacobian path add their weight gradients (about :math:`2 c P_{rest}` per example) and their
    contraction; every structured layer adds the cheaper of its :func:`layer_costs`.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} is not supported; choose one of {', '.join(map(repr, _KINDS))}")
    c = 1 if kind == "logit_sum" else plan.n_logits
    n_form = n1 if symmetric else n1 + n2
    total = forward_flops * (1 + c) * n_form
    modes = choose_layer_modes(plan, n1, n2, kind, symmetric)
    for layer in plan.layers:
        total += layer_costs(layer, n1, n2, kind, c, symmetric)[modes[layer.module]]
    p_rest = n_rest_params or 0
    cc = c * c if kind == "full" else c
    total += 2.0 * c * p_rest * n_form + 2.0 * _pairs(n1, n2, symmetric) * cc * p_rest
    return total


# --------------------------------------------------------------------------------------------
# computation
# --------------------------------------------------------------------------------------------


@dataclass
class _Features:
    """What one chunk of ``b`` examples contributes, logit-major (``c`` first).

    ``jac``: per-example Jacobians ``(c, b, P_k)``: the rest parameters (one tensor) and each
    jacobian-mode layer. ``grams``: per gram-mode layer, its signals ``(c, b, O, S)`` and its
    inputs ``(b, K', S)``.
    """

    jac: list[Tensor]
    grams: list[tuple[Tensor, Tensor]]

    @property
    def shape(self) -> tuple[int, int]:
        t = self.jac[0] if self.jac else self.grams[0][0]
        return t.shape[0], t.shape[1]


@contextmanager
def _probe_hooks(model: nn.Module, plan: StructuredPlan, ctx: dict) -> Iterator[None]:
    """Forward hooks that record each structured layer's input and add its zero probe."""

    def make(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, inputs: tuple, out: Tensor) -> Tensor:
            ctx["inputs"][name] = inputs[0]
            return out + ctx["probes"][name]

        return hook

    handles = [model.get_submodule(l.module).register_forward_hook(make(l.module)) for l in plan.layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _unfold_into(out: Tensor, img: Tensor, kernel: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int]) -> None:
    """Write ``F.unfold(img, kernel, dilation=..., stride=...)`` (no padding) into ``out``.

    ``out``: ``(B, C k_h k_w, H' W')``, possibly a slice of a larger buffer. Written as a strided
    view and one copy, because ``F.unfold`` (``im2col``) was measured up to 100x slower on a
    loaded 2-core CPU with OpenMP threads.
    """
    (kh, kw), (dh, dw), (sh, sw) = kernel, dilation, stride
    v = img.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)  # (B, C, H', W', span_h, span_w)
    v = v[..., ::dh, ::dw]  # (B, C, H', W', kh, kw)
    B, C, Ho, Wo = v.shape[:4]
    out.view(B, C, kh, kw, Ho, Wo).copy_(v.permute(0, 1, 4, 5, 2, 3))


def _unfold(img: Tensor, kernel: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Same result and layout as ``F.unfold`` without padding (see :func:`_unfold_into`)."""
    (kh, kw), (dh, dw), (sh, sw) = kernel, dilation, stride
    B, C, H, W = img.shape
    Ho = (H - dh * (kh - 1) - 1) // sh + 1
    Wo = (W - dw * (kw - 1) - 1) // sw + 1
    out = img.new_empty(B, C * kh * kw, Ho * Wo)
    _unfold_into(out, img, kernel, dilation, stride)
    return out


def _patches(layer: StructuredLayer, a: Tensor) -> Tensor:
    """Inputs of ``layer`` for a chunk, ``(b, K', S)`` (a row of ones appended for the bias)."""
    b = a.shape[0]
    K, extra = layer.in_features, (1 if layer.bias is not None else 0)
    if layer.op == "linear":
        p = a.reshape(b, -1, K).transpose(1, 2)  # (b, K, S)
        if not extra:
            return p
        out = a.new_empty(b, K + 1, p.shape[-1])
        out[:, :K] = p
        out[:, K] = 1
        return out
    c_in, h, w = layer.in_shape[-3:]
    img = a.reshape(-1, c_in, h, w)
    if any(layer.pad):
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        img = F.pad(img, layer.pad, mode=mode)
    m = img.shape[0] // b
    S1 = math.prod(layer.out_shape[-2:])
    if m == 1:
        out = a.new_empty(b, K + extra, S1)
        _unfold_into(out[:, :K], img, layer.kernel_size, layer.dilation, layer.stride)
    else:  # several images per example (a conv applied to a stack): positions are (image, pixel)
        cols = _unfold(img, layer.kernel_size, layer.dilation, layer.stride)  # (b*m, K, S1)
        out = a.new_empty(b, K + extra, m * S1)
        out[:, :K] = cols.reshape(b, m, K, S1).transpose(1, 2).reshape(b, K, m * S1)
    if extra:
        out[:, K] = 1
    return out


def _signal(layer: StructuredLayer, g: Tensor) -> Tensor:
    """Signals of ``layer`` for a chunk, from the probe Jacobian ``(c, b, *out_shape)`` to ``(c, b, O, S)``."""
    c, b = g.shape[:2]
    O = layer.out_features
    if layer.op == "linear":
        return g.reshape(c, b, -1, O).transpose(2, 3)
    # (*lead, O, H', W') per example -> (c, b, m, O, S') -> (c, b, O, m S')
    g = g.reshape(c, b, -1, O, math.prod(layer.out_shape[-2:]))
    return g.transpose(2, 3).reshape(c, b, O, -1)


def _batchable(plan: StructuredPlan) -> bool:
    """Whether every structured layer sees the batch as its leading dimension (size 1 per example)."""
    return all(l.in_shape[:1] == (1,) and l.out_shape[:1] == (1,) for l in plan.layers)


#: working set (bytes) of one pass of :func:`_features`: larger sub-chunks of examples were
#: measured slower per example on a 2-core CPU (ResNet-20: 14 ms/example in chunks of 16,
#: 34 ms/example in one chunk of 128), because their tensors no longer stay in cache
PASS_BYTES = 128 * 2**20


def _features(
    model: nn.Module, params: dict[str, Tensor], frozen: dict[str, Tensor], plan: StructuredPlan,
    modes: dict[str, str], x: Tensor, kind: str, pass_size: int | None = None,
) -> _Features:
    """Signals, inputs and rest-parameter Jacobians of one chunk.

    Computed in passes of ``pass_size`` examples (default: all), each written into the chunk's
    feature tensors, so that a contraction block can be larger than one pass.
    """
    b = x.shape[0]
    c = 1 if kind == "logit_sum" else plan.n_logits
    step = b if pass_size is None else max(1, min(b, pass_size))
    rest_numel = sum(params[k].numel() for k in plan.rest)
    jac: list[Tensor] = [x.new_empty(c, b, rest_numel)] if plan.rest else []
    grams: list[tuple[Tensor, Tensor]] = []
    for layer in plan.layers:
        if modes[layer.module] == "gram":
            grams.append((x.new_empty(c, b, layer.out_features, layer.positions),
                          x.new_empty(b, layer.k_aug, layer.positions)))
        else:
            jac.append(x.new_empty(c, b, layer.n_params))
    for start in range(0, b, step):
        sl = slice(start, min(b, start + step))
        _pass(model, params, frozen, plan, modes, x[sl], kind, c, _Features([j[:, sl] for j in jac], [(g[:, sl], p[sl]) for g, p in grams]))
    return _Features(jac, grams)


def _pass(
    model: nn.Module, params: dict[str, Tensor], frozen: dict[str, Tensor], plan: StructuredPlan,
    modes: dict[str, str], x: Tensor, kind: str, c: int, dst: _Features,
) -> None:
    """One batched forward/backward pass over ``x``; results written into the views ``dst``."""
    rest = {k: params[k] for k in plan.rest}
    const = {k: v for k, v in params.items() if k not in rest}
    ctx: dict = {}
    b = x.shape[0]

    def single(probe: dict[str, Tensor], rest_p: dict[str, Tensor], xi: Tensor):  # type: ignore[no-untyped-def]
        ctx["probes"], ctx["inputs"] = probe, {}
        out = functional_call(model, (rest_p, const, frozen), (xi.unsqueeze(0),)).reshape(-1)
        if kind == "logit_sum":
            out = out.sum().unsqueeze(0)
        return out, dict(ctx["inputs"])

    def batch(probe: dict[str, Tensor]):  # type: ignore[no-untyped-def]
        ctx["probes"], ctx["inputs"] = probe, {}
        out = functional_call(model, (const, frozen), (x,)).reshape(b, -1)
        if kind == "logit_sum":
            out = out.sum(-1, keepdim=True)
        return out, dict(ctx["inputs"])

    j_rest: dict[str, Tensor] = {}
    with _probe_hooks(model, plan, ctx):
        if rest or not _batchable(plan):
            # per example: vmap over the chunk of jacrev w.r.t. the probes (and rest parameters)
            probes = {l.module: x.new_zeros((b, *l.out_shape)) for l in plan.layers}
            if rest:
                (j_probe, j_rest), inputs = vmap(jacrev(single, argnums=(0, 1), has_aux=True), in_dims=(0, None, 0))(probes, rest, x)
            else:
                j_probe, inputs = vmap(jacrev(single, argnums=0, has_aux=True), in_dims=(0, None, 0))(probes, rest, x)
            j_probe = {k: v.transpose(0, 1) for k, v in j_probe.items()}  # logit-major
        else:
            # one forward pass of the chunk, then c batched backward passes (cotangent e_a for
            # every example at once: the examples are independent, as in eval mode)
            probes = {l.module: x.new_zeros((b, *l.out_shape[1:])) for l in plan.layers}
            _, pullback, inputs = vjp(batch, probes, has_aux=True)
            eye = torch.eye(c, device=x.device, dtype=x.dtype)
            (j_probe,) = vmap(pullback)(eye[:, None, :].expand(c, b, c))  # (c, b, ...) per probe
    ctx.clear()

    jac, grams = iter(dst.jac), iter(dst.grams)
    if j_rest:
        out = next(jac)
        at = 0
        for j in j_rest.values():
            k = j[0].numel() // c
            out[:, :, at : at + k] = j.reshape(b, c, k).transpose(0, 1)
            at += k
    for layer in plan.layers:
        g = _signal(layer, j_probe.pop(layer.module))  # (c, b, O, S)
        p = _patches(layer, inputs.pop(layer.module))  # (b, K', S)
        if modes[layer.module] == "gram":
            g_out, p_out = next(grams)
            g_out.copy_(g)
            p_out.copy_(p)
        else:
            # per-example weight (and bias) derivative for each logit: G = g p^T, (c, b, O, K')
            G = next(jac).view(c, b, layer.out_features, p.shape[1])
            pt = p.transpose(1, 2)
            for a in range(c):
                torch.bmm(g[a], pt, out=G[a])
        del g, p


def _logit_minor(g: Tensor) -> Tensor:
    r"""Signals ``(c, b, O, 1)`` of a one-position layer as ``(b, c O)``: the trace kernel's
    signal Gram :math:`\sum_k \langle g_{ik}, g_{jk} \rangle` is then one GEMM."""
    c, b, O = g.shape[:3]
    return g[..., 0].permute(1, 0, 2).reshape(b, c * O)


def _contract(f1: _Features, f2: _Features, kind: str) -> Tensor:
    """Kernel block between two chunks: ``(c, b1, c, b2)`` for full, ``(b1, b2)`` otherwise.

    Contributions are accumulated in place (``addmm_``, ``addcmul_``) into one block.
    """
    c, b1 = f1.shape
    b2 = f2.shape[1]
    full = kind == "full"
    some = f1.jac[0] if f1.jac else f1.grams[0][0]
    out = some.new_zeros((c * b1, c * b2) if full else (b1, b2))
    out4 = out.view(c, b1, c, b2) if full else out
    for a, b in zip(f1.jac, f2.jac):
        if full:
            out.addmm_(a.reshape(c * b1, -1), b.reshape(c * b2, -1).T)
        else:
            for k in range(c):
                out.addmm_(a[k], b[k].T)
    scratch: Tensor | None = None  # one buffer for every layer's signal Gram (fewer page faults)
    for (g1, p1), (g2, p2) in zip(f1.grams, f2.grams):
        O, S = g1.shape[2:]
        if S == 1:
            gram_in = p1[..., 0] @ p2[..., 0].T  # (b1, b2)
            if full:
                if scratch is None:
                    scratch = out.new_empty(c * b1, c * b2)
                torch.mm(g1.reshape(c * b1, O), g2.reshape(c * b2, O).T, out=scratch)
                out4.addcmul_(scratch.view(c, b1, c, b2), gram_in[None, :, None, :])
            else:
                # sum_k <g_ik, g_jk> as one GEMM over (logit, unit) pairs
                sig = _logit_minor(g1) @ _logit_minor(g2).T
                out.addcmul_(sig, gram_in)
            continue
        gram_in = torch.einsum("iks,jkt->isjt", p1, p2)  # (b1, S, b2, S)
        if full:
            t = torch.einsum("isjt,bjot->isbjo", gram_in, g2)
            out4.add_(torch.einsum("aios,isbjo->aibj", g1, t))
        else:
            sig = torch.einsum("aios,ajot->isjt", g1, g2)
            out.add_((sig.mul_(gram_in)).sum((1, 3)))
    return out4


def _contract_symmetric(f: _Features, kind: str, min_rows: int | None = None) -> Tensor:
    r""":func:`_contract` of a chunk with itself, computing only the upper blocks (a blocked SYRK).

    The block is symmetric: as a ``(c b) x (c b)`` matrix for the full kernel, ``b x b`` for the
    others. Its rows are split in groups of at least ``min_rows`` (full: 256, whole logits per
    group; trace: 128 examples; smaller GEMM outputs lose more speed than the halved FLOPs gain),
    only the blocks on and above the diagonal are computed, for the Jacobian part
    (:math:`\sum_k A_k A_k^\top`) and the Gram-mode layers with one position, and the lower
    blocks are mirrored. Gram-mode layers with several positions (rare) are contracted whole.
    """
    c, b = f.shape
    full = kind == "full"
    rows = c * b if full else b
    min_rows = min_rows or (256 if full else 128)
    if full:
        parts = min(c, rows // min_rows)
        blocks = [slice(g.start * b, g.stop * b) for g in _chunks(c, -(-c // max(parts, 1)))]
    else:
        parts = min(8, rows // min_rows)
        blocks = _chunks(rows, -(-rows // max(parts, 1)))
    if parts < 2:
        return _contract(f, f, kind)
    some = f.jac[0] if f.jac else f.grams[0][0]
    out = some.new_zeros(rows, rows)
    pairs = [(I, J) for i, I in enumerate(blocks) for J in blocks[i:]]
    for A in f.jac:
        for M in [A.reshape(c * b, -1)] if full else list(A):
            for I, J in pairs:
                out[I, J].addmm_(M[I], M[J].T)
    several: list[tuple[Tensor, Tensor]] = []
    for g, p in f.grams:
        O, S = g.shape[2:]
        if S != 1:
            several.append((g, p))
            continue
        gram_in = p[..., 0] @ p[..., 0].T  # (b, b)
        if full:
            G = g.reshape(c * b, O)
            for I, J in pairs:
                la, lb = (I.stop - I.start) // b, (J.stop - J.start) // b
                sig = (G[I] @ G[J].T).view(la, b, lb, b)
                out[I, J].view(la, b, lb, b).addcmul_(sig, gram_in[None, :, None, :])
        else:
            G = _logit_minor(g)
            for I, J in pairs:
                out[I, J].addcmul_(G[I] @ G[J].T, gram_in[I, J])
    for i, I in enumerate(blocks):
        for J in blocks[i + 1 :]:
            out[J, I] = out[I, J].T
    if several:
        only = _Features([], several)
        out += _contract(only, only, kind).reshape(rows, rows)
    return out.view(c, b, c, b) if full else out


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def structured_ntk(
    model: nn.Module,
    params: dict[str, Tensor],
    frozen: dict[str, Tensor],
    plan: StructuredPlan,
    x1: Tensor,
    x2: Tensor | None,
    kind: str,
    memory_limit: float,
    modes: dict[str, str] | None = None,
) -> Tensor:
    """The eNTK by the structured method (see the module docstring).

    Args:
        model: the network, already in the mode to evaluate (eval mode).
        params: trainable parameters (detached), by name; ``frozen``: the other parameters and
            buffers. ``plan``: from :func:`plan_structured` on this model.
        x1, x2: input batches on the parameters' device and dtype (``x2=None``: symmetric).
        kind: ``"full"``, ``"trace"`` or ``"logit_sum"``.
        memory_limit: approximate bound in bytes on one chunk's transient memory; examples are
            processed in chunks that fit, and the features of every chunk are kept for reuse
            only if they all fit in half of it (else they are recomputed per block).
        modes: per-layer :data:`LAYER_MODES` (default: :func:`choose_layer_modes`).

    Returns:
        ``(n1, n2, c, c)`` for ``full``, ``(n1, n2)`` otherwise.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} is not supported; choose one of {', '.join(map(repr, _KINDS))}")
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    c_out = plan.n_logits
    c = 1 if kind == "logit_sum" else c_out
    item = x1.element_size()
    p_rest = sum(params[k].numel() for k in plan.rest)

    def per_example(ms: dict[str, str]) -> tuple[float, float]:
        """Bytes per example: (features kept for the contraction, transients of the pass)."""
        sig = sum(math.prod(l.out_shape) for l in plan.layers)
        act_in = sum(math.prod(l.in_shape) for l in plan.layers)
        feat = c * p_rest
        for l in plan.layers:
            feat += (c * l.out_features + l.k_aug) * l.positions if ms[l.module] == "gram" else c * l.n_params
        # signals of the c backward passes, the forward activations and the layer inputs
        return float(item * feat), float(item * ((c + 1) * sig + act_in))

    def sizes(ms: dict[str, str]) -> tuple[int, int]:
        """(examples per forward/backward pass, examples per contraction block)."""
        feat_e, trans_e = per_example(ms)
        per_pass = max(1, min(max(n1, n2), int(min(PASS_BYTES, memory_limit / 2) // (feat_e + trans_e))))
        # one block: its features plus the transients of one pass, within half the bound
        block = int((memory_limit / 2 - per_pass * trans_e) // feat_e) if feat_e else max(n1, n2)
        return per_pass, max(1, min(max(n1, n2), block))

    given = modes is not None
    modes = dict(modes) if modes is not None else choose_layer_modes(plan, n1, n2, kind, symmetric)
    per_pass, chunk = sizes(modes)
    if not given:
        # a gram-mode layer whose block intermediates would not fit goes back to the jacobian mode
        fitted = choose_layer_modes(plan, n1, n2, kind, symmetric, (chunk, chunk), memory_limit, item)
        for name, mode in fitted.items():
            if mode == "jacobian" and modes.get(name) == "gram":
                modes[name] = "jacobian"
        per_pass, chunk = sizes(modes)
    feat_e, trans_e = per_example(modes)
    # features are kept for reuse while they fit beside one block being computed
    cache_budget = memory_limit - chunk * feat_e - per_pass * trans_e
    cached_bytes = [0.0]

    rows, cols = _chunks(n1, chunk), _chunks(n2, chunk)
    shape = (n1, n2, c_out, c_out) if kind == "full" else (n1, n2)
    out = torch.empty(shape, device=x1.device, dtype=x1.dtype)
    cache: dict[int, _Features] = {}

    def feats(x: Tensor) -> _Features:
        return _features(model, params, frozen, plan, modes, x, kind, per_pass)

    def keep(k: int, f: _Features, n: int) -> None:
        if cached_bytes[0] + n * feat_e <= cache_budget:
            cache[k] = f
            cached_bytes[0] += n * feat_e

    def col(k: int) -> _Features:
        if k in cache:
            return cache[k]
        f = feats(xb[cols[k]])
        keep(k, f, cols[k].stop - cols[k].start)
        return f

    for i, rs in enumerate(rows):
        f1 = cache[i] if (symmetric and i in cache) else feats(x1[rs])
        if symmetric and i not in cache:
            keep(i, f1, rs.stop - rs.start)
        for k, cs in enumerate(cols):
            if symmetric and k < i:
                continue
            f2 = f1 if (symmetric and k == i) else col(k)
            blk = _contract_symmetric(f1, kind) if (symmetric and k == i) else _contract(f1, f2, kind)
            if kind == "full":
                blk = blk.permute(1, 3, 0, 2)  # (c, b1, c, b2) -> (b1, b2, c, c)
            out[rs, cs] = blk
            if symmetric and k != i:
                out[cs, rs] = blk.transpose(0, 1) if kind != "full" else blk.permute(1, 0, 3, 2)
    return out
