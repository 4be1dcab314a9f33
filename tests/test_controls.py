"""Tests of the controls of "Is it a cone?" (`conelib.analysis.controls`, `conelib.report.controls`,
`conelib.charts.controls`) and of their grid files.

Oracles: synthetic kernel trajectories whose jitter radius is known by construction
(`conelib.measures.synthetic` with a jitter schedule), SGD simulated on a quadratic (the
Ornstein-Uhlenbeck variance in closed form), the stored distances themselves (truncation), and
explicit lists (the grids' runs, the sentences' quantifiers). No number is copied from a run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conelib.analysis import controls as C
from conelib.analysis.atlas_summary import summarize
from conelib.experiments.kernel_dynamics import EXPERIMENT
from conelib.measures import synthetic, verdict
from conelib.report import controls as R
from conelib.results import result_path, save_result
from conelib.sweep import Grid, expand_grid, load_grid
from conelib.trajectory import distances_dataset

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
N_BOOT = 40


def _halve(t: np.ndarray) -> np.ndarray:
    return np.where(t >= 2000, 0.5, 1.0)


# --------------------------------------------------------------------------------------------
# the grid files: the intended runs, listed explicitly
# --------------------------------------------------------------------------------------------


def _expected_controls() -> list[dict]:
    base = {"milestones": (), "gamma": 0.1, "momentum": 0.0, "lr": 0.1, "weight_decay": 0.0, "warmup_steps": 0}
    cells = [
        {},
        {"milestones": (2000,)},
        {"milestones": (2000,), "gamma": 0.01},
        {"momentum": 0.9, "lr": 0.01},
        {"momentum": 0.9, "lr": 0.01, "weight_decay": 5e-3},
        {"momentum": 0.9},
        {"momentum": 0.9, "weight_decay": 5e-3},
        {"momentum": 0.9, "warmup_steps": 1000},
    ]
    return [{**base, **c, "seed": s} for c in cells for s in (0, 1, 2)]


def test_the_controls_grid_expands_to_the_intended_runs():
    grid = load_grid(SWEEPS / "controls.yaml")
    points = expand_grid(grid)
    assert [p.coords for p in points] == _expected_controls()
    for p in points:
        cfg = p.config
        assert (cfg.model, cfg.dataset, cfg.steps, cfg.batch_size, cfg.snapshot_every, cfg.probe_size) == \
            ("lenet_300_100", "mnist", 10_000, 128, 50, 500)
        assert cfg.kernel_kind == "trace" and tuple(cfg.taus) == (2000, 4000, 6000, 8000)
        assert cfg.train.lr_at(1999) == pytest.approx(cfg.lr * (min(1.0, 1999 / cfg.warmup_steps)
                                                                if cfg.warmup_steps else 1.0))
        if cfg.milestones:
            assert cfg.train.lr_at(2000) == pytest.approx(0.1 * cfg.gamma)
        if cfg.warmup_steps:
            assert cfg.train.lr_at(500) == pytest.approx(0.05) and cfg.train.lr_at(1000) == pytest.approx(0.1)


def test_the_long_grid_expands_to_the_intended_runs():
    grid = load_grid(SWEEPS / "long.yaml")
    points = expand_grid(grid)
    want = [{"momentum": m, "weight_decay": wd, "seed": s} for m, wd in ((0.0, 0.0), (0.9, 5e-3)) for s in (0, 1, 2)]
    assert [p.coords for p in points] == want
    for p in points:
        cfg = p.config
        assert (cfg.model, cfg.dataset, cfg.steps, cfg.batch_size, cfg.lr, cfg.snapshot_every, cfg.probe_size) == \
            ("lenet_300_100", "mnist", 30_000, 128, 0.1, 50, 500)
        assert tuple(cfg.taus) == (2000, 4000, 6000, 8000, 12000, 16000, 20000, 24000)
        assert not cfg.milestones and cfg.warmup_steps == 0


def test_a_long_run_is_the_short_run_with_more_steps():
    """Only the length (and the reference steps) separate a long run from the T = 10^4 run of its
    cell and seed, so that the long run's first 10^4 steps are that run."""
    short = {(p.coords["momentum"], p.coords["weight_decay"], p.coords["seed"]): p.config
             for p in expand_grid(load_grid(SWEEPS / "controls.yaml"))
             if p.coords["lr"] == 0.1 and not p.coords["milestones"] and not p.coords["warmup_steps"]}
    for p in expand_grid(load_grid(SWEEPS / "long.yaml")):
        s = short[(p.coords["momentum"], p.coords["weight_decay"], p.coords["seed"])]
        a, b = p.config.flat(), s.flat()
        assert {k for k in a if a[k] != b[k]} == {"steps", "taus"}


