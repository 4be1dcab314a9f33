"""Measures of the two phases and of the cone, read off a kernel-dynamics Dataset (version 2).

The paper describes the phases by eye (Zhou et al. 2025, Section 4: "Phase I (approximately
0 < t < 2000)"; in Phase II the adjacent distance is "upper-bounded by the same value for
different dt", and the distance to a reference step "first increases and then keeps nearly
constant") and leaves open which factors decide whether they appear (Section 5). Here each of
those statements becomes a number with a stated definition (the book's "Measuring the phases" chapter states the later versions),
tested on synthetic trajectories whose answer is known by construction.

Distances as angles. The kernel distance of eq. (4) is :math:`S = 1 - \\cos\\angle(H, H')`, so for
small angles :math:`S \\approx \\angle^2 / 2`: it grows like the *square* of how far the kernel has
turned. The measures below that speak of growth use the chord distance
:math:`c = \\sqrt{2S} = \\lVert H/\\lVert H\\rVert - H'/\\lVert H'\\rVert\\rVert_F`, which is proportional to the
angle: a kernel turning at a steady rate has :math:`c \\propto \\Delta t`, a kernel whose direction
performs a random walk :math:`c \\propto \\Delta t^{1/2}`, and a kernel wobbling inside a bounded
region :math:`c \\approx` const.

**End of Phase I** (:func:`phase_one_end`). Let :math:`a(t) = S(\\theta_t, \\theta_{t+\\Delta})` for the
*largest* stored gap :math:`\\Delta` (a gap long enough that the movement over it, not the
snapshot-to-snapshot jitter, dominates), smoothed by a centred running median over ``smooth``
snapshots; :math:`F` its median over the second half of the run (the Phase II floor) and
:math:`P` its peak. With fewer than ``min_drop``-fold between peak and floor (:math:`P < ` ``min_drop``
:math:`\\cdot F`) the kernel moves as fast late as early: no two phases. Otherwise Phase I ends at
the first snapshot :math:`t^*` from which the excess over the floor stays below a fraction
``fraction`` of its peak, :math:`a(t) - F \\le \\rho (P - F)`, for at least ``hold`` of the run (or to
its end); and Phase II, :math:`[t^*, T]`, must span at least ``min_phase_two`` of the run. (The first
version of this rule, version 1 (in the project's history before version 3), asked the velocity at the *smallest* gap to fall
below 10% of its peak for good: at the paper's scale its floor is jitter that does not shrink with
the gap, and the rule failed where the picture is plain.)

**Laziness** (:func:`laziness`): how far the kernel turns in the second half of Phase II compared
with Phase I, :math:`\\lambda = c(\\theta_m, \\theta_T) / c(\\theta_0, \\theta_{t^*})` with
:math:`m = (t^* + T)/2` (the second half, so that the tail of Phase I just after :math:`t^*` does not
count as Phase II movement). Below ``lazy_ratio`` (an order of magnitude) Phase II is *lazy*: the
kernel is as good as frozen, on the run's own scale.

**Floor exponent** (:func:`floor_exponent`): the Phase II floor :math:`f(dt)`, the median of
:math:`c(\\theta_t, \\theta_{t+dt})` over :math:`t \\ge t^*`, against :math:`dt`; :math:`\\beta` is the
least-squares slope of :math:`\\log f` on :math:`\\log dt`. The paper's Figure 1(b) signature (the same
floor for every ``dt``) is :math:`\\beta = 0`; a random walk of the direction gives 1/2, steady
turning 1.

**Plateau for every reference step** (:func:`growth_exponents`): for each reference step in Phase
II (every stored ``ref_step`` :math:`\\ge t^*`, and the middle of Phase II, when they leave enough of
the run), :math:`\\gamma_\\tau` is the log-log slope of :math:`c(\\theta_t, \\theta_\\tau)` against :math:`t - \\tau`
over the last three quarters of the lags, :math:`t - \\tau \\ge (T - \\tau)/4` (and at least ``min_lag``
snapshots; the rise over the first lags is the jitter and the tail of Phase I, not the cone's
growth). A plateau is :math:`\\gamma < ` ``plateau_exponent``
(default 1/4, half-way between a plateau, 0, and a random walk, 1/2).

**Late-growth share, read correctly** (:func:`late_growth_share`, :func:`share_exponent`): the share
of :math:`S(\\theta_T, \\theta_\\tau)` gained in the second half of :math:`[\\tau, T]`. For
:math:`S \\propto (t - \\tau)^p` it is :math:`1 - 2^{-p}`: steady turning (:math:`p = 2`) gives 3/4, a random
walk (:math:`p = 1`) 1/2, growth like :math:`\\sqrt{t}` 0.29, a plateau 0. (Version 1 read 1/2 as
"steady drift".)

**Embedding fidelity in Phase II** (:func:`phase_two_embedding_share`): the 2-D picture of Figure
1(c) is a projection, so it shortens distances; the share it keeps of the true chord distances
between Phase II kernels, :math:`\\sum_{i<j} \\lVert x_i - x_j\\rVert / \\sum_{i<j} c_{ij}` over
:math:`t_i, t_j \\ge t^*`, says how far the picture can be trusted where the cone claim lives.

**Verdict** (:func:`verdict`, labels in :data:`VERDICTS`):

* ``"no two phases"``: :func:`phase_one_end` is ``None``;
* ``"two phases, lazy"``: :math:`\\lambda <` ``lazy_ratio``;
* ``"two phases, cone"``: every judged reference step plateaus;
* ``"two phases, drifting"``: otherwise (the kernel keeps turning away without a plateau).

The floor exponent and the embedding share are reported with every verdict; they are not part of
it (the first is the paper's second signature, the second a caution on the picture).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from conelib.trajectory import distances_dataset, trajectory_dataset

__all__ = [
    "VERDICTS",
    "THRESHOLDS",
    "Verdict",
    "check_thresholds",
    "chord",
    "floor_exponent",
    "growth_exponents",
    "late_growth_share",
    "laziness",
    "phase_one_end",
    "phase_two_embedding_share",
    "share_exponent",
    "smoothed_adjacent",
    "verdict",
    "distances_dataset",
    "trajectory_dataset",
]

VERDICTS: tuple[str, ...] = ("two phases, cone", "two phases, lazy", "two phases, drifting", "no two phases")
"""The verdict labels, in a fixed order (their index is the integer code used by sweeps)."""

#: the thresholds of :func:`verdict` and their defaults (see the module docstring)
THRESHOLDS: dict[str, float] = {
    "fraction": 0.1,
    "min_drop": 4.0,
    "hold": 0.1,
    "min_phase_two": 0.25,
    "smooth": 5,
    "lazy_ratio": 0.1,
    "plateau_exponent": 0.25,
    "min_lag": 2,
}


def check_thresholds(**kwargs: Any) -> dict[str, float]:
    """The thresholds with the defaults filled in; ``ValueError`` naming the first one outside its range."""
    unknown = sorted(set(kwargs) - set(THRESHOLDS))
    if unknown:
        raise ValueError(f"unknown threshold(s) {unknown}; allowed: {sorted(THRESHOLDS)}")
    t = {**THRESHOLDS, **kwargs}
    rules = [
        ("fraction", 0 < t["fraction"] < 1, "in (0, 1)"),
        ("min_drop", t["min_drop"] >= 1, ">= 1"),
        ("hold", 0 <= t["hold"] < 1, "in [0, 1)"),
        ("min_phase_two", 0 <= t["min_phase_two"] < 1, "in [0, 1)"),
        ("smooth", int(t["smooth"]) == t["smooth"] and t["smooth"] >= 1, "a positive number of snapshots"),
        ("lazy_ratio", t["lazy_ratio"] >= 0, ">= 0"),
        ("plateau_exponent", t["plateau_exponent"] > 0, "> 0"),
        ("min_lag", int(t["min_lag"]) == t["min_lag"] and t["min_lag"] >= 1, "a positive number of snapshots"),
    ]
    for name, ok, allowed in rules:
        if not ok:
            raise ValueError(f"threshold {name} must be {allowed}, got {t[name]!r}")
    return t


def _check_ds(ds: xr.Dataset, needs: Sequence[str]) -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset (a kernel-dynamics result), got {type(ds).__name__}")
    missing = [v for v in needs if v not in ds.variables]
    if missing:
        raise ValueError(f"ds lacks {missing}; a kernel-dynamics Dataset (see conelib.trajectory.trajectory_dataset) "
                         f"has {sorted(map(str, ds.variables))}")


def chord(s: Any) -> Any:
    """The chord distance :math:`\\sqrt{2S}` between normalised kernels (proportional to the angle)."""
    return np.sqrt(2.0 * np.clip(s, 0.0, None))


# --------------------------------------------------------------------------------------------
# Phase I
# --------------------------------------------------------------------------------------------


def smoothed_adjacent(ds: xr.Dataset, *, dt: int | None = None, smooth: int = 5) -> xr.DataArray:
    """:math:`a(t) = S(\\theta_t, \\theta_{t+dt})` for ``dt`` (default the largest), where defined,
    smoothed by a centred running median over ``smooth`` snapshots (shorter windows at the ends)."""
    _check_ds(ds, ("adjacent_distance", "dt"))
    dts = ds["dt"].values
    dt = int(dts.max()) if dt is None else int(dt)
    if dt not in dts:
        raise ValueError(f"dt={dt} is not in the Dataset; it has dt = {dts.tolist()}")
    a = ds["adjacent_distance"].sel(dt=dt, drop=True)
    a = a.isel(step=np.nonzero(np.isfinite(a.values))[0])
    if smooth > 1 and a.sizes["step"] > 0:
        a = a.rolling(step=int(smooth), center=True, min_periods=1).median()
    return a


@dataclass(frozen=True)
class PhaseOne:
    """The end of Phase I and what it was read from (see :func:`phase_one_end`)."""

    end: int | None
    dt: int
    peak: float
    floor: float

    @property
    def drop(self) -> float:
        """Peak over floor of the smoothed adjacent distance (``inf`` for a zero floor)."""
        return float("inf") if self.floor <= 0 else self.peak / self.floor


def phase_one(ds: xr.Dataset, *, dt: int | None = None, fraction: float = 0.1, min_drop: float = 4.0,
              hold: float = 0.1, min_phase_two: float = 0.25, smooth: int = 5) -> PhaseOne:
    """:func:`phase_one_end` with the peak and floor it read (see the module docstring)."""
    check_thresholds(fraction=fraction, min_drop=min_drop, hold=hold, min_phase_two=min_phase_two, smooth=smooth)
    a = smoothed_adjacent(ds, dt=dt, smooth=smooth)
    dt = int(ds["dt"].values.max()) if dt is None else int(dt)
    steps, vals = a["step"].values.astype(int), a.values.astype(float)
    t_first, t_final = int(ds["step"].values.min()), int(ds["step"].values.max())
    if vals.size < 3:
        return PhaseOne(None, dt, float("nan"), float("nan"))
    late = vals[steps >= t_first + (t_final - t_first) / 2]
    floor = float(np.median(late)) if late.size else float(vals[-1])
    peak = float(vals.max())
    result = PhaseOne(None, dt, peak, floor)
    if not peak > 0 or peak < min_drop * floor:
        return result
    below = vals - floor <= fraction * (peak - floor)
    need = hold * (t_final - t_first)
    i_peak = int(np.argmax(vals))
    for i in range(i_peak, len(vals)):
        if not below[i]:
            continue
        j = i
        while j + 1 < len(vals) and below[j + 1]:
            j += 1
        if steps[j] - steps[i] >= need or j == len(vals) - 1:
            t_end = int(steps[i])
            if t_final - t_end < min_phase_two * (t_final - t_first):
                return result
            return PhaseOne(t_end, dt, peak, floor)
    return result


def phase_one_end(ds: xr.Dataset, **thresholds: Any) -> int | None:
    """End of Phase I, :math:`t^*` (``None``: no two phases); see the module docstring."""
    return phase_one(ds, **thresholds).end


# --------------------------------------------------------------------------------------------
# Phase II
# --------------------------------------------------------------------------------------------


def _pairwise(ds: xr.Dataset, t1: int, t2: int) -> float:
    return float(ds["pairwise_distance"].sel(step=t1, other_step=t2))


def laziness(ds: xr.Dataset, t_end: int) -> float:
    """:math:`c(\\theta_m, \\theta_T) / c(\\theta_0, \\theta_{t^*})`, :math:`m` the snapshot nearest the
    middle of Phase II (``inf`` if Phase I did not move)."""
    _check_ds(ds, ("pairwise_distance",))
    steps = ds["step"].values.astype(int)
    t0, T = int(steps.min()), int(steps.max())
    m = int(steps[np.argmin(np.abs(steps - (t_end + T) / 2))])
    first, second = float(chord(_pairwise(ds, t0, t_end))), float(chord(_pairwise(ds, m, T)))
    return float("inf") if first == 0 else second / first


def phase_two_floors(ds: xr.Dataset, t_end: int) -> xr.DataArray:
    """The Phase II floor :math:`f(dt)`: median of :math:`c(\\theta_t, \\theta_{t+dt})` over
    :math:`t \\ge t^*` where :math:`t + dt` is a snapshot, for every ``dt``."""
    _check_ds(ds, ("adjacent_distance",))
    c = chord(ds["adjacent_distance"]).where(ds["step"] >= t_end)
    return c.median("step", skipna=True)


def floor_exponent(ds: xr.Dataset, t_end: int) -> float:
    """:math:`\\beta`, the log-log slope of the Phase II floor against ``dt`` (NaN with fewer than two
    usable ``dt``)."""
    f = phase_two_floors(ds, t_end)
    ok = np.isfinite(f.values) & (f.values > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(f["dt"].values[ok].astype(float)), np.log(f.values[ok]), 1)[0])


def growth_exponent(ds: xr.Dataset, ref_step: int, *, min_lag: int = 2) -> float:
    """:math:`\\gamma_\\tau`: the log-log slope of :math:`c(\\theta_t, \\theta_\\tau)` against :math:`t - \\tau`,
    over :math:`t - \\tau \\ge \\max((T-\\tau)/4,` ``min_lag`` snapshots) (NaN with fewer than 3 such snapshots)."""
    _check_ds(ds, ("pairwise_distance",))
    steps = ds["step"].values.astype(int)
    if ref_step not in steps:
        raise ValueError(f"ref_step={ref_step} is not a snapshot step")
    gap = int(np.min(np.diff(steps))) if steps.size > 1 else 1
    lag = steps - ref_step
    keep = (lag >= min_lag * gap) & (lag >= (steps.max() - ref_step) / 4)
    c = chord(ds["pairwise_distance"].sel(other_step=ref_step).values[keep])
    good = c > 0
    if good.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(lag[keep][good].astype(float)), np.log(c[good]), 1)[0])


def judged_refs(ds: xr.Dataset, t_end: int, *, min_lag: int = 2) -> list[int]:
    """The reference steps at which the plateau is judged: every stored ``ref_step`` in Phase II
    (:math:`\\tau \\ge t^*`) and the middle of Phase II, that leave at least ``3 + min_lag`` snapshots.
    (Not :math:`t^*` itself: there the tail of Phase I, which levels off, would read as a plateau
    whatever Phase II does.)"""
    steps = ds["step"].values.astype(int)
    stored = [int(t) for t in ds["ref_step"].values] if "ref_step" in ds.coords else []
    mid = int(steps[np.argmin(np.abs(steps - (t_end + steps.max()) / 2))])
    refs = sorted({mid, *[t for t in stored if t >= t_end]})
    return [t for t in refs if (steps > t).sum() >= 3 + min_lag]


def growth_exponents(ds: xr.Dataset, t_end: int, *, min_lag: int = 2) -> dict[int, float]:
    """:math:`\\gamma_\\tau` for every reference step of :func:`judged_refs`."""
    return {t: growth_exponent(ds, t, min_lag=min_lag) for t in judged_refs(ds, t_end, min_lag=min_lag)}


def late_growth_share(ds: xr.Dataset, ref_step: int) -> float:
    """:math:`(\\hat g(T) - \\hat g(m)) / \\hat g(T)` for :math:`g(t) = S(\\theta_t, \\theta_\\tau)`, with
    :math:`\\hat g` the least-squares line through the second half of :math:`[\\tau, T]` and :math:`m` its
    midpoint; for :math:`S \\propto (t-\\tau)^p` this is close to :math:`1 - 2^{-p}` (see :func:`share_exponent`)."""
    g = ds["pairwise_distance"].sel(other_step=ref_step)
    keep = g["step"].values >= ref_step
    steps, vals = g["step"].values[keep].astype(float), g.values[keep].astype(float)
    if steps.size < 3:
        raise ValueError(f"ref_step={ref_step} leaves fewer than 3 snapshots after it")
    mid = ref_step + (steps[-1] - ref_step) / 2
    half = steps >= mid
    if half.sum() < 2:  # too few snapshots for a line: the two end points
        half = steps >= steps[-2]
    slope, intercept = np.polyfit(steps[half], vals[half], deg=1)
    final, g_mid = float(slope * steps[-1] + intercept), float(slope * mid + intercept)
    return (final - g_mid) / final if final > 0 else 0.0


def share_exponent(share: float) -> float:
    """The exponent :math:`p` of :math:`S \\propto (t - \\tau)^p` that gives a late-growth share:
    :math:`p = -\\log_2(1 - \\text{share})` (share 1/2 -> 1, a random walk; 3/4 -> 2, steady turning)."""
    if not share < 1:
        return float("inf")
    return float(-np.log2(1.0 - max(share, 0.0)))


def phase_two_embedding_share(ds: xr.Dataset, t_end: int) -> float:
    """Share of the true chord distances between Phase II kernels kept by the 2-D embedding."""
    _check_ds(ds, ("pairwise_distance", "cone_x", "cone_y"))
    keep = ds["step"].values >= t_end
    xy = np.stack([ds["cone_x"].values[keep], ds["cone_y"].values[keep]], axis=1)
    true = chord(ds["pairwise_distance"].values[np.ix_(keep, keep)])
    emb = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)
    iu = np.triu_indices(int(keep.sum()), 1)
    total = float(true[iu].sum())
    return float("nan") if total == 0 else float(emb[iu].sum() / total)


# --------------------------------------------------------------------------------------------
# Verdict
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A run's classification and the measures behind it (``None`` / NaN where undefined).

    Attributes:
        verdict: one of :data:`VERDICTS`.
        phase_one_end: :math:`t^*`.
        drop: peak over floor of the smoothed adjacent distance at the largest ``dt``.
        laziness: :math:`\\lambda`.
        floor_exponent: :math:`\\beta`.
        growth_exponents: :math:`\\gamma_\\tau` by reference step (JSON-able: keys are strings).
        max_growth_exponent: the largest :math:`\\gamma_\\tau` (what the plateau test reads).
        plateau_refs: how many judged reference steps plateau, of ``n_refs``.
        late_growth_share: at :math:`\\tau = t^*`.
        embedding_share: :func:`phase_two_embedding_share`.
        peak, floor: the peak and the Phase II floor of the smoothed adjacent distance that
            ``drop`` is the ratio of (:class:`PhaseOne`).
    """

    verdict: str
    phase_one_end: int | None
    drop: float
    laziness: float | None = None
    floor_exponent: float | None = None
    growth_exponents: dict[str, float] | None = None
    max_growth_exponent: float | None = None
    plateau_refs: int | None = None
    n_refs: int | None = None
    late_growth_share: float | None = None
    embedding_share: float | None = None
    peak: float | None = None
    floor: float | None = None

    def asdict(self) -> dict:
        return asdict(self)

    @property
    def code(self) -> int:
        """Index of :attr:`verdict` in :data:`VERDICTS`."""
        return VERDICTS.index(self.verdict)


