"""The controls of "Is it a cone?": what the learning-rate decay, the long runs and the momentum
runs say about the plainer readings of Phase II (issue 19; grids ``sweeps/controls.yaml`` and
``sweeps/long.yaml``, summaries from :func:`conelib.analysis.atlas_summary.summarize`).

**The noise-ball reading and its prediction.** Near a minimum, SGD with step :math:`\\eta` and batch
:math:`B` is, to first order, an Ornstein-Uhlenbeck process (Mandt, Hoffman and Blei 2017):
:math:`\\theta_{t+1} - \\theta^* = (I - \\eta H)(\\theta_t - \\theta^*) - \\eta \\xi_t` with gradient noise
:math:`\\operatorname{Cov} \\xi_t = C / B`. Its stationary covariance :math:`\\Sigma` solves
:math:`H \\Sigma + \\Sigma H = (\\eta / B)\\, C` (to first order in :math:`\\eta`), so the parameters fill a
ball whose radius scales as :math:`\\sqrt{\\eta / B}` (the noise scale of Smith and Le 2018,
:math:`g = \\eta N / B \\approx \\eta / B` for :math:`N \\gg B`). The eNTK is a smooth function of the
parameters, so to first order its deviation from the mean kernel is linear in
:math:`\\theta - \\bar\\theta`: the kernel's noise ball has the same scaling.

What the jitter radius :math:`r` of :mod:`conelib.measures.centroids` sees is narrower: the spread of
single kernels 100-500 steps apart inside a window of :math:`\\pm 250` steps. A mode of curvature
:math:`h` relaxes in :math:`\\tau_h = 1/(\\eta h)` steps and has variance :math:`\\sigma_h^2 \\propto \\eta /
(B h)`; two kernels a lag :math:`\\ell` apart differ by :math:`2\\sigma_h^2 (1 - e^{-\\ell / \\tau_h})`. A
fast mode (:math:`\\tau_h \\ll \\ell`) contributes :math:`\\propto \\eta`, so :math:`r \\propto \\sqrt\\eta`; a slow
mode (:math:`\\tau_h \\gg \\ell`) contributes :math:`2 \\sigma_h^2 \\ell / \\tau_h \\propto \\eta^2` (it is a random
walk over the window), so :math:`r \\propto \\eta`. Dividing the learning rate by :math:`1/\\gamma_{lr}`
therefore divides the jitter radius by a factor between :math:`\\gamma_{lr}` and :math:`\\sqrt{\\gamma_{lr}}`
(:func:`noise_ball_prediction`): 0.1-0.32 for :math:`\\gamma_{lr} = 0.1`, 0.01-0.1 for 0.01, once the
new ball has settled. A radius that does not shrink is not an SGD noise ball. Across runs of
different :math:`\\eta / B` the same argument gives a log-log slope of :math:`r` against :math:`\\eta/B`
between 1/2 and 1 (:func:`atlas_noise_ball`), a weaker test: those runs also sit in different
basins at different losses.

**The noise depends on the loss.** The gradient-noise covariance :math:`C` is not fixed: near
interpolation it shrinks with the training loss (for cross-entropy the per-example gradients scale
with the residuals; Mori, Liu, Ueda and Ziyin 2022 model SGD's noise as proportional to the loss). A
decayed run trains more slowly, so over the same steps its loss, and with it :math:`C`, stays higher
than the undecayed run's. With :math:`C \\propto L` both bounds scale by :math:`\\sqrt{L_{decayed} /
L_{base}}` (the geometric mean of the two training-loss curves' ratio over the window;
:func:`loss_ratio`): the *loss-adjusted* prediction. Which of the two predictions applies is itself
measurable: :func:`jitter_loss_exponent` is 1/2 for noise proportional to the loss, 0 for constant
noise.

**Paired design.** A run whose learning rate is decayed at step :math:`m` is, up to step :math:`m`,
the same run as the base run of the same seed (same initialisation and data order). So the
decay's effect is the *paired ratio* :math:`r_{after}(\\text{decayed}) / r_{after}(\\text{base})`
(:func:`lr_decay_table`), which the jitter's natural change over training (the base's own
:math:`r_{after}/r_{before}`) does not confound. Both runs get independent block-bootstrap draws
over their snapshots (:mod:`conelib.measures.bootstrap`); over seeds, the geometric mean of the
paired ratios gets a hierarchical-bootstrap interval
(:func:`conelib.measures.bootstrap.seed_interval` on the log ratios).

**Long runs** (:func:`long_run_table`): the version-3 coordinates of the whole run (drift decay
:math:`\\alpha > 1`: a converging kernel; the jitter trend), the same measures on its first
:math:`10^4` steps (:func:`truncate`: exactly what a :math:`T = 10^4` run stores), and the jitter
radius late against early in Phase II. If SGD's noise scales with the loss near interpolation
(Mori, Liu, Ueda and Ziyin 2022), a noise ball shrinks as the loss falls even at a constant step:
:func:`jitter_loss_exponent` is the log-log slope of the jitter radius against the training loss
over Phase II (1/2 for noise proportional to the loss).

**Counterexample** (:func:`counterexample_table`): per cell, the verdicts beside the optimisation
(final train loss and accuracy), the effective step :math:`\\eta / (1 - \\beta)` of heavy-ball
momentum, the warm-up, and whether the training set is fit, so that "no two phases" and "not
converged" can be told apart; :func:`matched_loss` reads a long run at the step where its training
loss first reaches a target (the base's at :math:`T = 10^4`) and measures it there.

The readings follow the empirical habits of Fort et al. 2020 and Frankle et al. 2020: a phenomenon
is reported with controls where the plain explanation predicts something else, over seeds, with
the optimisation state beside every verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from conelib.analysis import atlas
from conelib.analysis.atlas_summary import run_from_summary
from conelib.config import values_equal
from conelib.experiments.kernel_dynamics import KernelDynamicsConfig
from conelib.measures.bootstrap import LEVEL, assess, seed_interval, snapshot_weights
from conelib.measures.centroids import centroids
from conelib.measures.v3 import THRESHOLDS, _wmedian, _wslope, check_thresholds, effective_scales, verdict
from conelib.trajectory import distances_dataset

__all__ = [
    "FIT_ACCURACY",
    "load_controls",
    "JitterChange",
    "atlas_noise_ball",
    "counterexample_table",
    "control_table",
    "effective_step",
    "jitter_change",
    "jitter_curve",
    "jitter_curves",
    "jitter_loss_exponent",
    "lr_decay_seeds",
    "lr_decay_table",
    "long_run_table",
    "loss_ratio",
    "matched_loss",
    "noise_ball_prediction",
    "paired_jitter_ratio",
    "schedule_label",
    "truncate",
    "window_jitter",
]

#: a run "fits the training set" when its final training accuracy (on the run's fixed evaluation
#: subset of the training images) reaches this
FIT_ACCURACY = 0.99
#: default windows (steps) of the learning-rate decay analysis, relative to the milestone m:
#: before = [1000, m - half_width] (no window reaches past m), after = [m + 1000, T]
BEFORE_START, AFTER_DELAY = 1000, 1000


# --------------------------------------------------------------------------------------------
# the jitter radius over a window of steps, with intervals
# --------------------------------------------------------------------------------------------


def _centroids(ds: xr.Dataset, weights: np.ndarray | None, half_width: float):
    steps = ds["step"].values.astype(int)
    sc = effective_scales(steps, check_thresholds(half_width=half_width))
    return centroids(ds["pairwise_distance"].values, steps, sc["half_width"] * sc["gap"], weights)


def jitter_curve(ds: xr.Dataset, *, half_width: float = THRESHOLDS["half_width"]) -> tuple[np.ndarray, np.ndarray]:
    """Snapshot steps and the jitter radius :math:`r_a` of each snapshot's window (a chord; see
    :mod:`conelib.measures.centroids`)."""
    c = _centroids(ds, None, half_width)
    return c.steps, c.jitter


def _window_mask(steps: np.ndarray, window: tuple[float, float], name: str) -> np.ndarray:
    lo, hi = float(window[0]), float(window[1])
    if not lo <= hi:
        raise ValueError(f"{name} must be a window (start, end) with start <= end steps, got {window}")
    sel = (steps >= lo) & (steps <= hi)
    if sel.sum() < 3:
        raise ValueError(f"{name} = {window} holds {int(sel.sum())} snapshots (steps {int(steps[0])}..{int(steps[-1])} "
                         f"every {int(steps[1] - steps[0])}); it needs at least 3")
    return sel


def window_jitter(ds: xr.Dataset, window: tuple[float, float], *, weights: np.ndarray | None = None,
                  half_width: float = THRESHOLDS["half_width"]) -> float:
    """The jitter radius over a window of steps: the (weighted) median of :math:`r_a` over the
    snapshots :math:`a` with ``window[0] <= t_a <= window[1]``, as the version-3 ``jitter_radius``
    is the median over Phase II.

    Args:
        ds: a kernel-dynamics Dataset (``pairwise_distance`` over ``step`` x ``other_step``).
        window: (start, end) in steps.
        weights: snapshot weights (bootstrap draws); ``None``: all 1.
        half_width: the windows' half-width in steps (:data:`conelib.measures.THRESHOLDS`).

    Raises:
        ValueError: naming the window if it holds fewer than 3 snapshots.
    """
    return _window_jitters(ds, [window], weights, half_width)[0]


def _window_jitters(ds: xr.Dataset, windows: Sequence[tuple[float, float]], weights: np.ndarray | None,
                    half_width: float, names: Sequence[str] = ("window",)) -> list[float]:
    c = _centroids(ds, weights, half_width)
    out = []
    for i, window in enumerate(windows):
        sel = _window_mask(c.steps, window, names[min(i, len(names) - 1)]) & np.isfinite(c.jitter) & (c.weight > 0)
        out.append(_wmedian(c.jitter[sel], c.weights[sel]))
    return out


def _log_draws(ds: xr.Dataset, window: tuple[float, float], rng: np.random.Generator, n_boot: int,
               block: int, half_width: float) -> np.ndarray:
    n = ds.sizes["step"]
    return np.log(np.asarray([window_jitter(ds, window, weights=snapshot_weights(n, block, rng), half_width=half_width)
                              for _ in range(n_boot)]))


def _interval(log_draws: np.ndarray, level: float) -> tuple[float, float]:
    d = log_draws[np.isfinite(log_draws)]
    if d.size < 10:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    return float(np.exp(np.quantile(d, a))), float(np.exp(np.quantile(d, 1.0 - a)))


@dataclass(frozen=True)
class JitterChange:
    """A ratio of two jitter radii with its bootstrap interval.

    Attributes:
        first, second: the two radii (point estimates, all snapshots weighted 1).
        ratio: ``second / first``; ``lo``, ``hi``: its percentile interval over the bootstrap draws.
        log_draws: the draws of ``log(second / first)`` (for intervals over seeds).
    """

    first: float
    second: float
    ratio: float
    lo: float
    hi: float
    log_draws: np.ndarray

    def contains(self, value: float) -> bool:
        return bool(self.lo <= value <= self.hi)


def jitter_change(ds: xr.Dataset, before: tuple[float, float], after: tuple[float, float], *, n_boot: int = 200,
                  seed: int = 0, block: int = 2, level: float = LEVEL,
                  half_width: float = THRESHOLDS["half_width"]) -> JitterChange:
    """Within one run: the jitter radius over ``after`` divided by that over ``before``, with a
    block-bootstrap interval (each draw reweights the snapshots once, for both windows).

    Raises:
        ValueError: naming the window that holds fewer than 3 snapshots, or ``n_boot`` < 20.
    """
    if int(n_boot) < 20:
        raise ValueError(f"n_boot must be at least 20 draws, got {n_boot}")
    names = ("before", "after")
    first, second = _window_jitters(ds, [before, after], None, half_width, names)
    rng = np.random.default_rng(seed)
    n = ds.sizes["step"]
    draws = []
    for _ in range(int(n_boot)):
        b, a = _window_jitters(ds, [before, after], snapshot_weights(n, block, rng), half_width, names)
        draws.append(np.log(a) - np.log(b))
    d = np.asarray(draws)
    return JitterChange(first, second, second / first, *_interval(d, level), d)


def paired_jitter_ratio(ds: xr.Dataset, reference: xr.Dataset, window: tuple[float, float], *, n_boot: int = 200,
                        seed: int = 0, block: int = 2, level: float = LEVEL,
                        half_width: float = THRESHOLDS["half_width"]) -> JitterChange:
    """Between two runs over the same ``window``: the jitter radius of ``ds`` over that of
    ``reference`` (e.g. a decayed run over the base run of the same seed), with independent
    bootstrap draws for the two runs."""
    if int(n_boot) < 20:
        raise ValueError(f"n_boot must be at least 20 draws, got {n_boot}")
    first = window_jitter(reference, window, half_width=half_width)
    second = window_jitter(ds, window, half_width=half_width)
    rng = np.random.default_rng(seed)
    d = (_log_draws(ds, window, rng, int(n_boot), block, half_width)
         - _log_draws(reference, window, rng, int(n_boot), block, half_width))
    return JitterChange(first, second, second / first, *_interval(d, level), d)


def noise_ball_prediction(factor: float) -> tuple[float, float]:
    """The jitter-radius ratio the SGD noise-ball reading predicts when the noise scale
    :math:`\\eta / B` is multiplied by ``factor`` (see the module docstring): between ``factor``
    (modes slower than the window: a random walk inside it) and ``sqrt(factor)`` (fast modes: the
    stationary ball, Mandt et al. 2017). Returns ``(low, high)``."""
    f = float(factor)
    if not (np.isfinite(f) and f > 0):
        raise ValueError(f"factor must be a finite number > 0 (the change of lr / B), got {factor!r}")
    return (min(f, np.sqrt(f)), max(f, np.sqrt(f)))


def loss_ratio(ds: xr.Dataset, reference: xr.Dataset, window: tuple[float, float]) -> float:
    """The geometric mean over the snapshots in ``window`` of the ratio of the two runs' training
    losses, :math:`L_{ds}(t) / L_{reference}(t)` (the runs must share their snapshot steps)."""
    steps = ds["step"].values
    if not np.array_equal(steps, reference["step"].values):
        raise ValueError("ds and reference must have the same snapshot steps")
    sel = _window_mask(steps, window, "window")
    a = np.log(np.clip(ds["train_loss"].values[sel].astype(float), 1e-30, None))
    b = np.log(np.clip(reference["train_loss"].values[sel].astype(float), 1e-30, None))
    return float(np.exp(np.mean(a - b)))


def _against(lo: float, hi: float, pred: tuple[float, float]) -> str:
    """Where an interval ``[lo, hi]`` sits against a predicted range."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undetermined"
    if hi < pred[0]:
        return "below"
    if lo > pred[1]:
        return "above"
    return "within"


