"""Tests of `conelib.measures.v2` (version 2) on synthetic trajectories with known answers
(`tests/synthetic.py`), and on closed forms of the exponents and of the late-growth share."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conelib.measures import v2 as measures
from conelib.trajectory import distances_dataset, trajectory_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402

SEEDS = (0, 1, 2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind,want", [("cone", "two phases, cone"), ("lazy", "two phases, lazy"),
                                       ("steady", "two phases, drifting"), ("walk", "two phases, drifting"),
                                       ("none", "no two phases")])
def test_each_construction_gets_its_verdict(kind, want, seed):
    v = measures.verdict(synthetic.trajectory(kind, seed))
    assert v.verdict == want, v


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind,beta,gamma", [("cone", 0.0, 0.0), ("steady", 1.0, 1.0), ("walk", 0.5, 0.5)])
def test_the_exponents_read_the_law_of_the_movement(kind, beta, gamma, seed):
    """Jitter in a bounded region: 0; a random walk of the direction: 1/2; steady turning: 1."""
    ds = synthetic.trajectory(kind, seed)
    t_end = measures.phase_one_end(ds)
    assert t_end is not None
    assert measures.floor_exponent(ds, t_end) == pytest.approx(beta, abs=0.12)
    for tau, g in measures.growth_exponents(ds, t_end).items():
        assert g == pytest.approx(gamma, abs=0.15), tau


def test_phase_one_ends_where_the_excess_over_the_floor_falls_below_the_fraction():
    """Closed form for the cone: S(t, t+Δ) - F ≈ (A e^{-t/t0} (1 - e^{-Δ/t0}))² / 2 (small angles)."""
    ds = synthetic.trajectory("cone", 0, sigma=0.02)
    p1 = measures.phase_one(ds, smooth=1, hold=0.0)
    A, t0, dt = 1.0, 300.0, 800
    amp = A * (1 - np.exp(-dt / t0))
    excess_peak = 1 - np.cos(amp)
    # first t at which 1 - cos(amp e^{-t/t0}) <= 0.1 * excess_peak
    t_star = -t0 * np.log(np.arccos(1 - 0.1 * excess_peak) / amp)
    assert p1.end == pytest.approx(t_star, abs=60)  # within about one snapshot of the closed form
    assert p1.drop > 100


def test_a_late_wobble_does_not_undo_phase_one_but_a_slow_decay_moves_it():
    ds = synthetic.trajectory("cone", 0)
    base = measures.phase_one_end(ds)
    adj = ds["adjacent_distance"].values.copy()
    adj[150, -1] = 0.5  # one wild late snapshot (step 7500)
    wobbly = ds.assign(adjacent_distance=(("step", "dt"), adj))
    assert measures.phase_one_end(wobbly) == base
    slow = synthetic.trajectory("cone", 0, t0=1500.0)
    assert measures.phase_one_end(slow) > 3 * base


def test_no_two_phases_when_phase_two_would_be_too_short_or_the_drop_too_small():
    ds = synthetic.trajectory("cone", 0, t0=2500.0)
    assert measures.phase_one_end(ds, min_phase_two=0.9) is None
    assert measures.phase_one_end(synthetic.trajectory("none")) is None
    assert measures.phase_one(synthetic.trajectory("none")).drop == pytest.approx(1.0, abs=0.05)


def test_laziness_is_the_ratio_of_chords():
    ds = synthetic.trajectory("cone", 0)
    t_end = measures.phase_one_end(ds)
    steps = ds["step"].values
    m = int(steps[np.argmin(np.abs(steps - (t_end + steps.max()) / 2))])
    s = ds["pairwise_distance"]
    want = np.sqrt(2 * float(s.sel(step=m, other_step=10000))) / np.sqrt(2 * float(s.sel(step=0, other_step=t_end)))
    assert measures.laziness(ds, t_end) == pytest.approx(want)
    assert measures.laziness(synthetic.trajectory("lazy", 0), t_end) < 0.01


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_the_late_growth_share_of_a_power_law_is_one_minus_two_to_the_minus_p(p):
    """S(t, τ) = c (t - τ)^p exactly: the share is 1 - 2^-p (only approximately for p ≠ 1: the share
    reads a line through a curve) and share_exponent inverts it."""
    steps = np.arange(0, 10001, 50)
    tau = 2000
    lag = np.clip(steps - tau, 0, None).astype(float)
    g = 1e-9 * lag ** p
    s = np.abs(g[:, None] - g[None, :])  # any symmetric matrix whose column tau is g
    s[:, steps == tau] = g[:, None]
    s[steps == tau, :] = g[None, :]
    ds = distances_dataset(steps, s, np.ones(len(steps)), dts=[50], taus=[tau])
    share = measures.late_growth_share(ds, tau)
    assert share == pytest.approx(1 - 2 ** -p, abs=0.06 if p != 1 else 1e-9)
    assert measures.share_exponent(1 - 2 ** -p) == pytest.approx(p)


def test_the_embedding_keeps_all_phase_two_distances_of_a_planar_trajectory_and_few_of_jitter():
    planar = synthetic.trajectory("none")  # a turn in one plane: the 2-D picture is exact
    assert measures.phase_two_embedding_share(planar, 3000) == pytest.approx(1.0, abs=1e-6)
    cone = synthetic.trajectory("cone", 0)
    assert measures.phase_two_embedding_share(cone, measures.phase_one_end(cone)) < 0.5


def test_thresholds_are_checked_and_reach_the_verdict():
    with pytest.raises(ValueError, match="unknown threshold"):
        measures.verdict(synthetic.trajectory("cone"), rho=0.1)
    with pytest.raises(ValueError, match="fraction must be in"):
        measures.check_thresholds(fraction=2)
    cone = synthetic.trajectory("cone", 0)
    assert measures.verdict(cone, lazy_ratio=0.5).verdict == "two phases, lazy"
    walk = synthetic.trajectory("walk", 0)
    assert measures.verdict(walk, plateau_exponent=0.9).verdict == "two phases, cone"


# ------------------------------------------------------------------------------------------
# the late-growth share against closed forms: rank-one kernels H_t = u_t u_t^T with
# u_t = (cos phi_t, sin phi_t), whose distance is S = sin^2(phi_t - phi_s) exactly
# ------------------------------------------------------------------------------------------

STEPS = np.arange(0, 2001, 20)


def rank_one(phi: np.ndarray) -> list[np.ndarray]:
    """:math:`H_t = u_t u_t^\\top`, :math:`u_t = (\\cos\\varphi_t, \\sin\\varphi_t)`: :math:`S = \\sin^2(\\Delta\\varphi)`."""
    return [np.outer(u, u) for u in np.stack([np.cos(phi), np.sin(phi)], axis=1)]


def as_ds(kernels: list[np.ndarray], steps: np.ndarray = STEPS):
    return trajectory_dataset(steps, kernels, dts=[20, 40, 80], taus=[200, 400, 800])


def _phi_for_g(tau: int, g: np.ndarray) -> np.ndarray:
    """An angle path with :math:`S(\\theta_t, \\theta_\\tau) = g(t)` exactly for t >= tau (g in [0, 1], g(tau) = 0)."""
    assert g[list(STEPS).index(tau)] == 0
    phi = np.where(STEPS < tau, 1e-3 * (STEPS - tau), 0.0)
    after = STEPS >= tau
    phi[after] = np.arcsin(np.sqrt(g[after]))
    return phi


def test_late_growth_share_of_an_exact_linear_drift():
    tau, k = 400, 2e-5
    g = np.clip(k * (STEPS - tau), 0, None)
    share = measures.late_growth_share(as_ds(rank_one(_phi_for_g(tau, g))), tau)
    assert share == pytest.approx(0.5, abs=1e-9)  # (kL - kL/2) / kL


def test_late_growth_share_of_an_exact_plateau():
    tau, k, level = 400, 1e-4, 0.02  # g reaches its level at step 600, before the midpoint 1200
    g = np.clip(k * (STEPS - tau), 0, level)
    share = measures.late_growth_share(as_ds(rank_one(_phi_for_g(tau, g))), tau)
    assert share == pytest.approx(0.0, abs=1e-9)


def test_late_growth_share_reads_a_line_through_a_wobbling_second_half():
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
    share = measures.late_growth_share(as_ds(rank_one(_phi_for_g(tau, g))), tau)
    final = slope * 2000 + intercept
    assert share == pytest.approx((final - (slope * mid + intercept)) / final, rel=1e-7)
