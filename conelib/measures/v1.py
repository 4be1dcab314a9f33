"""Version 1 of the phase and cone measures (the velocity rule), kept for comparison with :mod:`conelib.measures`.

These were the project's first definitions. At the paper's scale (T = 10^4 on full MNIST) they
misread runs: the velocity at the smallest ``dt`` is dominated by a Phase II floor that does not
scale with ``dt``, so "a ten-fold drop of the velocity" fails where the paper's Figure 1 picture is
plain, and the late-growth share was read as if S grew linearly with the angle (it grows like its
square). :mod:`conelib.measures` holds the definitions in use; the book's "Measuring the phases"
page shows both on the stored runs.


The paper describes the phases by eye (Zhou et al. 2025, Section 4: "Phase I (approximately
0 < t < 2000)"; "the kernel distance ... first increases and then keeps nearly constant"), and
leaves open which factors decide whether they appear (Section 5). Here they get stated
definitions, so that runs can be compared and swept (the book's "Measuring the phases" chapter states the later versions rules):

**End of Phase I** (:func:`phase_one_end`). Let :math:`v(t)` be the kernel velocity
(eq. 5, :math:`v(t) = S(\\theta_t, \\theta_{t+dt})/dt`) for the smallest stored ``dt``, and
:math:`\\bar v(t)` its centred running median over ``smooth`` snapshots (default 5; 1 = no
smoothing). With :math:`\\bar v^* = \\max_t \\bar v(t)` its peak, Phase I ends at the first
snapshot step :math:`t^*` after which :math:`\\bar v(t) \\le \\rho\\, \\bar v^*` for *every* later
snapshot (``fraction`` :math:`\\rho`, default 0.1). If no such step leaves at least
``min_phase_two`` of the run (default a quarter) for Phase II, there is no two-phase pattern and
the function returns ``None``. The running median keeps one noisy snapshot in Phase II from
undoing the whole phase (the adjacent distance of a kernel wobbling in a cone has heavy-tailed
noise; unsmoothed, single spikes above :math:`\\rho \\bar v^*` are common).

**Cone width** (:func:`cone_width`). For a reference step :math:`\\tau` (the end of Phase I in the
verdict), follow :math:`g(t) = S(\\theta_t, \\theta_\\tau)` for :math:`t \\ge \\tau` up to the last
step :math:`T`, with midpoint :math:`m = (\\tau + T)/2`. Fit a least-squares line :math:`\\hat g`
to the snapshots of :math:`g` in :math:`[m, T]` (the second half). Then

* the *final level* is :math:`\\hat g(T)`: how far the kernel gets from :math:`H(\\tau)` by the
  end (the cone's width seen from :math:`\\tau`);
* the *late-growth share* is :math:`(\\hat g(T) - \\hat g(m)) / \\hat g(T)`: the part of that
  distance still being gained in the second half. A curve that rises and then stays flat has a
  share near 0 (a plateau); steady linear drift from :math:`g(\\tau) = 0` has a share of exactly
  1/2; an accelerating drift, more.

The line, rather than the two end points, keeps the numbers steady when :math:`g` wobbles from
snapshot to snapshot; when :math:`g` is linear on :math:`[m, T]` both readings coincide.

**Velocity drop** (reported, not used by the verdict): :math:`\\bar v^*` divided by the median of
:math:`\\bar v` over the second half of the run, a continuous companion of the threshold
:math:`\\rho`.

**Verdict** (:func:`verdict`, labels in :data:`VERDICTS_V1`):

* ``"no two phases"``: :func:`phase_one_end` is ``None``;
* ``"two phases, lazy"``: the kernel is frozen after Phase I, :math:`\\hat g(T) <` ``lazy_tol``
  (default :math:`10^{-3}`);
* ``"two phases, cone"``: :math:`g` plateaus (late-growth share below ``plateau_share``, 0.3);
* ``"two phases, drifting"``: the velocity drops, but the kernel keeps drifting away from
  :math:`H(\\tau)` without a plateau.

:func:`trajectory_dataset` builds the Dataset these functions read from raw kernels (for synthetic
trajectories, or kernels computed elsewhere), with the variables and coordinates that
:mod:`conelib.experiments.kernel_dynamics` stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

__all__ = ["VERDICTS_V1", "ConeWidth", "check_thresholds", "Verdict", "cone_width", "phase_one_end",
           "smoothed_velocity", "velocity_drop", "verdict"]

VERDICTS_V1: tuple[str, ...] = ("two phases, cone", "two phases, lazy", "two phases, drifting", "no two phases")
"""The verdict labels of version 1, in a fixed order."""

# --------------------------------------------------------------------------------------------
# Phase I
# --------------------------------------------------------------------------------------------


def _check_ds(ds: xr.Dataset, needs: Sequence[str]) -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset (a kernel-dynamics result), got {type(ds).__name__}")
    missing = [v for v in needs if v not in ds.variables]
    if missing:
        raise ValueError(f"ds lacks {missing}; a kernel-dynamics Dataset (see conelib.measures.trajectory_dataset) "
                         f"has {sorted(map(str, ds.variables))}")


def smoothed_velocity(ds: xr.Dataset, *, dt: int | None = None, smooth: int = 5) -> xr.DataArray:
    """:math:`\\bar v(t)`: the velocity for ``dt`` (default the smallest), NaNs dropped, then a
    centred running median over ``smooth`` snapshots (shorter windows at the ends)."""
    _check_ds(ds, ("velocity", "dt"))
    if int(smooth) != smooth or smooth < 1:
        raise ValueError(f"smooth must be a positive number of snapshots (1 = no smoothing), got {smooth!r}")
    dts = ds["dt"].values
    dt = int(dts.min()) if dt is None else int(dt)
    if dt not in dts:
        raise ValueError(f"dt={dt} is not in the Dataset; it has dt = {dts.tolist()}")
    v = ds["velocity"].sel(dt=dt, drop=True)
    v = v.isel(step=np.nonzero(np.isfinite(v.values))[0])
    if smooth > 1 and v.sizes["step"] > 0:
        v = v.rolling(step=int(smooth), center=True, min_periods=1).median()
    return v


def phase_one_end(
    ds: xr.Dataset,
    *,
    dt: int | None = None,
    fraction: float = 0.1,
    min_phase_two: float = 0.25,
    smooth: int = 5,
) -> int | None:
    """End of Phase I: the first step after which the (smoothed) velocity stays below ``fraction`` of its peak.

    See the module docstring for the definition (:math:`t^*`).

    Args:
        ds: a kernel-dynamics Dataset (needs ``velocity`` over ``step`` × ``dt``).
        dt: which velocity to use (default the smallest ``dt``).
        fraction: the threshold :math:`\\rho` relative to the peak velocity, in (0, 1).
        min_phase_two: Phase II must span at least this fraction of the run, in [0, 1); else ``None``.
        smooth: running-median window in snapshots (1 = the raw velocity).

    Returns:
        The snapshot step :math:`t^*`, or ``None`` when the run shows no two phases.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if not 0 <= min_phase_two < 1:
        raise ValueError(f"min_phase_two must be in [0, 1), got {min_phase_two}")
    v = smoothed_velocity(ds, dt=dt, smooth=smooth)
    steps, vals = v["step"].values, v.values
    if vals.size < 2 or not np.max(vals) > 0:
        return None
    above = np.nonzero(vals > fraction * vals.max())[0]
    last_above = above[-1]
    if last_above + 1 >= vals.size:
        return None
    t_end = int(steps[last_above + 1])
    t_first, t_final = int(ds["step"].values.min()), int(ds["step"].values.max())
    if t_final - t_end < min_phase_two * (t_final - t_first):
        return None
    return t_end