# --------------------------------------------------------------------------------------------
# runs of a summary
# --------------------------------------------------------------------------------------------


def _parse(v: Any) -> Any:
    """A summary coordinate's value as a plain value: JSON lists (``"[2000]"``) as tuples."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, str) and v.startswith("["):
        try:
            return tuple(json.loads(v))
        except ValueError:
            return v
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _row_values(summary: xr.Dataset, run: int) -> dict[str, Any]:
    """Every run parameter of a summary's run: the grid's base configuration (defaults filled in)
    with the run's swept values."""
    out = KernelDynamicsConfig.from_mapping(json.loads(summary.attrs["grid_json"])["base"]).flat()
    row = summary.sel(run=run)
    for d in json.loads(summary.attrs["swept_fields"]):
        out[d] = _parse(row[d].values)
    out["milestones"] = tuple(out.get("milestones") or ())
    return out


def effective_step(lr: float, momentum: float) -> float:
    """The effective step of heavy-ball momentum, :math:`\\eta / (1 - \\beta)` (the step a constant
    gradient takes once the velocity has built up)."""
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return float(lr) / (1.0 - float(momentum))


def schedule_label(values: dict[str, Any]) -> str:
    """``"constant lr 0.1"`` or ``"lr 0.1, x0.01 at step 2000"``."""
    ms = tuple(values.get("milestones") or ())
    lr = values.get("lr")
    if not ms:
        return f"constant lr {lr:g}"
    return f"lr {lr:g}, ×{values.get('gamma'):g} at step {', '.join(f'{m:,}' for m in ms)}"


