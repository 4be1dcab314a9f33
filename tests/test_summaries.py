"""The numbers the chapters quote (conelib.summaries), against closed forms and synthetic runs whose
answers are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic import STEPS, stand_in, trajectory

from conelib.experiments import KernelDynamicsConfig
from conelib.measures import phase_one
from conelib.results import config_hash
from conelib.summaries import (describe_range, fit_step, phase_two_floor, run_summary, runs_table, seed_spread,
                               stack_seeds)


def _stored(kind: str, seed: int, model: str = "lenet_300_100"):
    """A stand-in run carrying the attrs of a stored result of the given model and seed."""
    ds = stand_in(kind, seed=seed)
    cfg = KernelDynamicsConfig(model=model, seed=seed)
    ds.attrs["config_json"] = json.dumps(cfg.identity())
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
    floor = phase_two_floor(ds)
    want = 1 - np.cos(omega * ds["dt"].values)
    np.testing.assert_allclose(floor.values, want, rtol=1e-3)
    # the cone's floor does not depend on the gap (i.i.d. jitter: every pair equally far apart)
    cone = phase_two_floor(trajectory("cone")).values
    assert cone.max() / cone.min() < 1.1


def test_run_summary_table_and_spread_over_seeds():
    runs = [_stored("cone", s) for s in (2, 0, 1)] + [_stored("none", 0, model="lenet5")]
    table = runs_table(runs)
    assert list(zip(table.model, table.seed)) == [("lenet5", 0), ("lenet_300_100", 0), ("lenet_300_100", 1),
                                                  ("lenet_300_100", 2)]
    row = run_summary(runs[0])
    assert row["verdict"] == "two phases, cone" and row["fit_100"] == int(STEPS[-1])
    assert row["final_test_acc"] == pytest.approx(0.9)
    # the peak and floor are the ones the verdict read, with the verdict's thresholds
    for kw in ({}, {"smooth": 9}):
        p1 = phase_one(runs[0], smooth=kw.get("smooth", 5))
        r = run_summary(runs[0], **kw)
        assert (r["adjacent_peak"], r["adjacent_floor"]) == (p1.peak, p1.floor)
        assert r["drop"] == pytest.approx(p1.peak / p1.floor)
    assert row["dist_T_tau8000"] == pytest.approx(float(runs[0]["dist_to_ref"].sel(ref_step=8000).isel(step=-1)))
    assert table.loc[0, "phase_one_end"] is None or pd.isna(table.loc[0, "phase_one_end"])  # no two phases
    spread = seed_spread(table, ["phase_one_end", "final_test_acc"]).set_index(["model", "measure"])
    mlp = table[table.model == "lenet_300_100"].phase_one_end.astype(float)
    got = spread.loc[("lenet_300_100", "phase_one_end")]
    assert (got["min"], got["max"], got["mean"], got["n"]) == (mlp.min(), mlp.max(), pytest.approx(mlp.mean()), 3)
    none = spread.loc[("lenet5", "phase_one_end")]
    assert none["n"] == 0 and none["n_missing"] == 1 and np.isnan(none["mean"])


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
