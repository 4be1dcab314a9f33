"""The spawning experiment: parent–child spawning and linear mode connectivity.

Fort et al. (2020, "Deep learning versus kernel learning", Section 4) tie the end of the early,
chaotic phase of training to the moment from which two copies of a network, *spawned* from the same
parent and trained on with different mini-batch orders, end in the same linearly connected region
of the loss landscape; Frankle et al. (2020, "Linear mode connectivity and the lottery ticket
hypothesis") call this stability to SGD noise and measure it with the *instability*, the error
barrier on the straight line between the two children. Zhou et al. (2025) build their two-phase
reading of the eNTK's dynamics on Fort et al.'s hypothesis, so whether the kernel's Phase I ends when
the network becomes linearly connected is a direct test of that link.

What is run, per seed :math:`s`:

1. **The parent**: the standard run of the seed (initialisation, data split and data order of
   ``seed``; the run of the kernel-dynamics experiment), trained to :math:`T`; its weights and SGD
   state are kept at every spawn step :math:`t` (``spawn_steps``).
2. **The children**: at each spawn step :math:`t`, ``children`` copies start from the parent's
   :math:`\\theta(t)` and optimizer state (momentum buffers, when there are any) and are trained from
   step :math:`t` to :math:`T` with the same recipe and learning-rate schedule, each with its *own*
   data order (and augmentation draws): ``data_seed`` = :func:`child_data_seed` ``(s, c)`` in
   :func:`conelib.train.train`. Children of one spawn step share the initialisation and the spawn
   weights bitwise; they differ only in the order of their mini-batches. :math:`t = 0` spawns
   from the initialisation itself (Frankle et al.'s "instability at initialisation").
3. **The barrier**: for every pair :math:`(a, b)` of children, the network
   :math:`\\theta(\\alpha) = (1 - \\alpha)\\,\\theta_a + \\alpha\\,\\theta_b` at ``barrier_points``
   equally spaced :math:`\\alpha \\in [0, 1]` (both ends included; every parameter interpolated) is
   evaluated on the test set. With :math:`E(\\alpha)` the test error in percent and
   :math:`L(\\alpha)` the test cross-entropy, the barriers (Frankle et al.'s instability) are

   .. math::

       B_E = \\max_\\alpha E(\\alpha) - \\tfrac12\\big(E(0) + E(1)\\big), \\qquad
       B_L = \\max_\\alpha L(\\alpha) - \\tfrac12\\big(L(0) + L(1)\\big) \\;\\ge 0,

   on the sampled points. :math:`B_E \\approx 0` means the two children are linearly connected.
4. **The kernels**: the trace eNTK (``kernel_kind``) of each child and of the parent at :math:`T`,
   on the probe set of the kernel-dynamics experiment of the same seed (``probe_size``, the same
   class-balanced draw), and their kernel distances :math:`S` (eq. 4 of Zhou et al. 2025; Fort et
   al. 2020): between the two children (``sibling_kernel_distance``) and from each child to the
   parent (``child_parent_kernel_distance``).

BatchNorm. Averaging the weights of two networks with BatchNorm leaves running statistics that
belong to neither (Jordan et al. 2023, REPAIR), so the barrier would measure stale statistics. This
experiment therefore **refuses** BatchNorm models (``norm``; the default of resnet20 and vgg16):
use ``norm="layernorm"`` or ``"none"``. The LeNets have no normalisation.

Stored (one ``xarray.Dataset`` per configuration, dims ``spawn_step``, ``seed``, ``child``,
``pair``, ``alpha``):

* ``error_barrier`` (percentage points) and ``loss_barrier`` (nats) on the test set, and
  ``train_error_barrier``, ``train_loss_barrier`` on the fixed class-balanced training subset of
  ``train_eval_size`` images that the train loss is measured on, each (spawn_step, seed, pair);
* ``barrier_error_curve``, ``barrier_loss_curve``, ``barrier_train_error_curve``,
  ``barrier_train_loss_curve`` (spawn_step, seed, pair, alpha): the metrics along the line;
* ``sibling_kernel_distance`` and ``sibling_param_distance`` (:math:`\\lVert\\theta_a -
  \\theta_b\\rVert_2`) (spawn_step, seed, pair);
* ``child_test_acc``, ``child_test_loss``, ``child_test_loss_sd`` (the standard deviation of the
  per-image test loss, for the standard error of the mean), ``child_train_loss``,
  ``child_train_acc``, ``child_parent_kernel_distance``, ``child_seconds`` (spawn_step, seed, child);
* ``parent_test_acc``, ``parent_test_loss``, ``parent_train_loss``, ``parent_train_acc`` (seed):
  the parent at :math:`T`; ``parent_test_acc_at_spawn``, ``parent_train_loss_at_spawn``
  (spawn_step, seed): the state the children start from; ``parent_seconds`` (seed);
* ``child_data_seed`` (seed, child): the data-order seed of each child (the same for every spawn
  step);
* attrs: the definitions, sizes, ``wall_seconds`` and ``cpu_seconds`` of the whole run.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn
from tqdm import tqdm

from conelib import data as data_mod
from conelib.atomic import TMP_MARK, sweep_stale
from conelib.config import ParameterError, param
from conelib.experiments.common import Experiment, ProbeConfig, metric_variables, SeedsConfig, build_model, load_data, resolve_device
from conelib.kernels import kernel_distance
from conelib.models import default_norm
from conelib.models.scaling import loss_scale
from conelib.ntk import ntk_fn
from conelib.train import TrainConfig, eval_subset, load_checkpoint, train

EXPERIMENT = "spawning"

#: stream tag of the children's data seeds (see :func:`child_data_seed`)
_CHILD_TAG = 0x5EED
#: temporary checkpoint folders are named ``conelib-spawning.tmp.<pid>.<random>`` (swept when stale)
_TMP_PREFIX = "conelib-spawning"


def child_data_seed(seed: int, child: int) -> int:
    """The data-order seed of child ``child`` of the parent of seed ``seed``: a stable 62-bit hash
    of ``(seed, tag, child)`` (numpy's ``SeedSequence``), distinct for every child and, with
    overwhelming probability, from every plain seed (so no child reuses its parent's order)."""
    if int(seed) < 0 or int(child) < 0:
        raise ValueError(f"seed and child must be integers >= 0; got {seed!r}, {child!r}")
    state = np.random.SeedSequence([int(seed), _CHILD_TAG, int(child)]).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & ((1 << 62) - 1)


def _nonempty_steps(v: tuple[int, ...]) -> bool:
    return len(v) >= 1 and all(s >= 0 for s in v)


@dataclass(frozen=True, init=False)
class SpawningConfig(SeedsConfig, ProbeConfig):
    """A run over several seeds (:class:`~conelib.experiments.common.SeedsConfig`) with an eNTK probe
    set (:class:`~conelib.experiments.common.ProbeConfig`: the kernel-dynamics probe set of the same
    seed) plus the spawning grid (see the module docstring).

    Attributes:
        spawn_steps: the steps :math:`t` at which children are spawned, integers in ``[0, steps)``
            (stored sorted, without duplicates).
        children: children per spawn step (every pair of them gets a barrier).
        barrier_points: points of the straight line between two children, both ends included.
    """

    LABEL = "the spawning experiment (SpawningConfig)"

    train: TrainConfig = param(help="the SGD run (default T = 10^4 steps: the paper's span, which the default "
                               "spawn steps need)", default_factory=lambda: TrainConfig(steps=10_000))

    spawn_steps: tuple[int, ...] = param((0, 100, 250, 500, 1000, 2000, 4000, 8000),
                                         "steps t at which two children are spawned from the parent (each < steps)",
                                         unique=True, check=_nonempty_steps, allowed="a non-empty list of integers >= 0")
    children: int = param(2, "children spawned at each spawn step, each with its own data order (every pair gets "
                          "a barrier)", check=lambda v: v >= 2, allowed="an integer >= 2")
    barrier_points: int = param(11, "points of the straight line between two children, both ends included",
                                check=lambda v: v >= 11, allowed="an integer >= 11")

    def __post_init__(self) -> None:
        super().__post_init__()
        T = int(self.steps)
        bad = [s for s in self.spawn_steps if not 0 <= s < T]
        if bad:
            raise ParameterError("spawn_steps", f"parameter 'spawn_steps': {bad} are not steps in [0, steps={T}) "
                                 "(children need at least one step of their own)")
        norm = self.norm if self.norm is not None else default_norm(self.model)
        if norm == "batchnorm":
            raise ParameterError("norm", f"parameter 'norm': the spawning experiment interpolates weights, and "
                                 f"{self.model} with BatchNorm would mix running statistics of neither child; use "
                                 "norm='layernorm' or 'none'")

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The pairs of children whose barrier is measured, ``(a, b)`` with ``a < b``."""
        return list(itertools.combinations(range(self.children), 2))

    @property
    def alphas(self) -> np.ndarray:
        """The interpolation points :math:`\\alpha` (``barrier_points`` of them, 0 and 1 included)."""
        return np.linspace(0.0, 1.0, self.barrier_points)

    @property
    def child_steps(self) -> int:
        """SGD steps of the children of one seed, :math:`c \\sum_t (T - t)` (a measure of the cost)."""
        return self.children * sum(self.steps - t for t in self.spawn_steps)


#: the spawning experiment (:class:`~conelib.experiments.common.Experiment`): ``spawning(config, **overrides)``
spawning: Experiment[SpawningConfig] = Experiment(EXPERIMENT, SpawningConfig, lambda cfg, progress, _root: _run(cfg, progress=progress),
                                     progress_bars="text progress bars (each parent, then one over its children)")
spawning_config, spawning_configs, config_of = spawning.config, spawning.configs, spawning.config_of


def refuse_batchnorm(model: nn.Module) -> None:
    """Raise ``ValueError`` if ``model`` has a BatchNorm layer (see the module docstring)."""
    bn = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn:
        raise ValueError(f"the model has BatchNorm layers ({', '.join(bn[:3])}{', ...' if len(bn) > 3 else ''}); "
                         "interpolated weights would use running statistics of neither end: use a LayerNorm or "
                         "norm-free model")


def interpolate_state(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """:math:`(1 - \\alpha)\\,\\theta_a + \\alpha\\,\\theta_b` entry by entry of two state dicts
    (``torch.lerp``: exact at :math:`\\alpha = 0` and 1, and where the two are equal). Non-floating
    entries (counters) must be equal.

    Raises:
        ValueError: the state dicts have different keys or shapes, or differ in a non-floating entry.
    """
    if state_a.keys() != state_b.keys():
        raise ValueError(f"the two networks have different state entries: {sorted(set(state_a) ^ set(state_b))}")
    out = {}
    for k, a in state_a.items():
        b = state_b[k]
        if a.shape != b.shape:
            raise ValueError(f"state entry {k!r} has shapes {tuple(a.shape)} and {tuple(b.shape)}")
        if a.is_floating_point():
            out[k] = torch.lerp(a, b.to(a.dtype), float(alpha))
        elif torch.equal(a, b):
            out[k] = a.clone()
        else:
            raise ValueError(f"state entry {k!r} is not floating and differs between the two networks")
    return out


@torch.no_grad()
def loss_and_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 2048) -> tuple[float, float, float]:
    """Mean cross-entropy (nats), error (percent) and the standard deviation of the per-image
    cross-entropy of ``model`` (eval mode, no gradients) on ``(x, y)``.

    A tie between logits counts as the first of them (``torch.argmax``)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    was = model.training
    model.eval()
    try:
        losses, wrong = [], 0
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            xb = xb.to(dtype) if xb.is_floating_point() else xb
            yb = y[i:i + batch_size].to(device=device, dtype=torch.long)
            out = model(xb)
            losses.append(F.cross_entropy(out, yb, reduction="none").double().cpu())
            wrong += int((out.argmax(dim=1) != yb).sum())
    finally:
        model.train(was)
    ell = torch.cat(losses)
    return float(ell.mean()), 100.0 * wrong / len(x), float(ell.std(unbiased=True)) if len(ell) > 1 else 0.0


def line_barrier(curve: Sequence[float] | np.ndarray) -> float:
    """:math:`\\max_\\alpha m(\\alpha) - \\tfrac12(m(0) + m(1))` of a metric sampled along the line,
    ends first and last (Frankle et al. 2020's instability when :math:`m` is the error). At least 0."""
    c = np.asarray(curve, dtype=float)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"curve must be a 1-D sequence of at least 2 values (both ends); got shape {c.shape}")
    return float(np.max(c) - 0.5 * (c[0] + c[-1]))


def interpolation_curves(model: nn.Module, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                         alphas: Sequence[float], sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
                         batch_size: int = 2048) -> dict[str, np.ndarray]:
    """The loss and error along :math:`\\theta(\\alpha) = (1-\\alpha)\\theta_a + \\alpha\\theta_b` on each
    named set: ``{"<set>_loss": (A,), "<set>_error": (A,)}``. ``model`` is a network of the same
    architecture, used as scratch (its state is overwritten)."""
    refuse_batchnorm(model)
    out = {f"{name}_{m}": np.empty(len(alphas)) for name in sets for m in ("loss", "error")}
    for i, a in enumerate(alphas):
        model.load_state_dict(interpolate_state(state_a, state_b, float(a)))
        for name, (x, y) in sets.items():
            loss, err, _ = loss_and_error(model, x, y, batch_size)
            out[f"{name}_loss"][i], out[f"{name}_error"][i] = loss, err
    return out


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _param_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names: Sequence[str]) -> float:
    return float(torch.sqrt(sum(((a[n].double() - b[n].double()) ** 2).sum() for n in names)))


