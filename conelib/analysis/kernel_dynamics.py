"""What stored kernel-dynamics runs show, as numbers: one row per run, and the mean over seeds.

The chapters quote these numbers (the notebooks only load, draw and glue); the definitions live here:

* :func:`fit_step`: the first snapshot step at which the training accuracy (measured on the run's
  fixed class-balanced training subset) reaches a threshold: when the training set is fit, to set
  beside the end of Phase I.
* :func:`late_adjacent_median`: the median single-snapshot adjacent distance :math:`S(\\theta_t,
  \\theta_{t+dt})` over the second half of the run for every ``dt``: the "low but non-negligible
  value" of the paper's Figure 1(b).
* :func:`assess_runs`: the version-3 measures of every run with bootstrap intervals and the
  verdict's robustness (:func:`conelib.measures.assess`), plus version 2's verdict for comparison;
  :func:`runs_table`: one row per run; :func:`seed_table`: per model, the mean of each measure over
  seeds with a hierarchical-bootstrap interval (:func:`conelib.measures.bootstrap.seed_interval`)
  and the range over seeds.
* :func:`stack_seeds`: runs of one model as one Dataset with a ``seed`` dimension, for the charts.
* :func:`kernel_dynamics_of_trajectory`: the stored runs that follow a given training (the kernel
  dynamics of another experiment's standard run: switching, spawning).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from conelib.experiments.common import RunConfig, same_trajectory
from conelib.experiments.kernel_dynamics import KernelDynamicsConfig
from conelib.experiments.kernel_dynamics import config_of as kernel_dynamics_config_of
from conelib.measures import v2
from conelib.measures.bootstrap import Assessment, assess, seed_interval
from conelib.measures.v3 import Verdict
from conelib.results import stored_results

__all__ = ["RunAssessment", "assess_runs", "fit_step", "late_adjacent_median", "run_label", "runs_table", "seed_table",
           "stack_seeds", "SEED_MEASURES", "kernel_dynamics_of_trajectory"]

#: the measures :func:`seed_table` summarises by default
SEED_MEASURES: tuple[str, ...] = (
    "phase_one_end", "total_movement", "laziness", "jitter_ratio", "drift_ratio", "growth_exponent", "drift_decay",
    "loss_correlation", "loss_exponent", "loss_at_phase_one_end", "floor_exponent",
)


def fit_step(ds: xr.Dataset, threshold: float = 1.0) -> int | None:
    """First snapshot step with training accuracy ``>= threshold`` (``None``: never reached)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    acc = ds["train_acc"].values
    hit = np.nonzero(acc >= threshold - 1e-12)[0]
    return int(ds["step"].values[hit[0]]) if hit.size else None


def late_adjacent_median(ds: xr.Dataset, start: int | None = None) -> xr.DataArray:
    """Median of :math:`S(\\theta_t, \\theta_{t+dt})` over the snapshots ``t >= start`` (default: the
    second half of the run) where ``t + dt`` is a snapshot, for every ``dt``."""
    T = int(ds["step"].max())
    start = T // 2 if start is None else int(start)
    adj = ds["adjacent_distance"].where(ds["step"] >= start)
    floor = adj.median("step", skipna=True)
    floor.attrs = {"long_name": f"median S(θ_t, θ_t+dt) over t >= {start}", "units": "1"}
    return floor


def run_label(ds: xr.Dataset) -> dict[str, Any]:
    """``model``, ``seed`` and ``config_hash`` of a stored run (from the configuration it records)."""
    cfg = KernelDynamicsConfig.from_result(ds)
    return {"model": str(cfg.model), "seed": int(cfg.seed), "config_hash": str(ds.attrs.get("config_hash", ""))}


@dataclass
class RunAssessment:
    """One run: its label, its version-3 :class:`~conelib.measures.bootstrap.Assessment` and what else
    the chapters quote about it (:func:`assess_runs`)."""

    label: dict[str, Any]
    assessment: Assessment
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def point(self) -> Verdict:
        return self.assessment.point

    def row(self) -> dict[str, Any]:
        return {**self.label, **self.assessment.row(), **self.extra}


def _extra(ds: xr.Dataset, point: Verdict) -> dict[str, Any]:
    v2v = v2.verdict(ds)
    fit99, fit100 = fit_step(ds, 0.99), fit_step(ds, 1.0)
    out: dict[str, Any] = {
        "T": int(ds["step"].max()),
        "v2_verdict": v2v.verdict,
        "v2_phase_one_end": v2v.phase_one_end,
        "fit_99": fit99,
        "fit_100": fit100,
        "phase_one_end_minus_fit_99": (None if point.phase_one_end is None or fit99 is None
                                       else int(point.phase_one_end) - int(fit99)),
        "final_test_acc": float(ds["test_acc"].isel(step=-1)),
        "final_train_acc": float(ds["train_acc"].isel(step=-1)),
        "final_train_loss": float(ds["train_loss"].isel(step=-1)),
        "dist_T_init": float(ds["dist_to_init"].isel(step=-1)),
    }
    for dt, value in zip(ds["dt"].values, late_adjacent_median(ds).values):
        out[f"floor_dt{int(dt)}"] = float(value)
    for tau in ds["ref_step"].values:
        out[f"dist_T_tau{int(tau)}"] = float(ds["dist_to_ref"].sel(ref_step=tau).isel(step=-1))
    return out


