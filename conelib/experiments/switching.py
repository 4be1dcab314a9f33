"""The switching experiment: the paper's Figure 2 ("non-linear advantages of the cone effect").

For a grid of switching steps :math:`t` (always including 0 and the end :math:`T`), the network is
trained with standard SGD up to step :math:`t`; from :math:`\\theta(t)` on, its first-order
Taylor model

.. math::

    f_{\\mathrm{lin}}(x; \\theta) = f(x; \\theta(t)) + J(x; \\theta(t))\\,(\\theta - \\theta(t))

(:class:`conelib.linearize.LinearizedModel`) is trained instead, up to :math:`T`. The result
:math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)` is evaluated on the test set (Zhou et al.
2025, Section 4 and Figure 2; Fort et al. 2020, Section 5). :math:`t = 0` is fully linearized
(kernel) training with the eNTK at initialisation, the completely lazy regime; :math:`t = T` is
the standard run itself.

How it is run. One standard run per seed writes a checkpoint (parameters and optimizer state) at
every switching step to a temporary directory; every continuation is an independent job
(:func:`continue_linearized`) that loads one checkpoint, linearizes there and trains the Taylor
model from step :math:`t` to :math:`T` with

* the same data order and augmentation (both pure functions of ``(seed, step)`` in
  :func:`conelib.train.train`),
* the same learning-rate schedule (``lr_at(step)`` of the same :class:`~conelib.train.TrainConfig`:
  warm-up and milestones continue where they were),
* the optimizer state given by ``optimizer_policy``:

  ``"carried"`` (the default): the SGD momentum buffers of the standard run at step :math:`t`
  are loaded into the linearized model's optimizer (same parameter space, same order). The
  switch then changes one thing only, the model being trained, so the difference to the standard
  run is due to linearization alone, and the continuation from :math:`t = T` *is* the standard
  run.
  ``"reset"``: fresh momentum at the switch. With momentum :math:`\\mu = 0.9` the first updates
  after a reset are up to :math:`1/(1-\\mu) = 10` times smaller than in the running optimizer,
  a warm-restart transient that would be confounded with the effect of linearizing, mostly for
  late switches that have few steps left.

  At :math:`t = 0` the two policies coincide (no update has been made yet).

* weight decay as chosen by ``decay_to``. SGD's weight decay adds :math:`\\lambda\\theta` to the
  gradient. For the Taylor model that is a pull towards :math:`\\theta = 0`, which in function
  space is a pull towards :math:`f(\\theta(t)) - J\\theta(t)`, not towards the network at the
  switch. ``"zero"`` (the default) keeps it: the continuation's update rule is then the network's
  own, and only the model changes at the switch. ``"switch_point"`` adds
  :math:`\\lambda(\\theta - \\theta(t))` instead: the ridge penalty of kernel regression around
  :math:`f(\\theta(t))`, under which a parameter the data does not move stays at
  :math:`\\theta(t)` rather than shrinking. With the MNIST recipe (no weight decay) the two are
  the same.

The continuations are independent: with ``workers`` > 1 they run in that many spawned processes
at once (each with its share of the CPU threads), the longest (earliest switches) first; their
results do not depend on the order. An error or interrupt stops every worker.

BatchNorm is handled as in the eNTK: the linearized model evaluates the network in eval mode,
with the running statistics frozen at :math:`\\theta(t)` (see :mod:`conelib.linearize`); the
standard run trains as usual. Use a LayerNorm or norm-free model (the paper profile uses
ResNet-20 with LayerNorm) when the difference between the two modes matters.

Stored (one ``xarray.Dataset``, dims ``switch_step``, ``seed``, ``step``):

* ``final_test_acc``, ``final_test_loss``, ``final_train_loss``, ``final_train_acc``
  (switch_step, seed): :math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)` on the test set and
  on a fixed class-stratified subset of (at most) :data:`conelib.train.EVAL_TRAIN_MAX` training examples;
* ``test_acc_curve``, ``test_loss_curve``, ``train_loss_curve`` (switch_step, seed, step): each
  continuation's curve, **NaN before its switching step** (the continuation does not exist
  there; the standard curve is stored separately);
* ``standard_test_acc``, ``standard_test_loss``, ``standard_train_loss``, ``standard_train_acc``
  (seed, step) and ``standard_final_test_acc``, ``standard_final_test_loss``,
  ``standard_final_train_loss`` (seed): the fully standard run, the reference line;
* ``lin_displacement`` and ``std_displacement`` (switch_step, seed): how far the parameters
  move after step :math:`t`, :math:`\\lVert\\theta(T) - \\theta(t)\\rVert_2`, under linearized
  and under standard training;
* ``diverged_step`` (switch_step, seed): the step at which a continuation's loss became
  non-finite (its metrics are then NaN), NaN when it did not diverge;
* ``continuation_seconds`` (switch_step, seed), ``standard_seconds`` (seed): wall times.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm import tqdm

from conelib import data as data_mod
from conelib.atomic import TMP_MARK, sweep_stale
from conelib.config import ParameterError, param, values_equal
from conelib.experiments.common import (RunConfig, build_model, device_name, load_data, preflight, profile_runs,
                                        resolve_device)
from conelib.linearize import LinearizedModel, linearize
from conelib.models.scaling import loss_scale
from conelib.results import load_or_compute, stored_results
from conelib.train import EVAL_TRAIN_MAX, TrainHistory, TrainingDivergedError, load_checkpoint, train

EXPERIMENT = "switching"

#: optimizer-state policies at the switch (see the module docstring); the first is the default
POLICIES: tuple[str, ...] = ("carried", "reset")

#: train metrics are computed on a fixed class-stratified subset of this many training examples


#: where weight decay pulls the linearized model's parameters (see the module docstring)
DECAY_TARGETS: tuple[str, ...] = ("zero", "switch_point")


@dataclass(frozen=True, init=False)
class SwitchingConfig(RunConfig):
    """A :class:`~conelib.experiments.common.RunConfig` plus the switching grid.

    Attributes:
        switch_steps: the switching steps :math:`t`, integers in ``[0, steps]``; stored sorted,
            without duplicates, with 0 and ``steps`` added when missing.
        seeds: the seeds to run (each: initialisation, data split and data order); empty means
            ``(seed,)``. Stored sorted without duplicates, and ``seed`` is set to ``seeds[0]``
            (so ``seeds`` wins over ``seed`` when both are given).
        eval_every: the test curves are recorded every this many steps (plus at every switching
            step and at ``steps``).
        optimizer_policy: ``"carried"`` (default) or ``"reset"``: what the linearized run's
            optimizer starts from (see the module docstring).
        decay_to: where weight decay pulls the linearized model: ``"zero"`` (default, the
            network's own update) or ``"switch_point"`` (towards :math:`\theta(t)`).
        workers: continuations run in this many processes at once (runtime; 0: one per core).
    """

    LABEL = "the switching experiment (SwitchingConfig)"

    switch_steps: tuple[int, ...] = param((0, 25, 50, 100, 200, 300, 500, 700, 1000),
                                          "switching steps t (0 and steps are always added)", unique=True)
    seeds: tuple[int, ...] = param((), "seeds to run (bands and intervals over seeds); empty: just seed",
                                   unique=True, check=lambda v: all(s >= 0 for s in v),
                                   allowed="a list of integers >= 0")
    eval_every: int = param(50, "the test curves are recorded every this many steps", check=lambda v: v >= 1,
                            allowed="an integer >= 1")
    optimizer_policy: str = param(POLICIES[0], "the SGD momentum buffers at the switch: carried over or reset",
                                  choices=POLICIES)
    decay_to: str = param(DECAY_TARGETS[0], "where weight decay pulls the linearized model's parameters: zero "
                          "(the network's own SGD update) or switch_point (towards theta(t))", choices=DECAY_TARGETS)
    workers: int = param(1, "continuations run in this many processes at once (0: one per CPU core)",
                         check=lambda v: v >= 0, allowed="an integer >= 0", runtime=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        T = int(self.steps)
        bad = [s for s in self.switch_steps if not 0 <= s <= T]
        if bad:
            raise ParameterError("switch_steps", f"parameter 'switch_steps': {bad} are not steps in [0, steps={T}]")
        object.__setattr__(self, "switch_steps", tuple(sorted({0, T, *self.switch_steps})))
        seeds = self.seeds or (int(self.seed),)
        object.__setattr__(self, "seeds", seeds)
        if self.train.seed != seeds[0]:
            object.__setattr__(self, "train", self.train.replace(seed=seeds[0]))

    @property
    def curve_steps(self) -> list[int]:
        """Where the curves are recorded: every ``eval_every`` steps, every switch step, and ``steps``."""
        return sorted({*range(0, self.steps + 1, self.eval_every), *self.switch_steps, self.steps})

    @property
    def linearized_steps(self) -> int:
        """Linearized SGD steps of one seed, :math:`\\sum_t (T - t)` (a measure of the cost)."""
        return sum(self.steps - t for t in self.switch_steps)

    def for_seed(self, seed: int) -> SwitchingConfig:
        """The same configuration with the single seed ``seed``."""
        return self.replace(seed=int(seed), seeds=(int(seed),))


def switching_config(profile: str = "mnist", **overrides: Any) -> SwitchingConfig:
    """The profile's switching parameters with the given (non-``None``) overrides (its first model
    when it lists several; :func:`switching_configs` gives all)."""
    return SwitchingConfig.from_profile(profile, EXPERIMENT, **overrides)


def switching_configs(profile: str = "mnist", **overrides: Any) -> list[SwitchingConfig]:
    """Every run of the profile's switching section: one per model it lists."""
    return profile_runs(SwitchingConfig, profile, EXPERIMENT, **overrides)


