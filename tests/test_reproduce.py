"""`conelib reproduce` on a tiny profile: a faithful stored result passes (on the same machine a
recomputation is bitwise identical), a deliberately perturbed one is caught, a missing one is named;
the runs are jobs on a Dask LocalCluster, a second call resumes (recomputes nothing), and --quick
recomputes the cheapest run of each figure."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

from conelib.analysis.atlas_summary import summarize
from conelib.tools import cli
from conelib.experiments import kernel_dynamics, kernel_dynamics_configs, switching, switching_configs
from conelib.tools.reproduce import plan, projected_seconds, reproduce
from conelib.results import load_result, result_path, save_result
from conelib.sweep import load_grid, run_sweep

TINY = {"model": "lenet_300_100", "dataset": "digits", "steps": 40, "batch_size": 32, "lr": 0.05, "seed": 0,
        "device": "cpu"}


@pytest.fixture()
def tiny_profile(tmp_path, monkeypatch):
    """A profile of one tiny run per experiment, its results computed into a stored results root."""
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({
        "kernel_dynamics": {**TINY, "steps": 80, "snapshot_every": 5, "dts": [10, 20], "taus": [10, 30],
                            "probe_size": 20},
        "switching": {**TINY, "switch_steps": [20], "eval_every": 20, "processes": 1},
    }))
    stored = tmp_path / "stored"
    monkeypatch.setenv("CONELIB_RESULTS", str(stored))
    for cfg in kernel_dynamics_configs(str(profile)):
        kernel_dynamics(cfg, progress=False)
    for cfg in switching_configs(str(profile)):
        switching(cfg, progress=False)
    return profile, stored


def _failed(report):
    return {(r["experiment"], r["measure"]) for r in report.rows if not r["passed"]}


@pytest.mark.timeout(300)
def test_a_faithful_result_passes_and_a_perturbed_one_is_caught(tiny_profile, tmp_path):
    profile, stored = tiny_profile
    report = reproduce(scratch=tmp_path / "a", profile=str(profile), only=["kernel_dynamics", "switching"],
                       write_page=False)
    assert report.ok, report.frame()
    assert {r["experiment"] for r in report.rows} == {"kernel_dynamics", "switching"}
    assert (tmp_path / "a" / "reproduce.json").exists()

    # perturb the stored results as a silent corruption would (re-saved, so the checksum is valid)
    kd_cfg = kernel_dynamics_configs(str(profile))[0]
    path = result_path("kernel_dynamics", kd_cfg.identity(), stored)
    ds = load_result(path).load()
    ds["test_acc"][-1] = float(ds["test_acc"][-1]) - 0.3  # far beyond 3 standard errors on 360 test images
    save_result(ds, path)
    sw_cfg = switching_configs(str(profile))[0]
    path = result_path("switching", sw_cfg.identity(), stored)
    sw = load_result(path).load()
    sw["final_test_acc"][:] = sw["final_test_acc"].values - 0.3
    save_result(sw, path)

    report = reproduce(scratch=tmp_path / "b", profile=str(profile), only=["kernel_dynamics", "switching"],
                       write_page=False)
    assert not report.ok
    assert _failed(report) == {("kernel_dynamics", "final_test_acc"), ("switching", "final_test_acc")}
    assert "**FAIL**" in report.markdown() and "FAIL" in str(report)


def test_tolerances_follow_the_intervals_of_the_two_runs():
    """A measure whose bootstrap interval is wide gets a wide tolerance; a verdict that its own
    bootstrap draws do not support is reported as unstable, not failed."""
    import math

    from conelib.measures import assess, synthetic
    from conelib.tools.reproduce import accuracy_tolerance, compare_assessed

    a = assess(synthetic.trajectory("steady drift", seed=0), n_boot=30, sensitivity=False)
    b = assess(synthetic.trajectory("steady drift", seed=1), n_boot=30, sensitivity=False)
    rows = {r["measure"]: r for r in compare_assessed("kd", "x", a, b)}
    want = math.sqrt(a.half_width("growth_exponent") ** 2 + b.half_width("growth_exponent") ** 2)
    assert rows["growth_exponent"]["tolerance"] == max(0.02, want)
    assert rows["growth_exponent"]["passed"] == (abs(a.point.growth_exponent - b.point.growth_exponent)
                                                 <= rows["growth_exponent"]["tolerance"] + 1e-12)
    assert rows["verdict"]["passed"] and rows["verdict"]["stored"] == "two phases, drifting"
    assert accuracy_tolerance(0.98, 10000) == pytest.approx(max(0.001, 3 * math.sqrt(2 * 0.98 * 0.02 / 10000)))


@pytest.mark.timeout(120)
def test_a_missing_stored_result_is_named_and_fails(tiny_profile, tmp_path):
    profile, stored = tiny_profile
    for p in (stored / "switching").glob("*.nc"):
        p.unlink()
    report = reproduce(scratch=tmp_path / "c", profile=str(profile), only=["switching"], write_page=False)
    assert not report.ok and report.missing == ["switching lenet_300_100"]
    with pytest.raises(ValueError, match="unknown experiment"):
        reproduce(scratch=tmp_path / "d", profile=str(profile), only=["figure9"], write_page=False)


# ------------------------------------------------------------------------------------------
# on Dask: jobs on a LocalCluster, resuming, --quick
# ------------------------------------------------------------------------------------------


#: the experiments the tiny profile below stores (the controls sweep is the repository's: see below)
FIGURES = ["kernel_dynamics", "switching", "atlas"]


def test_the_controls_sweep_is_planned_from_its_committed_summary():
    """The controls grid (sweeps/controls.yaml) is reproduced like the atlas: one kernel-dynamics
    run per grid point, its cost read from the committed summary."""
    from conelib.sweep import expand_grid, load_grid
    from conelib.paths import sweeps_dir

    runs, missing = plan("mnist", ["controls"])
    points = expand_grid(load_grid(sweeps_dir() / "controls.yaml"))
    assert not missing and len(runs) == len(points) > 0
    assert all(r.experiment == "kernel_dynamics" and r.figures == ["controls"] for r in runs)
    assert all(np.isfinite(r.cost) and r.cost > 0 for r in runs)
    quick, _ = plan("mnist", ["controls"], quick=True)
    assert len(quick) == 1 and quick[0].cost == min(r.cost for r in runs)


@pytest.fixture()
def two_seed_profile(tmp_path, monkeypatch):
    """Two seeds of each experiment and a two-run atlas grid (the kernel-dynamics runs again, so the
    plan must compute them once for both figures), stored in a results root."""
    profile = tmp_path / "tiny2.yaml"
    profile.write_text(yaml.safe_dump({
        "kernel_dynamics": {**TINY, "seeds": [0, 1], "snapshot_every": 10, "dts": [10, 20], "taus": [10, 30],
                            "probe_size": 20},
        "switching": {**TINY, "seeds": [0, 1], "switch_steps": [20], "eval_every": 20, "processes": 1},
    }))
    grid = tmp_path / "atlas.yaml"
    base = {k: v for k, v in TINY.items() if k != "seed"}
    grid.write_text(yaml.safe_dump({"base": {**base, "snapshot_every": 10, "dts": [10, 20], "taus": [10, 30],
                                             "probe_size": 20}, "grid": {"seed": [0, 1]}}))
    stored = tmp_path / "stored"
    monkeypatch.setenv("CONELIB_RESULTS", str(stored))
    for cfg in kernel_dynamics_configs(str(profile)):
        kernel_dynamics(cfg, progress=False)
    for cfg in switching_configs(str(profile)):
        switching(cfg, progress=False)
    # loads the runs above and writes the atlas summary
    assert run_sweep(load_grid(grid), workers=1, progress=False, summarize=lambda g, r: summarize(g, r, n_boot=20)).ok
    return profile, grid


def _mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.nc")}


@pytest.mark.timeout(600)
def test_reproduce_runs_its_jobs_on_a_dask_cluster_and_resumes(two_seed_profile, tmp_path):
    profile, grid = two_seed_profile
    scratch = tmp_path / "scratch"
    report = reproduce(scratch=scratch, profile=str(profile), workers=2, atlas_grid=grid, write_page=False,
                       progress=False, only=FIGURES)
    assert report.ok, ([r for r in report.rows if not r["passed"]], report.failed, report.missing)
    assert "2 Dask workers" in report.cluster
    # 2 kernel-dynamics runs (also the atlas' two runs: computed once) + 2 switching seeds
    assert sorted((j["experiment"], j["status"]) for j in report.jobs) == [
        ("kernel_dynamics", "computed")] * 2 + [("switching", "computed")] * 2
    assert all(j["pid"] != os.getpid() for j in report.jobs)  # each ran in a worker process
    assert {r["experiment"] for r in report.rows} == {"kernel_dynamics", "switching", "atlas"}
    assert {r["run"] for r in report.rows if r["experiment"] == "switching"} == {
        f"lenet_300_100 t={t} seed {s}" for t in (0, 20, 40) for s in (0, 1)}
    before = _mtimes(scratch / "kernel_dynamics") | _mtimes(scratch / "switching")
    assert len(before) == 4

    again = reproduce(scratch=scratch, profile=str(profile), workers=2, atlas_grid=grid, write_page=False,
                      progress=False, only=FIGURES)
    assert again.ok
    assert [j["status"] for j in again.jobs] == ["resumed"] * 4 and again.cluster == ""  # no cluster needed
    assert _mtimes(scratch / "kernel_dynamics") | _mtimes(scratch / "switching") == before
    assert [(r["run"], r["measure"], repr(r["recomputed"])) for r in again.rows] == [
        (r["run"], r["measure"], repr(r["recomputed"])) for r in report.rows]  # repr: NaN equals NaN


@pytest.mark.timeout(600)
def test_quick_recomputes_the_cheapest_run_of_each_figure(two_seed_profile, tmp_path):
    profile, grid = two_seed_profile
    full, _ = plan(str(profile), FIGURES, atlas_grid=grid)
    quick, missing = plan(str(profile), FIGURES, quick=True, atlas_grid=grid)
    assert not missing
    for figure in ("kernel_dynamics", "switching", "atlas"):
        mine = [r for r in quick if figure in r.figures]
        assert len(mine) == 1, figure
        assert mine[0].cost == min(r.cost for r in full if figure in r.figures)
    report = reproduce(scratch=tmp_path / "q", profile=str(profile), quick=True, workers=2, atlas_grid=grid,
                       progress=False, only=FIGURES)
    assert report.ok and report.quick
    assert len({r["run"] for r in report.rows if r["experiment"] == "kernel_dynamics"}) == 1
    assert len({r["run"] for r in report.rows if r["experiment"] == "atlas"}) == 1
    seeds = {r["run"].rsplit(" seed ", 1)[1] for r in report.rows if r["experiment"] == "switching"}
    assert len(seeds) == 1
    assert len(report.jobs) == len(quick) <= 3


def test_projected_time_of_longest_first_scheduling():
    # by hand: 3 and 3 start; the three 2s go to whichever worker is free first: 3+2, 3+2, then 5+2
    assert projected_seconds([2, 3, 2, 3, 2], 2) == 7
    assert projected_seconds([2, 3, 2, 3, 2], 1) == 12  # one worker: the sum
    assert projected_seconds([2, 3, 2, 3, 2], 9) == 3  # a worker each: the longest
    assert projected_seconds([], 4) == 0
    with pytest.raises(ValueError, match="workers must be >= 1"):
        projected_seconds([1.0], 0)


def test_bad_workers_and_scratch_are_refused_by_name(tiny_profile, tmp_path, capsys):
    profile, _ = tiny_profile
    with pytest.raises(ValueError, match="workers must be a positive number"):
        reproduce(scratch=tmp_path / "w", profile=str(profile), workers=0)
    with pytest.raises(ValueError, match="either scratch or fresh"):
        reproduce(scratch=tmp_path / "w", profile=str(profile), fresh=True)
    assert cli.main(["reproduce", "--profile", str(profile), "--workers", "0", "--no-page"]) == 2
    assert "workers must be a positive number of LocalCluster workers, got 0" in capsys.readouterr().err
