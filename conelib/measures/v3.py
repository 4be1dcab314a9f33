"""Measures of the two phases and of the cone, version 3: denoised, from all the data, with intervals.

Version 2 (:mod:`conelib.measures.v2`) read each measure off single snapshots: one pair of kernels
for the laziness, one reference step at a time for the plateau. Single eNTK snapshots carry SGD
jitter (at the paper's MNIST scale the distance between kernels 50 steps apart is half the whole
Phase II movement), so those numbers flipped with the noise. Version 3 separates the jitter from
the drift with window-averaged kernels (:mod:`conelib.measures.centroids`: exact, from the stored
pairwise distances), averages every measure over all the pairs it can use, and gives each one an
interval (:mod:`conelib.measures.bootstrap`). Chords :math:`c = \\sqrt{2S}` are used throughout
(proportional to the angle the kernel turns; :math:`S \\approx c^2/2`), and :math:`\\hat D(a, b)` is the
denoised chord between the mean kernels of the windows around snapshots :math:`a` and :math:`b`
(half-width ``half_width`` steps).

**Total movement** :math:`M = \\hat D(0, T)`: how far the mean kernel at the end is from the initial
kernel, on an absolute scale. The textbook lazy regime (Chizat, Oyallon and Bach 2019; Jacot et
al. 2018) is :math:`M \\approx 0`, whatever the shape of the trajectory.

**End of Phase I** :math:`t^*`. The denoised velocity profile :math:`a(t) = \\hat D(t, t+\\Delta)^2/2` (in
units of :math:`S`, as eq. 5 of Zhou et al. 2025, at the gap :math:`\\Delta` = ``lag``), smoothed by a
running median over ``smooth`` snapshots; :math:`P` its peak and :math:`F` its median over the second
half of the run. With :math:`P <` ``min_drop`` :math:`F` the kernel moves as fast late as early: no two
phases. Otherwise :math:`t^*` is the first step after the peak from which :math:`a(t) \\le F + \\rho (P -
F)` (:math:`\\rho` = ``fraction``) holds for ``hold`` of the run, and Phase II must span at least
``min_phase_two`` of it. Because the velocity is denoised and :math:`F \\ll P` in practice, :math:`t^*`
barely depends on the run length :math:`T`.

**Phase I movement** :math:`m_1 = \\hat D(0, t^*)`; **laziness** :math:`\\lambda`: the median chord between
*all* pairs of single kernels in the second half of Phase II (jitter included: the paper's cone is
a kernel that "keeps evolving"), over :math:`m_1`. A frozen Phase II has :math:`\\lambda \\approx 0`.

**Jitter radius** :math:`J`: the median over Phase II of the spread of single kernels around their
window's mean kernel (the SGD noise ball); ``jitter_ratio`` :math:`J / m_1`; ``jitter_trend`` the log-log
slope of the jitter radius against :math:`t` in Phase II (negative: the noise ball shrinks).

**Structure function and growth exponent** :math:`\\gamma`. For lags :math:`\\ell` (from four
half-widths, twice the lag at which windows stop overlapping, to half of Phase II), :math:`V(\\ell)^2` is the mean of
:math:`\\hat D(\\tau, \\tau+\\ell)^2` over *every* reference step :math:`\\tau` of Phase II (Figure 1a of the
paper, for all :math:`\\tau` at once and denoised). :math:`\\gamma` is the log-log slope of :math:`V` against
:math:`\\ell`: 0 for a bounded wobble (a cone), 1/2 for a random walk of the kernel's direction, 1 for
steady turning. ``drift_ratio`` :math:`V(\\ell_{max}) / J`: the systematic movement across Phase II
in units of the noise ball (below ``resolved_drift`` the mean kernel does not move beyond its noise).

**Stationarity and drift decay** :math:`\\alpha`. For a process whose statistics do not change with
time (a stationary wobble, a random walk, steady turning), the distance between mean kernels a
fixed lag apart, :math:`\\hat D(\\tau, \\tau + \\ell_s)` with :math:`\\ell_s` = ``stationarity_lag``, does not
depend on :math:`\\tau`. :math:`\\alpha` is minus its log-log slope against :math:`\\tau` over Phase II (from
bin averages of :math:`\\hat D^2`): 0 stationary; for a drift whose velocity decays like :math:`t^{-a}`,
:math:`\\alpha` lies between :math:`a - 1` and :math:`a` (:math:`a` when :math:`\\tau \\gg \\ell_s`). A kernel whose
velocity decays faster than :math:`1/t` has a finite path: it *converges*, :math:`\\alpha >`
``converging_exponent`` (1).

**The loss as the clock**: the log-log slope :math:`\\kappa` of the velocity profile :math:`a(t)` against
the training loss over the run, and the correlation :math:`r` of the two logs (:math:`r \\approx 1`: the
kernel slows down exactly as the loss falls); ``loss_at_phase_one_end`` the training loss at :math:`t^*`.

**Floor exponent** :math:`\\beta` (from version 2, the paper's Figure 1(b) signature): the log-log
slope of the Phase II median of the *single-snapshot* adjacent chord against the gap :math:`dt`. At
this scale that floor is mostly jitter, which is why it hardly depends on :math:`dt`.

**Verdict** (labels in :data:`VERDICTS`; the first four are version 2's):

1. ``"two phases, lazy"`` if :math:`M <` ``lazy_movement`` (the textbook lazy regime);
2. ``"no two phases"`` if no :math:`t^*` is found;
3. ``"two phases, converging"`` if the drift is resolved (``drift_ratio`` :math:`\\ge` ``resolved_drift``)
   and :math:`\\alpha >` ``converging_exponent`` (a converging kernel ends nearly still, so this comes
   before the laziness);
4. ``"two phases, lazy"`` if :math:`\\lambda <` ``lazy_ratio`` (frozen after an early phase);
5. ``"two phases, cone"`` if the drift is not resolved (only jitter in Phase II);
6. ``"two phases, cone"`` if :math:`\\gamma <` ``plateau_exponent`` (a bounded wobble);
7. ``"two phases, drifting"`` otherwise.

Each rule is validated on synthetic trajectories of every kind (:mod:`conelib.measures.synthetic`)
over many noise draws (``tests/test_measures_v3.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import xarray as xr

from conelib.measures.centroids import Centroids, centroids

#: a measure that is not defined for a run
NAN = float("nan")

#: how the measures are shown in the book's tables and tooltips: name -> (label, format spec; the
#: same spec reads in Python's ``format`` and in d3, for the charts)
MEASURE_FORMATS: dict[str, tuple[str, str]] = {
    "phase_one_end": ("end of Phase I t* (steps)", ",.0f"),
    "total_movement": ("total movement M = D(0, T) (chord)", ".3f"),
    "laziness": ("laziness λ (Phase II / Phase I)", ".3f"),
    "jitter_ratio": ("jitter radius / Phase I movement", ".3f"),
    "drift_ratio": ("Phase II drift / jitter radius", ".2f"),
    "growth_exponent": ("growth exponent γ (0 plateau, ½ random walk, 1 steady)", ".2f"),
    "drift_decay": ("drift decay α (> 1: converging)", ".2f"),
    "loss_correlation": ("velocity vs train loss: correlation r", ".3f"),
    "loss_exponent": ("velocity vs train loss: exponent κ", ".2f"),
    "loss_at_phase_one_end": ("train loss at t*", ".3f"),
    "floor_exponent": ("floor exponent β (single kernels)", ".2f"),
    "verdict_agreement": ("verdict: share of bootstrap draws", ".2f"),
    "threshold_agreement": ("verdict: share of threshold settings", ".2f"),
}

__all__ = [
    "MEASURE_FORMATS",
    "VERDICTS",
    "THRESHOLDS",
    "SENSITIVITY",
    "Verdict",
    "check_thresholds",
    "effective_scales",
    "measure",
    "phase_one_trace",
    "phase_two_curves",
    "structure_function",
    "velocity_profile",
    "verdict",
]

VERDICTS: tuple[str, ...] = ("two phases, cone", "two phases, lazy", "two phases, drifting", "no two phases",
                             "two phases, converging")
"""The verdict labels, in a fixed order (the index is the integer code sweeps store; version 2's
four keep their codes)."""

#: the thresholds of :func:`verdict` and their defaults (see the module docstring)
THRESHOLDS: dict[str, float] = {
    "half_width": 250,
    "lag": 800,
    "stationarity_lag": 1000,
    "fraction": 0.1,
    "min_drop": 4.0,
    "hold": 0.1,
    "min_phase_two": 0.25,
    "smooth": 5,
    "guard": 0.25,
    "lazy_movement": 0.1,
    "lazy_ratio": 0.1,
    "resolved_drift": 0.25,
    "plateau_exponent": 0.3,
    "converging_exponent": 1.0,
}

#: the sensitivity analysis: each threshold moved alone to both ends of a plausible range
SENSITIVITY: dict[str, tuple[float, float]] = {
    "half_width": (150, 400),
    "lag": (400, 1600),
    "stationarity_lag": (600, 2000),
    "fraction": (0.05, 0.2),
    "min_drop": (2.0, 8.0),
    "smooth": (1, 9),
    "guard": (0.0, 0.5),
    "lazy_movement": (0.05, 0.2),
    "lazy_ratio": (0.05, 0.2),
    "resolved_drift": (0.15, 0.5),
    "plateau_exponent": (0.2, 0.4),
    "converging_exponent": (0.75, 1.5),
}

_RULES: dict[str, tuple[Any, str]] = {
    "half_width": (lambda v: v >= 0, ">= 0 steps"),
    "lag": (lambda v: v > 0, "> 0 steps"),
    "stationarity_lag": (lambda v: v > 0, "> 0 steps"),
    "fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "min_drop": (lambda v: v >= 1, ">= 1"),
    "hold": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "min_phase_two": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "smooth": (lambda v: int(v) == v and v >= 1, "a positive number of snapshots"),
    "guard": (lambda v: 0 <= v < 0.9, "in [0, 0.9)"),
    "lazy_movement": (lambda v: v >= 0, ">= 0 (a chord)"),
    "lazy_ratio": (lambda v: v >= 0, ">= 0"),
    "resolved_drift": (lambda v: v >= 0, ">= 0"),
    "plateau_exponent": (lambda v: v > 0, "> 0"),
    "converging_exponent": (lambda v: v > 0, "> 0"),
}


def check_thresholds(**kwargs: Any) -> dict[str, float]:
    """The thresholds with the defaults filled in; ``ValueError`` naming the first unknown one or the
    first outside its range."""
    unknown = sorted(set(kwargs) - set(THRESHOLDS))
    if unknown:
        raise ValueError(f"unknown threshold(s) {unknown}; allowed: {sorted(THRESHOLDS)}")
    t = {**THRESHOLDS, **kwargs}
    for name, (ok, allowed) in _RULES.items():
        v = t[name]
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) or not np.isfinite(v) \
                or not ok(v):
            raise ValueError(f"threshold {name} must be {allowed}, got {v!r}")
    return t


def _check_ds(ds: xr.Dataset) -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset (a kernel-dynamics result), got {type(ds).__name__}")
    if "pairwise_distance" not in ds.variables or "step" not in ds.coords:
        raise ValueError("ds lacks pairwise_distance over (step, other_step); a kernel-dynamics Dataset "
                         "(conelib.trajectory.distances_dataset) has it")
    steps = ds["step"].values
    if steps.size < 4:
        raise ValueError(f"ds has {steps.size} snapshots; the measures need at least 4 (most need dozens)")
    gaps = np.diff(steps)
    if np.any(gaps <= 0) or np.ptp(gaps) > 0:
        raise ValueError("the measures need equally spaced, increasing snapshot steps")


def effective_scales(steps: np.ndarray, thresholds: dict[str, float]) -> dict[str, int]:
    """The window half-width, velocity gap and stationarity lag actually used, in snapshots: the
    thresholds' values in steps, shortened for short runs (at most T/40, T/12.5 and T/10)."""
    steps = np.asarray(steps)
    gap = int(steps[1] - steps[0])
    T = int(steps[-1] - steps[0])

    def snap(v: float, cap: float, least: int) -> int:
        return max(least, int(round(min(v, cap) / gap)))

    return {"gap": gap,
            "half_width": snap(thresholds["half_width"], T / 40, 0),
            "lag": snap(thresholds["lag"], T / 12.5, 1),
            "stationarity_lag": snap(thresholds["stationarity_lag"], T / 10, 1)}


