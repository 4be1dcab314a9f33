"""Tests of `conelib.sweep`: grids, the summary over stored runs, and a real sweep on a Dask LocalCluster.

Oracles: grids are checked against explicit nested loops over the axes; the summary against
`conelib.measures.verdict` called directly on each stored run (stand-in Datasets built from
synthetic kernels, so no training is needed); the Dask sweep against the files it leaves on disk.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

import sys
from pathlib import Path

from conelib import cli
from conelib.experiments.kernel_dynamics import EXPERIMENT, KernelDynamicsConfig
from conelib.measures import VERDICTS, verdict
from conelib.profiles import load_profile
from conelib.results import config_hash, load_result, result_path, save_result
from conelib.sweep import (
    SENSITIVITY,
    Grid,
    expand_grid,
    failure_path,
    load_grid,
    pending,
    run_from_summary,
    run_sweep,
    summarize,
    summary_path,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import stand_in  # noqa: E402

#: tiny runs: an MLP on scikit-learn's 8x8 digits, 40 steps, eNTK on 16 probe images every 10 steps
TINY_BASE = {
    "model": "lenet_300_100", "dataset": "digits", "steps": 40, "snapshot_every": 10, "dts": [10],
    "taus": [20], "probe_size": 16, "batch_size": 32, "momentum": 0.9, "weight_decay": 0, "device": "cpu",
}


# ------------------------------------------------------------------------------------------
# grids
# ------------------------------------------------------------------------------------------


def test_expand_grid_is_the_cartesian_product_over_the_base():
    grid = Grid.from_mapping({"base": TINY_BASE, "grid": {"lr": [0.01, 0.1], "seed": [0, 1, 2], "width": [1, 2]}})
    points = expand_grid(grid)
    assert grid.size == len(points) == 12
    i = 0
    for lr in (0.01, 0.1):  # row-major: the last axis varies fastest
        for seed in (0, 1, 2):
            for width in (1, 2):
                coords, cfg, _ = points[i]
                assert coords == {"lr": lr, "seed": seed, "width": width}
                want = KernelDynamicsConfig.from_mapping({**TINY_BASE, "weight_decay": 0.0, "lr": lr, "seed": seed,
                                                          "width": width})
                assert cfg == want
                i += 1


def test_blocks_are_a_union_of_products_crossed_with_the_grid_and_shared_runs_count_once():
    grid = Grid.from_mapping({"base": {**TINY_BASE, "lr": 0.1}, "grid": {"seed": [0, 1]},
                              "blocks": [{"lr": [0.01, 0.1]}, {"width": [1, 2], "lr": [0.1]}]})
    points = expand_grid(grid)
    # block 0: lr 0.01, 0.1 (x2 seeds); block 1: width 1, 2 at lr 0.1 (x2 seeds); (lr 0.1, width 1) is shared
    want = {(0.01, 1.0, 0): (0,), (0.01, 1.0, 1): (0,), (0.1, 1.0, 0): (0, 1), (0.1, 1.0, 1): (0, 1),
            (0.1, 2.0, 0): (1,), (0.1, 2.0, 1): (1,)}
    got = {(p.coords["lr"], p.coords["width"], p.coords["seed"]): p.blocks for p in points}
    assert got == want and grid.size == 6
    assert grid.swept == ["lr", "width", "seed"]
    assert len({config_hash(p.config.identity()) for p in points}) == 6
    with pytest.raises(ValueError, match="sweep none of the 'grid' parameters"):
        Grid.from_mapping({"base": TINY_BASE, "grid": {"seed": [0]}, "blocks": [{"seed": [1]}]})


def test_grid_from_a_profile_with_overrides():
    grid = Grid.from_mapping({"base": {"profile": "quick", "steps": 2400}, "grid": {"lr": [0.01]}})
    quick = load_profile("quick", EXPERIMENT)
    assert grid.base["steps"] == 2400
    assert grid.base["model"] == quick["model"] and grid.base["probe_size"] == quick["probe_size"]
    # the hash covers the resolved configuration, not the profile's name
    explicit = Grid.from_mapping({"base": {**quick, "steps": 2400}, "grid": {"lr": [0.01]}})
    assert explicit.hash == grid.hash
    assert Grid.from_mapping({"base": {**quick, "steps": 2600}, "grid": {"lr": [0.01]}}).hash != grid.hash
    # ... and not the order of the axes, nor the base value of a swept field
    a = Grid.from_mapping({"base": TINY_BASE, "grid": {"lr": [0.01, 0.1], "seed": [0, 1]}})
    b = Grid.from_mapping({"base": {**TINY_BASE, "lr": 0.3}, "grid": {"seed": [0, 1], "lr": [0.01, 0.1]}})
    assert a.hash == b.hash


def test_yaml_integers_for_float_fields_hash_like_floats(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"base": TINY_BASE, "grid": {"weight_decay": [0, 1], "lr": [1]}}))
    grid = load_grid(path)
    cfgs = [p.config for p in expand_grid(grid)]
    assert [c.weight_decay for c in cfgs] == [0.0, 1.0] and all(isinstance(c.lr, float) for c in cfgs)
    same = KernelDynamicsConfig.from_mapping({**TINY_BASE, "weight_decay": 0.0, "lr": 1.0})
    assert config_hash(cfgs[0].identity()) == config_hash(same.identity())
    assert grid.source == str(path)


@pytest.mark.parametrize(
    "mapping, match",
    [
        ({"base": TINY_BASE, "grid": {"lr": [0.1]}, "workers": 3}, r"unknown key\(s\) \['workers'\].*allowed"),
        ({"base": TINY_BASE, "grid": {"learning_rate": [0.1]}}, r"unknown parameter\(s\) 'learning_rate'.*valid: \["),
        ({"base": TINY_BASE, "grid": {"device": ["cpu", "cuda"]}}, "'device' says where/how to run"),
        ({"base": TINY_BASE, "grid": {"lr": []}}, "at least one value"),
        ({"base": TINY_BASE, "grid": {"lr": [0.1, 0.1]}}, "twice"),
        ({"base": TINY_BASE, "grid": {}}, "non-empty mapping"),
        ({"base": TINY_BASE, "grid": {"lr": [0.1]}, "blocks": {"lr": [1]}}, "list of mappings"),
        ({"base": TINY_BASE, "grid": {"model": ["lenet5", "nope"]}}, r"parameter 'model' must be one of .*got 'nope'"),
        ({"base": TINY_BASE, "grid": {"steps": [40, 45]}}, r"grid point \{'steps': 45\}.*snapshot_every"),
        ({"base": {**TINY_BASE, "optimizer": "adam"}, "grid": {"lr": [0.1]}}, r"unknown parameter\(s\) 'optimizer'.*in 'base' of the grid"),
    ],
)
def test_bad_grids_are_rejected(mapping, match):
    with pytest.raises(ValueError, match=match):
        Grid.from_mapping(mapping)


def test_missing_grid_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="grid file not found"):
        load_grid(tmp_path / "nope.yaml")


def test_the_repository_grids_are_valid():
    from conelib.paths import sweeps_dir

    files = sorted(sweeps_dir().glob("*.yaml"))
    assert files, "sweeps/ holds the grids that were run"
    for f in files:
        assert load_grid(f).size >= 2


# ------------------------------------------------------------------------------------------
# the summary, from stand-in results
# ------------------------------------------------------------------------------------------


def test_summarize_reads_the_measures_of_every_run_and_lists_every_run(tmp_path):
    grid = Grid.from_mapping({"base": TINY_BASE, "grid": {"lr": [0.01, 0.1], "seed": [0, 1, 2]}})
    points = expand_grid(grid)
    kinds = ["steady", "cone", "lazy", "none", None, "failed"]  # point 4 is not run, point 5 failed
    stored = {}
    for p, kind, acc in zip(points, kinds, (0.5, 0.6, 0.7, 0.8, 0.0, 0.0)):
        if kind == "failed":
            failure_path(p.config, tmp_path).parent.mkdir(parents=True, exist_ok=True)
            failure_path(p.config, tmp_path).write_text(json.dumps({"error": "TrainingDivergedError: boom"}))
        elif kind is not None:
            ds = stand_in(kind, acc)
            save_result(ds, result_path(EXPERIMENT, p.config.identity(), tmp_path))
            stored[int(np.flatnonzero([q is p for q in points])[0])] = ds
    assert [p.coords for p in pending(grid, tmp_path)] == [{"lr": 0.1, "seed": 1}, {"lr": 0.1, "seed": 2}]

    summary = summarize(grid, tmp_path)
    assert summary.verdict.dims == ("run",) and summary.sizes["run"] == 6
    assert list(summary.lr.values) == [0.01] * 3 + [0.1] * 3 and list(summary.seed.values) == [0, 1, 2] * 2
    for i, ds in stored.items():
        v = verdict(ds)  # the oracle: the measures called directly on the stored run
        row = summary.isel(run=i)
        assert str(row.status.values) == "stored"
        assert str(row.verdict.values) == v.verdict and int(row.verdict_code) == VERDICTS.index(v.verdict)
        for name in ("phase_one_end", "drop", "laziness", "floor_exponent", "max_growth_exponent"):
            want = getattr(v, name)
            assert float(row[name]) == pytest.approx(np.nan if want is None else want, nan_ok=True)
        assert float(row.final_test_acc) == pytest.approx(float(ds.test_acc[-1]))
        assert float(row.wall_seconds) == 12.5
        np.testing.assert_allclose(row["dist_to_ref"].values, ds["dist_to_ref"].values, rtol=1e-6, atol=1e-7)
    assert list(summary.verdict.values[:4]) == ["two phases, drifting", "two phases, cone", "two phases, lazy",
                                                "no two phases"]
    assert list(summary.status.values[4:]) == ["missing", "failed"]
    assert str(summary.error.values[5]) == "TrainingDivergedError: boom"
    assert int(summary.verdict_code.values[4]) == -1 and np.isnan(float(summary.final_test_acc[4]))
    assert summary.attrs["n_missing"] == 2 and summary.attrs["n_failed"] == 1 and summary.attrs["n_runs"] == 6
    # the sensitivity counts: the defaults count each stored run once, and every setting is there
    counts = summary.verdict_counts
    assert int(counts.sel(setting="defaults").sum()) == 4
    assert len(summary.setting) == 1 + sum(len(v) for v in SENSITIVITY.values())
    assert int(counts.sel(setting="lazy_ratio=0.2", verdict_label="two phases, lazy")) >= 1
    # stored where summary_path says, verified on load; a run's curves come back as a Dataset
    back = load_result(summary_path(grid, tmp_path))
    assert summary_path(grid, tmp_path).parent.name == "sweeps"
    assert list(back.verdict.values) == list(summary.verdict.values)
    one = run_from_summary(back, 1)
    assert one.attrs["verdict"] == "two phases, cone" and verdict(one.assign(
        pairwise_distance=stored[1]["pairwise_distance"])).verdict == "two phases, cone"
    with pytest.raises(ValueError, match="not stored"):
        run_from_summary(back, 4)


def test_summary_coordinates_of_none_and_tuples_are_text(tmp_path):
    grid = Grid.from_mapping({"base": {**TINY_BASE, "model": "resnet20"},
                              "grid": {"norm": [None, "layernorm"], "dts": [[10], [10, 20]]}})
    summary = summarize(grid, tmp_path, save=False)
    assert list(summary.norm.values) == ["none", "none", "layernorm", "layernorm"]
    assert sorted(set(summary.dts.values)) == ["[10, 20]", "[10]"]
    assert (summary.verdict_code.values == -1).all() and (summary.status.values == "missing").all()


# ------------------------------------------------------------------------------------------
# a real sweep on a Dask LocalCluster
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sweep_on_a_local_cluster_isolates_failures_and_resumes(tmp_path, capsys):
    """6 tiny runs on 2 workers; lr = 1e4 diverges at once (TrainingDivergedError) for both seeds."""
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(yaml.safe_dump({"base": TINY_BASE, "grid": {"lr": [0.01, 0.05, 1.0e4], "seed": [0, 1]},
                                         "results_root": str(tmp_path / "results")}))
    grid = load_grid(grid_file)
    root = tmp_path / "results"

    report = run_sweep(grid, workers=2, progress=False)
    assert report.total == 6 and report.submitted == 6 and not report.skipped
    assert len(report.completed) == 4 and len(report.failed) == 2
    assert sorted(f.coords["seed"] for f in report.failed) == [0, 1]
    for f in report.failed:
        assert f.coords["lr"] == 1.0e4 and f.config["lr"] == 1.0e4
        assert f.error.startswith("TrainingDivergedError: training diverged")
        assert "Traceback" in f.traceback
        assert f"lr=10000.0, seed={f.coords['seed']}" in str(report)
    # the good runs are stored, the failed ones are not, and nothing partial was left behind
    for coords, cfg, _ in expand_grid(grid):
        assert result_path(EXPERIMENT, cfg.identity(), root).exists() == (coords["lr"] != 1.0e4)
        assert failure_path(cfg, root).exists() == (coords["lr"] == 1.0e4)
    assert not list(root.rglob("*.tmp*"))
    assert report.summary_path == summary_path(grid, root) and report.summary_path.exists()
    summ = report.summary
    failed = summ.lr.values == 1.0e4
    assert (summ.verdict_code.values[failed] == -1).all() and (summ.verdict_code.values[~failed] >= 0).all()
    assert set(summ.status.values[failed]) == {"failed"}
    assert all(str(e).startswith("TrainingDivergedError") for e in summ.error.values[failed])

    # a job killed before its (atomic) write leaves no file: remove one result to stand for it
    lost = expand_grid(grid)[1]
    result_path(EXPERIMENT, lost.config.identity(), root).unlink()
    assert len(pending(grid)) == 3

    # the rerun, through the command line and a running scheduler given by its address:
    # only the missing and the failed configurations are submitted
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # the two diverging runs fail again: the command says so with a non-zero exit code
        assert cli.main(["sweep", str(grid_file), "--address", cluster.scheduler_address]) == 1
        assert len(cluster.workers) == 2  # the sweep left the cluster it was given running
    out = capsys.readouterr().out
    assert cluster.scheduler_address in out
    assert "already stored: 3, computed now: 1, failed: 2" in out
    assert "lr=10000.0, seed=0" in out and "TrainingDivergedError" in out
    assert result_path(EXPERIMENT, lost.config.identity(), root).exists()
    assert [p.coords for p in pending(grid)] == [{"lr": 1.0e4, "seed": 0}, {"lr": 1.0e4, "seed": 1}]
    summary = load_result(summary_path(grid, root))
    assert int((summary.verdict_code >= 0).sum()) == 4 and int((summary.status == "failed").sum()) == 2

    # once everything that can be stored is, a sweep of the good part submits nothing
    good = dataclasses.replace(grid, axes={"lr": (0.01, 0.05), "seed": (0, 1)})
    again = run_sweep(good, progress=False, write_summary=False)
    assert again.submitted == 0 and len(again.skipped) == 4 and again.cluster == ""


def test_summarize_checks_its_thresholds_and_survives_an_unreadable_run(tmp_path):
    grid = Grid.from_mapping({"base": TINY_BASE, "grid": {"lr": [0.01, 0.1, 0.3]}})
    with pytest.raises(ValueError, match=r"unknown threshold\(s\) \['rho'\]"):
        summarize(grid, tmp_path, rho=0.2)
    with pytest.raises(ValueError, match="fraction must be in"):
        summarize(grid, tmp_path, fraction=2.0)
    (good, bad, broken) = expand_grid(grid)
    save_result(stand_in("lazy"), result_path(EXPERIMENT, good.config.identity(), tmp_path))
    save_result(stand_in("lazy").drop_vars("adjacent_distance"), result_path(EXPERIMENT, bad.config.identity(), tmp_path))
    path = result_path(EXPERIMENT, broken.config.identity(), tmp_path)
    save_result(stand_in("cone"), path)
    path.write_bytes(path.read_bytes()[:500])  # truncated: unreadable
    with pytest.warns(RuntimeWarning, match="could not be measured|not usable"):
        summary = summarize(grid, tmp_path, save=False)
    assert list(summary.verdict.values) == ["two phases, lazy", "missing", "missing"]
    assert list(summary.status.values) == ["stored", "unreadable", "unreadable"]
    # the thresholds reach the measures: with lazy_ratio = 0 a frozen kernel is no longer "lazy"
    with pytest.warns(RuntimeWarning):
        other = summarize(grid, tmp_path, save=False, lazy_ratio=0.0)
    assert str(other.verdict.values[0]) == "two phases, cone"
    assert json.loads(other.attrs["thresholds_json"])["lazy_ratio"] == 0.0
    # the sweep itself resubmits the unreadable one (it does not count as stored)
    assert [p.coords for p in pending(grid, tmp_path)] == [{"lr": 0.3}]  # (lr 0.1 is stored, just not measurable)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_atlas_and_counterexample_charts_hold_every_run(tmp_path):
    from conelib.charts import atlas_chart, counterexample_chart, measures_chart

    grid = Grid.from_mapping({"base": TINY_BASE, "grid": {"seed": [0, 1]},
                              "blocks": [{"lr": [0.01, 0.1], "width": [1, 2]}, {"momentum": [0.0, 0.9]}]})
    kinds = ["cone", "lazy", "steady", "walk", "none", None, "cone", "lazy", "steady", "walk"]
    runs = {}
    for p, kind in zip(expand_grid(grid), kinds):
        if kind is not None:
            save_result(stand_in(kind), result_path(EXPERIMENT, p.config.identity(), tmp_path))
            runs[kind] = stand_in(kind)
    summary = summarize(grid, tmp_path, save=False)
    spec = atlas_chart(summary).to_dict()  # validated against the Vega-Lite schema
    blocks = spec["vconcat"][0]["vconcat"][0]["hconcat"]
    assert [b["title"] for b in blocks] == ["lr × width", "momentum"]
    rows = [r for b in blocks for r in spec["datasets"][b["data"]["name"]]]
    want = {(int(r), str(summary.verdict.values[r]) if summary.status.values[r] != "failed" else "failed")
            for r in summary.run.values}
    assert {(r["run"], r["verdict"]) for r in rows} == want  # every run, in its block(s)
    assert measures_chart(summary).to_dict()["layer"]
    cmp = counterexample_chart({"A": runs["cone"], "B": runs["steady"]}).to_dict()
    names = [p["name"] for p in cmp.get("params", [])]
    assert len(names) == len(set(names))
    assert len(cmp["vconcat"]) == 4
    with pytest.raises(ValueError, match="at least one"):
        counterexample_chart({})


def test_cells_group_the_seeds_of_a_factor_left_at_none(tmp_path):
    """``n_train: [null, 200]`` (null: the whole training set) gives two cells of two seeds each;
    a missing value must not break the grouping (pandas keeps NaN through ``astype(str)``)."""
    from conelib.atlas import cells, run_label

    grid = Grid.from_mapping({"base": TINY_BASE, "grid": {"seed": [0, 1], "n_train": [None, 200]}})
    summary = summarize(grid, tmp_path, save=False)
    c = cells(summary)
    assert len(c) == 2 and all(len(r) == 2 for r in c.runs)
    assert sorted(c.label) == ["base setting", "n_train=200"]  # the base has n_train=None
    by_runs = {tuple(sorted(int(summary.seed.values[i]) for i in r)) for r in c.runs}
    assert by_runs == {(0, 1)}
    # a run is named by what differs from the base, and its seed
    for r in summary.run.values:
        n, seed = summary.n_train.values[r], int(summary.seed.values[r])
        want = f"seed={seed}" if np.isnan(n) else f"n_train=200, seed={seed}"
        assert run_label(summary, int(r)) == want
