"""Tests of `conelib.measures.v1` (the first, velocity-based rules, kept for comparison) on synthetic kernel trajectories whose answer is known by construction.

Two kinds of trajectory:

* rank-one kernels :math:`H_t = u_t u_t^\\top` with :math:`u_t = (\\cos\\varphi_t, \\sin\\varphi_t)`, for
  which the kernel distance has the closed form :math:`S(\\theta_s, \\theta_t) = \\sin^2(\\varphi_t -
  \\varphi_s)` (since :math:`\\langle uu^\\top, ww^\\top\\rangle_F = (u\\cdot w)^2`): choosing
  :math:`\\varphi_t` fixes every velocity and every :math:`S(\\theta_t, \\theta_\\tau)` exactly, so
  the measures are checked against numbers computed by hand from their definitions;
* random PSD kernels :math:`H_t = A_t A_t^\\top` with :math:`A_t` moving on a path we control: a fast
  drift that then stays inside a cone (a mean-reverting wobble), a jump and then frozen, a steady
  drift at constant speed (conjugation by a one-parameter rotation group, which makes
  :math:`S(\\theta_t, \\theta_{t+dt})` exactly constant in :math:`t`), and a fast drift followed by a
  slow steady drift. Each must get its verdict, for several seeds.

`trajectory_dataset` itself is checked against a brute-force loop of `kernel_distance` in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from conelib.trajectory import trajectory_dataset

from conelib.measures.v1 import (
    VERDICTS_V1 as VERDICTS,
    cone_width,
    phase_one_end,
    smoothed_velocity,
    velocity_drop,
    verdict,
)

STEPS = np.arange(0, 2001, 20)
DTS = [20, 40, 80]
TAUS = [200, 400, 800]


# ------------------------------------------------------------------------------------------
# trajectory builders
# ------------------------------------------------------------------------------------------


def rank_one(phi: np.ndarray) -> list[np.ndarray]:
    """:math:`H_t = u_t u_t^\\top`, :math:`u_t = (\\cos\\varphi_t, \\sin\\varphi_t)`: :math:`S = \\sin^2(\\Delta\\varphi)`."""
    return [np.outer(u, u) for u in np.stack([np.cos(phi), np.sin(phi)], axis=1)]


def _ou(rng: np.random.Generator, shape: tuple[int, ...], corr: float) -> np.ndarray:
    """A stationary Ornstein-Uhlenbeck path, one sample per snapshot, correlation time ``corr`` snapshots."""
    a = np.exp(-1.0 / corr)
    x = rng.standard_normal(shape)
    out = []
    for _ in STEPS:
        out.append(x.copy())
        x = a * x + np.sqrt(1 - a * a) * rng.standard_normal(shape)
    return np.array(out)


def _fast_then_settle(rng: np.random.Generator, n: int, t0: float = 150.0) -> list[np.ndarray]:
    """:math:`A_t = A_0 + (1 - e^{-t/t_0})(A_1 - A_0)`: fast early motion that settles on :math:`A_1`."""
    a0, a1 = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    return [a0 + (1 - np.exp(-t / t0)) * (a1 - a0) for t in STEPS]


def _rotation(rng: np.random.Generator, n: int, angle: float) -> np.ndarray:
    """``expm(angle * K)`` for a random skew-symmetric ``K`` of unit Frobenius norm."""
    k = rng.standard_normal((n, n))
    k = k - k.T
    return expm(angle * k / np.linalg.norm(k))


def cone_kernels(seed: int, n: int = 10, eps: float = 0.05, corr: float = 15) -> list[np.ndarray]:
    """Fast drift, then a bounded wobble around :math:`A_1` (OU noise of size ``eps``): a cone."""
    rng = np.random.default_rng(seed)
    a = _fast_then_settle(rng, n)
    u = _ou(rng, (n, n), corr)
    return [(at + eps * ut) @ (at + eps * ut).T for at, ut in zip(a, u)]


def lazy_kernels(seed: int, n: int = 10) -> list[np.ndarray]:
    """A linear move from :math:`A_0` to :math:`A_1` over steps 0-200, then frozen."""
    rng = np.random.default_rng(seed)
    a0, a1 = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    return [(a0 + s * (a1 - a0)) @ (a0 + s * (a1 - a0)).T for s in np.clip(STEPS / 200, 0, 1)]


def steady_kernels(seed: int, n: int = 10, speed: float = 3e-4) -> list[np.ndarray]:
    """:math:`H_t = R^t H_0 R^{-t}` with one rotation :math:`R` per snapshot: constant speed forever."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    r = _rotation(rng, n, speed * 20)
    out = []
    for _ in STEPS:
        out.append(a @ a.T)
        a = r @ a
    return out