# --------------------------------------------------------------------------------------------
# the noise-ball prediction
# --------------------------------------------------------------------------------------------


def test_noise_ball_prediction_is_between_the_factor_and_its_square_root():
    assert C.noise_ball_prediction(0.1) == pytest.approx((0.1, np.sqrt(0.1)))
    assert C.noise_ball_prediction(0.01) == pytest.approx((0.01, 0.1))
    assert C.noise_ball_prediction(4.0) == pytest.approx((2.0, 4.0))
    with pytest.raises(ValueError, match="factor"):
        C.noise_ball_prediction(0.0)


def _sgd_on_a_quadratic(h: float, gamma: float, seed: int, *, lr: float = 0.1, dim: int = 24, noise: float = 0.05,
                        steps: int = 10_000, every: int = 50, milestone: int = 2000):
    """Snapshots of SGD on L = h/2 |theta|^2 with gradient noise (an Ornstein-Uhlenbeck process),
    the learning rate times ``gamma`` from ``milestone`` on; the 'kernel' of a snapshot is the unit
    vector along (1, theta), so that S is (for small theta) half the squared parameter distance."""
    rng = np.random.default_rng(seed)
    theta = np.zeros(dim)
    snaps = [np.concatenate([[1.0], theta])]
    for t in range(steps):
        eta = lr * (gamma if t >= milestone else 1.0)
        theta = theta - eta * h * theta + eta * noise * rng.normal(size=dim)
        if (t + 1) % every == 0:
            snaps.append(np.concatenate([[1.0], theta]))
    u = np.asarray(snaps)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    S = np.clip(1.0 - u @ u.T, 0.0, None)
    np.fill_diagonal(S, 0.0)
    return distances_dataset(np.arange(0, steps + 1, every), S, np.ones(len(u)), dts=[50], taus=[2000])


@pytest.mark.parametrize("gamma", [0.1, 0.01])
def test_sgd_noise_ball_on_a_quadratic_falls_in_the_predicted_range(gamma):
    """Fast modes (relaxation well inside the lag of the far pairs) shrink by the square root of the
    decay, times the discrete-time correction of the OU variance eta c / (h (2 - eta h)); slow modes
    (a random walk over the window) by the decay itself. Both lie in noise_ball_prediction."""
    lo, hi = C.noise_ball_prediction(gamma)
    # fast: eta h = 0.2 before, 0.2 gamma after (relaxation 50 and 500 steps for gamma = 0.1, 0.01 ...)
    h = 2.0
    exact = np.sqrt(gamma * (2 - 0.1 * h) / (2 - 0.1 * gamma * h))
    got = []
    for seed in range(2):
        base = _sgd_on_a_quadratic(h, 1.0, seed)
        dec = _sgd_on_a_quadratic(h, gamma, seed)
        got.append(C.paired_jitter_ratio(dec, base, (3000, 10_000), n_boot=N_BOOT, seed=seed).ratio)
    if gamma == 0.1:  # relaxation 50 steps after the decay: the stationary ball, seen whole by the far pairs
        assert np.mean(got) == pytest.approx(exact, rel=0.12)
    assert all(lo * 0.9 <= g <= hi * 1.1 for g in got)
    # slow: relaxation 10^5 steps or more, a random walk at every lag of the windows (small noise, so
    # that theta stays small and S stays half the squared parameter distance)
    slow = [C.paired_jitter_ratio(_sgd_on_a_quadratic(1e-4, gamma, s, noise=0.002),
                                  _sgd_on_a_quadratic(1e-4, 1.0, s, noise=0.002),
                                  (3000, 10_000), n_boot=N_BOOT, seed=s).ratio for s in range(2)]
    assert np.mean(slow) == pytest.approx(gamma, rel=0.15)


# --------------------------------------------------------------------------------------------
# jitter over windows
# --------------------------------------------------------------------------------------------