def verdict(ds: xr.Dataset, **thresholds: Any) -> Verdict:
    """Classify a run (see the module docstring); ``thresholds`` override :data:`THRESHOLDS`."""
    t = check_thresholds(**thresholds)
    p1 = phase_one(ds, fraction=t["fraction"], min_drop=t["min_drop"], hold=t["hold"],
                   min_phase_two=t["min_phase_two"], smooth=int(t["smooth"]))
    if p1.end is None:
        return Verdict("no two phases", None, p1.drop, peak=p1.peak, floor=p1.floor)
    t_end = p1.end
    lam = laziness(ds, t_end)
    beta = floor_exponent(ds, t_end)
    gammas = growth_exponents(ds, t_end, min_lag=int(t["min_lag"]))
    finite = [g for g in gammas.values() if np.isfinite(g)]
    n_plateau = sum(g < t["plateau_exponent"] for g in finite)
    share = late_growth_share(ds, t_end) if (ds["step"].values > t_end).sum() >= 3 else None
    emb = phase_two_embedding_share(ds, t_end) if "cone_x" in ds else None
    if lam < t["lazy_ratio"]:
        label = "two phases, lazy"
    elif finite and n_plateau == len(finite):
        label = "two phases, cone"
    else:
        label = "two phases, drifting"
    return Verdict(label, t_end, p1.drop, lam, beta, {str(k): v for k, v in gammas.items()},
                   max(finite) if finite else None, n_plateau, len(finite), share, emb, p1.peak, p1.floor)
