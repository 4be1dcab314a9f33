"""`conelib migrate-results` (conelib.tools.migrate): older files get their full configuration, files
whose defaults changed are re-keyed, sweep summaries are re-keyed through their grid (blocks
included), and nothing else changes (values untouched, files already right left alone)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conelib.tools import migrate
from conelib.experiments.kernel_dynamics import KernelDynamicsConfig, kernel_dynamics
from conelib.results import StaleResultError, config_hash, load_result, result_path, save_result
from conelib.sweep import SUMMARY_EXPERIMENT, Grid, expand_grid

TINY = {"model": "lenet_300_100", "dataset": "digits", "steps": 40, "snapshot_every": 10, "dts": [10],
        "taus": [20], "probe_size": 16, "batch_size": 32, "device": "cpu"}


@pytest.fixture()
def stored(tmp_path):
    cfg = KernelDynamicsConfig.from_mapping(TINY)
    ds = kernel_dynamics(cfg, results_root=tmp_path, progress=False)
    return tmp_path, cfg, ds


def test_an_older_file_gets_its_full_configuration(stored):
    root, cfg, _ = stored
    path = result_path("kernel_dynamics", cfg.identity(), root)
    ds = load_result(path).load()
    del ds.attrs["config_full_json"]
    save_result(ds, path)
    done = migrate.migrate_results(root)
    assert [(m.old, m.new) for m in done] == [(path, path)] and "reconstructed" in done[0].what
    back = load_result(path)
    assert json.loads(back.attrs["config_full_json"]) == json.loads(json.dumps(cfg.full()))
    assert "reconstructed by conelib migrate-results" in back.attrs["config_full_source"]
    np.testing.assert_array_equal(back["pairwise_distance"].values, ds["pairwise_distance"].values)
    assert migrate.migrate_results(root) == []  # now right: left alone


def test_a_changed_default_is_refused_on_load_then_rekeyed(stored, monkeypatch):
    """Probe of the issue: change the default learning rate, ask for the all-defaults run."""
    root, cfg, ds = stored
    old_path = result_path("kernel_dynamics", cfg.identity(), root)
    full = json.loads(ds.attrs["config_full_json"])
    assert full["lr"] == 0.1
    # a stored result computed with another default (lr 0.05) under the same identity
    stale = ds.copy()
    stale.attrs["config_full_json"] = json.dumps({**full, "lr": 0.05})
    save_result(stale, old_path)
    with pytest.raises(StaleResultError, match=r"lr: stored 0.05, now 0.1"):
        kernel_dynamics(cfg, results_root=root, progress=False)
    done = migrate.migrate_results(root)
    assert len(done) == 1 and done[0].old == old_path and done[0].new != old_path
    moved = load_result(done[0].new)
    want = KernelDynamicsConfig.from_mapping({**TINY, "lr": 0.05})
    assert moved.attrs["config_hash"] == config_hash(want.identity()) and not old_path.exists()


def test_sweep_summaries_are_rekeyed_with_their_blocks(tmp_path):
    grid = Grid.from_mapping({"base": TINY, "grid": {"seed": [0, 1]}, "blocks": [{"lr": [0.01, 0.1]}]})
    from conelib.analysis.atlas_summary import summarize

    summary = summarize(grid, tmp_path, save=False, n_boot=20)
    wrong = summary.copy()
    wrong["config_hash"] = ("run", np.asarray(["0" * 16] * summary.sizes["run"], dtype=object))
    folder = tmp_path / SUMMARY_EXPERIMENT
    folder.mkdir(parents=True, exist_ok=True)
    save_result(wrong, folder / "0123456789abcdef.nc")
    done = migrate.migrate_results(tmp_path)
    assert len(done) == 1 and done[0].new.name == f"{grid.identity() and config_hash(grid.identity())}.nc"
    back = load_result(done[0].new)
    assert list(back.config_hash.values) == [config_hash(p.config.identity()) for p in expand_grid(grid)]
    assert json.loads(back.attrs["grid_json"])["blocks"] == json.loads(json.dumps(grid.identity()["blocks"]))


def test_unreadable_files_are_skipped_and_named(tmp_path):
    folder = tmp_path / "kernel_dynamics"
    folder.mkdir(parents=True)
    (folder / "garbage.nc").write_bytes(b"not a netcdf file")
    done = migrate.migrate_results(tmp_path)
    assert len(done) == 1 and done[0].skipped


def test_a_parameter_added_since_loads_with_a_warning_and_is_recorded(stored):
    """A file written before a parameter existed lacks it in its full configuration: same identity
    (the parameter is at its default), so it loads with a warning, and migrate-results records it."""
    root, cfg, ds = stored
    path = result_path("kernel_dynamics", cfg.identity(), root)
    full = json.loads(ds.attrs["config_full_json"])
    older = ds.copy()
    older.attrs["config_full_json"] = json.dumps({k: v for k, v in full.items() if k != "label_noise"})
    save_result(older, path)
    with pytest.warns(RuntimeWarning, match=r"predates the parameter\(s\) \['label_noise'\]"):
        kernel_dynamics(cfg, results_root=root, progress=False)
    done = migrate.migrate_results(root)
    assert len(done) == 1 and done[0].new == path and "label_noise" in done[0].what
    assert json.loads(load_result(path).attrs["config_full_json"]) == full
    # a value that differs is still refused
    changed = ds.copy()
    changed.attrs["config_full_json"] = json.dumps({**{k: v for k, v in full.items() if k != "label_noise"},
                                                    "lr": 0.05})
    save_result(changed, path)
    with pytest.raises(StaleResultError, match=r"lr: stored 0.05, now 0.1"):
        kernel_dynamics(cfg, results_root=root, progress=False)