def velocity_drop(ds: xr.Dataset, *, dt: int | None = None, smooth: int = 5) -> float:
    """:math:`\\bar v^* / \\operatorname{median}\\{\\bar v(t) : t \\ge T/2\\}` (``inf`` if that median is 0).

    How many times the smoothed velocity falls from its peak to its typical late value; the
    verdict's threshold ``fraction`` = 0.1 asks, roughly, for a drop above 10 that lasts.
    """
    v = smoothed_velocity(ds, dt=dt, smooth=smooth)
    if v.sizes["step"] == 0:
        return float("nan")
    steps = v["step"].values
    mid = steps.min() + (int(ds["step"].values.max()) - steps.min()) / 2
    late = float(np.median(v.values[steps >= mid])) if np.any(steps >= mid) else float(v.values[-1])
    peak = float(v.max())
    return float("inf") if late == 0 else peak / late


# --------------------------------------------------------------------------------------------
# Phase II: the cone
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConeWidth:
    """The curve :math:`g(t) = S(\\theta_t, \\theta_\\tau)`, :math:`t \\ge \\tau`, summarised.

    Attributes:
        ref_step: :math:`\\tau`.
        final: :math:`\\hat g(T)`, the least-squares line through :math:`g` on :math:`[m, T]` at :math:`T`.
        late_growth_share: :math:`(\\hat g(T) - \\hat g(m)) / \\hat g(T)` (0 when :math:`\\hat g(T) \\le 0`).
        plateau: ``late_growth_share < plateau_share``.
    """

    ref_step: int
    final: float
    late_growth_share: float
    plateau: bool


