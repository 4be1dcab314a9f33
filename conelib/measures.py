"""Measures of the two phases and of the cone, read off a kernel-dynamics Dataset.

The paper describes the phases by eye (Zhou et al. 2025, Section 4: "Phase I (approximately
0 < t < 2000)"; "the kernel distance ... first increases and then keeps nearly constant"). Here
they get stated definitions, so that runs can be compared and swept:

**End of Phase I** (:func:`phase_one_end`). With :math:`v(t)` the kernel velocity for the smallest
``dt`` and :math:`v^* = \\max_t v(t)` its peak, Phase I ends at the first snapshot step
:math:`t^*` after which :math:`v(t) \\le \\rho\\, v^*` for *every* later snapshot (``fraction``
:math:`\\rho`, default 0.1). If no such step leaves at least ``min_phase_two`` of the run for Phase
II, there is no two-phase pattern and the function returns ``None``.

**Cone width** (:func:`cone_width`). For a reference step :math:`\\tau \\ge t^*`, the curve
:math:`g(t) = S(\\theta_t, \\theta_\\tau)` for :math:`t \\ge \\tau`: its final level
:math:`g(T)` (how far the kernel gets from :math:`H(\\tau)`: the cone's width seen from
:math:`\\tau`) and its *late-growth share* :math:`(g(T) - g(m)) / g(T)` with :math:`m` the midpoint
of :math:`[\\tau, T]`. A curve that rises and then stays flat has a share near 0 (a plateau); steady
linear drift has a share near 1/2.

**Verdict** (:func:`verdict`):

* ``"no two phases"``: :func:`phase_one_end` is ``None``;
* ``"two phases, lazy"``: the kernel is frozen after Phase I, :math:`g(T) < ` ``lazy_tol``;
* ``"two phases, cone"``: :math:`g` plateaus (late-growth share below ``plateau_share``);
* ``"two phases, drifting"``: the velocity drops, but the kernel keeps drifting away from
  :math:`H(\\tau)` without a plateau.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

VERDICTS: tuple[str, ...] = ("two phases, cone", "two phases, lazy", "two phases, drifting", "no two phases")


def phase_one_end(ds: xr.Dataset, *, dt: int | None = None, fraction: float = 0.1, min_phase_two: float = 0.25) -> int | None:
    """End of Phase I: first step after which the kernel velocity stays below ``fraction`` of its peak.

    Args:
        ds: a kernel-dynamics Dataset (needs ``velocity`` over ``step`` × ``dt``).
        dt: which velocity to use (default the smallest ``dt``).
        fraction: the threshold :math:`\\rho` relative to the peak velocity, in (0, 1).
        min_phase_two: Phase II must span at least this fraction of the run, else ``None``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if not 0 <= min_phase_two < 1:
        raise ValueError(f"min_phase_two must be in [0, 1), got {min_phase_two}")
    dts = ds["dt"].values
    dt = int(dts.min()) if dt is None else dt
    if dt not in dts:
        raise ValueError(f"dt={dt} is not in the Dataset; it has dt = {dts.tolist()}")
    v = ds["velocity"].sel(dt=dt)
    v = v[np.isfinite(v.values)]
    steps, vals = v["step"].values, v.values
    if vals.size < 2 or not np.nanmax(vals) > 0:
        return None
    thresh = fraction * vals.max()
    above = np.nonzero(vals > thresh)[0]
    last_above = above[-1]
    if last_above + 1 >= vals.size:
        return None
    t_end = int(steps[last_above + 1])
    t_final = int(ds["step"].values.max())
    if t_final - t_end < min_phase_two * t_final:
        return None
    return t_end


@dataclass(frozen=True)
class ConeWidth:
    ref_step: int
    final: float  # g(T) = S(θ_T, θ_τ)
    late_growth_share: float  # (g(T) - g(m)) / g(T)
    plateau: bool


def cone_width(ds: xr.Dataset, ref_step: int, *, plateau_share: float = 0.3) -> ConeWidth:
    """Final distance from :math:`H(\\tau)` and whether :math:`S(\\theta_t, \\theta_\\tau)` plateaus.

    ``ref_step`` may be any snapshot step (read from ``pairwise_distance``).
    """
    snaps = ds["step"].values
    if ref_step not in snaps:
        raise ValueError(f"ref_step={ref_step} is not a snapshot step; snapshots run from {snaps.min()} to {snaps.max()}")
    g = ds["pairwise_distance"].sel(other_step=ref_step)
    g = g.where(g["step"] >= ref_step, drop=True)
    steps, vals = g["step"].values, g.values
    if steps.size < 3:
        raise ValueError(f"ref_step={ref_step} leaves fewer than 3 snapshots after it")
    final = float(vals[-1])
    mid = ref_step + (steps[-1] - ref_step) / 2
    g_mid = float(np.interp(mid, steps, vals))
    share = (final - g_mid) / final if final > 0 else 0.0
    return ConeWidth(int(ref_step), final, float(share), bool(share < plateau_share))


@dataclass(frozen=True)
class Verdict:
    verdict: str
    phase_one_end: int | None
    ref_step: int | None
    cone_final: float | None
    late_growth_share: float | None

    def asdict(self) -> dict:
        return asdict(self)


def verdict(
    ds: xr.Dataset,
    *,
    fraction: float = 0.1,
    min_phase_two: float = 0.25,
    lazy_tol: float = 1e-3,
    plateau_share: float = 0.3,
) -> Verdict:
    """Classify a run (see the module docstring); the cone is seen from the end of Phase I, :math:`\\tau = t^*`."""
    t_end = phase_one_end(ds, fraction=fraction, min_phase_two=min_phase_two)
    if t_end is None:
        return Verdict("no two phases", None, None, None, None)
    cw = cone_width(ds, t_end, plateau_share=plateau_share)
    if cw.final < lazy_tol:
        label = "two phases, lazy"
    elif cw.plateau:
        label = "two phases, cone"
    else:
        label = "two phases, drifting"
    return Verdict(label, t_end, cw.ref_step, cw.final, cw.late_growth_share)
