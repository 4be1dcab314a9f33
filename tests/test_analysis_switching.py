"""The statistics of the switching chapter (conelib.analysis.switching). Oracles: McNemar's test
against a brute-force enumeration of every sign pattern of the discordant images; the paired
bootstrap against a direct loop that draws seeds and image indices; the matched-loss steps
against constructed curves; the comparison step is the configuration's (fixed in advance), never
the data's."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conelib.analysis.switching import (
    SWITCHING_VERDICTS,
    arm_correct,
    arm_metric,
    compare,
    comparison_table,
    first_step_at_or_below,
    matching_kernel_dynamics,
    mcnemar,
    paired_bootstrap,
    paired_gain,
    standard_step_at_loss,
    switching_summary,
)
from conelib.experiments import SwitchingConfig
from conelib.results import save_result

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402  (tests/synthetic.py, a helper module)
from switching_data import constructed as _constructed  # noqa: E402  (a helper module)

# ------------------------------------------------------------------------------------------
# McNemar
# ------------------------------------------------------------------------------------------


def _enumerated_p(gained: int, lost: int) -> tuple[float, float]:
    """Exact and mid-p two-sided p-values by enumerating all 2^n equally likely sign patterns of
    the n discordant images (under H0 each is "gained" or "lost" with probability 1/2): the lower
    tail at k = min(gained, lost), doubled (Fagerland et al. 2013's mid-p: half of P(X = k))."""
    n = gained + lost
    if n == 0:
        return 1.0, 1.0
    k = min(gained, lost)
    below = equal = 0
    for signs in itertools.product((0, 1), repeat=n):
        x = sum(signs)
        below += x < k
        equal += x == k
    total = 2 ** n
    return min(1.0, 2 * (below + equal) / total), min(1.0, 2 * (below + equal / 2) / total)


@pytest.mark.parametrize(("gained", "lost"), [(0, 0), (3, 0), (0, 5), (2, 7), (6, 6), (9, 3), (1, 10), (5, 4)])
def test_mcnemar_matches_an_enumeration_of_sign_patterns(gained: int, lost: int) -> None:
    rng = np.random.default_rng(gained * 31 + lost)
    both = rng.integers(0, 2, 25)  # concordant images: the same outcome for both models
    a = np.concatenate([both, np.zeros(gained), np.ones(lost)]).astype(int)
    b = np.concatenate([both, np.ones(gained), np.zeros(lost)]).astype(int)
    perm = rng.permutation(len(a))
    got = mcnemar(a[perm], b[perm])
    exact, mid = _enumerated_p(gained, lost)
    assert (got.gained, got.lost) == (gained, lost)
    assert got.p_exact == pytest.approx(exact, abs=1e-12)
    assert got.p_mid == pytest.approx(mid, abs=1e-12)
    assert got.p_mid <= got.p_exact


def test_mcnemar_is_symmetric_and_checks_its_input() -> None:
    a, b = np.array([1, 1, 0, 0, 1, 0, 1]), np.array([0, 1, 1, 1, 1, 1, 0])
    ab, ba = mcnemar(a, b), mcnemar(b, a)
    assert (ab.gained, ab.lost) == (ba.lost, ba.gained) and ab.p_exact == ba.p_exact
    with pytest.raises(ValueError, match="same images"):
        mcnemar(a, b[:-1])
    with pytest.raises(ValueError, match="not recorded"):
        mcnemar(np.array([1, -1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="0 or 1"):
        mcnemar(np.array([1, 2]), np.array([1, 1]))


# ------------------------------------------------------------------------------------------
# paired bootstrap
# ------------------------------------------------------------------------------------------


def _direct_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator,
                      resample_seeds: bool) -> np.ndarray:
    """The textbook loop: draw seeds, then image indices within each drawn seed, and average."""
    S, N = a.shape
    out = np.empty(n_boot)
    for r in range(n_boot):
        seeds = rng.integers(0, S, S) if resample_seeds else np.arange(S)
        gains = []
        for s in seeds:
            idx = rng.integers(0, N, N)
            gains.append(b[s, idx].mean() - a[s, idx].mean())
        out[r] = np.mean(gains)
    return out


@pytest.mark.parametrize("resample_seeds", [True, False])
def test_paired_bootstrap_matches_a_direct_resampling_loop(resample_seeds: bool) -> None:
    rng = np.random.default_rng(0)
    S, N = 4, 60
    a = (rng.random((S, N)) < 0.8).astype(int)
    # seed-dependent gains, so that resampling the seeds matters
    b = np.where(rng.random((S, N)) < np.array([0.05, 0.15, 0.25, 0.0])[:, None], 1, a)
    n = 4000
    got = paired_bootstrap(a, b, n_boot=n, seed=1, resample_seeds=resample_seeds)
    ref = _direct_bootstrap(a, b, n, np.random.default_rng(2), resample_seeds)
    assert got.mean == pytest.approx((b.mean(1) - a.mean(1)).mean())
    # the same distribution: quantiles agree within the Monte-Carlo error of 4000 draws
    sd = ref.std()
    assert got.low == pytest.approx(np.quantile(ref, 0.025), abs=0.12 * sd + 2 / N)
    assert got.high == pytest.approx(np.quantile(ref, 0.975), abs=0.12 * sd + 2 / N)


def test_paired_bootstrap_width_and_checks() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random((3, 2000)) < 0.9).astype(int)
    same = paired_bootstrap(a, a, n_boot=500)
    assert same.mean == same.low == same.high == 0 and not same.excludes_zero()
    b = a.copy()
    b[:, :100] = 1  # every seed gains up to 100 images
    gain = paired_bootstrap(a, b, n_boot=2000)
    assert gain.excludes_zero() and gain.low > 0
    with pytest.raises(ValueError, match="seeds, images"):
        paired_bootstrap(a[0], b[0])
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap(a, b, n_boot=10)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, b, level=1.5)


