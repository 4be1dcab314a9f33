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

Two controls against the plainer reading "the linear model only optimises more slowly":

* **matched train loss** (``match_horizon``): each linearized continuation may train past
  :math:`T`, up to the horizon, until its train loss reaches the standard run's train loss at
  :math:`T` (:class:`conelib.experiments.continuations.MatchRule`); its state there is stored
  beside its state at :math:`T`. The standard run's per-image test correctness is stored at every
  curve step, so the standard run can also be *stopped early* at any continuation's final train
  loss (:mod:`conelib.analysis.switching`).
* **the small-learning-rate baseline** of Fort et al. (2020) (``small_lr_factor``): from each
  :math:`t`, the network itself keeps training with the learning rate times the factor; it
  optimises slowly too, but its kernel keeps moving.

How it is run. One standard run per seed writes a checkpoint (parameters and optimizer state) at
every switching step to a temporary directory; every continuation is an independent job
(:mod:`conelib.experiments.continuations`) that loads one checkpoint and trains from step :math:`t` with

* the same data order and augmentation (both pure functions of ``(seed, step)`` in
  :func:`conelib.train.train`),
* the same learning-rate schedule (``lr_at(step)`` of the same :class:`~conelib.train.TrainConfig`:
  warm-up and milestones continue where they were),
* the optimizer state given by ``optimizer_policy``:

  ``"carried"`` (the default): the SGD momentum buffers of the standard run at step :math:`t`
  are loaded into the continuation's optimizer (same parameter space, same order). The switch
  then changes one thing only, the model being trained (or, for the small-lr arm, the step
  size), and the continuation from :math:`t = T` *is* the standard run.
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

The continuations are independent: with ``processes`` > 1 they run in that many spawned processes
at once (each with its share of the CPU threads), the longest (earliest switches) first; their
results do not depend on the order. An error or interrupt stops every process.

BatchNorm is handled as in the eNTK: the linearized model evaluates the network in eval mode,
with the running statistics frozen at :math:`\\theta(t)` (see :mod:`conelib.linearize`); the
standard run trains as usual. Use a LayerNorm or norm-free model (the paper profile uses
ResNet-20 with LayerNorm) when the difference between the two modes matters.

Stored (one ``xarray.Dataset``, dims ``switch_step``, ``seed``, ``step`` and ``image``; the
attribute ``T`` is the end of training, the last step of ``step`` the horizon):