def _stored(summary: xr.Dataset) -> np.ndarray:
    return summary["run"].values[summary["status"].values == "stored"]


def _cell_key(values: dict[str, Any], drop: Sequence[str] = ("seed",)) -> str:
    return json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(values.items())
                       if k not in drop}, default=str)


def control_table(summary: xr.Dataset) -> pd.DataFrame:
    """One row per run of a summary: its cell (the values that differ from the base), seed, steps,
    the effective step, the verdict with its bootstrap and threshold agreement, the main
    version-3 coordinates with their intervals, and the optimisation state at the end (final
    train loss, train accuracy, test accuracy, ``fits``: train accuracy >= :data:`FIT_ACCURACY`).
    Runs that are not stored have their status as verdict."""
    base = atlas.base_values(summary)
    rows = []
    for r in summary["run"].values:
        v = _row_values(summary, int(r))
        row = summary.sel(run=r)
        changed = ", ".join(f"{d}={_fmt_value(v[d])}" for d in atlas.swept(summary)
                            if not values_equal(v[d], _parse(base.get(d))))
        rec: dict[str, Any] = {
            "run": int(r), "cell": changed or "base setting", "seed": v.get("seed"), "steps": int(v.get("steps", 0)),
            "lr": v.get("lr"), "momentum": v.get("momentum"), "weight_decay": v.get("weight_decay"),
            "warmup_steps": v.get("warmup_steps"), "milestones": tuple(v["milestones"]), "gamma": v.get("gamma"),
            "schedule": schedule_label(v),
            "effective_step": effective_step(v["lr"], v["momentum"]),
            "status": str(row["status"].values),
            "verdict": str(row["verdict"].values) if str(row["status"].values) == "stored" else str(row["status"].values),
        }
        for k in ("verdict_agreement", "threshold_agreement", "final_train_loss", "final_train_acc", "final_test_acc",
                  "final_test_loss"):
            rec[k] = float(row[k]) if k in summary else np.nan
        for m in ("phase_one_end", "total_movement", "jitter_radius", "jitter_ratio", "jitter_trend", "drift_ratio",
                  "growth_exponent", "drift_decay", "drop"):
            for suffix in ("", "_lo", "_hi"):
                rec[m + suffix] = float(row[m + suffix]) if m + suffix in summary else np.nan
        rec["stationarity"] = str(row["stationarity"].values) if "stationarity" in summary else ""
        rec["fits"] = bool(np.isfinite(rec["final_train_acc"]) and rec["final_train_acc"] >= FIT_ACCURACY - 1e-12)
        rows.append(rec)
    return pd.DataFrame(rows)