def switching(
    config: SwitchingConfig | None = None,
    *,
    results_root: str | Path | None = None,
    recompute: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> xr.Dataset:
    """Run (or load, if stored) the switching experiment and return its Dataset.

    Args:
        config: the configuration; ``None`` → the defaults. Keyword ``overrides`` replace fields.
        results_root: folder of stored results (default ``$CONELIB_RESULTS`` or ``./results``).
        recompute: run even when a result for this configuration is stored.
        progress: show text progress bars (the standard runs, then one over the continuations).

    Returns:
        The Dataset described in the module docstring, with the provenance attributes of
        :func:`conelib.results.load_or_compute`.
    """
    cfg = config or SwitchingConfig()
    if overrides:
        cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    return load_or_compute(EXPERIMENT, cfg.identity(), lambda: _run(cfg, progress=progress), root=results_root,
                           recompute=recompute, device=lambda: device_name(cfg.device),
                           precheck=lambda: preflight(cfg), full=cfg.full())


# --------------------------------------------------------------------------------------------
# the two kinds of job
# --------------------------------------------------------------------------------------------




def continue_linearized(
    cfg: RunConfig,
    checkpoint: str | Path,
    *,
    optimizer_policy: str = POLICIES[0],
    decay_to: str = DECAY_TARGETS[0],
    data: data_mod.TensorData | None = None,
    eval_steps: Sequence[int] | None = None,
    progress: bool = False,
) -> tuple[TrainHistory, LinearizedModel]:
    """One continuation: linearize at a checkpoint of the standard run and train to ``cfg.steps``.

    The checkpoint (written by :func:`conelib.train.train` for ``cfg.train``) holds
    :math:`\theta(t)` and the optimizer state at step :math:`t`. The network is rebuilt, loaded,
    linearized there (:func:`conelib.linearize.linearize`) and its Taylor model trained with
    :func:`conelib.train.train` from ``start_step = t`` to ``cfg.steps``: same data order,
    learning-rate schedule and, with ``optimizer_policy="carried"``, the same momentum buffers.

    Args:
        cfg: the run's configuration (one seed).
        checkpoint: the checkpoint file of the standard run at the switching step.
        optimizer_policy: ``"carried"`` or ``"reset"`` (see the module docstring).
        decay_to: ``"zero"`` or ``"switch_point"``: where weight decay pulls :math:`\theta`
            (see the module docstring).
        data: the dataset, if already loaded (else loaded from ``cfg``).
        eval_steps: steps at which to record the metrics (those ``>= t`` are used; ``t`` and
            ``cfg.steps`` always are).
        progress: show the training bar.

    Returns:
        The continuation's :class:`~conelib.train.TrainHistory` (steps ``t .. T``) and the
        trained :class:`~conelib.linearize.LinearizedModel`.

    Raises:
        ValueError: unknown policy, or a checkpoint written with another schedule / data order.
        FileNotFoundError: the checkpoint does not exist.
        conelib.train.TrainingDivergedError: the linearized run diverged.
    """
    if optimizer_policy not in POLICIES:
        raise ValueError(f"optimizer_policy={optimizer_policy!r} is not known; choose one of {POLICIES}")
    if decay_to not in DECAY_TARGETS:
        raise ValueError(f"decay_to={decay_to!r} is not known; choose one of {DECAY_TARGETS}")
    device = resolve_device(cfg.device)
    data = load_data(cfg, device) if data is None else data
    model = build_model(cfg, data, device)
    tc = cfg.train
    ckpt = load_checkpoint(checkpoint, model)
    if ckpt["config"] != tc.to_dict():
        raise ValueError(f"checkpoint {checkpoint} was written by a run with config {ckpt['config']}, not "
                         f"{tc.to_dict()}: its data order or schedule would differ")
    t = int(ckpt["step"])
    lin = linearize(model)
    del model
    wanted = [s for s in (eval_steps or ()) if t <= s <= tc.steps]
    center = list(lin.theta_s().values()) if decay_to == "switch_point" else None
    history = train(lin, data, tc, start_step=t, snapshot_steps=sorted({t, *wanted, tc.steps}),
                    optimizer_state=ckpt["optimizer"] if optimizer_policy == "carried" else None,
                    eval_train_max=EVAL_TRAIN_MAX, progress=progress, desc=f"linearized from step {t}",
                    decay_center=center, loss_scale=loss_scale(getattr(cfg, "output_scale", None)))
    return history, lin


def _flat_params(params: dict[str, torch.Tensor] | nn.Module) -> torch.Tensor:
    if isinstance(params, nn.Module):
        params = {n: p for n, p in params.named_parameters() if p.requires_grad}
    return torch.cat([p.detach().reshape(-1).double() for p in params.values()])


# --------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------

#: the metrics of a continuation's curves
_CURVES = ("test_acc", "test_loss", "train_loss", "train_acc")
#: temporary checkpoint folders are named ``conelib-switching.tmp.<pid>.<random>`` (swept when stale)
_TMP_PREFIX = "conelib-switching"


def _continuation_job(flat: dict[str, Any], checkpoint: str, final_params: torch.Tensor, policy: str,
                      decay_to: str, eval_steps: list[int], threads: int | None) -> dict[str, Any]:
    """One continuation as a picklable job (inline or in a worker process): its curves, the
    parameter displacements, its wall time, or the step at which it diverged."""
    if threads:
        torch.set_num_threads(int(threads))
    rc = SwitchingConfig(**flat)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"diverged": None}
    try:
        hist, lin = continue_linearized(rc, checkpoint, optimizer_policy=policy, decay_to=decay_to,
                                        eval_steps=eval_steps)
    except TrainingDivergedError as err:
        out["diverged"] = err.step
    else:
        out["steps"] = list(hist.steps)
        out.update({name: list(getattr(hist, name)) for name in _CURVES})
        theta_t = _flat_params(lin.theta_s()).cpu()
        out["lin_disp"] = float((_flat_params(lin.theta()).cpu() - theta_t).norm())
        out["std_disp"] = float((final_params - theta_t).norm())
    out["seconds"] = time.perf_counter() - t0
    return out