def test_paired_gain_is_the_student_t_interval() -> None:
    from scipy import stats

    d = [0.002, 0.004, -0.001, 0.003]
    g = paired_gain(d)
    half = stats.t.ppf(0.975, 3) * np.std(d, ddof=1) / 2
    assert g.mean == pytest.approx(np.mean(d)) and g.high - g.mean == pytest.approx(half)
    assert g.n_positive == 3 and g.n == 4
    assert np.isnan(paired_gain([0.1]).low)


# ------------------------------------------------------------------------------------------
# matched train loss on a constructed result
# ------------------------------------------------------------------------------------------


def test_first_step_at_or_below_a_level() -> None:
    steps = [0, 10, 20, 30, 40]
    assert first_step_at_or_below(steps, [5, 3, np.nan, 1, 0.5], 1.0) == 30
    assert first_step_at_or_below(steps, [5, 3, 2, 1.5, 1.2], 1.0) is None
    assert first_step_at_or_below(steps, [5, 1, 2, 0.9, 0.5], 1.0) == 10  # the first, not the last crossing


def test_the_standard_run_is_stopped_where_it_first_reaches_each_continuation_loss() -> None:
    ds = _constructed()
    got = standard_step_at_loss(ds)
    # final losses 0.45 (t = 0), 0.25 (t = 20), 0.2 (t = T); the standard's: 1, .5, .33, .25, .2 at 0..40
    assert got.sel(switch_step=0).values.tolist() == [20.0, 20.0]
    assert got.sel(switch_step=20).values.tolist() == [30.0, 30.0]
    assert got.sel(switch_step=40).values.tolist() == [40.0, 40.0]
    np.testing.assert_array_equal(arm_correct(ds, "standard_at_loss", 20), ds.standard_test_correct.sel(step=30).values)
    np.testing.assert_allclose(arm_metric(ds, "standard_at_loss", 0), ds.standard_test_acc.sel(step=20).values)