def test_jitter_schedule_scales_the_synthetic_jitter_only():
    steps = np.arange(0, 4001, 50)
    a = synthetic.unit_trajectory("jitter cone", steps, np.random.default_rng(0))
    b = synthetic.unit_trajectory("jitter cone", steps, np.random.default_rng(0), jitter_schedule=lambda t: np.ones_like(t))
    np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="jitter_schedule"):
        synthetic.unit_trajectory("jitter cone", steps, np.random.default_rng(0), jitter_schedule=lambda t: -t)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_jitter_radius_that_halves_gives_a_ratio_of_one_half(seed):
    base = synthetic.trajectory("jitter cone", seed, tau1=200)
    half = synthetic.trajectory("jitter cone", seed, tau1=200, jitter_schedule=_halve)
    within = C.jitter_change(half, (1000, 1750), (3000, 10_000), n_boot=N_BOOT, seed=seed)
    assert within.contains(0.5) and within.hi - within.lo < 0.2
    assert within.first == pytest.approx(0.045, rel=0.1) and within.second == pytest.approx(0.0225, rel=0.1)
    constant = C.jitter_change(base, (1000, 1750), (3000, 10_000), n_boot=N_BOOT, seed=seed)
    assert constant.contains(1.0) and not constant.contains(0.5)
    paired = C.paired_jitter_ratio(half, base, (3000, 10_000), n_boot=N_BOOT, seed=seed)
    assert paired.contains(0.5) and paired.ratio == pytest.approx(0.5, abs=0.02)
    assert len(paired.log_draws) == N_BOOT