# --------------------------------------------------------------------------------------------
# small weighted statistics
# --------------------------------------------------------------------------------------------


def _wmedian(x: np.ndarray, w: np.ndarray) -> float:
    ok = np.isfinite(x) & (w > 0)
    if not ok.any():
        return float("nan")
    x, w = x[ok], w[ok]
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


def _wslope(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted least-squares slope of y on x (NaN with fewer than 3 usable points)."""
    w = np.ones_like(x, dtype=float) if w is None else np.asarray(w, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (w > 0)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return float("nan")
    x, y, w = x[ok], y[ok], w[ok]
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    return float(np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2))


def _wcorr(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y) & (w > 0)
    if ok.sum() < 3:
        return float("nan")
    x, y, w = x[ok], y[ok], w[ok]
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    sx, sy = np.sum(w * (x - xm) ** 2), np.sum(w * (y - ym) ** 2)
    return float(np.sum(w * (x - xm) * (y - ym)) / np.sqrt(sx * sy)) if sx > 0 and sy > 0 else float("nan")


def _fill_gaps(x: np.ndarray) -> np.ndarray:
    """NaN entries (windows a bootstrap draw left empty) linearly interpolated from their neighbours."""
    bad = ~np.isfinite(x)
    if not bad.any() or bad.all():
        return x
    i = np.arange(x.size)
    return np.where(bad, np.interp(i, i[~bad], x[~bad]), x)


def _running_median(x: np.ndarray, k: int) -> np.ndarray:
    """Centred running median over ``k`` points, shorter windows at the ends, NaN ignored."""
    if k <= 1 or x.size == 0:
        return x.copy()
    h = k // 2
    padded = np.concatenate([np.full(h, np.nan), x, np.full(h, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * h + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        return np.nanmedian(win, axis=1)


# --------------------------------------------------------------------------------------------
# the pieces
# --------------------------------------------------------------------------------------------


def velocity_profile(c: Centroids, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Snapshot indices :math:`i` and the denoised :math:`\\hat D(t_i, t_i + \\Delta)^2 / 2` (units of
    :math:`S`; ``lag`` :math:`\\Delta` in snapshots). Entries whose windows hold no weight are NaN."""
    i = np.arange(c.n - lag)
    return i, 0.5 * c.drift2(i, i + lag)


@dataclass(frozen=True)
class _PhaseOne:
    end: int | None  # index of t*
    peak: float
    floor: float

    @property
    def drop(self) -> float:
        return float("inf") if self.floor <= 0 else self.peak / self.floor


def _phase_one(c: Centroids, t: dict[str, float], lag: int) -> _PhaseOne:
    idx, a = velocity_profile(c, lag)
    a = _running_median(_fill_gaps(a), int(t["smooth"]))
    steps = c.steps
    if idx.size < 3 or not np.isfinite(a).any():
        return _PhaseOne(None, float("nan"), float("nan"))
    t0, T = float(steps[0]), float(steps[-1])
    late = a[(steps[idx] >= t0 + (T - t0) / 2) & np.isfinite(a)]
    floor = float(max(np.median(late), 0.0)) if late.size else float(max(a[np.isfinite(a)][-1], 0.0))
    i_peak = int(np.nanargmax(a))
    peak = float(a[i_peak])
    out = _PhaseOne(None, peak, floor)
    if not peak > 0 or peak < t["min_drop"] * floor:
        return out
    below = np.where(np.isfinite(a), a <= floor + t["fraction"] * (peak - floor), True)
    need = t["hold"] * (T - t0)
    k = len(a)
    i = i_peak
    while i < k:
        if not below[i]:
            i += 1
            continue
        j = i
        while j + 1 < k and below[j + 1]:
            j += 1
        if steps[idx[j]] - steps[idx[i]] >= need or j == k - 1:
            if T - steps[idx[i]] < t["min_phase_two"] * (T - t0):
                return out
            return _PhaseOne(int(idx[i]), peak, floor)
        i = j + 1
    return out


def _lags(n2: int, least: int) -> list[int]:
    """A geometric grid of lags (ratio about sqrt 2) from ``least`` to half of ``n2`` snapshots."""
    hi = (n2 - 1) // 2
    out: list[int] = []
    x = float(max(least, 1))
    while int(round(x)) <= hi:
        if not out or int(round(x)) > out[-1]:
            out.append(int(round(x)))
        x *= np.sqrt(2.0)
    return out


def structure_function(c: Centroids, start: int, least: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lags :math:`\\ell` (snapshots), :math:`V(\\ell)^2` (the mean of :math:`\\hat D(\\tau, \\tau+\\ell)^2`
    over every :math:`\\tau` from snapshot ``start`` on; weights: the product of the two snapshots'
    weights) and the total weight behind each, for lags from ``least`` to half of what is left of the run."""
    lags = _lags(c.n - start, least)
    v2, tot = [], []
    for ell in lags:
        i = np.arange(start, c.n - ell)
        d2 = c.drift2(i, i + ell)
        w = c.weights[i] * c.weights[i + ell]
        ok = np.isfinite(d2) & (w > 0)
        v2.append(float(np.sum(w[ok] * d2[ok]) / np.sum(w[ok])) if ok.any() else float("nan"))
        tot.append(float(np.sum(w[ok])))
    return np.asarray(lags, dtype=int), np.asarray(v2), np.asarray(tot)


def _drift_decay(c: Centroids, start: int, ell: int, n_bins: int = 5) -> float:
    """:math:`\\alpha`: minus the log-log slope of :math:`\\hat D(\\tau, \\tau + \\ell)` against :math:`\\tau`,
    from bin averages of :math:`\\hat D^2` over ``n_bins`` log-spaced bins of :math:`\\tau \\ge` snapshot ``start``."""
    i = np.arange(start, c.n - ell)
    if i.size < n_bins:
        return float("nan")
    tau = c.steps[i].astype(float)
    tau = np.maximum(tau, float(c.steps[1]))
    d2 = c.drift2(i, i + ell)
    w = c.weights[i] * c.weights[i + ell]
    edges = np.geomspace(tau[0], tau[-1] * (1 + 1e-9), n_bins + 1)
    which = np.clip(np.searchsorted(edges, tau, side="right") - 1, 0, n_bins - 1)
    xs, ys, ws = [], [], []
    for b in range(n_bins):
        m = (which == b) & np.isfinite(d2) & (w > 0)
        if not m.any():
            continue
        mean = np.sum(w[m] * d2[m]) / np.sum(w[m])
        if mean > 0:
            xs.append(np.log(np.sum(w[m] * tau[m]) / np.sum(w[m])))
            ys.append(0.5 * np.log(mean))
            ws.append(np.sum(w[m]))
    return -_wslope(np.asarray(xs), np.asarray(ys), np.asarray(ws))


def _floor_exponent(ds: xr.Dataset, start_step: int) -> float:
    if "adjacent_distance" not in ds or "dt" not in ds.coords or ds.sizes.get("dt", 0) < 2:
        return float("nan")
    adj = ds["adjacent_distance"].transpose("step", "dt").values.astype(float)
    c = np.sqrt(2.0 * np.clip(adj, 0.0, None))[ds["step"].values >= start_step]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f = np.nanmedian(c, axis=0)
    dts = ds["dt"].values.astype(float)
    ok = np.isfinite(f) & (f > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(dts[ok]), np.log(f[ok]), 1)[0])


# --------------------------------------------------------------------------------------------
# the verdict
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A run's measures (version 3) and its label; NaN / ``None`` where undefined.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        phase_one_end: :math:`t^*` (steps; ``None``: not found).
        drop, peak, floor: the velocity profile's peak over its late median, and the two.
        total_movement: :math:`M`; phase_one_movement: :math:`m_1`; phase_two_movement: :math:`V(\\ell_{max})`.
        laziness: :math:`\\lambda`.
        jitter_radius, jitter_ratio, jitter_trend: :math:`J`, :math:`J/m_1`, log-log slope of the jitter in Phase II.
        drift_ratio: :math:`V(\\ell_{max}) / J`.
        growth_exponent: :math:`\\gamma`; drift_decay: :math:`\\alpha`.
        stationarity: ``"stationary"`` (:math:`|\\alpha| < 1/4` or the drift is not resolved),
            ``"slowing"``, ``"converging"`` (:math:`\\alpha >` ``converging_exponent``) or ``"accelerating"``.
        loss_exponent, loss_correlation: :math:`\\kappa` and :math:`r` of the velocity against the train loss.
        loss_at_phase_one_end: the train loss at :math:`t^*`.
        floor_exponent: :math:`\\beta` (single snapshots, version 2's).
    """

    verdict: str
    # Phase I: where it ends and how far the denoised velocity falls
    phase_one_end: int | None = None
    drop: float = NAN
    peak: float = NAN
    floor: float = NAN
    # how far the mean kernel moves: in all, in Phase I, in Phase II (and their ratio)
    total_movement: float = NAN
    phase_one_movement: float = NAN
    phase_two_movement: float = NAN
    laziness: float = NAN
    # the noise ball around the mean kernel
    jitter_radius: float = NAN
    jitter_ratio: float = NAN
    jitter_trend: float = NAN
    # the Phase II drift of the mean kernel: size, growth with the lag, decay in time
    drift_ratio: float = NAN
    growth_exponent: float = NAN
    drift_decay: float = NAN
    stationarity: str = "undefined"
    # the loss clock, and version 2's floor exponent for comparison
    loss_exponent: float = NAN
    loss_correlation: float = NAN
    loss_at_phase_one_end: float = NAN
    floor_exponent: float = NAN

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def code(self) -> int:
        """Index of :attr:`verdict` in :data:`VERDICTS`."""
        return VERDICTS.index(self.verdict)

    @classmethod
    def numeric_fields(cls) -> list[str]:
        """The measures that are numbers (what intervals are given for)."""
        return [f.name for f in fields(cls) if f.name not in ("verdict", "stationarity")]


def _stationarity(alpha: float, resolved: bool, t: dict[str, float]) -> str:
    if not resolved or not np.isfinite(alpha):
        return "stationary" if not resolved else "undefined"
    if alpha > t["converging_exponent"]:
        return "converging"
    if alpha >= 0.25:
        return "slowing"
    if alpha <= -0.25:
        return "accelerating"
    return "stationary"


def measure(ds: xr.Dataset, weights: np.ndarray | None = None, **thresholds: Any) -> Verdict:
    """Every measure of the module docstring for one run, and its verdict.

    Args:
        ds: a kernel-dynamics Dataset (``pairwise_distance``; ``train_loss`` for the loss clock,
            ``adjacent_distance`` for the floor exponent).
        weights: a non-negative weight per snapshot (:mod:`conelib.measures.bootstrap` passes
            block-bootstrap counts); ``None``: all 1.
        thresholds: override :data:`THRESHOLDS`.
    """
    _check_ds(ds)
    t = check_thresholds(**thresholds)
    steps = ds["step"].values.astype(int)
    sc = effective_scales(steps, t)
    S = ds["pairwise_distance"].values
    c = centroids(S, steps, sc["half_width"] * sc["gap"], weights)
    w = c.weights
    n = c.n
    total = float(c.drift(0, n - 1))
    p1 = _phase_one(c, t, sc["lag"])
    base = dict(drop=p1.drop, peak=p1.peak, floor=p1.floor, total_movement=total)
    # the loss clock (over the whole run, defined with or without two phases)
    if "train_loss" in ds:
        idx, a = velocity_profile(c, sc["lag"])
        loss = ds["train_loss"].values.astype(float)[idx]
        ok = (a > 0) & (loss > 0) & np.isfinite(a) & np.isfinite(loss) & (steps[idx] > steps[0])
        lx, ly = np.where(ok, np.log(np.where(ok, loss, 1.0)), np.nan), np.where(ok, np.log(np.where(ok, a, 1.0)), np.nan)
        base["loss_exponent"] = _wslope(lx, ly, w[idx])
        base["loss_correlation"] = _wcorr(lx, ly, w[idx])
    if total < t["lazy_movement"]:
        return Verdict("two phases, lazy", **base)
    if p1.end is None:
        return Verdict("no two phases", **base)
    i1 = p1.end
    t1 = int(steps[i1])
    m1 = float(c.drift(0, i1))
    base.update(phase_one_end=t1, phase_one_movement=m1, floor_exponent=_floor_exponent(ds, t1))
    if "train_loss" in ds:
        lo, hi = c.lo[i1], c.hi[i1]
        base["loss_at_phase_one_end"] = float(np.exp(np.mean(np.log(np.clip(ds["train_loss"].values[lo:hi], 1e-30, None)))))
    # laziness: all pairs of single kernels in the second half of Phase II
    T = steps[-1]
    late = np.nonzero(steps >= (t1 + T) / 2)[0]
    iu = np.triu_indices(late.size, 1)
    pi, pj = late[iu[0]], late[iu[1]]
    chords = np.sqrt(2.0 * np.clip(S[pi, pj], 0.0, None))
    lam = _wmedian(chords, w[pi] * w[pj]) / m1 if m1 > 0 else float("inf")
    # Phase II proper: after a guard band (the tail of Phase I's turn, which no finite fraction
    # cuts off, would otherwise read as drift)
    t2 = t1 + t["guard"] * (T - t1)
    i2 = int(np.searchsorted(steps, t2 - 1e-9))
    # jitter
    two = np.nonzero(steps >= t2)[0]
    r = c.jitter[two]
    okr = np.isfinite(r) & (c.weight[two] > 0)
    J = _wmedian(r[okr], w[two][okr]) if okr.any() else float("nan")
    jt = _wslope(np.log(steps[two][okr].astype(float)), np.log(np.clip(r[okr], 1e-12, None)), w[two][okr])
    # structure function, growth and drift ratio
    least = 2 * sc["half_width"] + 1  # windows stop overlapping
    # the growth is fitted from twice that lag on: below it the window averages still smooth the
    # movement and the structure function rises whatever the process (e.g. a wobble with a short
    # correlation time)
    lags, v2, nv = structure_function(c, i2, 2 * least)
    okv = np.isfinite(v2) & (v2 > 0)
    gamma = _wslope(np.log(lags[okv].astype(float)), 0.5 * np.log(v2[okv]), nv[okv]) if okv.sum() >= 3 else float("nan")
    v_max = float(np.sqrt(max(v2[-1], 0.0))) if v2.size and np.isfinite(v2[-1]) else float("nan")
    rho = v_max / J if J > 0 else float("inf")
    alpha = _drift_decay(c, i2, max(sc["stationarity_lag"], least))
    resolved = bool(np.isfinite(rho) and rho >= t["resolved_drift"])
    base.update(laziness=lam, jitter_radius=J, jitter_ratio=J / m1 if m1 > 0 else float("inf"), jitter_trend=jt,
                phase_two_movement=v_max, drift_ratio=rho, growth_exponent=gamma, drift_decay=alpha,
                stationarity=_stationarity(alpha, resolved, t))
    if resolved and np.isfinite(alpha) and alpha > t["converging_exponent"]:
        label = "two phases, converging"
    elif lam < t["lazy_ratio"]:
        label = "two phases, lazy"
    elif not resolved:
        label = "two phases, cone"
    elif np.isfinite(gamma) and gamma < t["plateau_exponent"]:
        label = "two phases, cone"
    else:
        label = "two phases, drifting"
    return Verdict(label, **base)


def phase_one_trace(ds: xr.Dataset, **thresholds: Any) -> dict[str, Any]:
    """What the end of Phase I is read from, for charts: the snapshot ``step`` of each profile
    point, the denoised velocity ``profile`` :math:`\\hat D(t, t+\\Delta)^2/2` smoothed as the rule
    smooths it, the ``threshold`` :math:`F + \\rho(P - F)`, the ``end`` :math:`t^*` (``None``), and the
    gap ``lag`` :math:`\\Delta` in steps."""
    _check_ds(ds)
    t = check_thresholds(**thresholds)
    steps = ds["step"].values.astype(int)
    sc = effective_scales(steps, t)
    c = centroids(ds["pairwise_distance"].values, steps, sc["half_width"] * sc["gap"])
    idx, a = velocity_profile(c, sc["lag"])
    smooth = _running_median(_fill_gaps(a), int(t["smooth"]))
    p1 = _phase_one(c, t, sc["lag"])
    thr = p1.floor + t["fraction"] * (p1.peak - p1.floor) if np.isfinite(p1.peak) else float("nan")
    return {"step": steps[idx], "profile": smooth, "threshold": float(thr),
            "end": None if p1.end is None else int(steps[p1.end]), "lag": sc["lag"] * sc["gap"]}


def phase_two_curves(ds: xr.Dataset, **thresholds: Any) -> dict[str, Any]:
    """The Phase II curves the coordinates are fitted on, for charts (``None`` without two phases):
    ``jitter`` (steps, radius) over Phase II proper, ``structure`` (lags in steps, :math:`V(\\ell)`),
    ``equal_lag`` (:math:`\\tau`, :math:`\\hat D(\\tau, \\tau + \\ell_s)`) and ``stationarity_lag`` in steps."""
    v = verdict(ds, **thresholds)
    if v.phase_one_end is None:
        return {}
    t = check_thresholds(**thresholds)
    steps = ds["step"].values.astype(int)
    sc = effective_scales(steps, t)
    c = centroids(ds["pairwise_distance"].values, steps, sc["half_width"] * sc["gap"])
    T = steps[-1]
    i2 = int(np.searchsorted(steps, v.phase_one_end + t["guard"] * (T - v.phase_one_end) - 1e-9))
    least = 2 * sc["half_width"] + 1
    lags, v2, _ = structure_function(c, i2, 2 * least)
    ell = max(sc["stationarity_lag"], least)
    i = np.arange(i2, c.n - ell)
    return {"jitter": (steps[i2:], c.jitter[i2:]),
            "structure": (lags * sc["gap"], np.sqrt(np.clip(v2, 0.0, None))),
            "equal_lag": (steps[i], c.drift(i, i + ell)),
            "stationarity_lag": ell * sc["gap"]}


def verdict(ds: xr.Dataset, **thresholds: Any) -> Verdict:
    """:func:`measure` with all snapshots weighted equally: the point estimate of every measure and the label."""
    return measure(ds, None, **thresholds)


def sensitivity_settings(sensitivity: dict[str, Sequence[float]] | None = None) -> list[tuple[str, dict[str, float]]]:
    """``[("defaults", {}), ("fraction=0.05", {"fraction": 0.05}), ...]``: each threshold of
    :data:`SENSITIVITY` moved alone to each end of its range."""
    out: list[tuple[str, dict[str, float]]] = [("defaults", {})]
    for name, values in (SENSITIVITY if sensitivity is None else sensitivity).items():
        out += [(f"{name}={v:g}", {name: v}) for v in values]
    return out
