"""Tests of `conelib.measures` version 3: the centroid algebra against a brute-force oracle, the
denoising against Monte-Carlo expectations, every process of the validation panel over many noise
draws, the bootstrap's intervals and the stability of the end of Phase I."""

from __future__ import annotations

import numpy as np
import pytest

from conelib.measures import assess, bootstrap, synthetic, v2, v3
from conelib.measures.centroids import centroids, window_bounds
from conelib.measures.bootstrap import format_interval, seed_interval, snapshot_weights

STEPS = np.arange(0, 10001, 50)


def _unit(rng, n, d):
    u = rng.normal(size=(n, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# centroid algebra
# --------------------------------------------------------------------------------------------


def test_window_bounds_follow_the_rule():
    steps = np.arange(0, 2001, 50)
    lo, hi = window_bounds(steps, 250)
    for i, t in enumerate(steps):
        h = min(250, t / 4)
        inside = np.nonzero(np.abs(steps - t) <= h)[0]
        assert (lo[i], hi[i]) == (inside[0], inside[-1] + 1)
    assert (lo[0], hi[0]) == (0, 1)  # the initial kernel alone


@pytest.mark.parametrize("weighted", [False, True])
def test_centroid_gram_and_drift_match_brute_force(weighted):
    """Far-pair mean cosines between windows, computed by explicit loops over the vectors."""
    rng = np.random.default_rng(3)
    steps = np.arange(0, 2001, 50)
    n, band = len(steps), 2
    u = _unit(rng, n, 7)
    S = 1.0 - u @ u.T
    w = rng.exponential(size=n) if weighted else np.ones(n)
    c = centroids(S, steps, 200, w, band=band)
    lo, hi = window_bounds(steps, 200)
    for a in range(5, n, 7):
        for b in range(3, n, 5):
            num = den = 0.0
            for k in range(lo[a], hi[a]):
                for m in range(lo[b], hi[b]):
                    if abs(k - m) > band:
                        num += w[k] * w[m] * float(u[k] @ u[m])
                        den += w[k] * w[m]
            if den > 0 and a != b:
                assert c.gram[a, b] == pytest.approx(num / den, abs=1e-12)
    # drift2 is M_aa + M_bb - 2 M_ab, and the jitter radius is 1 - M_aa
    a, b = 20, 35
    assert c.drift2(a, b) == pytest.approx(c.gram[a, a] + c.gram[b, b] - 2 * c.gram[a, b], abs=1e-12)
    assert c.var[a] == pytest.approx(1.0 - c.gram[a, a], abs=1e-12)
    assert c.var[0] == 0.0 and c.gram[0, 0] == 1.0  # the initial kernel carries no jitter


def _noisy(mu, radius, corr, rng):
    noise = rng.normal(size=mu.shape)
    for i in range(1, len(mu)):
        noise[i] = corr * noise[i - 1] + np.sqrt(1 - corr ** 2) * noise[i]
    noise -= (noise * mu).sum(1, keepdims=True) * mu
    noise *= radius / np.sqrt(mu.shape[1] - 1)
    v = mu + noise
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_denoised_drift_is_unbiased_under_correlated_jitter_and_the_naive_one_is_not():
    """Two windows around two fixed directions 0.05 rad apart, jitter of radius 0.05 correlated 0.3
    between neighbours: the far-pair estimate averages to the true squared chord, the plain
    centroid distance overshoots by the jitter."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, 3001, 50)
    d = 40
    e = np.eye(d)
    angle = np.where(steps < 1500, 0.0, 0.05)
    mu = np.cos(angle)[:, None] * e[0] + np.sin(angle)[:, None] * e[1]
    a, b = int(np.searchsorted(steps, 1000)), int(np.searchsorted(steps, 2500))
    true = 2 - 2 * np.cos(0.05)
    est, naive, radius = [], [], []
    for _ in range(300):
        u = _noisy(mu, 0.05, 0.3, rng)
        u[0] = mu[0]
        c = centroids(1 - u @ u.T, steps, 250)
        est.append(float(c.drift2(a, b)))
        lo, hi = c.lo, c.hi
        ma, mb = u[lo[a]:hi[a]].mean(0), u[lo[b]:hi[b]].mean(0)
        naive.append(float(np.sum((ma - mb) ** 2)))
        radius.append(float(c.var[a]))
    se = np.std(est) / np.sqrt(len(est))
    assert abs(np.mean(est) - true) < 3 * se, (np.mean(est), true, se)
    assert np.mean(naive) > true + 10 * se  # the plain centroid distance carries the jitter
    assert np.sqrt(np.mean(radius)) == pytest.approx(0.05, rel=0.05)


# --------------------------------------------------------------------------------------------
# the validation panel
# --------------------------------------------------------------------------------------------

N_DRAWS = 20


@pytest.mark.parametrize("process", sorted(synthetic.PROCESSES))
def test_validation_panel(process, capsys):
    """Every process of the panel, over 20 independent noise draws, gets its verdict in at least
    95% of them (version 2's rate printed beside for comparison)."""
    want = synthetic.expected_verdict(process)
    got3, got2 = [], []
    for s in range(N_DRAWS):
        ds = synthetic.trajectory(process, seed=100 + s)
        got3.append(v3.verdict(ds).verdict)
        got2.append(v2.verdict(ds).verdict)
    rate3 = np.mean([g == want for g in got3])
    rate2 = np.mean([g == want for g in got2])
    with capsys.disabled():
        print(f"\n[panel] {process:22s} -> {want:24s} v3 {rate3:.0%}  v2 {rate2:.0%}  (of {N_DRAWS} draws)")
    assert rate3 >= 0.95, (process, sorted(set(got3)))


def test_panel_processes_are_what_they_say():
    """The generator's own geometry: the tiny run turns about 0.02 rad, the frozen run's Phase II
    moves by its jitter only, the converging drift slows like t^-2."""
    tiny = synthetic.trajectory("tiny movement", seed=0)
    assert np.sqrt(2 * float(tiny["pairwise_distance"][0, -1])) < 0.03
    rng = np.random.default_rng(0)
    u = synthetic.unit_trajectory("converging drift", STEPS, rng, jitter=0.0, jitter_corr=0.0)
    ang = np.arccos(np.clip((u[:-1] * u[1:]).sum(1), -1, 1))  # angle per snapshot
    t = STEPS[:-1]
    late = (t >= 3000)
    slope = np.polyfit(np.log(t[late]), np.log(ang[late]), 1)[0]
    assert slope == pytest.approx(-2.0, abs=0.05)
    with pytest.raises(ValueError, match="unknown process"):
        synthetic.trajectory("spiral")


# --------------------------------------------------------------------------------------------
# the measures on closed forms
# --------------------------------------------------------------------------------------------


def test_growth_exponent_reads_steady_turning_and_random_walk_without_jitter():
    steady = v3.verdict(synthetic.trajectory("steady drift", seed=0, jitter=1e-4))
    walk = [v3.verdict(synthetic.trajectory("random walk", seed=s, jitter=1e-4)).growth_exponent for s in range(5)]
    assert steady.growth_exponent == pytest.approx(1.0, abs=0.05)
    assert np.mean(walk) == pytest.approx(0.5, abs=0.15)


def test_total_movement_is_the_angle_of_the_whole_turn():
    ds = synthetic.trajectory("frozen", seed=0, jitter_corr=0.0)
    v = v3.verdict(ds)
    assert v.total_movement == pytest.approx(2 * np.sin(0.3 * (1 - np.exp(-10000 / 400)) / 2), rel=0.01)


def test_phase_one_end_is_stable_under_truncation_of_the_run():
    """The end of Phase I reads only the early velocity (relative to its peak): cutting the run
    to 6000 or 8000 steps moves it by at most one snapshot."""
    for s in range(3):
        ds = synthetic.trajectory("jitter cone", seed=s)
        ends = [v3.verdict(ds.sel(step=ds.step <= T, other_step=ds.other_step <= T)).phase_one_end
                for T in (6000, 8000, 10000)]
        assert max(ends) - min(ends) <= 50, ends


def test_loss_clock_reads_a_velocity_that_follows_the_loss():
    """A velocity that is a power of the loss: exponent and correlation 1."""
    ds = synthetic.trajectory("steady drift", seed=0)
    v = v3.verdict(ds)
    assert v.loss_correlation < 0.9  # a steady drift does not slow with the loss
    tied = synthetic.trajectory("jitter cone", seed=0, jitter=1e-4)
    idx, a = v3.velocity_profile(centroids(tied["pairwise_distance"].values, tied.step.values, 250), 16)
    loss = np.interp(np.arange(len(tied.step)), idx, np.clip(a, 1e-12, None))
    tied["train_loss"] = ("step", loss ** 0.5)
    v = v3.verdict(tied)
    assert v.loss_correlation == pytest.approx(1.0, abs=1e-6)
    assert v.loss_exponent == pytest.approx(2.0, rel=1e-3)


def test_thresholds_are_checked_by_name():
    with pytest.raises(ValueError, match="unknown threshold"):
        v3.check_thresholds(fractoin=0.1)
    with pytest.raises(ValueError, match="fraction must be in"):
        v3.check_thresholds(fraction=1.5)
    with pytest.raises(ValueError, match="smooth must be"):
        v3.check_thresholds(smooth=2.5)
    with pytest.raises(ValueError, match="lazy_movement"):
        v3.check_thresholds(lazy_movement=float("nan"))
    assert set(v3.SENSITIVITY) <= set(v3.THRESHOLDS)


def test_short_runs_use_shorter_scales():
    sc = v3.effective_scales(np.arange(0, 1001, 10), v3.THRESHOLDS)
    assert sc["half_width"] * 10 <= 1000 / 40 and sc["lag"] * 10 <= 1000 / 12.5
    ds = synthetic.trajectory("jitter cone", seed=0, steps=np.arange(0, 2001, 10), tau1=80.0)
    assert v3.verdict(ds).verdict == "two phases, cone"


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------


def test_snapshot_weights_are_blocks_of_exponential_draws():
    w = snapshot_weights(101, 2, np.random.default_rng(0))
    assert w.shape == (101,) and w[0] == 1.0 and np.all(w > 0)
    assert np.all(w[2:100:2] == w[3:101:2])  # blocks [0, 1], [2, 3], ... share their weight
    assert len(set(np.round(w[2:100:2], 12))) > 40  # and the blocks differ
    with pytest.raises(ValueError, match="block"):
        snapshot_weights(10, 0, np.random.default_rng(0))


def test_assess_is_reproducible_and_reports_its_robustness():
    ds = synthetic.trajectory("steady drift", seed=3)
    a1 = assess(ds, n_boot=30, seed=7, sensitivity=False)
    a2 = assess(ds, n_boot=30, seed=7, sensitivity=False)
    assert a1.draws.equals(a2.draws)
    assert a1.point.verdict == "two phases, drifting" and a1.agreement >= 0.9
    lo, hi = a1.interval("growth_exponent")
    assert lo <= a1.point.growth_exponent <= hi
    row = a1.row()
    assert row["verdict_agreement"] == a1.agreement and "growth_exponent_lo" in row
    assert abs(sum(v for k, v in row.items() if k.startswith("share_")) - 1.0) < 1e-9
    with pytest.raises(ValueError, match="n_boot"):
        assess(ds, n_boot=5)


def test_bootstrap_intervals_cover_the_estimators_mean_over_noise_draws(capsys):
    """Over 12 independent noise draws of a steady drift, the 95% intervals of the laziness, the
    jitter ratio and the growth exponent contain the mean of the point estimates over the draws
    in most of them (a conservative interval covers more often than its level)."""
    names = ("laziness", "jitter_ratio", "growth_exponent", "drift_ratio")
    pts = {m: [] for m in names}
    ivs = {m: [] for m in names}
    for s in range(12):
        a = assess(synthetic.trajectory("steady drift", seed=200 + s), n_boot=40, seed=s, sensitivity=False)
        for m in names:
            pts[m].append(getattr(a.point, m))
            ivs[m].append(a.interval(m))
    for m in names:
        truth = np.mean(pts[m])
        cover = np.mean([lo <= truth <= hi for lo, hi in ivs[m]])
        width = np.median([(hi - lo) / 2 for lo, hi in ivs[m]]) / (1.96 * np.std(pts[m]))
        with capsys.disabled():
            print(f"\n[coverage] {m:16s} {cover:.0%} of 12 draws; half-width / (1.96 sd over draws) = {width:.1f}")
        assert cover >= 0.8, m


def test_threshold_robustness_is_the_share_of_settings_that_agree():
    ds = synthetic.trajectory("random walk", seed=0)
    a = assess(ds, n_boot=20, sensitivity={"plateau_exponent": (0.2, 0.4, 0.9)})
    labels = list(a.threshold_labels.values())
    assert a.threshold_agreement == pytest.approx(np.mean([x == a.point.verdict for x in labels]))
    assert a.threshold_labels["plateau_exponent=0.9"] == "two phases, cone"  # a lax plateau calls it a cone


def test_seed_interval_is_the_mean_over_seeds_with_a_hierarchical_interval():
    centre, lo, hi = seed_interval([[1.0] * 50, [3.0] * 50])
    assert centre == 2.0 and 1.0 <= lo <= 2.0 <= hi <= 3.0
    assert seed_interval([[2.0] * 10] * 3) == (2.0, 2.0, 2.0)
    assert all(np.isnan(seed_interval([[np.nan]])))


def test_format_interval():
    assert format_interval(0.123, 0.1, 0.15) == "0.123 [0.1, 0.15]"
    assert format_interval(float("nan"), 0, 1) == "—"
    assert bootstrap.format_interval(1200, float("nan"), 3, "{:,.0f}") == "1,200"


def test_t_interval_against_the_closed_form() -> None:
    """(1, 2, 3): mean 2, sd 1, half-width t_{2, 0.975} / sqrt(3) = 4.302653 / 1.732051; NaN bounds
    below two values; NaN entries dropped."""
    from conelib.measures.bootstrap import t_interval

    mean, lo, hi = t_interval([1.0, 2.0, float("nan"), 3.0])
    assert mean == pytest.approx(2.0) and hi - mean == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert mean - lo == pytest.approx(hi - mean)
    m1, l1, h1 = t_interval([5.0])
    assert m1 == 5.0 and np.isnan(l1) and np.isnan(h1)
    with pytest.raises(ValueError, match="level"):
        t_interval([1.0, 2.0], level=1.5)