# --------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------


def _run(cfg: SpawningConfig, *, progress: bool) -> xr.Dataset:
    device = resolve_device(cfg.device)
    T, seeds, spawn, C = int(cfg.steps), list(cfg.seeds), list(cfg.spawn_steps), int(cfg.children)
    pairs, alphas = cfg.pairs, cfg.alphas
    S, K, P, A = len(spawn), len(seeds), len(pairs), len(alphas)

    def full(*shape: int) -> np.ndarray:
        return np.full(shape, np.nan)

    curves = {k: full(S, K, P, A) for k in ("test_error", "test_loss", "train_error", "train_loss")}
    sib_s, sib_p, bar_sec = full(S, K, P), full(S, K, P), full(S, K)
    child = {k: full(S, K, C) for k in ("test_acc", "test_loss", "test_loss_sd", "train_loss", "train_acc",
                                        "parent_distance", "seconds")}
    parent = {k: full(K) for k in ("test_acc", "test_loss", "train_loss", "train_acc", "seconds")}
    at_spawn = {k: full(S, K) for k in ("test_acc", "train_loss")}
    data_seeds = np.asarray([[child_data_seed(s, c) for c in range(C)] for s in seeds], dtype=np.int64)
    n_params = n_train = n_test = 0
    ntk_sec: list[float] = []
    t_start, cpu_start = time.perf_counter(), time.process_time()

    sweep_stale(tempfile.gettempdir(), f"{_TMP_PREFIX}{TMP_MARK}*")
    with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{TMP_MARK}{os.getpid()}.") as tmp:
        for k, seed in enumerate(seeds):
            rc = cfg.for_seed(seed)
            data = load_data(rc, device)
            if cfg.probe_size > len(data.y_train):
                raise ParameterError("probe_size", f"parameter 'probe_size' ({cfg.probe_size}) is larger than the "
                                     f"training split of {cfg.dataset!r} ({len(data.y_train)} images)")
            x_probe, _ = data_mod.probe_subset(data, cfg.probe_size, seed=seed)
            model = build_model(rc, data, device)
            refuse_batchnorm(model)
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            n_params = int(sum(p.numel() for p in model.parameters()))
            n_train, n_test = len(data.y_train), len(data.y_test)
            sub = eval_subset(data.y_train, cfg.train_eval_size)  # the subset train() measures the train loss on
            sub = torch.arange(n_train) if sub is None else sub
            sub = sub.to(data.y_train.device)
            sets = {"test": (data.x_test, data.y_test), "train": (data.x_train[sub], data.y_train[sub])}

            def kernel(net: nn.Module) -> torch.Tensor:
                t0 = time.perf_counter()
                h = ntk_fn(net, kind=cfg.kernel_kind, method=cfg.ntk_method)(x_probe)
                if h.is_cuda:
                    torch.cuda.synchronize()
                ntk_sec.append(time.perf_counter() - t0)
                if not torch.isfinite(h).all():
                    raise FloatingPointError("an eNTK of the spawning experiment has non-finite entries")
                return h.detach().double().cpu()

            # 1. the parent: the standard run, with its state at every spawn step
            t0 = time.perf_counter()
            hist = train(model, data, rc.train, snapshot_steps=sorted({*spawn, T}), checkpoint_steps=spawn,
                         checkpoint_dir=Path(tmp) / f"seed{seed}", eval_train_max=cfg.train_eval_size,
                         progress=progress, loss_scale=loss_scale(rc.output_scale),
                         desc=f"{EXPERIMENT}: parent {cfg.model}/{cfg.dataset}, seed {seed}")
            parent["seconds"][k] = time.perf_counter() - t0
            idx = {s: i for i, s in enumerate(hist.steps)}
            for name in ("test_acc", "test_loss", "train_loss", "train_acc"):
                parent[name][k] = getattr(hist, name)[idx[T]]
            for i, t in enumerate(spawn):
                at_spawn["test_acc"][i, k] = hist.test_acc[idx[t]]
                at_spawn["train_loss"][i, k] = hist.train_loss[idx[t]]
            h_parent = kernel(model)
            scratch = model
            checkpoints = dict(hist.checkpoints)

            # 2. the children, and the line between every pair of them
            bar = tqdm(total=S * C, desc=f"{EXPERIMENT}: children of seed {seed}", unit="run", disable=not progress)
            try:
                for i, t in enumerate(spawn):
                    states, kernels = [], []
                    for c in range(C):
                        bar.set_postfix(spawn_step=t, child=c, refresh=True)
                        t0 = time.perf_counter()
                        net = build_model(rc, data, device)
                        ckpt = load_checkpoint(checkpoints[t], net)
                        ch = train(net, data, rc.train, start_step=t, optimizer_state=ckpt["optimizer"],
                                   data_seed=int(data_seeds[k, c]), snapshot_steps=[T],
                                   eval_train_max=cfg.train_eval_size, progress=False,
                                   loss_scale=loss_scale(rc.output_scale))
                        child["seconds"][i, k, c] = time.perf_counter() - t0
                        child["test_acc"][i, k, c], child["train_loss"][i, k, c] = ch.test_acc[-1], ch.train_loss[-1]
                        child["train_acc"][i, k, c] = ch.train_acc[-1]
                        child["test_loss"][i, k, c], _, child["test_loss_sd"][i, k, c] = loss_and_error(net, *sets["test"])
                        h = kernel(net)
                        child["parent_distance"][i, k, c] = kernel_distance(h, h_parent)
                        states.append(_state(net))
                        kernels.append(h)
                        del net, ckpt
                        bar.update(1)
                    t0 = time.perf_counter()
                    for p, (a, b) in enumerate(pairs):
                        sib_s[i, k, p] = kernel_distance(kernels[a], kernels[b])
                        sib_p[i, k, p] = _param_distance(states[a], states[b], names)
                        line = interpolation_curves(scratch, states[a], states[b], alphas, sets)
                        for name in curves:
                            curves[name][i, k, p] = line[name]
                    bar_sec[i, k] = time.perf_counter() - t0
            finally:
                bar.close()
            del model, scratch, data
    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start

    def barrier(curve: np.ndarray) -> np.ndarray:
        return np.max(curve, axis=-1) - 0.5 * (curve[..., 0] + curve[..., -1])

    d3, dc, dp = ("spawn_step", "seed", "pair"), ("spawn_step", "seed", "child"), ("spawn_step", "seed", "pair", "alpha")
    line = "θ(α) = (1 − α) θ_a + α θ_b between children a and b"
    ds = xr.Dataset(
        {
            "error_barrier": (d3, barrier(curves["test_error"]),
                              {"long_name": "test error barrier max_α E(α) − (E(0) + E(1))/2 on the line between two "
                                            "children (Frankle et al. 2020's instability)", "units": "percentage points"}),
            "loss_barrier": (d3, barrier(curves["test_loss"]),
                             {"long_name": "test loss barrier max_α L(α) − (L(0) + L(1))/2", "units": "nats"}),
            "train_loss_barrier": (d3, barrier(curves["train_loss"]),
                                   {"long_name": "train loss barrier (fixed class-balanced training subset)",
                                    "units": "nats"}),
            "train_error_barrier": (d3, barrier(curves["train_error"]),
                                    {"long_name": "train error barrier (fixed class-balanced training subset)",
                                     "units": "percentage points"}),
            "barrier_error_curve": (dp, curves["test_error"], {"long_name": f"test error of {line}", "units": "percent"}),
            "barrier_loss_curve": (dp, curves["test_loss"],
                                   {"long_name": f"test cross-entropy of {line}", "units": "nats"}),
            "barrier_train_loss_curve": (dp, curves["train_loss"],
                                         {"long_name": f"train cross-entropy (training subset) of {line}",
                                          "units": "nats"}),
            "barrier_train_error_curve": (dp, curves["train_error"],
                                          {"long_name": f"train error (training subset) of {line}", "units": "percent"}),
            "sibling_kernel_distance": (d3, sib_s, {"long_name": "kernel distance S between the eNTKs of two children "
                                                                 "at T (eq. 4)", "units": "1"}),
            "sibling_param_distance": (d3, sib_p, {"long_name": "parameter distance ‖θ_a − θ_b‖ between two children "
                                                                "at T", "units": "1"}),
            **metric_variables("child_{}", dc, child, "of the child at T"),
            "child_test_loss_sd": (dc, child["test_loss_sd"],
                                   {"long_name": "standard deviation of the per-image test cross-entropy of the child",
                                    "units": "nats"}),
            "child_parent_kernel_distance": (dc, child["parent_distance"],
                                             {"long_name": "kernel distance S between the child's and the parent's "
                                                           "eNTK at T", "units": "1"}),
            "child_seconds": (dc, child["seconds"], {"long_name": "wall time of the child's training and eNTK",
                                                     "units": "s"}),
            "child_data_seed": (("seed", "child"), data_seeds,
                                {"long_name": "seed of the child's data order (conelib.train.train's data_seed)",
                                 "units": "1"}),
            **metric_variables("parent_{}", ("seed",), parent, "of the parent at T"),
            "parent_seconds": (("seed",), parent["seconds"], {"long_name": "wall time of the parent's training",
                                                              "units": "s"}),
            "parent_test_acc_at_spawn": (("spawn_step", "seed"), at_spawn["test_acc"],
                                         {"long_name": "test accuracy of the parent at the spawn step", "units": "1"}),
            "parent_train_loss_at_spawn": (("spawn_step", "seed"), at_spawn["train_loss"],
                                           {"long_name": "train cross-entropy of the parent at the spawn step",
                                            "units": "nats"}),
            "barrier_seconds": (("spawn_step", "seed"), bar_sec,
                                {"long_name": "wall time of the barrier evaluations of one spawn step", "units": "s"}),
        },
        coords={
            "spawn_step": ("spawn_step", np.asarray(spawn, dtype=np.int64),
                           {"long_name": "spawn step t (children start from the parent's state there)", "units": "steps"}),
            "seed": ("seed", np.asarray(seeds, dtype=np.int64), {"long_name": "seed of the parent", "units": "1"}),
            "child": ("child", np.arange(C, dtype=np.int64), {"long_name": "child", "units": "1"}),
            "pair": ("pair", np.arange(P, dtype=np.int64), {"long_name": "pair of children", "units": "1"}),
            "pair_a": ("pair", np.asarray([a for a, _ in pairs], dtype=np.int64),
                       {"long_name": "first child of the pair (alpha = 0)", "units": "1"}),
            "pair_b": ("pair", np.asarray([b for _, b in pairs], dtype=np.int64),
                       {"long_name": "second child of the pair (alpha = 1)", "units": "1"}),
            "alpha": ("alpha", np.asarray(alphas, dtype=np.float64),
                      {"long_name": "interpolation weight α of the second child", "units": "1"}),
        },
        attrs={
            "title": f"Spawned children and linear mode connectivity: {cfg.model} on {cfg.dataset}, T = {T}",
            "spawning": "the parent (the seed's standard run) is trained to T; at each spawn step its weights and "
                        "optimizer state are copied into each child, which trains to T with its own data order "
                        "(child_data_seed); same recipe and learning-rate schedule",
            "interpolation": "every entry of the state dict interpolated linearly (torch.lerp); BatchNorm refused",
            "barrier": "max over the sampled line minus the mean of its two ends (Frankle et al. 2020)",
            "kernel_kind": cfg.kernel_kind,
            "probe_size": int(cfg.probe_size),
            "probe_set": "conelib.data.probe_subset(data, probe_size, seed): the kernel-dynamics probe set of the seed",
            "train_metrics_on": f"a fixed class-stratified subset of min({cfg.train_eval_size}, n_train) training images",
            "n_params": n_params,
            "n_train": n_train,
            "n_test": n_test,
            "child_steps": cfg.child_steps * K,
            "run_threads": torch.get_num_threads(),
            "ntk_seconds": float(np.sum(ntk_sec)),
            "wall_seconds": wall,
            "cpu_seconds": cpu,
        },
    )
    return ds
