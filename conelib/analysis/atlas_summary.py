"""The atlas summary: one Dataset over every run of a grid, read from the stored runs.

Every run of the grid is a row (dimension ``run``), whatever happened to it: ``status`` is
``stored``, ``failed`` (with the job's ``error``), ``unreadable`` (a file that cannot be read, fails
its checksum or was computed with other defaults: it counts as missing) or ``missing``. A stored run
gets the version-3 measures of :func:`conelib.measures.assess` with their bootstrap intervals
(``<measure>_lo``, ``<measure>_hi``), the verdict, its agreement over the bootstrap draws and over
the threshold settings (``verdict_agreement``, ``threshold_agreement``), the share of each label over
the draws, version 2's verdict (for comparison), its final accuracies and losses, and its curves
(:data:`CURVES`, float32) including the whole pairwise-distance matrix, so that any later measure
can be recomputed from the summary alone. ``verdict_counts`` (``setting`` × ``verdict_label``)
counts the verdicts of the stored runs at the defaults and with each threshold of
:data:`conelib.measures.SENSITIVITY` moved alone.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from conelib.experiments.common import METRICS
from conelib.measures import SENSITIVITY, VERDICTS, assess, check_thresholds, v2
from conelib.measures.v3 import Verdict, measure, sensitivity_settings
from conelib.results import (
    config_hash,
    load_result,
    provenance_attrs,
    result_path,
    save_result,
    stored_full_config,
)
from conelib.sweep.grid import EXPERIMENT, SUMMARY_EXPERIMENT, Grid, expand_grid, failure_path, grid_results_root

__all__ = ["CURVES", "MISSING_CODE", "summarize", "summary_path", "run_from_summary"]

#: integer code of a grid point whose result is not stored (in ``verdict_code``)
MISSING_CODE = -1
#: the curves of every stored run kept in the summary (for the atlas' panels and for recomputing measures)
CURVES: tuple[str, ...] = ("dist_to_ref", "adjacent_distance", "dist_to_init", "cone_x", "cone_y", "train_acc",
                           "train_loss", "test_acc", "test_loss", "pairwise_distance")
#: run-level numbers kept beside the measures: name -> (long_name, units)
RUN_NUMBERS: dict[str, tuple[str, str]] = {
    **{f"final_{m}": (f"{what} at the last step", units) for m, (what, units) in METRICS.items()},
    "dist_to_init_final": ("kernel distance from initialisation at the end S(θ_T, θ_0), single snapshots", "1"),
    "wall_seconds": ("wall time of the run (training + eNTK snapshots)", "s"),
    "v2_phase_one_end": ("end of Phase I by the version-2 rule (conelib.measures.v2)", "steps"),
}


def summary_path(grid: Grid, results_root: str | os.PathLike | None = None) -> os.PathLike:
    """``<results_root>/sweeps/<grid hash>.nc``."""
    return result_path(SUMMARY_EXPERIMENT, grid.identity(), grid_results_root(grid, results_root))


def _coord_values(values: Sequence[Any]) -> np.ndarray:
    """netCDF-safe coordinate values: numbers as numbers (None as NaN), else text."""
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return np.asarray(["none" if v is None else json.dumps(v) if isinstance(v, (bool, tuple, list)) else str(v)
                       for v in values], dtype=object)


def _share_names() -> list[str]:
    return [f"share_{v.replace('two phases, ', '').replace(' ', '_')}" for v in VERDICTS]


def _measure_names() -> list[str]:
    return Verdict.numeric_fields()


def summarize(grid: Grid, results_root: str | os.PathLike | None = None, *, n_boot: int = 200, save: bool = True,
              **thresholds: Any) -> xr.Dataset:
    """One Dataset over the grid's runs (see the module docstring); with ``save``, stored atomically
    at :func:`summary_path`. ``n_boot`` bootstrap draws per run; ``thresholds`` override
    :data:`conelib.measures.THRESHOLDS`."""
    t = check_thresholds(**thresholds)
    root = grid_results_root(grid, results_root)
    points = expand_grid(grid)
    n = len(points)
    names = _measure_names()
    num: dict[str, np.ndarray] = {}
    for m in names:
        for suffix in ("", "_lo", "_hi"):
            num[m + suffix] = np.full(n, np.nan)
    for k in ("verdict_agreement", "threshold_agreement", *_share_names(), *RUN_NUMBERS):
        num[k] = np.full(n, np.nan)
    status = np.full(n, "missing", dtype=object)
    errors = np.full(n, "", dtype=object)
    labels = np.full(n, "missing", dtype=object)
    stationarity = np.full(n, "missing", dtype=object)
    v2_labels = np.full(n, "missing", dtype=object)
    codes = np.full(n, MISSING_CODE, dtype=np.int16)
    hashes = np.asarray([config_hash(p.config.identity()) for p in points], dtype=object)
    settings = sensitivity_settings()
    counts = np.zeros((len(settings), len(VERDICTS)), dtype=np.int32)
    curves: list[xr.Dataset | None] = []
    for i, p in enumerate(points):
        path = result_path(EXPERIMENT, p.config.identity(), root)
        record = failure_path(p.config, root)
        curves.append(None)
        if not path.exists():
            if record.is_file():
                status[i] = "failed"
                try:
                    errors[i] = json.loads(record.read_text()).get("error", "")
                except (OSError, ValueError):
                    errors[i] = "(unreadable failure record)"
            continue
        try:
            ds = load_result(path)
            stored_full = stored_full_config(ds)
            if stored_full is not None and stored_full != json.loads(json.dumps(p.config.full())):
                raise ValueError("computed with other defaults (its full configuration differs from the grid's)")
        except (OSError, ValueError) as err:  # unreadable, changed or stale: counts as missing
            warnings.warn(f"stored run {path} at {p.coords} is not usable and counts as missing: {err}",
                          RuntimeWarning, stacklevel=2)
            status[i], errors[i] = "unreadable", f"{type(err).__name__}: {err}"
            continue
        try:
            a = assess(ds, n_boot=n_boot, **t)
            for s, (_, change) in enumerate(settings):
                counts[s, measure(ds, None, **{**t, **change}).code] += 1
            v2v = v2.verdict(ds)
        except ValueError as err:  # a stored run the measures cannot read stays "missing", with a warning
            warnings.warn(f"stored run {path} at {p.coords} could not be measured: {err}", RuntimeWarning, stacklevel=2)
            status[i], errors[i] = "unreadable", f"{type(err).__name__}: {err}"
            continue
        status[i] = "stored"
        row = a.row()
        for k in num:
            if k in row:
                num[k][i] = np.nan if row[k] is None else float(row[k])
        labels[i], codes[i], stationarity[i] = a.point.verdict, a.point.code, a.point.stationarity
        v2_labels[i] = v2v.verdict
        num["v2_phase_one_end"][i] = np.nan if v2v.phase_one_end is None else v2v.phase_one_end
        num["dist_to_init_final"][i] = float(ds["dist_to_init"].isel(step=-1))
        for key, var in (("final_test_acc", "test_acc"), ("final_train_acc", "train_acc"),
                         ("final_train_loss", "train_loss"), ("final_test_loss", "test_loss")):
            if var in ds:
                num[key][i] = float(ds[var].isel(step=-1))
        num["wall_seconds"][i] = float(ds.attrs.get("wall_seconds", np.nan))
        curves[i] = ds[[c for c in CURVES if c in ds]].astype("float32").drop_attrs(deep=False)

    run = np.arange(n)
    data_vars: dict[str, Any] = {k: ("run", a) for k, a in num.items()}
    data_vars.update(status=("run", status), error=("run", errors), verdict=("run", labels),
                     verdict_code=("run", codes), stationarity=("run", stationarity), v2_verdict=("run", v2_labels),
                     config_hash=("run", hashes))
    n_blocks = max(1, len(grid.blocks))
    member = np.zeros((n, n_blocks), dtype=np.int8)
    for i, p in enumerate(points):
        member[i, list(p.blocks)] = 1
    coords: dict[str, Any] = {"run": ("run", run, {"long_name": "run of the grid (in order of first appearance)"})}
    for name in grid.swept:
        coords[name] = ("run", _coord_values([p.coords[name] for p in points]), {"long_name": f"swept: {name}"})
    coords["block"] = ("block", np.asarray([grid.block_label(b) for b in range(n_blocks)], dtype=object))
    coords["in_block"] = (("run", "block"), member, {"long_name": "1 if the run belongs to the block"})
    coords["setting"] = ("setting", np.asarray([s for s, _ in settings], dtype=object),
                         {"long_name": "thresholds: the defaults, or one of them moved"})
    coords["verdict_label"] = ("verdict_label", np.asarray(VERDICTS, dtype=object))
    data_vars["verdict_counts"] = (("setting", "verdict_label"), counts,
                                   {"long_name": "verdict counts over the stored runs", "units": "runs"})
    out = xr.Dataset(data_vars, coords=coords)
    stored = [c for c in curves if c is not None]
    if stored:
        template = xr.concat(stored, dim="run", join="outer").isel(run=0) * np.nan
        filled = [c if c is not None else template for c in curves]
        out = out.merge(xr.concat(filled, dim=xr.DataArray(run, dims="run"), join="outer"), join="left")
        for c in CURVES:
            if c in out:
                out[c].attrs["long_name"] = f"{c} of each stored run (float32)"
    for m in names:
        out[m].attrs["long_name"] = f"{m} (conelib.measures.v3), point estimate"
        for suffix in ("_lo", "_hi"):
            out[m + suffix].attrs["long_name"] = f"{m}: {'lower' if suffix == '_lo' else 'upper'} end of its 95% bootstrap interval"
    for k, (long_name, units) in RUN_NUMBERS.items():
        out[k].attrs.update({"long_name": long_name, "units": units})
    out["verdict"].attrs["long_name"] = "verdict of conelib.measures.verdict (version 3; 'missing': not stored)"
    out["v2_verdict"].attrs["long_name"] = "verdict of conelib.measures.v2.verdict, for comparison"
    out["verdict_agreement"].attrs["long_name"] = "share of the bootstrap draws giving the verdict"
    out["threshold_agreement"].attrs["long_name"] = "share of the threshold settings giving the verdict"
    out["verdict_code"].attrs.update({
        "long_name": "index of the verdict in conelib.measures.VERDICTS (-1: not stored)",
        "flag_values": np.arange(-1, len(VERDICTS), dtype=np.int16),
        "flag_meanings": " ".join(s.replace(", ", "_").replace(" ", "_") for s in ("missing", *VERDICTS)),
        "legend": json.dumps({str(i): s for i, s in enumerate(VERDICTS)} | {str(MISSING_CODE): "missing"}),
    })
    out.attrs.update(provenance_attrs(grid.identity(), full=grid.identity()))
    out.attrs.update({
        "experiment": SUMMARY_EXPERIMENT,
        "title": "atlas: the kernel-dynamics measures over a grid",
        "measures_version": 3,
        "grid_json": json.dumps(grid.identity()),
        "grid_source": grid.source or "none",
        "swept_fields": json.dumps(grid.swept),
        "thresholds_json": json.dumps(t),
        "sensitivity_json": json.dumps(SENSITIVITY),
        "n_boot": int(n_boot),
        "n_runs": n,
        "n_stored": int((status == "stored").sum()),
        "n_failed": int((status == "failed").sum()),
        "n_missing": int((status != "stored").sum()),
    })
    if save:
        save_result(out, summary_path(grid, root))
    return out


def run_from_summary(summary: xr.Dataset, run: int) -> xr.Dataset:
    """One stored run's curves from a summary, as a kernel-dynamics-like Dataset (the variables of
    :data:`CURVES` over its snapshot steps; ``pairwise_distance`` over ``step`` × ``other_step``),
    with its swept values and verdict as attributes: what the charts draw and what
    :func:`conelib.measures.verdict` reads."""
    row = summary.sel(run=run)
    if str(row["status"].values) != "stored":
        raise ValueError(f"run {run} of the summary is not stored ({row['status'].values}): it has no curves")
    ds = row[[c for c in CURVES if c in summary]].astype("float64")
    keep = np.nonzero(np.isfinite(ds["dist_to_init"].values))[0]
    ds = ds.isel(step=keep)
    if "other_step" in ds.dims:
        ds = ds.isel(other_step=keep)
    swept = json.loads(summary.attrs["swept_fields"])
    ds.attrs = {**{k: (v.item() if hasattr(v, "item") else v) for k, v in ((k, row[k].values) for k in swept)},
                "config_hash": str(row["config_hash"].values), "verdict": str(row["verdict"].values)}
    return ds.drop_vars([c for c in ds.coords if c not in ("step", "dt", "ref_step", "other_step")])
