"""What stored switching runs show, as numbers: paired comparisons between switching steps and arms.

The switching chapter (the paper's Figure 2) asks whether the test error of
:math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)` falls as the switching step :math:`t` grows,
in particular after Phase I (Zhou et al. 2025, Section 4: "especially when t > 2000"). Every
comparison here is *paired*: two models of the same seed (same initialisation, data order and
standard run up to the earlier switch) evaluated on the same test images.

* :func:`mcnemar`: McNemar's (1947) exact test of two classifiers on the same images. With
  :math:`n_{01}` the images only the second gets right and :math:`n_{10}` those only the first
  gets right, under "equally accurate" :math:`n_{01} \\mid n_{01} + n_{10} = n` is
  :math:`\\mathrm{Bin}(n, 1/2)`; the exact two-sided p-value is
  :math:`\\min(1, 2\\,P(X \\le \\min(n_{01}, n_{10})))`, the mid-p value subtracts
  :math:`P(X = \\min(n_{01}, n_{10}))` (Fagerland, Lydersen & Laake 2013).
* :func:`paired_bootstrap`: the mean over seeds of the accuracy gain, with a percentile interval
  from a two-level bootstrap: seeds drawn with replacement, then test images drawn with
  replacement within each drawn seed, the same images for both models (so the interval carries
  both the seed-to-seed variation and the sampling noise of a finite test set). Drawing :math:`N`
  images with replacement only matters through how many of the three kinds of image (gained,
  lost, unchanged) are drawn, a multinomial draw, which is how it is computed.
* :func:`paired_gain`: the same mean with a Student-t interval over seeds (seeds only).
* :func:`first_step_at_or_below`: the first step of a curve at which it is at or below a level
  (the matched train loss); :func:`standard_step_at_loss`: where the standard run first reaches
  each continuation's final train loss (stopping the better-optimised run early).
* :func:`arm_correct` and :func:`compare`: the per-image correctness of each model the chapter
  compares and one :class:`Comparison` between two of them (McNemar per seed, bootstrap and
  t-intervals of the mean gain); :func:`comparison_table`: every switching step against a
  reference, for every view (:data:`VIEWS`).
* :func:`switching_summary`: means over seeds and a coarse verdict (for runs without per-image data).
* :func:`matching_kernel_dynamics`, :func:`phase_one_ends`: the end of Phase I from the stored
  kernel-dynamics runs of the same training, with its version-3 bootstrap interval, shown *beside*
  the comparison step, which is fixed in advance (``compare_from`` of the configuration) and never
  read from the data.

Gains are in accuracy units (a gain of 0.002 is a test error 0.2 points lower).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from conelib.analysis.kernel_dynamics import kernel_dynamics_of_trajectory
from conelib.experiments.common import RunConfig
from conelib.experiments.switching import NOT_RECORDED, SwitchingConfig
from conelib.measures import assess
from conelib.measures.bootstrap import t_interval

__all__ = ["McNemarTest", "mcnemar", "BootstrapInterval", "paired_bootstrap", "PairedGain", "paired_gain",
           "first_step_at_or_below", "standard_step_at_loss", "VIEWS", "arm_correct", "arm_metric", "Comparison",
           "compare", "comparison_table", "SwitchingSummary", "switching_summary", "SWITCHING_VERDICTS",
           "matching_kernel_dynamics", "phase_one_ends", "has_per_image", "switch_steps", "end_step"]


# --------------------------------------------------------------------------------------------
# tests on paired per-image outcomes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarTest:
    """McNemar's test of model B against model A on the same images (see the module docstring).

    Attributes:
        gained: :math:`n_{01}`, images B gets right and A wrong.
        lost: :math:`n_{10}`, images A gets right and B wrong.
        p_exact: the exact two-sided p-value.
        p_mid: the two-sided mid-p value.
    """

    gained: int
    lost: int
    p_exact: float
    p_mid: float

    @property
    def discordant(self) -> int:
        return self.gained + self.lost


def _check_correct(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.size and not np.isin(a, (0, 1)).all():
        bad = "not recorded (-1)" if (a == NOT_RECORDED).any() else "not 0 or 1"
        raise ValueError(f"{name} must hold per-image correctness 0/1; some entries are {bad}")
    return a.astype(np.int8)


def mcnemar(a: Any, b: Any) -> McNemarTest:
    """McNemar's exact and mid-p test of ``b`` against ``a``: 0/1 correctness of two models on the
    same images (McNemar 1947).

    Raises:
        ValueError: arrays of different shapes, or entries other than 0 and 1.
    """
    a, b = _check_correct(a, "a"), _check_correct(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be the same images: shapes {a.shape} and {b.shape}")
    gained = int(((a == 0) & (b == 1)).sum())
    lost = int(((a == 1) & (b == 0)).sum())
    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return McNemarTest(gained, lost, 1.0, 1.0)
    cdf, pmf = float(stats.binom.cdf(k, n, 0.5)), float(stats.binom.pmf(k, n, 0.5))
    return McNemarTest(gained, lost, min(1.0, 2 * cdf), min(1.0, 2 * cdf - pmf))


@dataclass(frozen=True)
class BootstrapInterval:
    """A mean gain over seeds and its percentile interval from :func:`paired_bootstrap`."""

    mean: float
    low: float
    high: float
    level: float
    n_boot: int

    def excludes_zero(self) -> bool:
        return bool(np.isfinite(self.low) and (self.low > 0 or self.high < 0))


def paired_bootstrap(a: Any, b: Any, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0,
                     resample_seeds: bool = True) -> BootstrapInterval:
    """The mean over seeds of the accuracy gain of ``b`` over ``a`` with a two-level paired
    bootstrap interval (see the module docstring).

    Args:
        a, b: per-image correctness, shape ``(seeds, images)`` (0/1), the same images in the same order.
        n_boot: bootstrap draws.
        level: the interval's coverage.
        seed: seeds the draws.
        resample_seeds: also draw the seeds with replacement (``False``: images only).

    Returns:
        ``mean`` :math:`= \\frac1S \\sum_s (\\bar b_s - \\bar a_s)` and the percentile interval.

    Raises:
        ValueError: bad shapes or entries, ``n_boot`` < 100 or ``level`` outside (0, 1).
    """
    a, b = _check_correct(a, "a"), _check_correct(b, "b")
    if a.ndim != 2 or a.shape != b.shape or a.shape[1] == 0:
        raise ValueError(f"a and b must be (seeds, images) arrays of one shape; got {a.shape} and {b.shape}")
    if int(n_boot) < 100:
        raise ValueError(f"n_boot must be at least 100 draws, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    S, N = a.shape
    d = b.astype(np.int16) - a
    # per seed, the share of images gained (+1), lost (-1) and unchanged (0)
    p = np.stack([(d == 1).mean(1), (d == -1).mean(1), (d == 0).mean(1)], axis=1)
    rng = np.random.default_rng(seed)
    which = rng.integers(0, S, size=(int(n_boot), S)) if resample_seeds else np.broadcast_to(np.arange(S),
                                                                                             (int(n_boot), S))
    counts = rng.multinomial(N, p[which])  # (n_boot, S, 3)
    draws = ((counts[..., 0] - counts[..., 1]) / N).mean(axis=1)
    alpha = (1 - level) / 2
    return BootstrapInterval(float(d.mean(axis=1).mean()), float(np.quantile(draws, alpha)),
                             float(np.quantile(draws, 1 - alpha)), float(level), int(n_boot))


@dataclass(frozen=True)
class PairedGain:
    """A per-seed gain and its Student-t interval over seeds:
    :math:`\\bar d \\pm t_{1-\\alpha/2,\\,n-1}\\, s_d/\\sqrt{n}` (NaN with fewer than two seeds)."""

    per_seed: tuple[float, ...]
    mean: float
    low: float
    high: float
    level: float

    @property
    def n(self) -> int:
        return len(self.per_seed)

    @property
    def n_positive(self) -> int:
        return int(sum(x > 0 for x in self.per_seed))

    def excludes_zero(self) -> bool:
        return bool(np.isfinite(self.low) and (self.low > 0 or self.high < 0))


def paired_gain(per_seed: Sequence[float], *, level: float = 0.95) -> PairedGain:
    """:class:`PairedGain` of per-seed differences (NaN entries dropped)."""
    d = np.asarray(per_seed, dtype=float)
    d = d[np.isfinite(d)]
    mean, low, high = t_interval(d, level)
    return PairedGain(tuple(float(x) for x in d), mean, low, high, float(level))


# --------------------------------------------------------------------------------------------
# matched train loss
# --------------------------------------------------------------------------------------------


def first_step_at_or_below(steps: Sequence[int], values: Sequence[float], level: float) -> int | None:
    """The first step whose value is at or below ``level`` (NaN values skipped); ``None`` if none is."""
    v = np.asarray(values, dtype=float)
    hit = np.nonzero(np.isfinite(v) & (v <= level))[0]
    return int(np.asarray(steps)[hit[0]]) if hit.size else None


def end_step(ds: xr.Dataset) -> int:
    """:math:`T`, the end of training (the last switching step; the ``step`` axis may go on past it)."""
    return int(ds["switch_step"].max())


def switch_steps(ds: xr.Dataset) -> list[int]:
    return [int(t) for t in ds["switch_step"].values]


def standard_step_at_loss(ds: xr.Dataset, arm: str = "linearized") -> xr.DataArray:
    """Per (switch_step, seed): the first curve step at which the *standard* run's train loss is at
    or below the final (step :math:`T`) train loss of the ``arm`` continuation (``"linearized"`` or
    ``"small_lr"``): where to stop the standard run to compare the two at equal train loss."""
    final = {"linearized": "final_train_loss", "small_lr": "small_lr_final_train_loss"}[arm]
    T = end_step(ds)
    std = ds["standard_train_loss"].sel(step=ds["step"][ds["step"] <= T])
    out = np.full((ds.sizes["switch_step"], ds.sizes["seed"]), np.nan)
    for i in range(ds.sizes["switch_step"]):
        for k in range(ds.sizes["seed"]):
            s = first_step_at_or_below(std["step"].values, std.isel(seed=k).values,
                                       float(ds[final].isel(switch_step=i, seed=k)))
            out[i, k] = np.nan if s is None else s
    return xr.DataArray(out, dims=("switch_step", "seed"), coords={"switch_step": ds["switch_step"],
                                                                   "seed": ds["seed"]},
                        attrs={"long_name": f"first step at which the standard run's train loss is at or below the "
                                            f"{arm} continuation's at T", "units": "steps"})


# --------------------------------------------------------------------------------------------
# the models compared, and one comparison
# --------------------------------------------------------------------------------------------

#: the views of a switching step t: which model stands for t (see :func:`arm_correct`)
VIEWS: dict[str, str] = {
    "at_T": "θ_std→lin(T; t): the linearized continuation at T",
    "matched": "the linearized continuation at the first step its train loss reaches the standard run's at T",
    "small_lr": "the small-lr continuation (Fort et al. 2020) at T",
    "standard_at_loss": "the standard run stopped where its train loss first reaches θ_std→lin(T; t)'s",
}


def has_per_image(ds: xr.Dataset) -> bool:
    """Whether the result stores per-image correctness (results made before it was stored do not)."""
    return "final_test_correct" in ds and "standard_test_correct" in ds


def _standard_at(ds: xr.Dataset, step: Any, k: int, name: str) -> Any:
    return ds[name].isel(seed=k).sel(step=int(step)).values


def arm_correct(ds: xr.Dataset, view: str, t: int) -> np.ndarray:
    """Per-image correctness, ``(seed, image)``, of the model that stands for switching step ``t``
    in ``view`` (:data:`VIEWS`); -1 rows for seeds where it does not exist (a level not reached).
    At :math:`t = T` every view but ``standard_at_loss`` is the standard run at :math:`T`.

    Raises:
        ValueError: an unknown view, a step that is not a switching step, or a result without
            per-image data (or without the small-lr arm, for that view).
    """
    if view not in VIEWS:
        raise ValueError(f"view={view!r} is not known; choose one of {list(VIEWS)}")
    if int(t) not in switch_steps(ds):
        raise ValueError(f"{t} is not a switching step of this result; they are {switch_steps(ds)}")
    if not has_per_image(ds):
        raise ValueError("this result stores no per-image correctness (it was computed before it was stored)")
    name = {"at_T": "final_test_correct", "matched": "matched_test_correct", "small_lr": "small_lr_test_correct",
            "standard_at_loss": None}[view]
    if name is not None and name not in ds:
        raise ValueError(f"this result has no {name!r} (run with small_lr_factor / match_horizon)")
    T = end_step(ds)
    if view != "standard_at_loss":
        if int(t) == T:
            return ds["standard_test_correct"].sel(step=T).values.astype(np.int8)
        return ds[name].sel(switch_step=int(t)).values.astype(np.int8)
    steps = standard_step_at_loss(ds).sel(switch_step=int(t)).values
    out = np.full((ds.sizes["seed"], ds.sizes["image"]), NOT_RECORDED, dtype=np.int8)
    for k, s in enumerate(steps):
        if np.isfinite(s):
            out[k] = _standard_at(ds, s, k, "standard_test_correct")
    return out


def arm_metric(ds: xr.Dataset, view: str, t: int, metric: str = "test_acc") -> np.ndarray:
    """Per seed, ``metric`` (``test_acc``, ``test_loss`` or ``train_loss``) of the model that stands for
    ``t`` in ``view`` (NaN where it does not exist); works on results without per-image data too."""
    if view not in VIEWS:
        raise ValueError(f"view={view!r} is not known; choose one of {list(VIEWS)}")
    if metric not in ("test_acc", "test_loss", "train_loss"):
        raise ValueError(f"metric={metric!r} is not one of test_acc, test_loss, train_loss")
    T = end_step(ds)
    if int(t) == T and view != "standard_at_loss":
        return ds[f"standard_final_{metric}"].values.astype(float)
    if view == "standard_at_loss":
        steps = standard_step_at_loss(ds).sel(switch_step=int(t)).values
        return np.asarray([float(_standard_at(ds, s, k, f"standard_{metric}")) if np.isfinite(s) else np.nan
                           for k, s in enumerate(steps)])
    name = {"at_T": f"final_{metric}", "matched": f"matched_{metric}", "small_lr": f"small_lr_final_{metric}"}[view]
    if name not in ds:
        return np.full(ds.sizes["seed"], np.nan)
    return ds[name].sel(switch_step=int(t)).values.astype(float)


@dataclass(frozen=True)
class Comparison:
    """Model ``to`` against model ``frm`` on the same seeds and test images.

    ``gain`` is the Student-t view of the per-seed accuracy gains, ``boot`` the two-level paired
    bootstrap interval of their mean (seeds and images), ``tests`` McNemar's test per seed, and
    ``loss_change`` the per-seed change in test loss (``to`` minus ``frm``) with its t-interval.
    ``seeds`` are the seeds where both models exist; ``n_seeds`` all seeds of the result.
    """

    frm: str
    to: str
    seeds: tuple[int, ...]
    n_seeds: int
    gain: PairedGain
    boot: BootstrapInterval | None
    tests: tuple[McNemarTest, ...]
    loss_change: PairedGain

    @property
    def complete(self) -> bool:
        return len(self.seeds) == self.n_seeds

    def n_significant(self, alpha: float = 0.05, *, mid_p: bool = True) -> tuple[int, int]:
        """``(k, j)``: seeds whose McNemar test rejects "equally accurate" at ``alpha`` with ``to``
        better (k) and with ``to`` worse (j)."""
        ps = [(x.p_mid if mid_p else x.p_exact, x.gained - x.lost) for x in self.tests]
        return sum(p < alpha and d > 0 for p, d in ps), sum(p < alpha and d < 0 for p, d in ps)

    def supports_gain(self) -> bool | None:
        """Whether the evidence says ``to`` is more accurate than ``frm``: the bootstrap interval
        (or, without per-image data, the t-interval) lies above 0 on every seed of the result.
        ``None`` when the comparison is not available on every seed."""
        if not self.complete or not self.seeds:
            return None
        low = self.boot.low if self.boot is not None else self.gain.low
        return bool(np.isfinite(low) and low > 0)

    def row(self) -> dict[str, Any]:
        sig_up, sig_down = self.n_significant() if self.tests else (np.nan, np.nan)
        b = self.boot
        return {"from": self.frm, "to": self.to, "n": len(self.seeds), "n_seeds": self.n_seeds,
                "gain": self.gain.mean, "t_low": self.gain.low, "t_high": self.gain.high,
                "boot_low": np.nan if b is None else b.low, "boot_high": np.nan if b is None else b.high,
                "n_positive": self.gain.n_positive, "mcnemar_better": sig_up, "mcnemar_worse": sig_down,
                "p_mid": tuple(x.p_mid for x in self.tests), "p_exact": tuple(x.p_exact for x in self.tests),
                "loss_change": self.loss_change.mean, "loss_low": self.loss_change.low,
                "loss_high": self.loss_change.high}


def compare(ds: xr.Dataset, frm: tuple[str, int], to: tuple[str, int], *, level: float = 0.95,
            n_boot: int = 10_000, seed: int = 0) -> Comparison:
    """One :class:`Comparison` between two models of the result, each given as ``(view, t)``
    (:func:`arm_correct`); per-image tests when the result stores per-image correctness, the
    t-interval over seeds of the stored accuracies otherwise."""
    acc_a, acc_b = arm_metric(ds, *frm), arm_metric(ds, *to)
    loss_a, loss_b = arm_metric(ds, *frm, metric="test_loss"), arm_metric(ds, *to, metric="test_loss")
    ok = np.isfinite(acc_a) & np.isfinite(acc_b)
    seeds = tuple(int(s) for s in ds["seed"].values[ok])
    tests: tuple[McNemarTest, ...] = ()
    boot = None
    if has_per_image(ds) and ok.any():
        a, b = arm_correct(ds, *frm)[ok], arm_correct(ds, *to)[ok]
        tests = tuple(mcnemar(x, y) for x, y in zip(a, b))
        boot = paired_bootstrap(a, b, n_boot=n_boot, level=level, seed=seed)
    label = {"at_T": "lin", "matched": "lin@matched", "small_lr": "small-lr", "standard_at_loss": "std@loss"}
    return Comparison(f"{label[frm[0]]} t={frm[1]}", f"{label[to[0]]} t={to[1]}", seeds, int(ds.sizes["seed"]),
                      paired_gain((acc_b - acc_a)[ok], level=level), boot, tests,
                      paired_gain((loss_b - loss_a)[ok], level=level))


def comparison_table(ds: xr.Dataset, view: str, reference: tuple[str, int] | int, *, steps: Sequence[int] | None = None,
                     level: float = 0.95, n_boot: int = 10_000) -> pd.DataFrame:
    """One row per switching step ``t`` (default all): the model of ``view`` at ``t`` against
    ``reference`` (a ``(view, t)`` or a switching step in the same view), as :meth:`Comparison.row`,
    with the test error and test loss of both (means over the seeds compared)."""
    ref = (view, int(reference)) if isinstance(reference, (int, np.integer)) else reference
    rows = []
    for t in (switch_steps(ds) if steps is None else steps):
        c = compare(ds, ref, (view, int(t)), level=level, n_boot=n_boot)
        err = 1 - arm_metric(ds, view, int(t))
        loss = arm_metric(ds, view, int(t), "test_loss")
        rows.append({"t": int(t), "view": view, **c.row(), "error": float(np.nanmean(err)) if np.isfinite(err).any()
                     else np.nan, "test_loss": float(np.nanmean(loss)) if np.isfinite(loss).any() else np.nan,
                     "train_loss": float(np.nanmean(arm_metric(ds, view, int(t), "train_loss")))
                     if np.isfinite(err).any() else np.nan})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# a coarse summary (means over seeds)
# --------------------------------------------------------------------------------------------

#: the possible answers of :func:`switching_summary` to "does switching later help?"
SWITCHING_VERDICTS: tuple[str, ...] = ("later switching helps", "no clear effect", "later switching hurts")


@dataclass(frozen=True)
class SwitchingSummary:
    """Key numbers of a switching result (means over seeds); see :func:`switching_summary`."""

    acc_at_zero: float
    loss_at_zero: float
    compare_from: int | None
    acc_at_compare_from: float | None
    loss_at_compare_from: float | None
    acc_standard: float
    loss_standard: float
    gain: float
    gain_after_compare_from: float | None
    seed_range: float
    rank_correlation: float
    verdict: str

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def switching_summary(ds: xr.Dataset, compare_from: int | None = None, *, tol: float = 0.005,
                      min_correlation: float = 0.5) -> SwitchingSummary:
    """Means over seeds and a coarse answer to "does switching later help?", for any switching result.

    With :math:`a(t)` the test accuracy of :math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)`
    averaged over seeds: ``gain`` :math:`= a(T) - a(0)`; ``gain_after_compare_from``
    :math:`= a(T) - a(t_c)` at the declared comparison step :math:`t_c` (``None`` without one);
    ``seed_range`` the largest min–max range over seeds at any switching step; ``rank_correlation``
    Spearman's :math:`\\rho` between :math:`t` and :math:`a(t)`. Verdict: ``"later switching
    helps"`` if ``gain > max(tol, seed_range)`` and :math:`\\rho \\ge` ``min_correlation``, the
    mirror image for "hurts", else ``"no clear effect"``. The per-image tests of :func:`compare`
    are the finer answer.

    Raises:
        ValueError: not a switching Dataset, a ``compare_from`` that is not a switching step, or
            ``tol`` / ``min_correlation`` out of range.
    """
    if "final_test_acc" not in ds or "switch_step" not in ds.dims:
        raise ValueError("ds is not a switching Dataset (it needs final_test_acc over switch_step)")
    if not 0 <= tol < 1 or not 0 <= min_correlation <= 1:
        raise ValueError(f"tol must be in [0, 1) and min_correlation in [0, 1]; got {tol}, {min_correlation}")
    steps = np.asarray(switch_steps(ds))
    if compare_from is not None and int(compare_from) not in steps:
        raise ValueError(f"compare_from={compare_from} is not a switching step of this result; they are "
                         f"{steps.tolist()}")
    acc = ds["final_test_acc"].mean("seed").values
    loss = ds["final_test_loss"].mean("seed").values
    spread = (ds["final_test_acc"].max("seed") - ds["final_test_acc"].min("seed")).values
    seed_range = float(np.nanmax(spread)) if np.isfinite(spread).any() else 0.0
    i_c = None if compare_from is None else int(np.nonzero(steps == int(compare_from))[0][0])
    gain = float(acc[-1] - acc[0])
    finite = np.isfinite(acc)
    rho = float(stats.spearmanr(steps[finite], acc[finite]).statistic) if finite.sum() >= 3 and \
        np.ptp(acc[finite]) > 0 else float("nan")
    margin = max(tol, seed_range)
    if gain > margin and rho >= min_correlation:
        verdict = SWITCHING_VERDICTS[0]
    elif gain < -margin and rho <= -min_correlation:
        verdict = SWITCHING_VERDICTS[2]
    else:
        verdict = SWITCHING_VERDICTS[1]
    return SwitchingSummary(
        acc_at_zero=float(acc[0]), loss_at_zero=float(loss[0]), compare_from=None if i_c is None else int(steps[i_c]),
        acc_at_compare_from=None if i_c is None else float(acc[i_c]),
        loss_at_compare_from=None if i_c is None else float(loss[i_c]),
        acc_standard=float(ds["standard_final_test_acc"].mean("seed")),
        loss_standard=float(ds["standard_final_test_loss"].mean("seed")), gain=gain,
        gain_after_compare_from=None if i_c is None else float(acc[-1] - acc[i_c]), seed_range=seed_range,
        rank_correlation=rho, verdict=verdict)


# --------------------------------------------------------------------------------------------
# the end of Phase I, from the kernel-dynamics runs of the same training (information only)
# --------------------------------------------------------------------------------------------


def matching_kernel_dynamics(cfg: RunConfig, *, seed: int | None = None,
                             results_root: str | Path | None = None) -> xr.Dataset | None:
    """The newest stored kernel-dynamics run of the same training as ``cfg`` for ``seed`` (default
    ``cfg.seed``), at least as long (:func:`conelib.experiments.common.same_trajectory`); ``None``
    if there is none. Unreadable stored files are skipped."""
    s = int(cfg.seed if seed is None else seed)
    want = cfg.for_seed(s) if isinstance(cfg, SwitchingConfig) else cfg.replace(seed=s)
    return next((ds for ds, _ in kernel_dynamics_of_trajectory(want, results_root=results_root)), None)


def phase_one_ends(cfg: SwitchingConfig, *, results_root: str | Path | None = None, n_boot: int = 100,
                   seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Per seed of ``cfg`` (or ``seeds``) with a matching kernel-dynamics run: the end of Phase I
    (version 3, :func:`conelib.measures.assess`) with its bootstrap interval, and the run's hash.
    Information to set beside the comparison step, which is fixed in advance."""
    rows = []
    for s in (cfg.seeds if seeds is None else seeds):
        kd = matching_kernel_dynamics(cfg, seed=int(s), results_root=results_root)
        if kd is None:
            continue
        a = assess(kd, n_boot=n_boot, sensitivity=False)
        lo, hi = a.interval("phase_one_end")
        end = a.point.phase_one_end
        rows.append({"seed": int(s), "phase_one_end": np.nan if end is None else float(end), "low": lo, "high": hi,
                     "config_hash": str(kd.attrs.get("config_hash", ""))})
    return pd.DataFrame(rows, columns=["seed", "phase_one_end", "low", "high", "config_hash"])