* ``final_test_acc``, ``final_test_loss``, ``final_train_loss``, ``final_train_acc``
  (switch_step, seed): :math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)` on the test set and
  on a fixed class-stratified subset of (at most) :data:`EVAL_TRAIN_MAX` training examples;
  ``final_test_correct`` (switch_step, seed, image): its per-image correctness (int8, 1 correct);
* ``test_acc_curve``, ``test_loss_curve``, ``train_loss_curve`` (switch_step, seed, step): each
  continuation's curve, **NaN before its switching step** and after the step it stopped at;
* ``matched_step``, ``matched_test_acc``, ``matched_test_loss``, ``matched_train_loss``
  (switch_step, seed) and ``matched_test_correct`` (switch_step, seed, image; -1 where not
  reached): the continuation at the first curve step at which its train loss is at or below the
  standard run's at :math:`T` (NaN: not reached by the horizon); ``last_step``: where it stopped;
* ``standard_test_acc``, ``standard_test_loss``, ``standard_train_loss``, ``standard_train_acc``
  (seed, step), ``standard_test_correct`` (seed, step, image; -1 after :math:`T`) and
  ``standard_final_test_acc``, ``standard_final_test_loss``, ``standard_final_train_loss``
  (seed): the fully standard run, the reference line;
* with ``small_lr_factor``: ``small_lr_final_test_acc``, ``small_lr_final_test_loss``,
  ``small_lr_final_train_loss``, ``small_lr_final_train_acc`` (switch_step, seed),
  ``small_lr_test_correct`` (switch_step, seed, image), the curves ``small_lr_test_acc_curve``,
  ``small_lr_test_loss_curve``, ``small_lr_train_loss_curve``, ``small_lr_displacement``,
  ``small_lr_diverged_step`` and ``small_lr_seconds``;
* ``lin_displacement`` and ``std_displacement`` (switch_step, seed): how far the parameters
  move after step :math:`t`, :math:`\\lVert\\theta(T) - \\theta(t)\\rVert_2`, under linearized
  and under standard training;
* ``diverged_step`` (switch_step, seed): the step at which a continuation's loss became
  non-finite (its metrics are then NaN), NaN when it did not diverge;
* ``continuation_seconds`` (switch_step, seed), ``standard_seconds`` (seed): wall times.

Results stored before the controls existed (no ``image`` dimension, no ``matched_*`` or
``small_lr_*`` variables) load unchanged; :mod:`conelib.analysis.switching` says what they lack.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from conelib.atomic import TMP_MARK, sweep_stale
from conelib.config import ParameterError, param
from conelib.experiments.common import METRICS, Experiment, SeedsConfig, metric_variables, build_model, load_data, resolve_device
from conelib.experiments.continuations import (CURVES, DECAY_TARGETS, EVAL_TRAIN_MAX, POLICIES, MatchRule,
                                               continue_linearized, continue_small_lr, flat_params, linearized_job,
                                               process_count, run_jobs, small_lr_job, test_correct)
from conelib.models.scaling import loss_scale
from conelib.train import train

__all__ = ["EXPERIMENT", "POLICIES", "DECAY_TARGETS", "EVAL_TRAIN_MAX", "SwitchingConfig", "switching",
           "switching_by_seed", "combine_seeds", "switching_config", "switching_configs", "continue_linearized",
           "continue_small_lr", "config_of"]

EXPERIMENT = "switching"

#: the value of ``*_test_correct`` where no model was evaluated (after T, or a level not reached)
NOT_RECORDED = -1


def _positive_or_none(v: Any) -> bool:
    return v is None or v > 0


@dataclass(frozen=True, init=False)
class SwitchingConfig(SeedsConfig):
    """A run over several seeds (:class:`~conelib.experiments.common.SeedsConfig`) plus the switching
    grid and its controls.

    Attributes:
        switch_steps: the switching steps :math:`t`, integers in ``[0, steps]``; stored sorted,
            without duplicates, with 0 and ``steps`` added when missing.
        eval_every: the curves are recorded every this many steps (plus at every switching
            step, at ``steps`` and at the horizon).
        optimizer_policy: ``"carried"`` (default) or ``"reset"``: what a continuation's
            optimizer starts from (see the module docstring).
        decay_to: where weight decay pulls the linearized model: ``"zero"`` (default, the
            network's own update) or ``"switch_point"`` (towards :math:`\\theta(t)`).
        small_lr_factor: run the small-learning-rate baseline (Fort et al. 2020) with the
            learning rate times this factor after each switching step; ``None`` (default): not run.
        match_horizon: linearized continuations train past ``steps`` until their train loss
            reaches the standard run's at ``steps``, up to this step at most; ``None`` (default):
            they stop at ``steps``.
        compare_from: the first switching step counted as "after Phase I" in the chapter's
            comparison, fixed in advance (a switching step strictly between 0 and ``steps``);
            ``None``: none declared. It says how the result is *read*, not what is computed, so
            it is not part of the result's identity.
        processes: continuations run in this many processes at once (runtime; 0: one per core).
    """

    LABEL = "the switching experiment (SwitchingConfig)"

    switch_steps: tuple[int, ...] = param((0, 25, 50, 100, 200, 300, 500, 700, 1000),
                                          "switching steps t (0 and steps are always added)", unique=True)
    eval_every: int = param(50, "the curves are recorded every this many steps", check=lambda v: v >= 1,
                            allowed="an integer >= 1")
    optimizer_policy: str = param(POLICIES[0], "the SGD momentum buffers at the switch: carried over or reset",
                                  choices=POLICIES)
    decay_to: str = param(DECAY_TARGETS[0], "where weight decay pulls the linearized model's parameters: zero "
                          "(the network's own SGD update) or switch_point (towards theta(t))", choices=DECAY_TARGETS)
    small_lr_factor: float | None = param(None, "the small-learning-rate baseline of Fort et al. (2020): after each "
                                          "switching step, the network itself trains on with lr times this factor; "
                                          "None: not run", check=lambda v: v is None or 0 < v < 1,
                                          allowed="a number in (0, 1), or None")
    match_horizon: int | None = param(None, "matched train loss: linearized continuations train past steps until "
                                      "their train loss reaches the standard run's at steps, up to this step; "
                                      "None: they stop at steps", check=_positive_or_none,
                                      allowed="an integer >= steps, or None")
    compare_from: int | None = param(None, "the first switching step counted as after Phase I in the comparison, "
                                     "fixed in advance (how the result is read, not what is computed); None: none",
                                     check=_positive_or_none, allowed="a switching step in (0, steps), or None",
                                     runtime=True)
    processes: int = param(1, "continuations run in this many processes at once (0: one per CPU core)",
                           check=lambda v: v >= 0, allowed="an integer >= 0", runtime=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        T = int(self.steps)
        bad = [s for s in self.switch_steps if not 0 <= s <= T]
        if bad:
            raise ParameterError("switch_steps", f"parameter 'switch_steps': {bad} are not steps in [0, steps={T}]")
        object.__setattr__(self, "switch_steps", tuple(sorted({0, T, *self.switch_steps})))
        if self.match_horizon is not None and self.match_horizon < T:
            raise ParameterError("match_horizon", f"parameter 'match_horizon' ({self.match_horizon}) must be at least "
                                 f"steps ({T}): continuations train past T to reach the matched train loss")
        if self.compare_from is not None and (self.compare_from not in self.switch_steps
                                              or not 0 < self.compare_from < T):
            raise ParameterError("compare_from", f"parameter 'compare_from' ({self.compare_from}) must be one of the "
                                 f"switching steps strictly between 0 and steps: {list(self.switch_steps[1:-1])} "
                                 "(a profile fixes it for its own grid: set compare_from, or None, when you change "
                                 "switch_steps or steps)")

    @property
    def horizon(self) -> int:
        """The last step a continuation may train to: ``match_horizon`` or ``steps``."""
        return int(self.steps if self.match_horizon is None else self.match_horizon)

    @property
    def curve_steps(self) -> list[int]:
        """Where the curves are recorded: every ``eval_every`` steps up to the horizon, every switch
        step, ``steps`` and the horizon."""
        return sorted({*range(0, self.horizon + 1, self.eval_every), *self.switch_steps, self.steps, self.horizon})

    @property
    def linearized_steps(self) -> int:
        """Linearized SGD steps of one seed up to :math:`T`, :math:`\\sum_t (T - t)` (a measure of
        the cost; a matched-loss extension adds to it)."""
        return sum(self.steps - t for t in self.switch_steps)


#: the switching experiment (:class:`~conelib.experiments.common.Experiment`): ``switching(config, **overrides)``
switching: Experiment[SwitchingConfig] = Experiment(EXPERIMENT, SwitchingConfig, lambda cfg, progress, _root: _run(cfg, progress=progress),
                                     progress_bars="text progress bars (the standard runs, then one over the continuations)")
switching_config, switching_configs, config_of = switching.config, switching.configs, switching.config_of


#: attributes a result gets when it is stored (:func:`conelib.results.provenance_attrs`): not carried
#: over from the parts by :func:`combine_seeds`
_PROVENANCE = ("experiment", "config_json", "config_full_json", "config_full_source", "config_hash", "git_commit",
               "git_dirty", "conelib_version", "torch_version", "python_version", "numpy_version", "xarray_version",
               "device", "torch_num_threads", "created", "content_sha256")


def combine_seeds(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Stored single-seed results of one configuration (but the seed) as one result over their
    seeds, in seed order: what :func:`switching` computes for those seeds at once (the seeds are
    independent), with ``wall_seconds`` and ``linearized_steps`` summed and each part's provenance
    kept in the ``seed_parts`` attribute (JSON). The provenance of the whole is added when it is
    stored.

    Raises:
        ValueError: no parts, a part with several seeds, a seed given twice, or parts of
            different configurations.
    """
    if not parts:
        raise ValueError("no results to combine")
    cfgs = [config_of(p) for p in parts]
    seeds = [c.seeds for c in cfgs]
    if any(len(s) != 1 for s in seeds):
        raise ValueError(f"combine_seeds takes single-seed results; got seeds {seeds}")
    flat = [s[0] for s in seeds]
    if len(set(flat)) != len(flat):
        raise ValueError(f"a seed is given twice: {flat}")
    ids = {json.dumps(c.for_seed(0).identity(), sort_keys=True, default=str) for c in cfgs}
    if len(ids) != 1:
        raise ValueError(f"the results are of different configurations: {sorted(ids)}")
    order = np.argsort(flat)
    ordered = [parts[i] for i in order]
    out = xr.concat(ordered, dim="seed", data_vars="minimal", coords="minimal", compat="override",
                    combine_attrs="override")
    out.attrs = {k: v for k, v in ordered[0].attrs.items() if k not in _PROVENANCE}
    for key in ("wall_seconds", "linearized_steps"):
        if all(key in p.attrs for p in ordered):
            out.attrs[key] = sum(p.attrs[key] for p in ordered)
    def plain(v: Any) -> Any:
        return v.item() if isinstance(v, np.generic) else v

    out.attrs["seed_parts"] = json.dumps([{"seed": int(flat[i]), **{k: plain(parts[i].attrs.get(k)) for k in (
        "config_hash", "git_commit", "git_dirty", "created", "device", "torch_num_threads")}} for i in order],
        default=str)
    return out


def switching_by_seed(
    config: SwitchingConfig,
    *,
    seeds_root: str | Path,
    results_root: str | Path | None = None,
    recompute: bool = False,
    progress: bool = True,
) -> xr.Dataset:
    """:func:`switching` for a long multi-seed run, one seed at a time: each seed's result is stored
    under ``seeds_root`` (so an interrupted run resumes with the first seed not stored), then the
    seeds are combined (:func:`combine_seeds`) and stored under ``results_root`` as the result of
    ``config``."""
    cfg = config

    def compute() -> xr.Dataset:
        parts = [switching(cfg.for_seed(s), results_root=seeds_root, progress=progress) for s in cfg.seeds]
        return combine_seeds(parts)

    return switching.stored_or_computed(cfg, compute, results_root=results_root, recompute=recompute)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------

#: temporary checkpoint folders are named ``conelib-switching.tmp.<pid>.<random>`` (swept when stale)
_TMP_PREFIX = "conelib-switching"

#: the metrics stored as curves, at the matched step and for the standard run at T
_CURVE_METRICS = ("test_acc", "test_loss", "train_loss")

#: the arms of the continuations: the linearized one (the paper's) and the small-lr baseline
_LIN, _SMALL = "linearized", "small_lr"


def _standard_run(cfg: SwitchingConfig, seed: int, steps: list[int], tmp: Path, device: torch.device,
                  progress: bool) -> dict[str, Any]:
    """One seed's standard run: its curves, per-image test correctness at every curve step up to T,
    a checkpoint at every switching step, its final parameters and its wall time."""
    rc = cfg.for_seed(seed)
    data = load_data(rc, device)
    model = build_model(rc, data, device)
    t0 = time.perf_counter()
    hist = train(model, data, rc.train, snapshot_steps=[s for s in steps if s <= rc.steps],
                 checkpoint_steps=list(cfg.switch_steps), loss_scale=loss_scale(rc.output_scale),
                 checkpoint_dir=tmp / f"seed{seed}", eval_train_max=EVAL_TRAIN_MAX, progress=progress,
                 desc=f"{EXPERIMENT}: standard run {cfg.model}/{cfg.dataset}, seed {seed}",
                 on_snapshot=lambda _t, m: {"test_correct": test_correct(m, data.x_test, data.y_test)})
    return {"seconds": time.perf_counter() - t0, "hist": hist, "checkpoints": dict(hist.checkpoints),
            "final_params": flat_params(model).cpu(), "n_params": int(sum(p.numel() for p in model.parameters())),
            "n_train": len(data.y_train), "n_test": len(data.y_test)}


def _run(cfg: SwitchingConfig, *, progress: bool) -> xr.Dataset:
    device = resolve_device(cfg.device)
    T = cfg.steps
    steps, switch, seeds = cfg.curve_steps, list(cfg.switch_steps), list(cfg.seeds)
    S, K, N = len(switch), len(seeds), len(steps)
    step_index = {s: i for i, s in enumerate(steps)}
    arms = [_LIN] + ([_SMALL] if cfg.small_lr_factor is not None else [])

    def full(*shape: int) -> np.ndarray:
        return np.full(shape, np.nan)

    std = {k: full(K, N) for k in CURVES}
    cont = {arm: {k: full(S, K, N) for k in CURVES} for arm in arms}
    disp = {arm: full(S, K) for arm in arms}
    diverged = {arm: full(S, K) for arm in arms}
    seconds = {arm: full(S, K) for arm in arms}
    std_disp, matched_step, last_step = full(S, K), full(S, K), full(S, K)
    std_sec = full(K)
    correct: dict[str, np.ndarray] = {}
    std_correct = matched_correct = None
    n_params = n_train = n_test = 0
    processes = min(process_count(cfg.processes), S * K * len(arms))
    threads = max(1, torch.get_num_threads() // processes) if processes > 1 else None
    t_start = time.perf_counter()

    sweep_stale(tempfile.gettempdir(), f"{_TMP_PREFIX}{TMP_MARK}*")
    with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{TMP_MARK}{os.getpid()}.") as tmp:
        # 1. the standard runs: curves, per-image correctness, a checkpoint at every switching step
        ckpts: dict[int, dict[int, Path]] = {}
        final_params: dict[int, torch.Tensor] = {}
        levels: dict[int, float] = {}
        for k, seed in enumerate(seeds):
            run = _standard_run(cfg, seed, steps, Path(tmp), device, progress)
            n_params, n_train, n_test = run["n_params"], run["n_train"], run["n_test"]
            if std_correct is None:
                std_correct = np.full((K, N, n_test), NOT_RECORDED, dtype=np.int8)
                matched_correct = np.full((S, K, n_test), NOT_RECORDED, dtype=np.int8)
                correct = {arm: np.full((S, K, n_test), NOT_RECORDED, dtype=np.int8) for arm in arms}
            hist = run["hist"]
            idx = [step_index[s] for s in hist.steps]
            for name in std:
                std[name][k, idx] = getattr(hist, name)
            std_correct[k, idx] = np.stack(hist.extra["test_correct"])
            std_sec[k] = run["seconds"]
            ckpts[seed], final_params[seed] = run["checkpoints"], run["final_params"]
            levels[seed] = float(hist.train_loss[-1])

        # 2. the continuations: independent jobs, the longest first (the linearized before the small-lr)
        def job(arm: str, i: int, k: int) -> tuple[Any, Any, tuple]:
            seed = seeds[k]
            rc = cfg.for_seed(seed).replace(processes=1)
            ckpt = str(ckpts[seed][switch[i]])
            if arm == _LIN:
                match = None if cfg.match_horizon is None else MatchRule(levels[seed], cfg.horizon)
                return ((arm, i, k), linearized_job, (rc, ckpt, final_params[seed], cfg.optimizer_policy,
                                                      cfg.decay_to, steps, threads, match))
            return ((arm, i, k), small_lr_job, (rc, ckpt, float(cfg.small_lr_factor), cfg.optimizer_policy,
                                                [s for s in steps if s <= T], threads))

        order = sorted(((arm, i, k) for arm in arms for i in range(S) for k in range(K)),
                       key=lambda a: (switch[a[1]], arms.index(a[0]), a[2]))

        def store(key: tuple[str, int, int], out: dict[str, Any]) -> None:
            arm, i, k = key
            seconds[arm][i, k] = out["seconds"]
            if out["diverged"] is not None:
                diverged[arm][i, k] = out["diverged"]
            if "steps" in out:
                idx = [step_index[s] for s in out["steps"]]
                for name in CURVES:
                    cont[arm][name][i, k, idx] = out[name]
            if out["correct"] is not None:
                correct[arm][i, k] = out["correct"]
            if arm == _LIN:
                disp[arm][i, k] = out.get("lin_disp", np.nan)
                std_disp[i, k] = out.get("std_disp", np.nan)
                if out["last_step"] is not None:
                    last_step[i, k] = out["last_step"]
                if out["matched_step"] is not None:
                    matched_step[i, k] = out["matched_step"]
                    matched_correct[i, k] = out["matched_correct"]
            else:
                disp[arm][i, k] = out.get("disp", np.nan)

        bar = tqdm(total=len(order), desc=f"{EXPERIMENT}: continuations ({processes} at once)", unit="run",
                   disable=not progress)
        try:
            run_jobs([job(*key) for key in order], store, processes, bar)
        finally:
            bar.close()
    wall = time.perf_counter() - t_start
    ds = _dataset(cfg, switch=switch, seeds=seeds, steps=steps, std=std, cont=cont, disp=disp, diverged=diverged,
                  seconds=seconds, std_disp=std_disp, std_sec=std_sec, correct=correct, std_correct=std_correct,
                  matched_step=matched_step, matched_correct=matched_correct, last_step=last_step)
    ds.attrs.update({"n_params": n_params, "n_train": n_train, "n_test": n_test,
                     "continuation_processes": processes, "continuation_threads": threads or torch.get_num_threads(),
                     "wall_seconds": wall})
    return ds


def _dataset(cfg: SwitchingConfig, *, switch: list[int], seeds: list[int], steps: list[int], std: dict, cont: dict,
             disp: dict, diverged: dict, seconds: dict, std_disp: np.ndarray, std_sec: np.ndarray, correct: dict,
             std_correct: np.ndarray, matched_step: np.ndarray, matched_correct: np.ndarray,
             last_step: np.ndarray) -> xr.Dataset:
    T = cfg.steps
    t_idx = steps.index(T)
    d3, d2, di = ("switch_step", "seed", "step"), ("switch_step", "seed"), ("switch_step", "seed", "image")
    run = "θ_std→lin(T; t)"
    flags = {"flag_values": np.asarray([NOT_RECORDED, 0, 1], dtype=np.int8),
             "flag_meanings": "not_recorded wrong correct", "units": "1"}
    lin = cont[_LIN]

    # the linearized arm at its matched step (NaN where the level was not reached)
    matched: dict[str, np.ndarray] = {}
    for name in _CURVE_METRICS:
        values = np.full(matched_step.shape, np.nan)
        for (i, k), s in np.ndenumerate(matched_step):
            if np.isfinite(s):
                values[i, k] = lin[name][i, k, steps.index(int(s))]
        matched[name] = values

    v: dict[str, Any] = {
        **metric_variables("final_{}", d2, {k: lin[k][:, :, t_idx] for k in METRICS}, f"of {run}"),
        "final_test_correct": (di, correct[_LIN], {**flags, "long_name": f"per-image test correctness of {run}"}),
        **metric_variables("{}_curve", d3, lin, "of the continuation switched at t (NaN before t and after it stopped)",
                           _CURVE_METRICS),
        "matched_step": (d2, matched_step, {"long_name": "first curve step at which the continuation's train loss is "
                                                         "at or below the standard run's at T (NaN: not reached)",
                                            "units": "steps"}),
        **metric_variables("matched_{}", d2, matched, "at matched_step", _CURVE_METRICS),
        "matched_test_correct": (di, matched_correct, {**flags, "long_name": "per-image test correctness at "
                                                                             "matched_step"}),
        "last_step": (d2, last_step, {"long_name": "the last step the linearized continuation trained to",
                                      "units": "steps"}),
        **metric_variables("standard_{}", ("seed", "step"), std, "of the standard run"),
        "standard_test_correct": (("seed", "step", "image"), std_correct,
                                  {**flags, "long_name": "per-image test correctness of the standard run"}),
        **metric_variables("standard_final_{}", ("seed",), {k: std[k][:, t_idx] for k in METRICS},
                           "of the standard run at T", _CURVE_METRICS),
        "lin_displacement": (d2, disp[_LIN], {"long_name": "parameter distance ‖θ(T) − θ(t)‖ under linearized "
                                                           "training", "units": "1"}),
        "std_displacement": (d2, std_disp, {"long_name": "parameter distance ‖θ(T) − θ(t)‖ under standard training",
                                            "units": "1"}),
        "diverged_step": (d2, diverged[_LIN], {"long_name": "step at which the continuation diverged (NaN: it did "
                                                            "not)", "units": "steps"}),
        "continuation_seconds": (d2, seconds[_LIN], {"long_name": "wall time of the linearized continuation",
                                                     "units": "s"}),
        "standard_seconds": (("seed",), std_sec, {"long_name": "wall time of the standard run", "units": "s"}),
    }
    if _SMALL in cont:
        small, what = cont[_SMALL], f"the small-lr continuation (lr x {cfg.small_lr_factor:g} from t)"
        v.update({
            **metric_variables("small_lr_final_{}", d2, {k: small[k][:, :, t_idx] for k in METRICS}, f"at T of {what}"),
            "small_lr_test_correct": (di, correct[_SMALL], {**flags, "long_name": f"per-image test correctness at T "
                                                                                   f"of {what}"}),
            **metric_variables("small_lr_{}_curve", d3, small, f"of {what}", _CURVE_METRICS),
            "small_lr_displacement": (d2, disp[_SMALL], {"long_name": f"parameter distance ‖θ(T) − θ(t)‖ of {what}",
                                                         "units": "1"}),
            "small_lr_diverged_step": (d2, diverged[_SMALL], {"long_name": f"step at which {what} diverged (NaN: it "
                                                                           "did not)", "units": "steps"}),
            "small_lr_seconds": (d2, seconds[_SMALL], {"long_name": f"wall time of {what}", "units": "s"}),
        })
    n_test = std_correct.shape[-1]
    return xr.Dataset(
        v,
        coords={
            "switch_step": ("switch_step", np.asarray(switch, dtype=np.int64),
                            {"long_name": "switching step t (standard before, linearized after)", "units": "steps"}),
            "seed": ("seed", np.asarray(seeds, dtype=np.int64), {"long_name": "seed", "units": "1"}),
            "step": ("step", np.asarray(steps, dtype=np.int64), {"long_name": "training step", "units": "steps"}),
            "image": ("image", np.arange(n_test, dtype=np.int64),
                      {"long_name": "index of the test image in the dataset's test split", "units": "1"}),
        },
        attrs={
            "title": f"Switching from standard to linearized training: {cfg.model} on {cfg.dataset}, T = {T}",
            "T": T,
            "optimizer_policy": cfg.optimizer_policy,
            "switching": "standard SGD for steps [0, t), then SGD on the Taylor model at θ(t) for [t, T); same data "
                         "order and learning-rate schedule",
            "norm_mode": "linearized model evaluated in eval mode (BatchNorm running statistics frozen at θ(t)); "
                         "standard run trained in train mode",
            "curve_before_switch": "NaN (a continuation starts at its switching step)",
            "train_metrics_on": f"a fixed class-stratified subset of min({EVAL_TRAIN_MAX}, n_train) training examples",
            "matched_loss": ("none (continuations stop at T)" if cfg.match_horizon is None else
                             f"linearized continuations train past T = {T} until their train loss is at or below the "
                             f"standard run's at T (checked every {cfg.eval_every} steps), up to step "
                             f"{cfg.match_horizon}, stopping earlier when a loss falling as 1/(steps since t) could "
                             "not reach it by then"),
            "small_lr": ("not run" if cfg.small_lr_factor is None else
                         f"standard training with lr x {cfg.small_lr_factor:g} from t to T (Fort et al. 2020)"),
            "linearized_steps": cfg.linearized_steps * len(seeds),
            "decay_to": cfg.decay_to,
        },
    )
