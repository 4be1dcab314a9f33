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

How it is computed. :math:`J(\\theta - \\theta_s)` is a Jacobian-vector product; no Jacobian is
ever materialised, so a step costs a small multiple of a network step whatever the number of
parameters. Two interchangeable methods (``method=``):

* ``"layerwise"`` (the default): the network is traced once and evaluated layer by layer with
  hand-written tangent rules (:mod:`conelib.tangent`): the primal :math:`f(x;\\theta_s)` and every
  activation at :math:`\\theta_s` are computed under ``torch.no_grad``, and the tangent pass
  :math:`J(x;\\theta_s)\\,\\delta` is the only autograd graph. Layers without a rule go through
  :func:`torch.func.jvp` one by one (:attr:`LinearizedModel.fallbacks` names them), and a network that
  cannot be traced goes through the generic method as a whole.
* ``"jvp"``: one :func:`torch.func.jvp` of :math:`p \\mapsto f(x; p)` at :math:`p = \\theta_s` with
  tangent :math:`\\theta - \\theta_s` over :func:`torch.func.functional_call` (forward-mode AD
  through every operator; the reference the tests hold the layer-wise method to). It is also used
  whenever the model is called inside a :mod:`torch.func` transform (``vmap``, ``jacrev``, ...).

Gradients with respect to :math:`\\theta` flow back through the tangent with ordinary autograd, so the
module trains with any ``torch.optim`` optimizer, and in particular with :func:`conelib.train.train`
unchanged.

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

from conelib.tangent import TangentForward

__all__ = ["METHODS", "PRIMAL_CACHE_BYTES", "LinearizedModel", "linearize"]

#: how the tangent is computed (see the module docstring); the first is the default
METHODS: tuple[str, ...] = ("layerwise", "jvp")

#: default memory bound of a linearized model's primal cache (:meth:`LinearizedModel.forward_examples`)
PRIMAL_CACHE_BYTES = 1 << 30


class _PrimalCache:
    """Per-example primal values of the bilinear layers at :math:`\\theta_s` for one training set.

    ``key`` identifies what the values depend on (the training-set tensor, the expansion point,
    the network's constants); ``filled[i]`` says whether example ``i`` is stored; ``store`` maps a
    layer (node name) to an ``(N, ...)`` tensor. ``reason`` is set when the cache is off for this
    key (too large for the bound, or a layer whose outputs are not one row per example)."""

    def __init__(self, key: tuple, n: int) -> None:
        self.key = key
        self.n = n
        self.filled = torch.zeros(n, dtype=torch.bool)
        self.store: dict[str, Tensor] = {}
        self.reason: str | None = None
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store.values())

    def put(self, index_cpu: Tensor, index: Tensor, record: dict[str, Tensor], budget: int) -> None:
        """Store the rows of one recorded batch (allocating the storage at the first one)."""
        b = len(index_cpu)
        if not self.store:
            if not record:
                self.reason = "no layer to cache (every layer falls back to torch.func.jvp)"
                return
            if any(t.dim() == 0 or t.shape[0] != b for t in record.values()):
                self.reason = "a cached layer's output is not one row per example"
                return
            need = sum(self.n * t[0].numel() * t.element_size() for t in record.values())
            if need > budget:
                self.reason = f"needs {need / 2**20:.0f} MiB, over the bound of {budget / 2**20:.0f} MiB"
                return
            self.store = {k: t.new_empty((self.n, *t.shape[1:])) for k, t in record.items()}
        if set(record) != set(self.store):
            self.reason = "the cached layers changed between batches"
            self.store = {}
            return
        for k, t in record.items():
            self.store[k].index_copy_(0, index, t)
        self.filled[index_cpu] = True

    def get(self, index: Tensor) -> dict[str, Tensor]:
        return {k: t.index_select(0, index) for k, t in self.store.items()}