def _workers(n: int) -> int:
    """``0`` -> the CPU cores this process may use."""
    if n:
        return int(n)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run(cfg: SwitchingConfig, *, progress: bool) -> xr.Dataset:
    device = resolve_device(cfg.device)
    steps, switch, seeds = cfg.curve_steps, list(cfg.switch_steps), list(cfg.seeds)
    S, K, N = len(switch), len(seeds), len(steps)
    step_index = {s: i for i, s in enumerate(steps)}

    def full(*shape: int) -> np.ndarray:
        return np.full(shape, np.nan)

    std = {k: full(K, N) for k in _CURVES}
    cont = {k: full(S, K, N) for k in _CURVES}
    lin_disp, std_disp, diverged, cont_sec = full(S, K), full(S, K), full(S, K), full(S, K)
    std_sec = full(K)
    n_params = n_train = n_test = 0
    workers = min(_workers(cfg.workers), S * K)
    threads = max(1, torch.get_num_threads() // workers) if workers > 1 else None
    t_start = time.perf_counter()

    sweep_stale(tempfile.gettempdir(), f"{_TMP_PREFIX}{TMP_MARK}*")
    with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{TMP_MARK}{os.getpid()}.") as tmp:
        # 1. the standard runs: curves and a checkpoint at every switching step
        ckpts: dict[int, dict[int, Path]] = {}
        final_params: dict[int, torch.Tensor] = {}
        for k, seed in enumerate(seeds):
            rc = cfg.for_seed(seed)
            data = load_data(rc, device)
            model = build_model(rc, data, device)
            n_params = int(sum(p.numel() for p in model.parameters()))
            n_train, n_test = len(data.y_train), len(data.y_test)
            t0 = time.perf_counter()
            hist = train(model, data, rc.train, snapshot_steps=steps, checkpoint_steps=switch,
                         loss_scale=loss_scale(rc.output_scale),
                         checkpoint_dir=Path(tmp) / f"seed{seed}", eval_train_max=EVAL_TRAIN_MAX, progress=progress,
                         desc=f"{EXPERIMENT}: standard run {cfg.model}/{cfg.dataset}, seed {seed}")
            std_sec[k] = time.perf_counter() - t0
            for name in std:
                std[name][k] = getattr(hist, name)
            ckpts[seed] = dict(hist.checkpoints)
            final_params[seed] = _flat_params(model).cpu()
            del model, data

        # 2. the linearized continuations: independent jobs, the longest first
        jobs = sorted(((i, k) for i in range(S) for k in range(K)), key=lambda ik: (switch[ik[0]], ik[1]))

        def args(i: int, k: int) -> tuple:
            seed = seeds[k]
            return (cfg.for_seed(seed).replace(workers=1).flat(), str(ckpts[seed][switch[i]]), final_params[seed],
                    cfg.optimizer_policy, cfg.decay_to, steps, threads)

        def store(i: int, k: int, out: dict[str, Any]) -> None:
            cont_sec[i, k] = out["seconds"]
            if out["diverged"] is not None:
                diverged[i, k] = out["diverged"]
                return
            idx = [step_index[s] for s in out["steps"]]
            for name in _CURVES:
                cont[name][i, k, idx] = out[name]
            lin_disp[i, k], std_disp[i, k] = out["lin_disp"], out["std_disp"]

        bar = tqdm(total=S * K, desc=f"{EXPERIMENT}: linearized continuations ({workers} at once)", unit="run",
                   disable=not progress)
        try:
            if workers == 1:
                for i, k in jobs:
                    bar.set_postfix(seed=seeds[k], switch_step=switch[i], refresh=True)
                    store(i, k, _continuation_job(*args(i, k)))
                    bar.update(1)
            else:
                _run_pool(jobs, args, store, workers, bar)
        finally:
            bar.close()
    wall = time.perf_counter() - t_start

    T = cfg.steps
    last = step_index[T]
    dims3, dims2 = ("switch_step", "seed", "step"), ("switch_step", "seed")
    run = "θ_std→lin(T; t)"
    ds = xr.Dataset(
        {
            "final_test_acc": (dims2, cont["test_acc"][:, :, last],
                               {"long_name": f"test accuracy of {run}", "units": "1"}),
            "final_test_loss": (dims2, cont["test_loss"][:, :, last],
                                {"long_name": f"test cross-entropy of {run}", "units": "nats"}),
            "final_train_loss": (dims2, cont["train_loss"][:, :, last],
                                 {"long_name": f"train cross-entropy of {run}", "units": "nats"}),
            "final_train_acc": (dims2, cont["train_acc"][:, :, last],
                                {"long_name": f"train accuracy of {run}", "units": "1"}),
            "test_acc_curve": (dims3, cont["test_acc"],
                               {"long_name": "test accuracy of the continuation switched at t (NaN before t)",
                                "units": "1"}),
            "test_loss_curve": (dims3, cont["test_loss"],
                                {"long_name": "test cross-entropy of the continuation switched at t (NaN before t)",
                                 "units": "nats"}),
            "train_loss_curve": (dims3, cont["train_loss"],
                                 {"long_name": "train cross-entropy of the continuation switched at t (NaN before t)",
                                  "units": "nats"}),
            "standard_test_acc": (("seed", "step"), std["test_acc"],
                                  {"long_name": "test accuracy of the standard run", "units": "1"}),
            "standard_test_loss": (("seed", "step"), std["test_loss"],
                                   {"long_name": "test cross-entropy of the standard run", "units": "nats"}),
            "standard_train_loss": (("seed", "step"), std["train_loss"],
                                    {"long_name": "train cross-entropy of the standard run", "units": "nats"}),
            "standard_train_acc": (("seed", "step"), std["train_acc"],
                                   {"long_name": "train accuracy of the standard run", "units": "1"}),
            "standard_final_test_acc": (("seed",), std["test_acc"][:, last],
                                        {"long_name": "test accuracy of the standard run at T", "units": "1"}),
            "standard_final_test_loss": (("seed",), std["test_loss"][:, last],
                                         {"long_name": "test cross-entropy of the standard run at T", "units": "nats"}),
            "standard_final_train_loss": (("seed",), std["train_loss"][:, last],
                                          {"long_name": "train cross-entropy of the standard run at T",
                                           "units": "nats"}),
            "lin_displacement": (dims2, lin_disp,
                                 {"long_name": "parameter distance ‖θ(T) − θ(t)‖ under linearized training",
                                  "units": "1"}),
            "std_displacement": (dims2, std_disp,
                                 {"long_name": "parameter distance ‖θ(T) − θ(t)‖ under standard training",
                                  "units": "1"}),
            "diverged_step": (dims2, diverged,
                              {"long_name": "step at which the continuation diverged (NaN: it did not)",
                               "units": "steps"}),
            "continuation_seconds": (dims2, cont_sec,
                                     {"long_name": "wall time of the linearized continuation", "units": "s"}),
            "standard_seconds": (("seed",), std_sec, {"long_name": "wall time of the standard run", "units": "s"}),
        },
        coords={
            "switch_step": ("switch_step", np.asarray(switch, dtype=np.int64),
                            {"long_name": "switching step t (standard before, linearized after)", "units": "steps"}),
            "seed": ("seed", np.asarray(seeds, dtype=np.int64), {"long_name": "seed", "units": "1"}),
            "step": ("step", np.asarray(steps, dtype=np.int64), {"long_name": "training step", "units": "steps"}),
        },
        attrs={
            "title": f"Switching from standard to linearized training: {cfg.model} on {cfg.dataset}, T = {T}",
            "optimizer_policy": cfg.optimizer_policy,
            "switching": "standard SGD for steps [0, t), then SGD on the Taylor model at θ(t) for [t, T); same data "
                         "order and learning-rate schedule",
            "norm_mode": "linearized model evaluated in eval mode (BatchNorm running statistics frozen at θ(t)); "
                         "standard run trained in train mode",
            "curve_before_switch": "NaN (a continuation starts at its switching step)",
            "train_metrics_on": f"a fixed class-stratified subset of min({EVAL_TRAIN_MAX}, n_train) training examples",
            "n_params": n_params,
            "n_train": n_train,
            "n_test": n_test,
            "linearized_steps": cfg.linearized_steps * K,
            "decay_to": cfg.decay_to,
            "continuation_workers": workers,
            "continuation_threads": threads or torch.get_num_threads(),
            "wall_seconds": wall,
        },
    )
    return ds


def _run_pool(jobs: list[tuple[int, int]], args: Any, store: Any, workers: int, bar: tqdm) -> None:
    """Run the continuations in ``workers`` spawned processes; on any error or interrupt, cancel
    what is queued and stop the workers (so nothing keeps running or writing after a failure)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        futures = {pool.submit(_continuation_job, *args(i, k)): (i, k) for i, k in jobs}
        for fut in cf.as_completed(futures):
            i, k = futures[fut]
            try:
                out = fut.result()
            except cf.process.BrokenProcessPool as err:
                raise RuntimeError(
                    "a continuation's worker process died before it could run. Worker processes are started "
                    "with 'spawn', which imports the main script again: a script that runs the switching "
                    "experiment must guard its code with `if __name__ == \"__main__\":` (or use workers=1)"
                ) from err
            store(i, k, out)
            bar.update(1)
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# --------------------------------------------------------------------------------------------
# reading results
# --------------------------------------------------------------------------------------------


def config_of(ds: xr.Dataset) -> SwitchingConfig:
    """The configuration a stored result records (:meth:`conelib.config.Config.from_result`)."""
    return SwitchingConfig.from_result(ds)


#: the parameters that fix the training trajectory up to a given step (kernel dynamics vs switching):
#: every non-runtime parameter of a run but its length
TRAJECTORY_PARAMS = tuple(k for k, p in RunConfig.parameters().items() if not p.runtime and k != "steps")


def same_trajectory(a: RunConfig, b: RunConfig) -> bool:
    """Whether two runs follow the same SGD trajectory up to the shorter one's last step: every
    parameter of :class:`RunConfig` that fixes it (all but the runtime ones and ``steps``) is equal
    (data order and schedule are pure functions of ``(seed, step)``)."""
    fa, fb = a.flat(), b.flat()
    return all(values_equal(fa[k], fb[k]) for k in TRAJECTORY_PARAMS)


def matching_phase_one_end(cfg: SwitchingConfig, *, results_root: str | Path | None = None,
                           fraction: float = 0.1) -> tuple[int | None, str | None]:
    """The end of Phase I measured on a stored kernel-dynamics run of the same training.

    A kernel-dynamics result matches when it follows the same trajectory (:func:`same_trajectory`;
    the first of ``cfg.seeds``) and ran at least as many steps. Phase I's end is the
    ``phase_one_end`` of :func:`conelib.measures.verdict` of that result. Unreadable stored files are skipped.

    Returns:
        ``(step, config_hash)`` of the newest matching result, or ``(None, None)`` if none is
        stored (or if it shows no two phases: ``(None, config_hash)``).
    """
    from conelib.measures import verdict

    ds = matching_kernel_dynamics(cfg, results_root=results_root)
    if ds is None:
        return None, None
    return verdict(ds, fraction=fraction).phase_one_end, str(ds.attrs.get("config_hash"))


def matching_kernel_dynamics(cfg: SwitchingConfig, *, seed: int | None = None,
                             results_root: str | Path | None = None) -> xr.Dataset | None:
    """The newest stored kernel-dynamics run of the same training as ``cfg`` for ``seed`` (default
    ``cfg.seeds[0]``), at least as long (see :func:`same_trajectory`); ``None`` if there is none."""
    want = cfg.for_seed(cfg.seeds[0] if seed is None else seed)
    return next((ds for ds, _ in kernel_dynamics_of_trajectory(want, results_root=results_root)), None)


def kernel_dynamics_of_trajectory(want: RunConfig, *, results_root: str | Path | None = None
                                  ) -> Iterator[tuple[xr.Dataset, Any]]:
    """The stored kernel-dynamics runs that follow the training of ``want`` (:func:`same_trajectory`)
    for at least as many steps, newest first, each with its configuration. Unreadable stored files
    are skipped."""
    from conelib.experiments.kernel_dynamics import config_of as kd_config_of

    for ds in reversed(stored_results("kernel_dynamics", results_root)):
        try:
            kd = kd_config_of(ds)
        except (KeyError, TypeError, ValueError):
            continue
        if same_trajectory(kd, want) and kd.steps >= want.steps:
            yield ds, kd


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------

#: the possible answers of :func:`summarize` to "does switching later help?"
SWITCHING_VERDICTS: tuple[str, ...] = ("later switching helps", "no clear effect", "later switching hurts")


@dataclass(frozen=True)
class SwitchingSummary:
    """Key numbers of a switching result (means over seeds); see :func:`summarize`."""

    acc_at_zero: float
    loss_at_zero: float
    phase_switch_step: int | None
    acc_at_phase_end: float | None
    loss_at_phase_end: float | None
    acc_standard: float
    loss_standard: float
    gain: float
    gain_after_phase_end: float | None
    seed_range: float
    rank_correlation: float
    verdict: str

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant."""
    import pandas as pd

    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def summarize(ds: xr.Dataset, phase_end: int | None = None, *, tol: float = 0.005,
              min_correlation: float = 0.5) -> SwitchingSummary:
    """The numbers the chapter quotes, and a plain answer to "does switching later help?".

    With :math:`a(t)` the test accuracy of :math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)`
    averaged over seeds:

    * ``acc_at_zero`` :math:`= a(0)` (fully linearized), ``acc_standard`` the standard run at
      :math:`T` (equal to :math:`a(T)`), ``acc_at_phase_end`` :math:`= a(t_p)` at the switching
      step :math:`t_p` nearest to ``phase_end`` (the earlier one on a tie; ``None`` without a
      ``phase_end``); the same for the test loss;
    * ``gain`` :math:`= a(T) - a(0)`; ``gain_after_phase_end`` :math:`= a(T) - a(t_p)` (what
      switching later than the end of Phase I still adds); ``seed_range`` the largest min–max range of the accuracy
      over seeds at any switching step (0 for one seed); ``rank_correlation`` Spearman's
      :math:`\\rho` between :math:`t` and :math:`a(t)`.

    Verdict: ``"later switching helps"`` if ``gain > max(tol, seed_range)`` and
    :math:`\\rho \\ge` ``min_correlation``; ``"later switching hurts"`` if
    ``gain < -max(tol, seed_range)`` and :math:`\\rho \\le -` ``min_correlation``; else
    ``"no clear effect"``. The default ``tol`` is half a percentage point of accuracy.
    """
    if "final_test_acc" not in ds or "switch_step" not in ds.dims:
        raise ValueError("ds is not a switching Dataset (it needs final_test_acc over switch_step)")
    if not 0 <= tol < 1 or not 0 <= min_correlation <= 1:
        raise ValueError(f"tol must be in [0, 1) and min_correlation in [0, 1]; got {tol}, {min_correlation}")
    steps = ds["switch_step"].values.astype(int)
    acc = ds["final_test_acc"].mean("seed").values
    loss = ds["final_test_loss"].mean("seed").values
    spread = (ds["final_test_acc"].max("seed") - ds["final_test_acc"].min("seed")).values
    seed_range = float(np.nanmax(spread)) if np.isfinite(spread).any() else 0.0
    i_p = None if phase_end is None else int(np.argmin(np.abs(steps - int(phase_end))))
    gain = float(acc[-1] - acc[0])
    finite = np.isfinite(acc)
    rho = _spearman(steps[finite], acc[finite]) if finite.sum() >= 3 else float("nan")
    margin = max(tol, seed_range)
    if gain > margin and rho >= min_correlation:
        verdict = SWITCHING_VERDICTS[0]
    elif gain < -margin and rho <= -min_correlation:
        verdict = SWITCHING_VERDICTS[2]
    else:
        verdict = SWITCHING_VERDICTS[1]
    return SwitchingSummary(
        acc_at_zero=float(acc[0]),
        loss_at_zero=float(loss[0]),
        phase_switch_step=None if i_p is None else int(steps[i_p]),
        acc_at_phase_end=None if i_p is None else float(acc[i_p]),
        loss_at_phase_end=None if i_p is None else float(loss[i_p]),
        acc_standard=float(ds["standard_final_test_acc"].mean("seed")),
        loss_standard=float(ds["standard_final_test_loss"].mean("seed")),
        gain=gain,
        gain_after_phase_end=None if i_p is None else float(acc[-1] - acc[i_p]),
        seed_range=seed_range,
        rank_correlation=rho,
        verdict=verdict,
    )


@dataclass(frozen=True)
class PairedGain:
    """The gain in a final test metric from switching at ``t_to`` instead of ``t_from``, paired by seed.

    For each seed :math:`s`, :math:`d_s = a_s(t_{to}) - a_s(t_{from})` (the same seed's data order,
    initialisation and standard run up to :math:`t_{from}`, so the pairing removes most of the
    seed-to-seed variation). ``mean`` is :math:`\\bar d`, and ``low`` / ``high`` the two-sided
    Student-t interval :math:`\\bar d \\pm t_{1-\\alpha/2,\\,n-1}\\, s_d/\\sqrt{n}` at ``level``
    (NaN with fewer than two seeds). ``n_positive`` counts the seeds with :math:`d_s > 0`.
    """

    metric: str
    t_from: int
    t_to: int
    per_seed: tuple[float, ...]
    mean: float
    low: float
    high: float
    level: float
    n_positive: int

    @property
    def n(self) -> int:
        return len(self.per_seed)

    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0."""
        return bool(np.isfinite(self.low) and (self.low > 0 or self.high < 0))


def paired_gain(ds: xr.Dataset, t_from: int, t_to: int | None = None, *, metric: str = "final_test_acc",
                level: float = 0.95) -> PairedGain:
    """:class:`PairedGain` of ``metric`` between the switching steps ``t_from`` and ``t_to`` (default
    the last, :math:`T`: the standard run).

    Raises:
        ValueError: a step that is not a switching step, or an unknown metric.
    """
    from scipy import stats

    steps = ds["switch_step"].values.astype(int).tolist()
    t_to = steps[-1] if t_to is None else int(t_to)
    for t in (t_from, t_to):
        if int(t) not in steps:
            raise ValueError(f"{t} is not a switching step of this result; they are {steps}")
    if metric not in ds or "switch_step" not in ds[metric].dims:
        raise ValueError(f"metric={metric!r} is not a final metric over switch_step")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = (ds[metric].sel(switch_step=t_to) - ds[metric].sel(switch_step=int(t_from))).values.astype(float)
    d = d[np.isfinite(d)]
    mean = float(d.mean()) if d.size else float("nan")
    if d.size >= 2:
        half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    else:
        half = float("nan")
    return PairedGain(metric, int(t_from), t_to, tuple(float(x) for x in d), mean, mean - half, mean + half,
                      float(level), int((d > 0).sum()))


def first_switch_after(ds: xr.Dataset, step: int) -> int | None:
    """The first switching step at or after ``step`` that is before :math:`T` (``None`` if none)."""
    steps = ds["switch_step"].values.astype(int)
    later = steps[(steps >= int(step)) & (steps < steps.max())]
    return int(later.min()) if later.size else None


def paired_gain_table(ds: xr.Dataset, t_from: int, *, metric: str = "final_test_acc", level: float = 0.95):
    """:func:`paired_gain` from ``t_from`` to every switching step, one row each (a DataFrame with
    t, mean, low, high, n_positive, n and the per-seed differences as ``seed_<s>`` columns)."""
    import pandas as pd

    rows = []
    seeds = ds["seed"].values.tolist()
    for t in ds["switch_step"].values.astype(int):
        g = paired_gain(ds, t_from, int(t), metric=metric, level=level)
        row = {"t": int(t), "mean": g.mean, "low": g.low, "high": g.high, "n_positive": g.n_positive, "n": g.n}
        d = (ds[metric].sel(switch_step=int(t)) - ds[metric].sel(switch_step=int(t_from))).values
        row.update({f"seed_{s}": float(v) for s, v in zip(seeds, d)})
        rows.append(row)
    return pd.DataFrame(rows)
