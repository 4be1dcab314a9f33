"""The chapters' report layer (conelib.report): facts, tables and sentences from small stored runs
whose measures are known (stand-ins from the validation panel), checked against the measures
computed directly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conelib.analysis.atlas_summary import summarize
from conelib.experiments import KernelDynamicsConfig
from conelib.experiments.kernel_dynamics import EXPERIMENT
from conelib.measures import verdict
from conelib.report.atlas import atlas_report
from conelib.report.kernel_dynamics import claim, kernel_dynamics_report
from conelib.results import config_hash, result_path, save_result
from conelib.sweep import Grid, expand_grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import stand_in  # noqa: E402
from test_sweep import TINY_BASE  # noqa: E402


def _stored(kind: str, seed: int, model: str, cfg: KernelDynamicsConfig | None = None):
    ds = stand_in(kind, seed=seed)
    ds["train_loss"] = ("step", 0.3 * (1 + ds.step.values / 200.0) ** -1.5)
    ds["test_loss"] = ("step", 0.3 * (1 + ds.step.values / 200.0) ** -1.0)
    cfg = cfg or KernelDynamicsConfig(model=model, seed=seed)
    ds.attrs.update(config_json=json.dumps(cfg.identity()), config_full_json=json.dumps(cfg.full()),
                    config_hash=config_hash(cfg.identity()), probe_size=16)
    return ds


def test_claim_says_all_none_or_some():
    assert claim([True, True], "all", "none", "{k} of {n}") == "all"
    assert claim([False], "all", "none", "{k} of {n}") == "none"
    assert claim([True, False, True], "all", "none", "{k} of {n}") == "2 of 3"


def test_kernel_dynamics_report_quotes_the_measures_of_its_runs():
    runs = [_stored("cone", s, "lenet_300_100") for s in (0, 1)] + [_stored("steady", s, "lenet5") for s in (0, 1)]
    rep = kernel_dynamics_report(runs, KernelDynamicsConfig(), n_boot=20)
    assert rep.models == ["lenet5", "lenet_300_100"]
    cone = rep.findings("lenet_300_100")
    assert "Two phases in all 2 seeds" in cone and "2 × two phases, cone" in cone
    drift = rep.findings("lenet5")
    assert "2 × two phases, drifting" in drift
    table = rep.measures_table()
    assert list(table.columns) == ["lenet5", "lenet_300_100"]
    # the table's value is the mean of the runs' own measures
    m = np.mean([verdict(ds).total_movement for ds in runs[:2]])
    assert table.loc["total movement M = D(0, T) (chord)", "lenet_300_100"].startswith(f"{m:.3f}")
    assert rep.facts.lr == "0.1" and rep.facts.n_seeds == 2
    assert set(rep.seeds_of("lenet5")) == {0, 1}
    frame = rep.runs_frame()
    assert len(frame) == 4 and set(frame.verdict) == {"two phases, cone", "two phases, drifting"}
    with pytest.raises(ValueError, match="no kernel-dynamics results"):
        kernel_dynamics_report([])


def test_atlas_report_counts_verdicts_and_sets_them_beside_the_loss(tmp_path):
    grid = Grid.from_mapping({"base": TINY_BASE, "grid": {"seed": [0, 1]},
                              "blocks": [{"lr": [0.01, 0.1]}, {"output_scale": [1.0, 64.0]}]})
    kinds = {(0.01, None): "steady", (0.1, None): "cone", (0.1, 1.0): "cone", (0.1, 64.0): "tiny"}
    for p in expand_grid(grid):
        kind = kinds[(p.coords["lr"], p.coords.get("output_scale"))]
        ds = _stored(kind, p.coords["seed"], "lenet_300_100", p.config)
        ds["train_loss"] = ds["train_loss"] * (10.0 if kind == "steady" else 1.0)
        save_result(ds, result_path(EXPERIMENT, p.config.identity(), tmp_path))
    summary = summarize(grid, tmp_path, n_boot=20, save=False)
    rep = atlas_report(summary)
    f = rep.facts
    want = {v: int((summary.verdict.values == v).sum()) for v in set(summary.verdict.values)}
    assert f.n_cone == want.get("two phases, cone", 0) and f.n_drift == want.get("two phases, drifting", 0)
    assert f.lazy_scale == "64" and f.lazy_all is True and "two phases, lazy" in f.lazy_verdicts
    opt = rep.optimisation_table()
    assert set(opt.verdict) == set(summary.verdict.values)
    # the drifting runs were given a ten times larger loss: the table says so
    row = opt[opt.verdict == "two phases, drifting"].iloc[0]
    assert "e-0" in row.final_train_loss
    assert "two phases, lazy" in rep.regions_markdown()
    assert len(rep.cells_table()) == len(rep.cells)


def test_figure3_candidate_prefers_no_two_phases_then_the_least_dropping_drift():
    import xarray as xr

    from conelib.analysis.atlas import figure3_candidate

    def summary(verdicts, drops, status=None):
        n = len(verdicts)
        return xr.Dataset({"verdict": ("run", verdicts), "drop": ("run", drops),
                           "status": ("run", status or ["stored"] * n)}, coords={"run": list(range(n))})

    base = ["two phases, cone", "two phases, drifting", "two phases, drifting", "no two phases", "no two phases"]
    assert figure3_candidate(summary(base, [50.0, 9.0, 7.0, 3.0, 2.0])) == 4  # the flattest run without two phases
    assert figure3_candidate(summary(base[:3], [50.0, 9.0, 7.0])) == 2  # none: the drift with the smallest drop
    assert figure3_candidate(summary(base[:3], [50.0, 9.0, float("nan")])) == 1  # an undefined drop is not the least
    assert figure3_candidate(summary(["two phases, cone", "two phases, lazy"], [50.0, 1.0])) is None
    assert figure3_candidate(summary(base[:2], [5.0, 1.0], ["stored", "failed"])) is None