def _state_key(tensors: list[Tensor]) -> tuple:
    """What identifies the values of some tensors cheaply: storage, version counter, shape, dtype."""
    return tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype, str(t.device)) for t in tensors)


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
        method: ``"layerwise"`` (default) or ``"jvp"``: how the tangent is computed (see the
            module docstring); both give the same function. Can be changed later via ``.method``.
        primal_cache_bytes: memory bound of the primal cache of :meth:`forward_examples`
            (0: no cache). Can be changed later via ``.primal_cache_bytes``.
    """

    def __init__(self, model: nn.Module, method: str = METHODS[0], primal_cache_bytes: int = PRIMAL_CACHE_BYTES
                 ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not known; choose one of {METHODS}")
        if isinstance(primal_cache_bytes, bool) or not isinstance(primal_cache_bytes, int) or primal_cache_bytes < 0:
            raise ValueError(f"primal_cache_bytes must be an integer >= 0 (0: no cache); got {primal_cache_bytes!r}")
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
        self.method = method
        self.primal_cache_bytes = int(primal_cache_bytes)
        self._primal_cache: _PrimalCache | None = None
        self._program: TangentForward | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_primal_cache"] = None  # copies and pickles carry neither the cache nor the traced program
        state["_program"] = None
        return state

    def _tangent_program(self) -> TangentForward:
        """The layer-wise program of :attr:`net`, traced on first use."""
        if self._program is None or self._program.net is not self.net:
            self._program = TangentForward(self.net)
        return self._program

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

        Differentiable with respect to :math:`\\theta`; computed by :attr:`method`.
        """
        self.net.eval()  # also when someone called net.train() directly
        if not self._layerwise_available():
            return self._forward_jvp(x)
        out, dout = self._tangent_program()(x, self.theta_s(), self.theta())
        return out if dout is None else out + dout

    def _layerwise_available(self) -> bool:
        return self.method == "layerwise" and torch._C._functorch.peek_interpreter_stack() is None

    def forward_examples(self, x_all: Tensor, index: Tensor) -> Tensor:
        """``self(x_all[index])``: the linearized model on the examples ``index`` of a fixed set.

        The primal outputs of the bilinear layers (linear, convolution; and the reference network
        of an output scale) at :math:`\\theta_s` depend only on the example, so the
        ``"layerwise"`` method keeps them per example of ``x_all`` (the training set) the first
        time an example is in a batch, and when every example of a batch is stored it skips the
        primal products: a training step then costs the tangent and the backward pass only. The
        cache is dropped when ``x_all``, :math:`\\theta_s` or the network's buffers change (by
        storage, in-place version or shape), and is off when it would need more than
        :attr:`primal_cache_bytes` (see :meth:`primal_cache_info`). The network must treat examples
        independently (every standard layer does in eval mode). :func:`conelib.train.train` calls
        this for its training batches when there is no augmentation.

        Args:
            x_all: every example, ``(N, ...)``.
            index: which rows, a 1-d integer tensor (on the CPU preferably: it is checked against
                the cache there).
        """
        index_dev = index.to(x_all.device)
        cache = self._cache_for(x_all) if self._layerwise_available() and self.primal_cache_bytes > 0 else None
        if cache is None or cache.reason is not None:
            return self(x_all[index_dev])
        self.net.eval()
        index_cpu = index.cpu()
        program = self._tangent_program()
        if bool(cache.filled[index_cpu].all()) and cache.store:
            cache.hits += 1
            out, dout = program(x_all[index_dev], self.theta_s(), self.theta(), replay=cache.get(index_dev))
        else:
            cache.misses += 1
            record: dict[str, Tensor] = {}
            out, dout = program(x_all[index_dev], self.theta_s(), self.theta(), record=record)
            cache.put(index_cpu, index_dev, record, self.primal_cache_bytes)
        return out if dout is None else out + dout

    def _cache_for(self, x_all: Tensor) -> _PrimalCache:
        constants = [*self.anchor.buffers(), *self.net.buffers(),
                     *(p for p in self.net.parameters() if not p.requires_grad)]
        key = (_state_key([x_all]), _state_key(constants))
        cache = self._primal_cache
        if cache is None or cache.key != key:
            cache = self._primal_cache = None  # free the old one first
            cache = self._primal_cache = _PrimalCache(key, len(x_all))
        return cache

    def primal_cache_info(self) -> dict[str, object]:
        """The primal cache's state: ``enabled``, ``reason`` (why not), ``examples`` stored,
        ``bytes``, ``hits`` and ``misses`` (batches replayed / recorded)."""
        c = self._primal_cache
        if c is None:
            return {"enabled": False, "reason": "not used yet", "examples": 0, "bytes": 0, "hits": 0, "misses": 0}
        return {"enabled": c.reason is None, "reason": c.reason, "examples": int(c.filled.sum()), "bytes": c.nbytes,
                "hits": c.hits, "misses": c.misses}

    def clear_primal_cache(self) -> None:
        """Free the primal cache."""
        self._primal_cache = None

    def _forward_jvp(self, x: Tensor) -> Tensor:
        """One :func:`torch.func.jvp` of :math:`p \\mapsto f(x; p)` at :math:`p = \\theta_s` with
        tangent :math:`\\theta - \\theta_s`."""
        anchor = self.theta_s()
        primals = {name: anchor[name] for name in self._names}
        tangents = self.delta()

        def f(params: dict[str, Tensor]) -> Tensor:
            return functional_call(self.net, params, (x,))

        out, dout = jvp(f, (primals,), (tangents,))
        return out + dout

    @property
    def fallbacks(self) -> list[str]:
        """The layers the ``"layerwise"`` method evaluates with :func:`torch.func.jvp` (no tangent
        rule), each with the reason; filled as the layers first run, empty when every layer has a
        rule. See :class:`conelib.tangent.TangentForward`."""
        return list(self._tangent_program().fallbacks)

    def network_output(self, x: Tensor) -> Tensor:
        """The non-linear network at the current parameters, :math:`f(x;\\theta)` (eval mode)."""
        self.net.eval()
        return self.net(x)

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.theta().values())
        return (f"linearized in {len(self._names)} parameter tensors ({n} parameters); inner network in eval mode; "
                f"method={self.method}")


def linearize(model: nn.Module, method: str = METHODS[0], primal_cache_bytes: int = PRIMAL_CACHE_BYTES
              ) -> LinearizedModel:
    """The first-order Taylor model of ``model`` around its current parameters.

    Shorthand for :class:`LinearizedModel` ``(model, method, primal_cache_bytes)``; ``model`` itself is not modified. The
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
    return LinearizedModel(model, method, primal_cache_bytes)