def test_window_jitter_is_the_median_over_the_window_and_names_a_bad_window():
    ds = synthetic.trajectory("jitter cone", 0, tau1=200)
    steps, r = C.jitter_curve(ds)
    sel = (steps >= 3000) & (steps <= 6000)
    assert C.window_jitter(ds, (3000, 6000)) == pytest.approx(np.sort(r[sel])[(sel.sum() - 1) // 2], rel=1e-12)
    with pytest.raises(ValueError, match="after"):
        C.jitter_change(ds, (1000, 1750), (9990, 10_000), n_boot=N_BOOT)
    with pytest.raises(ValueError, match="n_boot"):
        C.jitter_change(ds, (1000, 1750), (3000, 10_000), n_boot=5)


# --------------------------------------------------------------------------------------------
# long runs: truncation, the jitter-loss exponent, the matched loss
# --------------------------------------------------------------------------------------------

LONG_STEPS = np.arange(0, 20_001, 50)
LONG_TAUS = (2000, 4000, 8000, 16000)


def test_truncate_gives_what_the_shorter_run_stores():
    ds = synthetic.trajectory("jitter cone", 3, steps=LONG_STEPS, taus=LONG_TAUS)
    short = C.truncate(ds, 10_000)
    k = 201
    np.testing.assert_array_equal(short["pairwise_distance"].values, ds["pairwise_distance"].values[:k, :k])
    assert list(short.ref_step.values) == [2000, 4000, 8000] and short.attrs["truncated_from"] == 20_000
    np.testing.assert_array_equal(short["dist_to_ref"].values, ds["dist_to_ref"].sel(ref_step=[2000, 4000, 8000]).values[:k])
    for dt in ds.dt.values:  # defined where t + dt is a snapshot of the short run, else missing
        a, b = short["adjacent_distance"].sel(dt=dt).values, ds["adjacent_distance"].sel(dt=dt).values[:k]
        inside = short.step.values + dt <= 10_000
        np.testing.assert_array_equal(a[inside], b[inside])
        assert np.isnan(a[~inside]).all()
    np.testing.assert_array_equal(short["train_loss"].values, ds["train_loss"].values[:k])
    assert verdict(short).verdict == "two phases, cone"
    with pytest.raises(ValueError, match="snapshot step"):
        C.truncate(ds, 10_025)


def test_jitter_loss_exponent_of_a_known_power_law():
    """Converging drift: jitter radius proportional to t^-1/2 from step 1000, training loss to
    t^-3/2, so the jitter goes as loss^(1/3)."""
    ds = synthetic.trajectory("converging drift", 0, steps=LONG_STEPS, taus=LONG_TAUS)
    assert C.jitter_loss_exponent(ds, 4000) == pytest.approx(1 / 3, abs=0.06)
    late = C.jitter_change(ds, (4000, 10_000), (14_000, 20_000), n_boot=N_BOOT)
    assert late.ratio == pytest.approx(np.sqrt(7000 / 17000), rel=0.1)  # the radius at the windows' middles


def test_matched_loss_finds_the_first_step_at_the_target():
    steps = np.arange(0, 10_001, 50)
    loss = 1.0 / (1.0 + steps / 100.0)  # 1 / (1 + t/100) <= 0.0101 from t = 9801 on
    ds = pd.DataFrame({"step": steps, "train_loss": loss}).set_index("step").to_xarray()
    assert C.matched_loss(ds, 0.0101, smooth=1) == 9850
    assert C.matched_loss(ds, 0.5, smooth=1) == 4000  # reached at 100, but not before min_steps
    assert C.matched_loss(ds, 0.51, smooth=1, min_steps=0) == 100
    assert C.matched_loss(ds, 1e-3, smooth=1) is None
    with pytest.raises(ValueError, match="target"):
        C.matched_loss(ds, 0.0)


def test_effective_step_and_schedule_label():
    assert C.effective_step(0.01, 0.9) == pytest.approx(0.1)
    assert C.effective_step(0.1, 0.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="momentum"):
        C.effective_step(0.1, 1.0)
    assert C.schedule_label({"lr": 0.1, "milestones": ()}) == "constant lr 0.1"
    assert C.schedule_label({"lr": 0.1, "milestones": (2000,), "gamma": 0.01}) == "lr 0.1, ×0.01 at step 2,000"


# --------------------------------------------------------------------------------------------
# summaries of stand-in runs: the whole analysis and the report
# --------------------------------------------------------------------------------------------

BASE10 = {"model": "lenet_300_100", "dataset": "digits", "steps": 10_000, "snapshot_every": 50,
          "dts": [50, 100, 200, 400, 800], "taus": [2000, 4000, 6000, 8000], "probe_size": 16, "device": "cpu"}


def _with_curves(ds, *, acc: float = 0.98, train_acc: float = 1.0, final_loss: float | None = None):
    n = ds.sizes["step"]
    ds["test_acc"] = ("step", np.linspace(0.1, acc, n))
    ds["train_acc"] = ("step", np.linspace(0.1, train_acc, n))
    if final_loss is not None:
        ds["train_loss"] = ("step", np.geomspace(2.3, final_loss, n))
    ds["test_loss"] = ("step", np.linspace(2.3, 0.1, n))
    ds.attrs["wall_seconds"] = 10.0
    return ds


def _controls_stand_in(coords: dict):
    """The stand-in of a control run (what each construction must be judged to be is known):
    base: a jitter cone; ×0.1 at 2000: the jitter times sqrt(0.1) (a noise ball); ×0.01 at 2000:
    the jitter unchanged (no noise ball); momentum: no early phase and an unfit training set."""
    seed = int(coords["seed"])
    if coords["momentum"] == 0.9:
        return _with_curves(synthetic.trajectory("no early phase", seed), acc=0.95, train_acc=0.96, final_loss=0.15)
    if not coords["milestones"]:
        return _with_curves(synthetic.trajectory("jitter cone", seed, tau1=200), final_loss=1e-3)
    factor = np.sqrt(0.1) if coords["gamma"] == 0.1 else 1.0
    return _with_curves(synthetic.trajectory("jitter cone", seed, tau1=200,
                                             jitter_schedule=lambda t: np.where(t >= 2000, factor, 1.0)),
                        final_loss=5e-3)


@pytest.fixture(scope="module")
def summaries(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    grid = Grid.from_mapping({"base": BASE10, "grid": {"seed": [0, 1]}, "blocks": [
        {"milestones": [[], [2000]], "gamma": [0.1]}, {"milestones": [[2000]], "gamma": [0.01]},
        {"momentum": [0.9], "lr": [0.01]}]})
    for p in expand_grid(grid):
        save_result(_controls_stand_in(p.coords), result_path(EXPERIMENT, p.config.identity(), root))
    long = Grid.from_mapping({"base": {**BASE10, "steps": 20_000, "taus": list(LONG_TAUS)}, "grid": {"seed": [0]},
                              "blocks": [{"momentum": [0.0]}, {"momentum": [0.9]}]})
    for p in expand_grid(long):
        kind = "jitter cone" if p.coords["momentum"] == 0 else "converging drift"
        ds = synthetic.trajectory(kind, 5, steps=LONG_STEPS, taus=LONG_TAUS)
        save_result(_with_curves(ds), result_path(EXPERIMENT, p.config.identity(), root))
    return summarize(grid, root, n_boot=20, save=False), summarize(long, root, n_boot=20, save=False)


def test_control_table_labels_the_cells_against_the_base(summaries):
    controls, long = summaries
    t = C.control_table(controls)
    assert list(t.cell) == ["base setting"] * 2 + ["milestones=[2000]"] * 2 + ["milestones=[2000], gamma=0.01"] * 2 \
        + ["momentum=0.9, lr=0.01"] * 2
    assert list(t.seed) == [0, 1] * 4
    assert list(t.effective_step) == pytest.approx([0.1] * 8)
    assert list(t.fits) == [True] * 6 + [False] * 2
    assert list(t.verdict[-2:]) == ["no two phases"] * 2
    assert list(C.control_table(long).cell) == ["base setting", "momentum=0.9"]


def test_lr_decay_table_pairs_each_decayed_run_with_its_seed_and_reads_the_construction(summaries):
    controls, _ = summaries
    t = C.lr_decay_table(controls, n_boot=N_BOOT)
    assert len(t) == 4
    assert list(zip(t.factor, t.seed)) == [(0.1, 0), (0.1, 1), (pytest.approx(0.01), 0), (pytest.approx(0.01), 1)]
    seeds = controls.seed.values
    assert all(seeds[r] == seeds[ref] == s for r, ref, s in zip(t.run, t.reference, t.seed))
    assert all(controls.milestones.values[ref] == "[]" for ref in t.reference)
    assert t.before.iloc[0] == (1000, 1750) and t.after.iloc[0] == (3000, 10_000)
    noise = t[t.factor == 0.1]
    assert (noise.against == "within").all()
    assert noise.paired.to_numpy() == pytest.approx(np.sqrt(0.1), abs=0.02)
    assert t.soon.iloc[0] == (2500, 3500)  # the first windows (half-width 250) wholly after the decay
    assert noise.paired_soon.to_numpy() == pytest.approx(np.sqrt(0.1), abs=0.03)
    assert (noise.against_soon == "within").all() and (t[t.factor < 0.05].against_soon == "above").all()
    still = t[t.factor < 0.05]
    assert (still.against == "above").all() and (still.paired_hi >= 1.0).all()
    seeds_t = C.lr_decay_seeds(t)
    assert list(seeds_t.against) == ["within", "above"] and list(seeds_t.n_within) == [2, 0]
    assert list(seeds_t.against_soon) == ["within", "above"] and list(seeds_t.n_within_soon) == [2, 0]
    assert seeds_t.paired.iloc[0] == pytest.approx(np.sqrt(0.1), abs=0.02)


def test_long_run_table_reads_convergence_and_the_stable_end_of_phase_one(summaries):
    _, long = summaries
    t = C.long_run_table(long, n_boot=N_BOOT)
    cone, conv = t.iloc[0], t.iloc[1]
    assert cone.verdict == "two phases, cone" and cone.prefix_verdict == "two phases, cone"
    assert cone.phase_one_agree and abs(cone.phase_one_end - cone.prefix_phase_one_end) <= 500
    assert cone.j_ratio_lo <= 1.0 <= cone.j_ratio_hi
    assert conv.prefix_verdict == "two phases, converging"  # the panel's answer at T = 10^4
    mid_late = np.median(LONG_STEPS[LONG_STEPS >= conv.late[0]])
    assert conv.late == (20_000 - 20_000 / 3, 20_000)
    assert conv.j_ratio == pytest.approx(np.sqrt(7000 / mid_late), rel=0.15) and conv.j_ratio_hi < 1
    assert conv.jitter_loss_exponent == pytest.approx(1 / 3, abs=0.08)


def test_counterexample_table_tells_no_two_phases_from_not_converged(summaries):
    controls, _ = summaries
    t = C.counterexample_table([controls], target=2e-3)
    m = t[t.cell == "momentum=0.9, lr=0.01"].iloc[0]
    assert m.n_two_phases == 0 and m.n_fit == 0 and m.n == 2
    assert m.matched_step == [None, None]  # its loss never gets to the base's
    b = t[t.cell == "base setting"].iloc[0]
    # the base's loss falls geometrically from 2.3 to 1e-3 over 200 snapshots: 2.3 r^i <= 2e-3 from i = 183 on
    assert b.n_two_phases == 2 and b.n_fit == 2 and b.matched_step == [9150, 9150]
    assert b.matched_verdict == ["two phases, cone"] * 2


@pytest.fixture(scope="module")
def report(summaries):
    controls, long = summaries
    return R.controls_report(controls, long, n_boot=N_BOOT)


def test_controls_report_says_what_the_seeds_show(report):
    rep = report
    assert rep.facts.n_decay_runs == "4" and rep.facts.n_long_runs == "2" and rep.facts.n_control_runs == "8"
    s = rep.sentences["noise_ball"]
    assert "divided by 10 at step 2,000" in s and "divided by 100 at step 2,000" in s
    assert "The interval of both seeds overlaps that range" in s
    # the stand-ins' losses: geometric from 2.3 to 5e-3 (decayed) and to 1e-3 (base) over 200 snapshots,
    # so their ratio is 5^(i/200); over the after window (i = 60..200) its geometric mean is 5^0.65
    assert rep.decay.loss_ratio.to_numpy() == pytest.approx(5 ** 0.65, rel=1e-3)
    assert rep.facts.decay_x10_loss_ratio == f"{5 ** 0.65:.1f}"
    assert "This is what the noise-ball reading predicts" in s
    assert "does not shrink with the step size in any seed: this contradicts" in s
    assert rep.facts.decay_x10_against == "within" and rep.facts.decay_x100_against == "above"
    c = rep.sentences["counterexample"]
    assert c.startswith("Momentum 0.9 at lr 0.01 (T = 10,000, effective step 0.1): two phases in neither seed")
    assert "had not fit the training set: not converged" in c
    assert "Read at the step where it first reaches the base's final train loss at T = 10^4 (reached in the one " \
           "seed" in c  # the long stand-in of the momentum cell fits
    assert "converging" in rep.sentences["long"] and "agree within their bootstrap intervals in the one seed" \
        in rep.sentences["prefix"]
    for table in (rep.decay_table(), rep.runs_table(), rep.long_table(), rep.counterexample_table()):
        assert isinstance(table, pd.DataFrame) and len(table) > 0
    assert rep.sentences["atlas"] == ""


def test_charts_build_from_the_summaries(summaries, report):
    from conelib.charts.controls import jitter_schedule_chart, long_run_chart, verdict_loss_chart

    controls, long = summaries
    rep = report
    for chart in (jitter_schedule_chart(controls, decay=rep.decay), long_run_chart(long), verdict_loss_chart(rep.runs)):
        spec = chart.to_dict()
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")


# --------------------------------------------------------------------------------------------
# sentences on constructed tables
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, n, text", [(3, 3, "all 3 seeds"), (0, 3, "none of the 3 seeds"), (2, 3, "2 of 3 seeds"),
                                        (2, 2, "both seeds"), (0, 2, "neither seed"), (1, 1, "the one seed"),
                                        (0, 1, "no seed"), (1, 2, "1 of 2 seeds"), (3, 3, "all 3 seeds")])
def test_quantify(k, n, text):
    assert R.quantify(k, n) == text


def _decay_rows(against: list[str], paired_hi: list[float], against_loss: list[str] | None = None) -> pd.DataFrame:
    n = len(against)
    return pd.DataFrame({"against": against, "paired": [0.5] * n, "paired_hi": paired_hi, "after": [(3000, 10_000)] * n,
                         "against_loss": against_loss or against})


@pytest.mark.parametrize("against, his, overall, loss, says", [
    (["within"] * 3, [0.4] * 3, "within", None, ["The interval of all 3 seeds overlaps", "This is what the noise-ball"]),
    (["above"] * 3, [1.2, 1.1, 1.3], "above", None, ["none of the 3 seeds overlaps", "all 3 seeds lie above",
                                                     "does not shrink with the step size in any seed"]),
    (["above", "above", "within"], [0.7, 0.8, 0.6], "above", None,
     ["1 of 3 seeds overlaps", "2 of 3 seeds lie above", "shrinks, but less than an SGD noise ball would:"]),
    (["below"] * 3, [0.05] * 3, "below", None, ["all 3 seeds lie below", "shrinks more than"]),
    (["above"] * 3, [0.7] * 3, "above", ["within", "within", "above"],
     ["stays 4.0 times", "becomes 0.20–0.64, which the interval of 2 of 3 seeds overlaps",
      "consistent with the noise-ball reading once the loss is accounted for"]),
    (["above"] * 3, [0.9] * 3, "above", ["above"] * 3,
     ["which the interval of none of the 3 seeds overlaps", "even with the loss accounted for: the data contradict"]),
])
def test_decay_sentence_quantifies_over_seeds(against, his, overall, loss, says):
    row = {"factor": 0.1, "paired": 0.5, "paired_lo": 0.4, "paired_hi": 0.6, "pred_lo": 0.1, "pred_hi": 0.32,
           "against": overall}
    if loss is not None:  # the loss-adjusted prediction: x sqrt(4) = 2
        row.update(loss_ratio=4.0, pred_loss_lo=0.2, pred_loss_hi=0.64,
                   against_loss="within" if loss.count("within") >= 2 else "above")
    text = R.decay_sentence(row, _decay_rows(against, his, loss), 2000)
    for phrase in says:
        assert phrase in text, (phrase, text)


def test_prefix_and_counterexample_sentences():
    rows = pd.DataFrame({"seed": [0, 1, 2], "phase_one_agree": [True, False, True], "prefix": 10_000,
                         "steps": 30_000, "prefix_verdict": ["two phases, cone"] * 3,
                         "verdict": ["two phases, cone", "two phases, converging", "two phases, cone"],
                         "prefix_phase_one_end": [1200, 1500, 1300], "phase_one_end": [1250, 3000, 1300]})
    text = R.prefix_sentence(rows)
    assert "in 2 of 3 seeds" in text and "is the whole run's in 2 of 3 seeds" in text
    assert "seed 1: 1,500 vs 3,000" in text
    row = {"n": 3, "n_two_phases": 3, "n_fit": 3, "verdicts": ["two phases, cone"] * 3, "steps": 10_000,
           "effective_step": 0.1, "final_train_loss": [1e-3] * 3, "final_train_acc": [1.0] * 3,
           "final_test_acc": [0.98] * 3}
    text = R.counterexample_sentence(row, "Momentum 0.9 at lr 0.01")
    assert "two phases in all 3 seeds" in text and "fit (train accuracy ≥ 99%) in all 3 seeds" in text
    assert "not converged" not in text


# --------------------------------------------------------------------------------------------
# the atlas: the jitter radius against lr / B
# --------------------------------------------------------------------------------------------


def _atlas_like(power: float, seed: int = 0):
    """A minimal atlas summary over lr x batch size whose jitter radius is (lr/B)^power (times 1 +- 2%)."""
    import json

    import xarray as xr

    lrs, bs = np.meshgrid([0.01, 0.03, 0.1, 0.3], [32, 128, 512])
    lr, b = lrs.ravel().astype(float), bs.ravel().astype(float)
    rng = np.random.default_rng(seed)
    jitter = (lr / b) ** power * (1 + 0.02 * rng.uniform(-1, 1, lr.size))
    n = lr.size
    return xr.Dataset(
        {"status": ("run", np.array(["stored"] * n, dtype=object)), "jitter_radius": ("run", jitter),
         "verdict": ("run", np.array(["two phases, cone"] * n, dtype=object))},
        coords={"run": np.arange(n), "lr": ("run", lr), "batch_size": ("run", b), "seed": ("run", np.zeros(n))},
        attrs={"swept_fields": json.dumps(["lr", "batch_size", "seed"]),
               "grid_json": json.dumps({"base": {"model": "lenet_300_100"}})})


@pytest.mark.parametrize("power, against", [(0.6, "within"), (0.9, "within"), (0.2, "below"), (1.4, "above")])
def test_atlas_noise_ball_places_the_slope_against_the_prediction(power, against):
    nb = C.atlas_noise_ball(_atlas_like(power))
    assert nb["n"] == 12 and nb["prediction"] == (0.5, 1.0)
    assert nb["slope"][0] == pytest.approx(power, abs=0.02)
    assert nb["against"] == against
    text = R.atlas_sentence(nb)
    assert f"{nb['n']} learning-rate × batch-size runs" in text and f", {against} the noise-ball range" in text


def test_atlas_noise_ball_without_the_jitter_radius():
    nb = C.atlas_noise_ball(_atlas_like(0.5).drop_vars("jitter_radius"))
    assert nb["n"] == 0 and nb["against"] == "undetermined"
    assert "not available" in R.atlas_sentence(nb)


def _counter_row(lr, wd, warmup, steps, two, fit, loss):
    return {"momentum": 0.9, "lr": lr, "weight_decay": wd, "warmup_steps": warmup, "steps": steps, "n": 3,
            "n_two_phases": two, "n_fit": fit, "effective_step": lr / 0.1, "final_train_loss": [loss] * 3}


@pytest.mark.parametrize("matched_two, high_two, says", [
    (3, 0, "at the base's effective step the two phases are back, so the step size, not momentum, removes them"),
    (0, 0, "momentum removes the early phase even at the base's effective step"),
    (1, 0, "the seeds do not settle whether it is momentum or the step size"),
])
def test_synthesis_sentence_separates_momentum_from_step_size(matched_two, high_two, says):
    counter = pd.DataFrame([_counter_row(0.1, 0.0, 0, 10_000, high_two, 3, 0.01),
                            _counter_row(0.01, 0.0, 0, 10_000, matched_two, 3, 0.01),
                            _counter_row(0.1, 0.0, 1000, 10_000, 3, 3, 0.01)])
    text = R.synthesis_sentence(counter)
    assert says in text
    assert "at lr 0.1 gives two phases in all 3 seeds (without it: " in text
    assert ("the warm-up restores an early phase" in text) == (high_two < 3)


@pytest.mark.parametrize("fit, two, says", [
    (0, 0, "it never converges at this step size"),
    (3, 3, "once trained longer it has two phases"),
    (0, 3, "without fitting the training set"),
])
def test_synthesis_sentence_on_the_long_figure3_candidate(fit, two, says):
    counter = pd.DataFrame([_counter_row(0.1, 5e-3, 0, 10_000, 0, 0, 0.15),
                            _counter_row(0.1, 5e-3, 0, 30_000, two, fit, 0.05)])
    text = R.synthesis_sentence(counter)
    assert "ends at train loss 0.15 at T = 10,000 and 0.05 at T = 30,000" in text
    assert f"fits the training set in {R.quantify(fit, 3)}" in text and says in text


def test_phase_two_sentence_counts_the_seeds_with_the_base_verdict():
    import pandas as pd

    from conelib.report.controls import phase_two_sentence

    def row(cell, seed, verdict, momentum=0.0, lr=0.1, jitter=0.02, wd=0.0, warmup=0):
        return dict(cell=cell, seed=seed, status="stored", verdict=verdict, momentum=momentum, lr=lr,
                    weight_decay=wd, warmup_steps=warmup, effective_step=lr / (1 - momentum), jitter_radius=jitter)

    conv, drift = "two phases, converging", "two phases, drifting"
    runs = pd.DataFrame([row("base setting", s, conv) for s in range(3)]
                        + [row("momentum=0.9, lr=0.01", s, conv, 0.9, 0.01) for s in range(3)]
                        + [row("momentum=0.9", 0, conv, 0.9, jitter=0.2)]
                        + [row("momentum=0.9", s, drift, 0.9, jitter=0.2) for s in (1, 2)]
                        + [row("momentum=0.9, weight_decay=0.005", 0, drift, 0.9, wd=0.005)])
    text = phase_two_sentence(runs)
    assert text.startswith("The base setting's Phase II verdict is *two phases, converging* (all 3 seeds)")
    assert "momentum 0.9 at lr 0.01 (effective step 0.1) gives it in all 3 seeds" in text
    assert "momentum 0.9 at lr 0.1 (effective step 1) gives it in 1 of 3 seeds" in text
    assert "10.0 times the base's" in text and "weight_decay" not in text  # decay cells are left out
    assert phase_two_sentence(runs[runs.cell != "base setting"]) == ""
