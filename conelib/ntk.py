"""The empirical neural tangent kernel (eNTK) of any torch model, with :mod:`torch.func`.

For a network :math:`f(x;\\theta) \\in \\mathbb{R}^c` the eNTK between two inputs is the
:math:`c \\times c` matrix

.. math::

    \\Theta(x_i, x_j)_{ab} = \\Big\\langle \\frac{\\partial f_a(x_i;\\theta)}{\\partial\\theta},
                              \\frac{\\partial f_b(x_j;\\theta)}{\\partial\\theta} \\Big\\rangle ,

the matrix :math:`H(\\theta)` of Zhou et al. (2025, eq. 3) and Fort et al. (2020) for a network
with several logits. Three layouts ("kinds") are offered:

``"full"``
    shape ``(n1, n2, c, c)``: every pair of logits.
``"trace"``
    shape ``(n1, n2)``: :math:`\\sum_a \\Theta_{aa}`, the sum over logits of the per-logit kernels
    (what Fort et al. 2020 compare; cheap, and the default).
``"logit_sum"``
    shape ``(n1, n2)``: the kernel of the summed logits, :math:`\\sum_{a,b} \\Theta_{ab}`.

Three algorithms compute them (the ``method``), after the two recipes of PyTorch's
``torch.func`` NTK tutorial and Novak et al. (2022, "Fast finite width neural tangent kernel"):

``"jacobian"``
    Jacobian contraction: per-example Jacobians with ``vmap(jacrev(...))``, contracted parameter
    tensor by parameter tensor (no concatenated Jacobian is ever formed).
``"ntvp"``
    NTK-vector products: for every column (example ``j``, logit ``b``) a VJP gives
    :math:`\\partial f_b(x_j)/\\partial\\theta`, and one JVP over the ``x1`` batch pushes it through
    the network. No Jacobian is stored; it wins when a forward pass is expensive relative to the
    parameter count times the number of logits (wide convolutions at small ``n``).
``"structured"``
    layer by layer (:mod:`conelib.ntk_structured`): for every ``nn.Linear`` / ``nn.Conv2d`` the
    kernel is a Gram of the layer's inputs times a Gram of the backpropagated signals (or, for
    convolutions with many positions, a contraction of per-layer Jacobians formed from them);
    every other parameter goes through the Jacobian path. The "structured derivatives" of
    Novak et al. (2022); by far the fastest for fully-connected layers.
``"auto"``
    picks the method with the lowest estimated time (:func:`estimate_cost` FLOPs divided by
    a per-method speed measured on a 2-core CPU, :data:`RELATIVE_SPEED`).

All run on whichever device holds the model, in chunks whose size follows a memory bound that
the caller can set (``memory_limit``, bytes).

BatchNorm: ``torch.func.vmap`` cannot update running statistics, so the model is evaluated in
**eval mode** (BatchNorm uses its running statistics; dropout is off). The model's previous
train/eval mode is restored afterwards. The kernel is therefore that of the function the network
computes at test time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from conelib.ntk_structured import StructuredPlan, plan_structured, structured_cost, structured_ntk

KINDS: tuple[str, ...] = ("full", "trace", "logit_sum")
METHODS: tuple[str, ...] = ("auto", "jacobian", "ntvp", "structured")

#: default bound on the transient memory of one chunk (bytes)
DEFAULT_MEMORY_LIMIT = 2 * 1024**3


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the duration of the block, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class _Functional:
    """A model seen as a pure function of its trainable parameters."""

    model: nn.Module
    params: dict[str, Tensor]
    frozen: dict[str, Tensor]

    @classmethod
    def of(cls, model: nn.Module) -> "_Functional":
        params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
        if not params:
            raise ValueError("model has no trainable parameters (requires_grad=True): its eNTK is zero")
        frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
        frozen.update({k: v.detach() for k, v in model.named_buffers()})
        return cls(model, params, frozen)

    def batch(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """f(x; p) for a batch ``x``: shape (b, c)."""
        out = functional_call(self.model, (p, self.frozen), (x,))
        return out.reshape(x.shape[0], -1)

    def single(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """f(x; p) for one example ``x`` (no batch dim): shape (c,)."""
        return self.batch(p, x.unsqueeze(0)).squeeze(0)

    def single_sum(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        return self.single(p, x).sum()

    @property
    def n_params(self) -> int:
        return sum(v.numel() for v in self.params.values())

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype


@dataclass(frozen=True)
class ModelProfile:
    """What the cost model needs to know about a network: sizes and per-example work."""

    n_params: int
    n_logits: int
    forward_flops: float  # FLOPs of one forward pass on one example
    activation_numel: int  # elements of all module outputs of one forward pass on one example
    itemsize: int
    structured: StructuredPlan | None = None  # layers of the structured method (None: not planned)
    n_rest_params: int = 0  # parameters the structured method leaves to the Jacobian path


def profile_model(model: nn.Module, example: Tensor) -> ModelProfile:
    """Measure a model on one example: parameters, logits, forward FLOPs, activation size.

    FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`; activation elements from
    forward hooks on every leaf module; the structured method's plan from
    :func:`conelib.ntk_structured.plan_structured` (one more traced forward pass).
    """
    fn = _Functional.of(model)
    x = example[:1].to(device=fn.device, dtype=fn.dtype)
    numel = [0]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, Tensor):
            numel[0] += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with eval_mode(model), torch.no_grad():
            try:
                from torch.utils.flop_counter import FlopCounterMode

                counter = FlopCounterMode(display=False)
                with counter:
                    out = model(x)
                flops = float(counter.get_total_flops())
            except Exception:  # pragma: no cover - flop counter unavailable for an op
                out = model(x)
                flops = 0.0
    finally:
        for h in handles:
            h.remove()
    n_params = fn.n_params
    with eval_mode(model):
        plan = plan_structured(model, x)
    return ModelProfile(
        n_params=n_params,
        n_logits=int(out.reshape(1, -1).shape[1]),
        forward_flops=max(flops, 2.0 * n_params),
        activation_numel=max(numel[0], 1),
        itemsize=torch.finfo(fn.dtype).bits // 8,
        structured=plan,
        n_rest_params=sum(fn.params[k].numel() for k in plan.rest),
    )


#: Measured speed of each method's arithmetic relative to the Jacobian contraction's, used by
#: :func:`choose_method` to turn FLOP estimates into time estimates. Measured on a 2-core x86 CPU
#: (float32; `benchmarks/ntk_bench.py`): the NTK-vector products run many small batched JVPs, the
#: structured method many mid-sized batched matmuls, the Jacobian contraction few large GEMMs.
RELATIVE_SPEED: dict[str, float] = {"jacobian": 1.0, "ntvp": 0.5, "structured": 1.0}


def estimate_cost(prof: ModelProfile, n1: int, n2: int, kind: str, method: str, symmetric: bool = False) -> float:
    """Approximate FLOPs of computing a kernel block with ``method``.

    * ``jacobian``: building the Jacobians costs about one backward pass (≈ 2 forwards) per
      example and logit, :math:`3F\\,c\\,(n_1+n_2)`; the contraction costs :math:`2 n_1 n_2 c^2 P`
      (full), :math:`2 n_1 n_2 c P` (trace) or :math:`2 n_1 n_2 P` (logit_sum).
    * ``ntvp``: for each of the :math:`n_2 c` columns, one VJP on one example and one JVP
      (≈ 3 forwards) over the :math:`n_1` examples: :math:`3F\\,n_2 c\\,(1 + n_1)`. Its trace
      costs as much as its full kernel.
    * ``structured``: :func:`conelib.ntk_structured.structured_cost` (one forward and ``c``
      input-gradient backward passes per example, plus each layer's cheaper contraction);
      infinite when the profile holds no structured plan.
    """
    _check_choice("kind", kind, KINDS)
    _check_choice("method", method, METHODS[1:])
    if method == "structured":
        if prof.structured is None:
            return math.inf
        return structured_cost(prof.structured, prof.forward_flops, n1, n2, kind, symmetric, prof.n_rest_params)
    F, P = prof.forward_flops, prof.n_params
    c = 1 if kind == "logit_sum" else prof.n_logits
    if method == "jacobian":
        n_jac = n1 if symmetric else n1 + n2
        contraction = {"full": c * c, "trace": c, "logit_sum": 1}[kind] * 2.0 * n1 * n2 * P
        if symmetric:
            contraction /= 2
        return 3.0 * F * c * n_jac + contraction
    return 3.0 * F * n2 * c * (1 + n1)


def choose_method(prof: ModelProfile, n1: int, n2: int, kind: str, symmetric: bool = False) -> str:
    """The method with the lowest estimated time, :func:`estimate_cost` / :data:`RELATIVE_SPEED`."""
    costs = {m: estimate_cost(prof, n1, n2, kind, m, symmetric) / RELATIVE_SPEED[m] for m in METHODS[1:]}
    return min(costs, key=costs.__getitem__)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# --------------------------------------------------------------------------------------------
# Jacobian contraction
# --------------------------------------------------------------------------------------------


def _jacobians(fn: _Functional, x: Tensor, kind: str) -> list[Tensor]:
    """Per-parameter Jacobians of a chunk: (b, c, P_k) for full/trace, (b, P_k) for logit_sum."""
    if kind == "logit_sum":
        jac = vmap(jacrev(fn.single_sum), (None, 0))(fn.params, x)
        return [j.reshape(x.shape[0], -1) for j in jac.values()]
    jac = vmap(jacrev(fn.single), (None, 0))(fn.params, x)
    return [j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()]


def _contract(j1: list[Tensor], j2: list[Tensor], kind: str) -> Tensor:
    """Sum over parameter tensors of the kernel block between two chunks of Jacobians."""
    out: Tensor | None = None
    for a, b in zip(j1, j2):
        if kind == "full":
            b1, c, _ = a.shape
            b2 = b.shape[0]
            blk = (a.reshape(b1 * c, -1) @ b.reshape(b2 * c, -1).T).reshape(b1, c, b2, c).permute(0, 2, 1, 3)
        elif kind == "trace":
            blk = a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T
        else:
            blk = a @ b.T
        out = blk if out is None else out + blk
    assert out is not None
    return out


def _ntk_jacobian(
    fn: _Functional, x1: Tensor, x2: Tensor | None, kind: str, c: int, chunk: int, cache_all: bool
) -> Tensor:
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    rows, cols = _chunks(x1.shape[0], chunk), _chunks(xb.shape[0], chunk)
    out = _alloc(fn, x1.shape[0], xb.shape[0], kind, c)
    cache: dict[int, list[Tensor]] = {}

    def col_jac(k: int) -> list[Tensor]:
        if k in cache:
            return cache[k]
        j = _jacobians(fn, xb[cols[k]], kind)
        if cache_all:
            cache[k] = j
        return j

    for i, rs in enumerate(rows):
        j1 = _jacobians(fn, x1[rs], kind)
        if symmetric and cache_all:
            cache[i] = j1
        for k, cs in enumerate(cols):
            if symmetric and k < i:
                continue
            j2 = j1 if (symmetric and k == i) else col_jac(k)
            blk = _contract(j1, j2, kind)
            out[rs, cs] = blk
            if symmetric and k != i:
                out[cs, rs] = blk.transpose(0, 1) if kind != "full" else blk.permute(1, 0, 3, 2)
    return out


# --------------------------------------------------------------------------------------------
# NTK-vector products
# --------------------------------------------------------------------------------------------


def _ntk_ntvp(
    fn: _Functional, x1: Tensor, x2: Tensor | None, kind: str, c: int, chunk1: int, chunk2: int
) -> Tensor:
    xb = x1 if x2 is None else x2
    out = _alloc(fn, x1.shape[0], xb.shape[0], kind, c)
    eye = torch.eye(c, device=fn.device, dtype=fn.dtype)

    for rs in _chunks(x1.shape[0], chunk1):
        xr = x1[rs]

        def push(g: dict[str, Tensor]) -> Tensor:
            """J(x_rows) g: one JVP over the row chunk, shape (b1, c)."""
            return jvp(lambda p: fn.batch(p, xr), (fn.params,), (g,))[1]

        def column(xj: Tensor) -> Tensor:
            _, pullback = vjp(lambda p: fn.single(p, xj), fn.params)
            if kind == "logit_sum":
                (g,) = pullback(torch.ones(c, device=fn.device, dtype=fn.dtype))
                return push(g).sum(-1)  # (b1,)
            # for each logit b of example j: J(x_rows) J_b(x_j)^T -> (c_b, b1, c_a)
            return vmap(lambda v: push(pullback(v)[0]))(eye)

        for cs in _chunks(xb.shape[0], chunk2):
            cols = vmap(column)(xb[cs])  # logit_sum: (b2, b1); else (b2, c_b, b1, c_a)
            if kind == "logit_sum":
                out[rs, cs] = cols.T
            else:
                full = cols.permute(2, 0, 3, 1)  # (b1, b2, c_a, c_b)
                out[rs, cs] = full if kind == "full" else full.diagonal(dim1=2, dim2=3).sum(-1)
    return out


def _alloc(fn: _Functional, n1: int, n2: int, kind: str, c: int) -> Tensor:
    shape = (n1, n2, c, c) if kind == "full" else (n1, n2)
    return torch.empty(shape, device=fn.device, dtype=fn.dtype)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def ntk_fn(
    model: nn.Module,
    *,
    kind: str = "trace",
    method: str = "auto",
    memory_limit: int | None = None,
) -> Callable[[Tensor, Tensor | None], Tensor]:
    """Return a function ``(x1, x2=None) -> kernel`` evaluating the eNTK of ``model``.

    The returned function reads the model's *current* parameters at every call (so a training
    loop can call it at each snapshot). See :func:`empirical_ntk` for the arguments.

    Example:
        >>> kernel = ntk_fn(model, kind="trace")
        >>> H0 = kernel(x_probe)           # (n, n) at initialisation
        >>> ...train...
        >>> Ht = kernel(x_probe)           # same probe set, later parameters
    """
    _check_choice("kind", kind, KINDS)
    _check_choice("method", method, METHODS)
    if memory_limit is not None and memory_limit <= 0:
        raise ValueError(f"memory_limit must be a positive number of bytes, got {memory_limit!r}")
    limit = DEFAULT_MEMORY_LIMIT if memory_limit is None else int(memory_limit)
    state: dict[str, ModelProfile] = {}

    def kernel(x1: Tensor, x2: Tensor | None = None) -> Tensor:
        fn = _Functional.of(model)
        x1 = _as_input(x1, fn, "x1")
        x2 = None if x2 is None else _as_input(x2, fn, "x2")
        if x2 is not None and x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x1 and x2 must have the same example shape, got {tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}")
        with eval_mode(model):
            if "prof" not in state:
                state["prof"] = profile_model(model, x1)
            prof = state["prof"]
            n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
            m = choose_method(prof, n1, n2, kind, symmetric=x2 is None) if method == "auto" else method
            c_out = prof.n_logits
            c = 1 if kind == "logit_sum" else c_out
            item, act = prof.itemsize, prof.activation_numel
            if m == "structured":
                assert prof.structured is not None
                return structured_ntk(model, fn.params, fn.frozen, prof.structured, x1, x2, kind, limit)
            if m == "jacobian":
                # per example: its Jacobian (c·P) + the transient activations of c backward passes
                per_example = (c * prof.n_params + (c + 1) * act) * item
                chunk = max(1, int(limit // (2 * per_example)))
                cache_all = (n1 + (0 if x2 is None else n2)) * c * prof.n_params * item <= limit // 2
                return _ntk_jacobian(fn, x1, x2, kind, c_out, min(chunk, max(n1, n2)), cache_all)
            # ntvp: a column (example j, logit b) holds a parameter-sized cotangent and pushes it
            # through a JVP over chunk1 examples (≈ 3 activation copies each)
            chunk1 = max(1, min(n1, int(limit // (2 * 3 * c * act * item))))
            per_column = c * (2 * prof.n_params + 3 * chunk1 * act) * item
            chunk2 = max(1, min(n2, int(limit // (2 * per_column))))
            return _ntk_ntvp(fn, x1, x2, kind, c_out, chunk1, chunk2)

    return kernel


def _as_input(x: Tensor, fn: _Functional, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of inputs with a leading batch dimension, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty leading batch dimension, got shape {tuple(x.shape)}")
    return x.to(device=fn.device, dtype=fn.dtype)


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    kind: str = "trace",
    method: str = "auto",
    memory_limit: int | None = None,
) -> Tensor:
    """The empirical NTK of ``model`` between ``x1`` and ``x2`` (``x2=None``: ``x1`` with itself).

    Args:
        model: any :class:`torch.nn.Module` mapping a batch ``(b, ...)`` to logits ``(b, c)``.
            It is evaluated in eval mode (BatchNorm uses running statistics), at its current
            parameters; only parameters with ``requires_grad=True`` count as :math:`\\theta`.
        x1, x2: input batches; moved to the model's device and dtype.
        kind: ``"full"`` → ``(n1, n2, c, c)``, ``"trace"`` → ``(n1, n2)`` with
            :math:`H_{ij} = \\sum_a \\langle \\partial_\\theta f_a(x_i), \\partial_\\theta f_a(x_j)\\rangle`,
            ``"logit_sum"`` → ``(n1, n2)``, the kernel of :math:`\\sum_a f_a`.
        method: ``"jacobian"`` (Jacobian contraction), ``"ntvp"`` (NTK-vector products),
            ``"structured"`` (layer-wise Grams, :mod:`conelib.ntk_structured`) or ``"auto"``
            (fastest by :func:`estimate_cost` and :data:`RELATIVE_SPEED`).
        memory_limit: approximate bound, in bytes, on the transient memory of one chunk
            (default 2 GiB). Smaller bounds mean more, smaller chunks (and, for ``jacobian``,
            Jacobians recomputed instead of cached).

    Returns:
        The kernel as a tensor on the model's device, in the model's dtype.

    Reference: Zhou et al. (2025), eq. (3); Fort et al. (2020); Jacot et al. (2018).
    """
    return ntk_fn(model, kind=kind, method=method, memory_limit=memory_limit)(x1, x2)