def assess_runs(runs: Sequence[xr.Dataset], *, n_boot: int = 200, seed: int = 0, **thresholds: Any) -> list[RunAssessment]:
    """The version-3 assessment of every run (same bootstrap seed for each), sorted by model and seed."""
    out = []
    for ds in runs:
        a = assess(ds, n_boot=n_boot, seed=seed, **thresholds)
        out.append(RunAssessment(run_label(ds), a, _extra(ds, a.point)))
    return sorted(out, key=lambda r: (r.label["model"], r.label["seed"]))


def runs_table(assessed: Sequence[RunAssessment]) -> pd.DataFrame:
    """One row per run: label, every measure with ``_lo``/``_hi``, verdict and its agreement, and
    the training numbers (:func:`assess_runs`)."""
    return pd.DataFrame([r.row() for r in assessed]).reset_index(drop=True)


def seed_table(assessed: Sequence[RunAssessment], measures: Sequence[str] = SEED_MEASURES,
               by: str = "model") -> pd.DataFrame:
    """Per ``by`` value and measure: the mean over seeds with its hierarchical-bootstrap interval,
    the min and max over seeds, the number of seeds where the measure is defined (``n``) and where
    it is not (``n_missing``, e.g. a Phase I that never ends)."""
    rows = []
    groups: dict[Any, list[RunAssessment]] = {}
    for r in assessed:
        groups.setdefault(r.label[by], []).append(r)
    for key, group in groups.items():
        for m in measures:
            points = [getattr(r.point, m) for r in group]
            vals = np.asarray([np.nan if v is None else float(v) for v in points])
            draws = [pd.to_numeric(r.assessment.draws[m], errors="coerce").to_numpy(dtype=float)
                     for r, v in zip(group, vals) if np.isfinite(v)]
            centre, lo, hi = seed_interval(draws)
            ok = vals[np.isfinite(vals)]
            if ok.size and np.isfinite(centre):  # centred on the mean of the point estimates
                lo, hi = lo + float(ok.mean()) - centre, hi + float(ok.mean()) - centre
            rows.append({by: key, "measure": m, "mean": float(ok.mean()) if ok.size else np.nan,
                         "lo": lo, "hi": hi, "min": float(ok.min()) if ok.size else np.nan,
                         "max": float(ok.max()) if ok.size else np.nan, "n": int(ok.size),
                         "n_missing": int((~np.isfinite(vals)).sum())})
    return pd.DataFrame(rows)


def stack_seeds(runs: Sequence[xr.Dataset]) -> xr.Dataset:
    """Runs of one configuration but the seed as one Dataset with a ``seed`` dimension.

    Raises:
        ValueError: the runs are of different models or have different snapshot steps.
    """
    if not runs:
        raise ValueError("no runs to stack")
    labels = [run_label(ds) for ds in runs]
    models = {lab["model"] for lab in labels}
    if len(models) != 1:
        raise ValueError(f"stack_seeds takes runs of one model, got {sorted(models)}")
    steps = {tuple(ds["step"].values.tolist()) for ds in runs}
    if len(steps) != 1:
        raise ValueError("the runs have different snapshot steps")
    order = np.argsort([lab["seed"] for lab in labels])
    parts = [runs[i].drop_vars(["pairwise_distance"], errors="ignore") for i in order]
    out = xr.concat(parts, dim=pd.Index([labels[i]["seed"] for i in order], name="seed"),
                    combine_attrs="drop_conflicts")
    out["config_hash"] = ("seed", np.asarray([labels[i]["config_hash"] for i in order], dtype=object))
    out.attrs["model"] = models.pop()
    return out


def kernel_dynamics_of_trajectory(want: RunConfig, *, results_root: str | Path | None = None
                                  ) -> Iterator[tuple[xr.Dataset, KernelDynamicsConfig]]:
    """The stored kernel-dynamics runs that follow the training of ``want`` (a configuration of any
    experiment; :func:`conelib.experiments.common.same_trajectory`) for at least as many steps,
    newest first, each with its configuration. Unreadable stored files are skipped."""
    for ds in reversed(stored_results("kernel_dynamics", results_root)):
        try:
            kd = kernel_dynamics_config_of(ds)
        except (KeyError, TypeError, ValueError):
            continue
        if same_trajectory(kd, want) and kd.steps >= want.steps:
            yield ds, kd