def test_views_pick_the_right_models_and_a_missing_one_is_left_out() -> None:
    ds = _constructed()
    np.testing.assert_array_equal(arm_correct(ds, "at_T", 20), ds.final_test_correct.sel(switch_step=20).values)
    np.testing.assert_array_equal(arm_correct(ds, "matched", 40), ds.standard_test_correct.sel(step=40).values)
    assert (arm_correct(ds, "matched", 0) == -1).all()
    c = compare(ds, ("matched", 20), ("matched", 40), n_boot=200)
    assert c.complete and len(c.tests) == 2 and c.supports_gain() in (True, False)
    missing = compare(ds, ("matched", 0), ("matched", 40), n_boot=200)
    assert missing.seeds == () and missing.supports_gain() is None and np.isnan(missing.gain.mean)
    # per-image gains agree with the accuracies
    a, b = arm_correct(ds, "at_T", 0), arm_correct(ds, "at_T", 20)
    assert c.gain.n == 2
    g = compare(ds, ("at_T", 0), ("at_T", 20), n_boot=200)
    assert g.gain.mean == pytest.approx((b.mean(1) - a.mean(1)).mean())
    assert [(x.gained, x.lost) for x in g.tests] == [(int(((p == 0) & (q == 1)).sum()), int(((p == 1) & (q == 0)).sum()))
                                                     for p, q in zip(a, b)]
    with pytest.raises(ValueError, match="view"):
        arm_correct(ds, "lazy", 0)
    with pytest.raises(ValueError, match="switching step"):
        arm_correct(ds, "at_T", 5)
    with pytest.raises(ValueError, match="small_lr_test_correct"):
        arm_correct(ds, "small_lr", 0)
    table = comparison_table(ds, "at_T", 0, n_boot=200)
    assert table.t.tolist() == [0, 20, 40] and table.gain.iloc[0] == 0


def test_a_result_without_per_image_data_is_compared_over_seeds_only() -> None:
    ds = _constructed().drop_vars(["final_test_correct", "standard_test_correct", "matched_test_correct"])
    c = compare(ds, ("at_T", 0), ("at_T", 40))
    assert c.boot is None and c.tests == () and c.gain.n == 2
    with pytest.raises(ValueError, match="per-image"):
        arm_correct(ds, "at_T", 0)


# ------------------------------------------------------------------------------------------
# the comparison step is the configuration's
# ------------------------------------------------------------------------------------------


def test_the_comparison_step_is_the_configurations_not_the_datas() -> None:
    from conelib.experiments import switching_configs

    mlp, lenet5 = switching_configs("mnist")
    assert mlp.compare_from == lenet5.compare_from == 2000  # fixed in the profile
    assert "compare_from" not in mlp.identity()  # how the result is read, not what it is
    ds = _constructed()
    s = switching_summary(ds, compare_from=20)
    assert s.compare_from == 20
    # whatever the data show, the step stays the one given (here: the data would favour 40)
    ds2 = ds.copy()
    ds2["final_test_acc"] = ds["final_test_acc"] * 0 + np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.9]])
    assert switching_summary(ds2, compare_from=20).compare_from == 20
    with pytest.raises(ValueError, match="compare_from"):
        switching_summary(ds, compare_from=30)


def _fake(acc: np.ndarray, steps=(0, 10, 20, 40), std: float | None = None) -> xr.Dataset:
    acc = np.atleast_2d(np.asarray(acc, float))
    acc = acc.T if acc.shape[0] == 1 else acc  # (switch_step, seed)
    std = float(np.mean(acc[-1])) if std is None else std
    return xr.Dataset({
        "final_test_acc": (("switch_step", "seed"), acc),
        "final_test_loss": (("switch_step", "seed"), 1 - acc),
        "standard_final_test_acc": (("seed",), np.full(acc.shape[1], std)),
        "standard_final_test_loss": (("seed",), np.full(acc.shape[1], 1 - std)),
    }, coords={"switch_step": list(steps), "seed": list(range(acc.shape[1]))})


