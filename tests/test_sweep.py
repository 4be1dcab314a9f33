"""Tests of `conelib.sweep`: grids and a real sweep on a Dask LocalCluster (the atlas summary it
writes is tested in `tests/test_atlas_summary.py`).

Oracles: grids are checked against explicit nested loops over the axes; the Dask sweep against
the files it leaves on disk.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from conelib.tools import cli
from conelib.experiments.kernel_dynamics import EXPERIMENT, KernelDynamicsConfig
from conelib.analysis.atlas_summary import summarize, summary_path
from conelib.profiles import load_profile
from conelib.results import config_hash, load_result, result_path
from conelib.sweep import Grid, expand_grid, failure_path, load_grid, pending, run_sweep

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

    report = run_sweep(grid, workers=2, progress=False, summarize=lambda g, r: summarize(g, r, n_boot=20))
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
    again = run_sweep(good, progress=False)
    assert again.submitted == 0 and len(again.skipped) == 4 and again.cluster == ""
