"""The numbers the kernel-dynamics chapter quotes (conelib.analysis.kernel_dynamics and
conelib.analysis.text), against closed forms and synthetic runs whose answers are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic import STEPS, stand_in, trajectory

from conelib.analysis.kernel_dynamics import (assess_runs, fit_step, late_adjacent_median, run_label, runs_table,
                                             seed_table, stack_seeds)
from conelib.analysis.text import Facts, describe_range
from conelib.experiments import KernelDynamicsConfig
from conelib.measures import verdict
from conelib.results import config_hash


def _stored(kind: str, seed: int, model: str = "lenet_300_100"):
    """A stand-in run carrying the attrs of a stored result of the given model and seed."""
    ds = stand_in(kind, seed=seed)
    cfg = KernelDynamicsConfig(model=model, seed=seed)
    ds.attrs["config_json"] = json.dumps(cfg.identity())
    ds.attrs["config_full_json"] = json.dumps(cfg.full())
    ds.attrs["config_hash"] = config_hash(cfg.identity())
    return ds


@pytest.mark.parametrize("values, fmt, kw, want", [
    ([6550, 6750, 6600], "{:,.0f}", {}, "6,550–6,750"),
    ([3, 3.0], "{:.1f}", {"unit": "×"}, "3.0×"),
    ([-400, 350], "{:+,.0f}", {}, "-400 to +350"),          # a dash after a minus sign would misread
    ([6600, None, np.nan], "{:,.0f}", {"none": "none found"}, "6,600 (2 of 3: none found)"),
    ([None], "{:.2f}", {"none": "never"}, "never"),
])
def test_describe_range(values, fmt, kw, want):
    assert describe_range(values, fmt, **kw) == want


def test_fit_step_is_the_first_snapshot_at_the_threshold():
    ds = stand_in("cone")  # train_acc rises linearly from 0.1 to 1.0 over the 201 snapshots
    acc = ds["train_acc"].values
    for threshold in (0.5, 0.99, 1.0):
        first = int(np.argmax(acc >= threshold - 1e-12))
        assert fit_step(ds, threshold) == STEPS[first]
        assert first == 0 or acc[first - 1] < threshold
    assert fit_step(ds.assign(train_acc=ds["train_acc"] * 0.9), 1.0) is None
    with pytest.raises(ValueError, match="threshold"):
        fit_step(ds, 0.0)


def test_phase_two_floor_of_a_steady_turn_is_the_closed_form():
    """A steady turn at omega rad/step after Phase I: S(t, t+dt) = 1 - cos(angle between them);
    late in the run the Phase I turn has stopped, so the floor is 1 - cos(omega dt) up to the
    tail of the exponential (e^{-5000/300} ~ 6e-8)."""
    omega = 4e-5
    ds = trajectory("steady", omega=omega)
    floor = late_adjacent_median(ds)
    want = 1 - np.cos(omega * ds["dt"].values)
    np.testing.assert_allclose(floor.values, want, rtol=1e-3)
    # the cone's floor does not depend on the gap (i.i.d. jitter: every pair equally far apart)
    cone = late_adjacent_median(trajectory("cone")).values
    assert cone.max() / cone.min() < 1.1


def test_assessed_runs_table_and_mean_over_seeds():
    runs = [_stored("cone", s) for s in (2, 0, 1)] + [_stored("none", 0, model="lenet5")]
    assessed = assess_runs(runs, n_boot=20)
    table = runs_table(assessed)
    assert list(zip(table.model, table.seed)) == [("lenet5", 0), ("lenet_300_100", 0), ("lenet_300_100", 1),
                                                  ("lenet_300_100", 2)]
    for r, ds in zip(assessed, [runs[3], runs[1], runs[2], runs[0]]):
        v = verdict(ds)  # the oracle: the measures on the run itself
        assert r.point == v and r.row()["verdict"] == v.verdict
    row = table.iloc[1]
    assert row["verdict"] == "two phases, cone" and row["fit_100"] == int(STEPS[-1])
    assert row["final_test_acc"] == pytest.approx(0.9)
    assert row["phase_one_end_minus_fit_99"] == row["phase_one_end"] - row["fit_99"]
    assert row["dist_T_tau8000"] == pytest.approx(float(runs[1]["dist_to_ref"].sel(ref_step=8000).isel(step=-1)))
    assert row["total_movement_lo"] <= row["total_movement"] <= row["total_movement_hi"]
    assert pd.isna(table.loc[0, "phase_one_end"])  # no two phases
    seeds = seed_table(assessed, ["phase_one_end", "total_movement"]).set_index(["model", "measure"])
    mlp = table[table.model == "lenet_300_100"]
    got = seeds.loc[("lenet_300_100", "total_movement")]
    assert got["mean"] == pytest.approx(mlp.total_movement.mean()) and got["n"] == 3
    assert (got["min"], got["max"]) == (mlp.total_movement.min(), mlp.total_movement.max())
    assert got["lo"] <= got["mean"] <= got["hi"]
    none = seeds.loc[("lenet5", "phase_one_end")]
    assert none["n"] == 0 and none["n_missing"] == 1 and np.isnan(none["mean"])


def test_run_label_reads_the_full_configuration():
    ds = _stored("cone", 2, model="lenet5")
    assert run_label(ds) == {"model": "lenet5", "seed": 2, "config_hash": ds.attrs["config_hash"]}


def test_facts_read_missing_values_as_a_dash():
    f = Facts(a="1")
    assert f.a == "1" and f.b == "—" and f.lenet5.t_end == "—"


def test_stack_seeds_orders_by_seed_and_refuses_mixed_models():
    runs = [_stored("cone", s) for s in (2, 0)]
    out = stack_seeds(runs)
    assert list(out.seed.values) == [0, 2]
    np.testing.assert_array_equal(out["dist_to_init"].sel(seed=2).values, runs[0]["dist_to_init"].values)
    assert list(out.config_hash.values) == [runs[1].attrs["config_hash"], runs[0].attrs["config_hash"]]
    with pytest.raises(ValueError, match="one model"):
        stack_seeds([runs[0], _stored("cone", 1, model="lenet5")])
    with pytest.raises(ValueError, match="no runs"):
        stack_seeds([])