def _fmt_value(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# --------------------------------------------------------------------------------------------
# the learning-rate decay
# --------------------------------------------------------------------------------------------


def _pairs(summary: xr.Dataset) -> list[tuple[int, int, dict[str, Any]]]:
    """(decayed run, its base run of the same seed and settings, the decayed run's values)."""
    runs = {int(r): _row_values(summary, int(r)) for r in _stored(summary)}
    out = []
    for r, v in runs.items():
        if not v["milestones"]:
            continue
        key = _cell_key(v, drop=("milestones", "gamma"))
        refs = [q for q, w in runs.items() if not w["milestones"] and _cell_key(w, drop=("milestones", "gamma")) == key]
        if refs:
            out.append((r, refs[0], v))
    return out


def lr_decay_table(summary: xr.Dataset, *, before: tuple[float, float] | None = None,
                   after: tuple[float, float] | None = None, soon: tuple[float, float] | None = None,
                   n_boot: int = 200, seed: int = 0, level: float = LEVEL,
                   half_width: float = THRESHOLDS["half_width"]) -> pd.DataFrame:
    """The learning-rate decay control, one row per decayed run that has a stored base run of the
    same seed (see the module docstring).

    Windows (steps): ``before`` defaults to [1000, m - half_width] (no window reaches past the
    milestone m), ``after`` to [m + 1000, T], ``soon`` to [m + 2 half_width, m + 1500] (the first
    windows wholly after the decay, where the two runs' losses have not yet drifted apart).

    Columns: ``run``, ``reference`` (the base run), ``seed``, ``milestone``, ``factor`` (the decay
    factor of the learning rate), ``j_before``, ``j_after`` (the decayed run's radii), ``ratio``
    (``j_after / j_before``) with ``ratio_lo``/``ratio_hi``, ``ref_ratio`` (the base run's own ratio,
    the natural change) with its interval, ``paired`` (``j_after`` over the base run's over the same
    window) with its interval, ``pred_lo``/``pred_hi`` (:func:`noise_ball_prediction`), ``against``
    (``below``/``within``/``above`` the prediction), ``loss_ratio`` (:func:`loss_ratio` over the
    after window), ``pred_loss_lo``/``pred_loss_hi`` and ``against_loss`` (the loss-adjusted
    prediction), ``ref_jitter_loss_exponent`` (:func:`jitter_loss_exponent` of the base run from the
    after window on), the same paired ratio over the ``soon`` window (``paired_soon``, its interval,
    ``loss_ratio_soon``, the loss-adjusted prediction there ``pred_soon_lo``/``pred_soon_hi`` and
    ``against_soon``), the verdict and final losses, and ``log_draws``/``log_draws_soon`` (the paired
    log-ratio draws, for :func:`lr_decay_seeds`).
    """
    rows = []
    for k, (r, ref, v) in enumerate(_pairs(summary)):
        ms = tuple(v["milestones"])
        m = int(ms[0])
        factor = float(v["gamma"]) ** len(ms)
        ds, rs = run_from_summary(summary, r), run_from_summary(summary, ref)
        T = int(ds["step"].values[-1])
        b = before if before is not None else (BEFORE_START, m - half_width)
        a = after if after is not None else (m + AFTER_DELAY, T)
        own = jitter_change(ds, b, a, n_boot=n_boot, seed=seed + 3 * k, level=level, half_width=half_width)
        base = jitter_change(rs, b, a, n_boot=n_boot, seed=seed + 3 * k + 1, level=level, half_width=half_width)
        paired = paired_jitter_ratio(ds, rs, a, n_boot=n_boot, seed=seed + 3 * k + 2, level=level,
                                     half_width=half_width)
        w = soon if soon is not None else (m + 2 * half_width, m + 1500)
        early = paired_jitter_ratio(ds, rs, w, n_boot=n_boot, seed=seed + 3 * k + 1000, level=level,
                                    half_width=half_width)
        pred = noise_ball_prediction(factor)
        lr_ = loss_ratio(ds, rs, a)
        pred_l = (pred[0] * np.sqrt(lr_), pred[1] * np.sqrt(lr_))
        lr_soon = loss_ratio(ds, rs, w)
        pred_s = (pred[0] * np.sqrt(lr_soon), pred[1] * np.sqrt(lr_soon))
        row = summary.sel(run=r)
        rows.append({
            "run": r, "reference": ref, "seed": v.get("seed"), "milestone": m, "factor": factor,
            "before": b, "after": a, "j_before": own.first, "j_after": own.second,
            "ratio": own.ratio, "ratio_lo": own.lo, "ratio_hi": own.hi,
            "ref_j_before": base.first, "ref_j_after": base.second,
            "ref_ratio": base.ratio, "ref_ratio_lo": base.lo, "ref_ratio_hi": base.hi,
            "paired": paired.ratio, "paired_lo": paired.lo, "paired_hi": paired.hi,
            "pred_lo": pred[0], "pred_hi": pred[1], "against": _against(paired.lo, paired.hi, pred),
            "loss_ratio": lr_, "pred_loss_lo": pred_l[0], "pred_loss_hi": pred_l[1],
            "against_loss": _against(paired.lo, paired.hi, pred_l),
            "ref_jitter_loss_exponent": jitter_loss_exponent(rs, a[0], half_width=half_width),
            "soon": w, "paired_soon": early.ratio, "paired_soon_lo": early.lo, "paired_soon_hi": early.hi,
            "loss_ratio_soon": lr_soon, "pred_soon_lo": pred_s[0], "pred_soon_hi": pred_s[1],
            "against_soon": _against(early.lo, early.hi, pred_s), "log_draws_soon": early.log_draws,
            "verdict": str(row["verdict"].values), "verdict_agreement": float(row["verdict_agreement"]),
            "final_train_loss": float(row["final_train_loss"]), "final_test_acc": float(row["final_test_acc"]),
            "ref_final_train_loss": float(summary.sel(run=ref)["final_train_loss"]),
            "log_draws": paired.log_draws,
        })
    cols = ["run", "reference", "seed", "milestone", "factor"]
    return pd.DataFrame(rows).sort_values(["factor", "seed"], ascending=[False, True]).reset_index(drop=True) \
        if rows else pd.DataFrame(columns=cols)


def lr_decay_seeds(table: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """Per decay factor, over seeds: the geometric mean of the paired ratios with a hierarchical
    bootstrap interval (:func:`conelib.measures.bootstrap.seed_interval` on the log ratios), the
    prediction, where the interval sits against it, and how many seeds' own intervals lie below,
    within and above it; the same against the loss-adjusted prediction (the geometric mean of the
    seeds' loss ratios)."""
    rows = []
    for factor, g in table.groupby("factor", sort=False):
        centre, lo, hi = seed_interval([np.asarray(d) for d in g["log_draws"]], n_boot=n_boot, seed=seed, level=level)
        pred = noise_ball_prediction(float(factor))
        lr_ = float(np.exp(np.mean(np.log(g["loss_ratio"].astype(float))))) if "loss_ratio" in g else np.nan
        pred_l = (pred[0] * np.sqrt(lr_), pred[1] * np.sqrt(lr_))
        rows.append({"factor": float(factor), "seeds": len(g), "paired": float(np.exp(centre)),
                     "paired_lo": float(np.exp(lo)), "paired_hi": float(np.exp(hi)),
                     "pred_lo": pred[0], "pred_hi": pred[1], "against": _against(np.exp(lo), np.exp(hi), pred),
                     "loss_ratio": lr_, "pred_loss_lo": pred_l[0], "pred_loss_hi": pred_l[1],
                     "against_loss": _against(np.exp(lo), np.exp(hi), pred_l),
                     "n_within_loss": int((g["against_loss"] == "within").sum()) if "against_loss" in g else 0,
                     **_soon_seeds(g, pred, n_boot, seed, level),
                     "n_below": int((g["against"] == "below").sum()), "n_within": int((g["against"] == "within").sum()),
                     "n_above": int((g["against"] == "above").sum()),
                     "ratio_range": (float(g["paired"].min()), float(g["paired"].max()))})
    return pd.DataFrame(rows)


def _soon_seeds(g: pd.DataFrame, pred: tuple[float, float], n_boot: int, seed: int, level: float) -> dict[str, Any]:
    if "log_draws_soon" not in g:
        return {}
    centre, lo, hi = seed_interval([np.asarray(d) for d in g["log_draws_soon"]], n_boot=n_boot, seed=seed + 1,
                                   level=level)
    lr_ = float(np.exp(np.mean(np.log(g["loss_ratio_soon"].astype(float)))))
    pred_s = (pred[0] * np.sqrt(lr_), pred[1] * np.sqrt(lr_))
    return {"paired_soon": float(np.exp(centre)), "paired_soon_lo": float(np.exp(lo)),
            "paired_soon_hi": float(np.exp(hi)), "loss_ratio_soon": lr_, "pred_soon_lo": pred_s[0],
            "pred_soon_hi": pred_s[1], "against_soon": _against(np.exp(lo), np.exp(hi), pred_s),
            "n_within_soon": int((g["against_soon"] == "within").sum())}


def jitter_curves(summary: xr.Dataset, runs: Sequence[int] | None = None, *,
                  half_width: float = THRESHOLDS["half_width"]) -> pd.DataFrame:
    """The jitter radius over training of stored runs, tidy: ``run``, ``seed``, ``schedule``,
    ``cell``, ``step``, ``jitter`` (for charts)."""
    table = control_table(summary).set_index("run")
    runs = list(_stored(summary)) if runs is None else list(runs)
    frames = []
    for r in runs:
        steps, j = jitter_curve(run_from_summary(summary, int(r)), half_width=half_width)
        t = table.loc[int(r)]
        frames.append(pd.DataFrame({"run": int(r), "seed": t["seed"], "schedule": t["schedule"], "cell": t["cell"],
                                    "step": steps, "jitter": j}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["run", "seed", "schedule", "cell", "step", "jitter"])


# --------------------------------------------------------------------------------------------
# long runs
# --------------------------------------------------------------------------------------------


def truncate(ds: xr.Dataset, steps: int) -> xr.Dataset:
    """The run's first ``steps`` steps as a kernel-dynamics Dataset of its own: the pairwise
    distances, the curves of the snapshots up to ``steps``, and the distances derived from them
    (adjacent distances undefined past the new end, reference steps past it dropped), i.e. what a
    run of ``steps`` steps with the same seed stores."""
    all_steps = ds["step"].values.astype(int)
    if steps not in all_steps:
        raise ValueError(f"steps={steps} is not a snapshot step of the run ({int(all_steps[0])}..{int(all_steps[-1])} "
                         f"every {int(all_steps[1] - all_steps[0])})")
    k = int(np.searchsorted(all_steps, steps)) + 1
    if k < 4:
        raise ValueError(f"steps={steps} leaves {k} snapshots; the measures need at least 4")
    S = ds["pairwise_distance"].values[:k, :k]
    dts = [int(d) for d in ds["dt"].values if int(d) <= steps] if "dt" in ds.coords else [int(all_steps[1])]
    taus = [int(t) for t in ds["ref_step"].values if int(t) <= steps] if "ref_step" in ds.coords else []
    out = distances_dataset(all_steps[:k], S, np.ones(k), dts=dts or [int(all_steps[1])], taus=taus)
    for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
        if name in ds:
            out[name] = ("step", ds[name].values[:k].astype(float))
    out.attrs.update({"truncated_from": int(all_steps[-1])})
    return out


def jitter_loss_exponent(ds: xr.Dataset, start: int, *, half_width: float = THRESHOLDS["half_width"]) -> float:
    """Log-log slope of the jitter radius :math:`r_a` against the training loss (its geometric mean
    over the same window) over the snapshots from step ``start`` on (1/2 for a noise ball whose noise
    variance is proportional to the loss at a constant step; see the module docstring)."""
    if "train_loss" not in ds:
        raise ValueError("ds has no train_loss curve")
    c = _centroids(ds, None, half_width)
    loss = np.clip(ds["train_loss"].values.astype(float), 1e-30, None)
    sel = np.nonzero(c.steps >= start)[0]
    ll = np.asarray([np.mean(np.log(loss[c.lo[i]:c.hi[i]])) for i in sel])
    r = c.jitter[sel]
    ok = np.isfinite(r) & (r > 0) & np.isfinite(ll)
    return _wslope(ll[ok], np.log(r[ok]))


def _loss_smooth(loss: np.ndarray, k: int = 5) -> np.ndarray:
    s = pd.Series(np.log(np.clip(loss, 1e-30, None))).rolling(k, center=True, min_periods=1).median()
    return np.exp(s.to_numpy())


def matched_loss(ds: xr.Dataset, target: float, *, min_steps: int = 4000, smooth: int = 5) -> int | None:
    """The first snapshot step at which the run's training loss (a running median over ``smooth``
    snapshots) is at most ``target`` and from which at least ``min_steps`` steps of training have
    passed; ``None`` if it never gets there."""
    if not (np.isfinite(target) and target > 0):
        raise ValueError(f"target must be a training loss > 0, got {target!r}")
    steps = ds["step"].values.astype(int)
    loss = _loss_smooth(ds["train_loss"].values.astype(float), smooth)
    hit = np.nonzero((loss <= target) & (steps >= min_steps))[0]
    return int(steps[hit[0]]) if hit.size else None


def long_run_table(summary: xr.Dataset, *, prefix: int = 10_000, early: tuple[float, float] = (4000, 10_000),
                   late: tuple[float, float] | None = None, n_boot: int = 200, seed: int = 0,
                   level: float = LEVEL) -> pd.DataFrame:
    """One row per stored long run: the version-3 coordinates of the whole run (from the summary,
    with intervals), the same measures on its first ``prefix`` steps (:func:`truncate`; the end of
    Phase I with a bootstrap interval), whether the two ends of Phase I agree (their intervals
    overlap), the jitter radius ``late`` (default: the last third of the run) over ``early``
    (:func:`jitter_change`), the jitter-loss exponent over Phase II, and the training loss and
    accuracies at ``prefix`` and at the end."""
    table = control_table(summary).set_index("run")
    rows = []
    for k, r in enumerate(_stored(summary)):
        ds = run_from_summary(summary, int(r))
        T = int(ds["step"].values[-1])
        if prefix >= T:
            raise ValueError(f"prefix={prefix} must be shorter than the run (T = {T})")
        short = truncate(ds, prefix)
        a = assess(short, n_boot=n_boot, seed=seed + k, level=level, sensitivity=False)
        lo1, hi1 = a.interval("phase_one_end")
        t = table.loc[int(r)]
        lt = late if late is not None else (T - T / 3, T)
        ch = jitter_change(ds, early, lt, n_boot=n_boot, seed=seed + 100 + k, level=level)
        t1_full, t1_short = t["phase_one_end"], a.point.phase_one_end
        agree = bool(np.isfinite(t1_full) and t1_short is not None
                     and max(lo1, t["phase_one_end_lo"]) <= min(hi1, t["phase_one_end_hi"]))
        start = t1_full if np.isfinite(t1_full) else T / 2
        i_p = int(np.searchsorted(ds["step"].values, prefix))
        rows.append({
            "run": int(r), "cell": t["cell"], "seed": t["seed"], "steps": T,
            "verdict": t["verdict"], "verdict_agreement": t["verdict_agreement"],
            **{m: t[m] for m in ("phase_one_end", "phase_one_end_lo", "phase_one_end_hi", "drift_decay",
                                 "drift_decay_lo", "drift_decay_hi", "growth_exponent", "growth_exponent_lo",
                                 "growth_exponent_hi", "jitter_trend", "jitter_trend_lo", "jitter_trend_hi",
                                 "jitter_radius", "drift_ratio", "stationarity")},
            "prefix": prefix, "prefix_verdict": a.point.verdict, "prefix_agreement": a.agreement,
            "prefix_phase_one_end": np.nan if t1_short is None else float(t1_short),
            "prefix_phase_one_end_lo": lo1, "prefix_phase_one_end_hi": hi1,
            "prefix_drift_decay": a.point.drift_decay, "prefix_growth_exponent": a.point.growth_exponent,
            "phase_one_agree": agree,
            "early": early, "late": lt, "j_early": ch.first, "j_late": ch.second, "j_ratio": ch.ratio,
            "j_ratio_lo": ch.lo, "j_ratio_hi": ch.hi,
            "jitter_loss_exponent": jitter_loss_exponent(ds, int(start)),
            "prefix_train_loss": float(ds["train_loss"].values[i_p]), "prefix_test_acc": float(ds["test_acc"].values[i_p]),
            "final_train_loss": t["final_train_loss"], "final_train_acc": t["final_train_acc"],
            "final_test_acc": t["final_test_acc"], "fits": t["fits"],
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# the counterexample
# --------------------------------------------------------------------------------------------


def counterexample_table(summaries: Sequence[xr.Dataset], *, target: float | None = None,
                         min_steps: int = 4000) -> pd.DataFrame:
    """One row per cell of the given summaries (e.g. the controls at :math:`T = 10^4` and the long
    runs): steps, effective step, warm-up, weight decay, each seed's verdict, how many seeds have
    two phases, the range of final train losses and test accuracies, how many seeds fit the
    training set, and, with ``target`` (a training loss, e.g. the base's median at
    :math:`T = 10^4`), per seed the step at which the run first reaches it (:func:`matched_loss`) and
    the verdict of the run truncated there (``None``: never reached)."""
    rows = []
    for s in summaries:
        table = control_table(s)
        stored = table[table.status == "stored"]
        for cell, g in stored.groupby("cell", sort=False):
            rec: dict[str, Any] = {
                "cell": cell, "steps": int(g.steps.iloc[0]), "lr": float(g.lr.iloc[0]),
                "momentum": float(g.momentum.iloc[0]), "effective_step": float(g.effective_step.iloc[0]),
                "weight_decay": float(g.weight_decay.iloc[0]), "warmup_steps": int(g.warmup_steps.iloc[0]),
                "schedule": g.schedule.iloc[0], "seeds": list(g.seed), "verdicts": list(g.verdict),
                "agreements": list(g.verdict_agreement),
                "n_two_phases": int((g.verdict != "no two phases").sum()), "n": len(g),
                "final_train_loss": list(g.final_train_loss), "final_train_acc": list(g.final_train_acc),
                "final_test_acc": list(g.final_test_acc), "n_fit": int(g.fits.sum()),
            }
            if target is not None:
                steps, verdicts = [], []
                for r in g.run:
                    ds = run_from_summary(s, int(r))
                    m = matched_loss(ds, target, min_steps=min_steps)
                    steps.append(m)
                    verdicts.append(None if m is None else verdict(truncate(ds, m) if m < int(ds.step[-1]) else ds).verdict)
                rec.update(matched_step=steps, matched_verdict=verdicts)
            rows.append(rec)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# the atlas
# --------------------------------------------------------------------------------------------


def atlas_noise_ball(summary: xr.Dataset) -> dict[str, Any]:
    """:func:`conelib.analysis.atlas.noise_ball` (the Phase II jitter radius against :math:`\\eta / B`
    over the atlas' learning-rate x batch-size runs: Spearman correlation and the log-log slope with
    a bootstrap interval over runs) with the noise-ball reading's prediction for the slope, [1/2,
    1] (see the module docstring), and where the slope's interval sits against it. A summary
    without the version-3 ``jitter_radius`` gives ``n`` = 0."""
    if "jitter_radius" not in summary:
        out = {"rho": np.nan, "n": 0, "slope": (np.nan, np.nan, np.nan), "frame": pd.DataFrame()}
    else:
        out = atlas.noise_ball(summary)
    out["prediction"] = (0.5, 1.0)
    out["against"] = _against(out["slope"][1], out["slope"][2], (0.5, 1.0))
    return out


def load_controls(*, results_root: str | Path | None = None, compute: bool = False,
                  workers: int = 2) -> tuple[xr.Dataset, xr.Dataset | None, xr.Dataset | None]:
    """The three summaries the chapter "Is it a cone?" reads: ``(controls, long, atlas)``.

    ``controls`` is the summary of ``sweeps/controls.yaml`` (with ``compute``, its missing points
    are run first, as :func:`conelib.analysis.atlas.load_summary` does); ``long`` that of
    ``sweeps/long.yaml`` and ``atlas`` the atlas', each ``None`` when none of its runs is stored
    (the long runs are never computed here: hours on a CPU).
    """
    controls = atlas.load_summary("controls", results_root=results_root, compute=compute, workers=workers)
    others = []
    for name in ("long", "atlas"):
        s = atlas.load_summary(name, results_root=results_root)
        others.append(s if int((s["status"].values == "stored").sum()) else None)
    return controls, others[0], others[1]