def test_summary_numbers_and_verdicts() -> None:
    s = switching_summary(_fake([0.80, 0.85, 0.90, 0.95]), compare_from=10)
    assert s.acc_at_zero == pytest.approx(0.80) and s.acc_standard == pytest.approx(0.95)
    assert s.compare_from == 10 and s.acc_at_compare_from == pytest.approx(0.85)
    assert s.loss_at_compare_from == pytest.approx(0.15)
    assert s.gain == pytest.approx(0.15) and s.rank_correlation == pytest.approx(1.0)
    assert s.gain_after_compare_from == pytest.approx(0.10)
    assert s.verdict == SWITCHING_VERDICTS[0] == "later switching helps"
    no_step = switching_summary(_fake([0.80, 0.85, 0.90, 0.95]))
    assert no_step.acc_at_compare_from is None and no_step.gain_after_compare_from is None
    assert switching_summary(_fake([0.95, 0.9, 0.85, 0.8])).verdict == "later switching hurts"
    assert switching_summary(_fake([0.900, 0.901, 0.899, 0.902])).verdict == "no clear effect"  # below tol
    assert switching_summary(_fake([0.80, 0.95, 0.81, 0.85])).verdict == "no clear effect"  # rho = 0.4
    two = np.array([[0.80, 0.90], [0.82, 0.92], [0.84, 0.94], [0.86, 0.96]])
    s2 = switching_summary(_fake(two))
    assert s2.acc_at_zero == pytest.approx(0.85) and s2.seed_range == pytest.approx(0.10)
    assert s2.verdict == "no clear effect"
    with pytest.raises(ValueError, match="switching Dataset"):
        switching_summary(xr.Dataset())
    with pytest.raises(ValueError, match="tol"):
        switching_summary(_fake([0.8, 0.9, 0.9, 0.9]), tol=2)


def test_phase_one_end_comes_from_a_matching_kernel_dynamics_result(tmp_path) -> None:
    """The kernel-dynamics run of the same training (a stand-in trajectory with a known Phase I)
    is found by its configuration; its end of Phase I is the v3 measure's, with an interval."""
    from conelib.analysis.switching import phase_one_ends
    from conelib.measures import assess

    cfg = SwitchingConfig(model="lenet_300_100", dataset="digits", steps=8, switch_steps=(4,), eval_every=4,
                          batch_size=32, lr=0.05, momentum=0.9, device="cpu")
    kd = synthetic.stand_in("cone")
    kd_cfg = {k: getattr(cfg, k) for k in ("model", "dataset", "width", "norm", "batch_size", "lr", "momentum",
                                           "weight_decay", "warmup_steps", "gamma", "augment", "test_fraction",
                                           "seed")}
    kd_cfg.update(milestones=[], steps=int(kd.step.max()), snapshot_every=50, dts=[50], taus=[])
    kd.attrs.update(config_json=json.dumps(kd_cfg), config_hash="abc", created="2025-01-01")
    save_result(kd, tmp_path / "kernel_dynamics" / "abc.nc")
    assert matching_kernel_dynamics(cfg, results_root=tmp_path).attrs["config_hash"] == "abc"
    assert matching_kernel_dynamics(cfg.replace(lr=0.1), results_root=tmp_path) is None
    assert matching_kernel_dynamics(cfg.replace(steps=10 ** 5, switch_steps=()), results_root=tmp_path) is None
    assert matching_kernel_dynamics(cfg, results_root=tmp_path / "empty") is None
    assert matching_kernel_dynamics(cfg.replace(seeds=(0, 5)), seed=5, results_root=tmp_path) is None
    table = phase_one_ends(cfg, results_root=tmp_path, n_boot=20)
    assert table.seed.tolist() == [0] and table.config_hash.tolist() == ["abc"]
    a = assess(kd, n_boot=20, sensitivity=False)
    assert table.phase_one_end.iloc[0] == a.point.phase_one_end
    assert (table.low.iloc[0], table.high.iloc[0]) == a.interval("phase_one_end")
