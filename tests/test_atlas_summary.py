"""Tests of the atlas summary (`conelib.analysis.atlas_summary`) and its reading
(`conelib.analysis.atlas`), from stand-in stored runs (synthetic kernels, no training).

Oracle: `conelib.measures.verdict` called directly on each stored run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conelib.analysis.atlas_summary import run_from_summary, summarize, summary_path
from conelib.experiments.kernel_dynamics import EXPERIMENT
from conelib.measures import SENSITIVITY, VERDICTS, verdict
from conelib.results import load_result, result_path, save_result
from conelib.sweep import Grid, expand_grid, failure_path, pending

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import stand_in  # noqa: E402
from test_sweep import TINY_BASE  # noqa: E402

N_BOOT = 20


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

    summary = summarize(grid, tmp_path, n_boot=N_BOOT)
    assert summary.verdict.dims == ("run",) and summary.sizes["run"] == 6
    assert list(summary.lr.values) == [0.01] * 3 + [0.1] * 3 and list(summary.seed.values) == [0, 1, 2] * 2
    for i, ds in stored.items():
        v = verdict(ds)  # the oracle: the measures called directly on the stored run
        row = summary.isel(run=i)
        assert str(row.status.values) == "stored"
        assert str(row.verdict.values) == v.verdict and int(row.verdict_code) == VERDICTS.index(v.verdict)
        for name in ("phase_one_end", "drop", "total_movement", "laziness", "growth_exponent", "drift_decay"):
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
    # every measure has its interval, and the verdict its agreement
    for i in stored:
        row = summary.isel(run=i)
        assert 0 <= float(row.verdict_agreement) <= 1 and 0 <= float(row.threshold_agreement) <= 1
        lo, hi = float(row.total_movement_lo), float(row.total_movement_hi)
        assert lo <= float(row.total_movement) <= hi
        if str(row.verdict.values) != "no two phases":
            assert float(row.laziness_lo) <= float(row.laziness) <= float(row.laziness_hi)
    # the whole pairwise-distance matrix is kept: the measures can be recomputed from the summary alone
    again = verdict(run_from_summary(summary, 1))
    assert again.verdict == str(summary.verdict.values[1])
    assert int(counts.sel(setting="lazy_ratio=0.2", verdict_label="two phases, lazy")) >= 1
    # stored where summary_path says, verified on load; a run's curves come back as a Dataset
    back = load_result(summary_path(grid, tmp_path))
    assert summary_path(grid, tmp_path).parent.name == "sweeps"
    assert list(back.verdict.values) == list(summary.verdict.values)
    one = run_from_summary(back, 1)
    assert one.attrs["verdict"] == "two phases, cone" and verdict(one).verdict == "two phases, cone"
    with pytest.raises(ValueError, match="not stored"):
        run_from_summary(back, 4)


def test_summary_coordinates_of_none_and_tuples_are_text(tmp_path):
    grid = Grid.from_mapping({"base": {**TINY_BASE, "model": "resnet20"},
                              "grid": {"norm": [None, "layernorm"], "dts": [[10], [10, 20]]}})
    summary = summarize(grid, tmp_path, save=False, n_boot=N_BOOT)
    assert list(summary.norm.values) == ["none", "none", "layernorm", "layernorm"]
    assert sorted(set(summary.dts.values)) == ["[10, 20]", "[10]"]
    assert (summary.verdict_code.values == -1).all() and (summary.status.values == "missing").all()


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
        summary = summarize(grid, tmp_path, save=False, n_boot=N_BOOT)
    assert list(summary.verdict.values) == ["two phases, lazy", "missing", "missing"]
    assert list(summary.status.values) == ["stored", "unreadable", "unreadable"]
    # the thresholds reach the measures: with lazy_ratio = 0 a frozen kernel is no longer "lazy"
    with pytest.warns(RuntimeWarning):
        other = summarize(grid, tmp_path, save=False, n_boot=N_BOOT, lazy_ratio=0.0)
    assert str(other.verdict.values[0]) != "two phases, lazy"
    assert json.loads(other.attrs["thresholds_json"])["lazy_ratio"] == 0.0
    # the sweep itself resubmits the unreadable one (it does not count as stored)
    assert [p.coords for p in pending(grid, tmp_path)] == [{"lr": 0.3}]  # (lr 0.1 is stored, just not measurable)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_atlas_and_side_by_side_charts_hold_every_run(tmp_path):
    from conelib.charts import atlas_chart, side_by_side_chart, measures_chart

    grid = Grid.from_mapping({"base": TINY_BASE, "grid": {"seed": [0, 1]},
                              "blocks": [{"lr": [0.01, 0.1], "width": [1, 2]}, {"momentum": [0.0, 0.9]}]})
    kinds = ["cone", "lazy", "steady", "walk", "none", None, "cone", "lazy", "steady", "walk"]
    runs = {}
    for p, kind in zip(expand_grid(grid), kinds):
        if kind is not None:
            save_result(stand_in(kind), result_path(EXPERIMENT, p.config.identity(), tmp_path))
            runs[kind] = stand_in(kind)
    summary = summarize(grid, tmp_path, save=False, n_boot=N_BOOT)
    spec = atlas_chart(summary).to_dict()  # validated against the Vega-Lite schema
    blocks = spec["vconcat"][0]["vconcat"][0]["hconcat"]
    assert [b["title"] for b in blocks] == ["lr × width", "momentum"]
    rows = [r for b in blocks for r in spec["datasets"][b["data"]["name"]]]
    want = {(int(r), str(summary.verdict.values[r]) if summary.status.values[r] != "failed" else "failed")
            for r in summary.run.values}
    assert {(r["run"], r["verdict"]) for r in rows} == want  # every run, in its block(s)
    assert measures_chart(summary).to_dict()["layer"]
    cmp = side_by_side_chart({"A": runs["cone"], "B": runs["steady"]}).to_dict()
    names = [p["name"] for p in cmp.get("params", [])]
    assert len(names) == len(set(names))
    assert len(cmp["vconcat"]) == 4
    with pytest.raises(ValueError, match="at least one"):
        side_by_side_chart({})


def test_cells_group_the_seeds_of_a_factor_left_at_none(tmp_path):
    """``n_train: [null, 200]`` (null: the whole training set) gives two cells of two seeds each;
    a missing value must not break the grouping (pandas keeps NaN through ``astype(str)``)."""
    from conelib.analysis.atlas import cells, run_name

    grid = Grid.from_mapping({"base": TINY_BASE, "grid": {"seed": [0, 1], "n_train": [None, 200]}})
    summary = summarize(grid, tmp_path, save=False, n_boot=N_BOOT)
    c = cells(summary)
    assert len(c) == 2 and all(len(r) == 2 for r in c.runs)
    assert sorted(c.label) == ["base setting", "n_train=200"]  # the base has n_train=None
    by_runs = {tuple(sorted(int(summary.seed.values[i]) for i in r)) for r in c.runs}
    assert by_runs == {(0, 1)}
    # a run is named by what differs from the base, and its seed
    for r in summary.run.values:
        n, seed = summary.n_train.values[r], int(summary.seed.values[r])
        want = f"seed={seed}" if np.isnan(n) else f"n_train=200, seed={seed}"
        assert run_name(summary, int(r)) == want