def cone_width(ds: xr.Dataset, ref_step: int, *, plateau_share: float = 0.3) -> ConeWidth:
    """Final distance from :math:`H(\\tau)` and whether :math:`S(\\theta_t, \\theta_\\tau)` plateaus.

    ``ref_step`` may be any snapshot step (read from ``pairwise_distance``); see the module
    docstring for the definitions.

    Raises:
        ValueError: if ``ref_step`` is not a snapshot step or leaves fewer than 3 snapshots after it.
    """
    _check_ds(ds, ("pairwise_distance",))
    if not 0 < plateau_share < 1:
        raise ValueError(f"plateau_share must be in (0, 1), got {plateau_share}")
    snaps = ds["step"].values
    if ref_step not in snaps:
        raise ValueError(f"ref_step={ref_step} is not a snapshot step; snapshots run from {snaps.min()} to {snaps.max()}")
    g = ds["pairwise_distance"].sel(other_step=ref_step)
    keep = g["step"].values >= ref_step
    steps, vals = g["step"].values[keep].astype(float), g.values[keep].astype(float)
    if steps.size < 3:
        raise ValueError(f"ref_step={ref_step} leaves fewer than 3 snapshots after it (last snapshot {snaps.max()})")
    t_final = steps[-1]
    mid = ref_step + (t_final - ref_step) / 2
    half = steps >= mid
    if half.sum() < 2:  # too few snapshots for a line: fall back to the two end points
        half = steps >= steps[-2]
    slope, intercept = np.polyfit(steps[half], vals[half], deg=1)
    final = float(slope * t_final + intercept)
    g_mid = float(slope * mid + intercept)
    share = (final - g_mid) / final if final > 0 else 0.0
    return ConeWidth(int(ref_step), final, float(share), bool(share < plateau_share))


# --------------------------------------------------------------------------------------------
# Verdict
# --------------------------------------------------------------------------------------------


def check_thresholds(
    *,
    fraction: float = 0.1,
    min_phase_two: float = 0.25,
    smooth: int = 5,
    lazy_tol: float = 1e-3,
    plateau_share: float = 0.3,
) -> None:
    """Raise ``ValueError`` naming the first parameter of :func:`verdict` outside its allowed range."""
    rules = [
        ("fraction", fraction, 0 < fraction < 1, "in (0, 1)"),
        ("min_phase_two", min_phase_two, 0 <= min_phase_two < 1, "in [0, 1)"),
        ("smooth", smooth, int(smooth) == smooth and smooth >= 1, "a positive number of snapshots (1 = no smoothing)"),
        ("lazy_tol", lazy_tol, lazy_tol >= 0, "a non-negative kernel distance"),
        ("plateau_share", plateau_share, 0 < plateau_share < 1, "in (0, 1)"),
    ]
    for name, value, ok, allowed in rules:
        if not ok:
            raise ValueError(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class Verdict:
    """A run's classification and the measures behind it (``None`` where undefined).

    Attributes:
        verdict: one of :data:`VERDICTS_V1`.
        phase_one_end: :math:`t^*` (:func:`phase_one_end`).
        ref_step: the :math:`\\tau` the cone is seen from (:math:`t^*`).
        cone_final: :math:`\\hat g(T)` (:func:`cone_width`).
        late_growth_share: :math:`(\\hat g(T) - \\hat g(m)) / \\hat g(T)`.
        velocity_drop: :func:`velocity_drop` (defined for every run).
    """

    verdict: str
    phase_one_end: int | None
    ref_step: int | None
    cone_final: float | None
    late_growth_share: float | None
    velocity_drop: float | None = None

    def asdict(self) -> dict:
        return asdict(self)

    @property
    def code(self) -> int:
        """Index of :attr:`verdict` in :data:`VERDICTS_V1`."""
        return VERDICTS_V1.index(self.verdict)


def verdict(
    ds: xr.Dataset,
    *,
    fraction: float = 0.1,
    min_phase_two: float = 0.25,
    smooth: int = 5,
    lazy_tol: float = 1e-3,
    plateau_share: float = 0.3,
) -> Verdict:
    """Classify a run (see the module docstring); the cone is seen from the end of Phase I, :math:`\\tau = t^*`."""
    check_thresholds(fraction=fraction, min_phase_two=min_phase_two, smooth=smooth, lazy_tol=lazy_tol,
                     plateau_share=plateau_share)
    drop = velocity_drop(ds, smooth=smooth)
    t_end = phase_one_end(ds, fraction=fraction, min_phase_two=min_phase_two, smooth=smooth)
    if t_end is None:
        return Verdict("no two phases", None, None, None, None, drop)
    cw = cone_width(ds, t_end, plateau_share=plateau_share)
    if cw.final < lazy_tol:
        label = "two phases, lazy"
    elif cw.plateau:
        label = "two phases, cone"
    else:
        label = "two phases, drifting"
    return Verdict(label, t_end, cw.ref_step, cw.final, cw.late_growth_share, drop)