def drop_then_drift_kernels(seed: int, n: int = 10, speed: float = 1e-3) -> list[np.ndarray]:
    """Fast drift that settles (as in the cone), composed with a slow steady rotation that never stops."""
    rng = np.random.default_rng(seed)
    a = _fast_then_settle(rng, n)
    r = _rotation(rng, n, speed * 20)
    out, rt = [], np.eye(n)
    for at in a:
        b = rt @ at
        out.append(b @ b.T)
        rt = r @ rt
    return out


def as_ds(kernels: list[np.ndarray], steps: np.ndarray = STEPS):
    return trajectory_dataset(steps, kernels, dts=DTS, taus=TAUS)


# ------------------------------------------------------------------------------------------
# closed forms on rank-one kernels
# ------------------------------------------------------------------------------------------


def piecewise_phi(t1: int, w1: float, w2: float) -> np.ndarray:
    """Angle growing at ``w1`` per step until ``t1``, at ``w2`` after: velocity sin²(w dt)/dt per phase."""
    return np.where(STEPS <= t1, w1 * STEPS, w1 * t1 + w2 * (STEPS - t1))


@pytest.mark.parametrize("smooth", [1, 3, 5])
@pytest.mark.parametrize("t1", [300, 600])
def test_phase_one_end_is_where_the_fast_rotation_stops(smooth, t1):
    ds = as_ds(rank_one(piecewise_phi(t1, w1=2e-3, w2=2e-4)))
    # velocity (dt = 20): sin²(0.04)/20 up to step t1 - 20 (its window ends at t1), then sin²(0.004)/20,
    # 100 times lower; with any centred median of <= 5 snapshots the switch stays at t1.
    assert phase_one_end(ds, smooth=smooth) == t1
    assert phase_one_end(ds, dt=40, smooth=1) == t1
    # the peak/late ratio of the smoothed velocity: exactly sin²(0.04) / sin²(0.004)
    assert velocity_drop(ds, smooth=smooth) == pytest.approx(np.sin(0.04) ** 2 / np.sin(0.004) ** 2, rel=1e-9)


def test_phase_one_end_threshold_and_min_phase_two():
    ds = as_ds(rank_one(piecewise_phi(600, w1=2e-3, w2=2e-4)))
    # the late velocity is 1/100 of the peak: a threshold below that never ends Phase I
    assert phase_one_end(ds, fraction=0.005) is None
    assert phase_one_end(ds, fraction=0.02) == 600
    # Phase II is 1400 of 2000 steps: required 0.7 of the run passes, 0.71 does not
    assert phase_one_end(ds, min_phase_two=0.7) == 600
    assert phase_one_end(ds, min_phase_two=0.71) is None
    assert verdict(ds, min_phase_two=0.71).verdict == "no two phases"


def test_constant_speed_has_no_phase_one_end():
    ds = as_ds(rank_one(1e-3 * STEPS))
    assert phase_one_end(ds, smooth=1) is None
    assert velocity_drop(ds) == pytest.approx(1.0, rel=1e-9)


def test_running_median_ignores_one_late_spike():
    """A single late jump of the angle: raw, Phase I "ends" after the spike; smoothed, it ends at t1."""
    phi = piecewise_phi(300, w1=2e-3, w2=2e-4)
    phi[STEPS >= 1500] += 0.1  # one jump between snapshots 1480 and 1500: one spike in v (dt = 20)
    ds = as_ds(rank_one(phi))
    v = ds.velocity.sel(dt=20)
    assert float(v.sel(step=1480)) > 0.1 * float(v.max())  # the spike is above the threshold
    assert phase_one_end(ds, smooth=1) == 1500  # first step after the last raw value above it
    assert phase_one_end(ds, smooth=5) == 300
    # the oracle of the running median at the spike: the median of 5 values, 4 of them the slow speed
    assert float(smoothed_velocity(ds, smooth=5).sel(step=1480)) == pytest.approx(np.sin(0.004) ** 2 / 20, rel=1e-9)


def _phi_for_g(tau: int, g: np.ndarray) -> np.ndarray:
    """An angle path with :math:`S(\\theta_t, \\theta_\\tau) = g(t)` exactly for t >= tau (g in [0, 1], g(tau) = 0)."""
    assert g[list(STEPS).index(tau)] == 0
    phi = np.where(STEPS < tau, 1e-3 * (STEPS - tau), 0.0)
    after = STEPS >= tau
    phi[after] = np.arcsin(np.sqrt(g[after]))
    return phi


def test_cone_width_of_an_exact_linear_drift():
    tau, k = 400, 2e-5
    g = np.clip(k * (STEPS - tau), 0, None)
    cw = cone_width(as_ds(rank_one(_phi_for_g(tau, g))), tau)
    assert cw.final == pytest.approx(k * (2000 - tau), rel=1e-9)
    assert cw.late_growth_share == pytest.approx(0.5, abs=1e-9)  # (kL - kL/2) / kL
    assert not cw.plateau


def test_cone_width_of_an_exact_plateau():
    tau, k, level = 400, 1e-4, 0.02  # g reaches its level at step 600, before the midpoint 1200
    g = np.clip(k * (STEPS - tau), 0, level)
    cw = cone_width(as_ds(rank_one(_phi_for_g(tau, g))), tau)
    assert cw.final == pytest.approx(level, rel=1e-9)
    assert cw.late_growth_share == pytest.approx(0.0, abs=1e-9)
    assert cw.plateau


def test_cone_width_reads_a_line_through_a_wobbling_second_half():
    """g = a + b t ± w (alternating from snapshot to snapshot) on the second half [m, T].

    The oracle is the least-squares line written out with its normal equations (slope = centred
    cross-sum / centred sum of squares), not numpy's fit.
    """
    tau = 400
    mid = 1200
    half = STEPS[STEPS >= mid]  # 41 snapshots
    a, b, w = 0.01, 1e-5, 0.004
    wob = w * (-1.0) ** np.arange(len(half))
    x = half.astype(float)
    xm = x.mean()
    slope = b + np.sum((x - xm) * wob) / np.sum((x - xm) ** 2)
    intercept = a + b * xm + wob.mean() - slope * xm
    g = np.zeros(len(STEPS))
    g[STEPS > tau] = 0.005  # g(tau) = 0: the kernel at tau is the reference
    g[STEPS >= mid] = a + b * half + wob
    cw = cone_width(as_ds(rank_one(_phi_for_g(tau, g))), tau)
    final = slope * 2000 + intercept
    assert cw.final == pytest.approx(final, rel=1e-7)
    assert cw.late_growth_share == pytest.approx((final - (slope * mid + intercept)) / final, rel=1e-7)
    # the end points alone would read the wobble: g(T) differs from the line's value by about w
    assert abs(g[-1] - cw.final) > 0.5 * w


def test_cone_width_rejects_bad_reference():
    ds = as_ds(rank_one(1e-3 * STEPS))
    with pytest.raises(ValueError, match="ref_step=410"):
        cone_width(ds, 410)
    with pytest.raises(ValueError, match="fewer than 3"):
        cone_width(ds, 1980)
    with pytest.raises(ValueError, match="plateau_share"):
        cone_width(ds, 400, plateau_share=1.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda ds: phase_one_end(ds, fraction=1.5), "fraction"),
        (lambda ds: phase_one_end(ds, min_phase_two=1.0), "min_phase_two"),
        (lambda ds: phase_one_end(ds, smooth=0), "smooth"),
        (lambda ds: phase_one_end(ds, dt=30), "dt=30"),
        (lambda ds: verdict(ds, lazy_tol=-1), "lazy_tol"),
        (lambda ds: phase_one_end(ds.drop_vars("velocity")), "velocity"),
    ],
)
def test_measures_reject_bad_parameters(call, match):
    with pytest.raises(ValueError, match=match):
        call(as_ds(rank_one(1e-3 * STEPS)))


# ------------------------------------------------------------------------------------------
# verdicts on random PSD trajectories built to have one answer
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_drift_then_cone(seed):
    v = verdict(as_ds(cone_kernels(seed)))
    assert v.verdict == "two phases, cone", v
    assert 100 <= v.phase_one_end <= 800  # the fast motion has time constant 150 steps
    assert v.cone_final > 1e-3 and v.late_growth_share < 0.3
    assert v.velocity_drop > 10


@pytest.mark.parametrize("seed", range(3))
def test_jump_then_frozen_is_lazy(seed):
    ds = as_ds(lazy_kernels(seed))
    v = verdict(ds)
    assert v.verdict == "two phases, lazy", v
    assert v.phase_one_end == 200  # the move ends at step 200; the kernel is exactly constant after
    assert v.cone_final == pytest.approx(0.0, abs=1e-12)
    assert float(ds.pairwise_distance.sel(step=2000, other_step=200)) < 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_steady_drift_has_no_two_phases(seed):
    ds = as_ds(steady_kernels(seed))
    adj = ds.adjacent_distance.sel(dt=20).values[:-1]
    np.testing.assert_allclose(adj, adj[0], rtol=1e-6)  # constant speed, by construction
    v = verdict(ds)
    assert v.verdict == "no two phases", v
    assert v.phase_one_end is None and v.cone_final is None
    assert v.velocity_drop == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_drop_then_steady_drift_is_drifting(seed):
    v = verdict(as_ds(drop_then_drift_kernels(seed)))
    assert v.verdict == "two phases, drifting", v
    assert v.late_growth_share >= 0.3
    assert v.phase_one_end is not None and v.phase_one_end <= 800


def test_verdict_codes_and_labels():
    v = verdict(as_ds(lazy_kernels(0)))
    assert VERDICTS[v.code] == v.verdict
    assert len(set(VERDICTS)) == 4
    d = v.asdict()
    assert set(d) == {"verdict", "phase_one_end", "ref_step", "cone_final", "late_growth_share", "velocity_drop"}
