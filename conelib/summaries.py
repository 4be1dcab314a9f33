"""What stored kernel-dynamics runs show, as numbers: one row per run, and their spread over seeds.

The notebooks quote these numbers (they only load, draw and glue); the definitions live here:

* :func:`fit_step`: the first snapshot step at which the training accuracy (measured on the
  run's fixed class-balanced training subset) reaches a threshold: when the training set is fit,
  to set beside the end of Phase I (is the end of Phase I just memorisation?).
* :func:`phase_two_floor`: the median adjacent distance :math:`S(\\theta_t, \\theta_{t+dt})` over
  the second half of the run, for every ``dt``: the "low but non-negligible value" of the paper's
  Figure 1(b), whose (in)dependence on ``dt`` is the paper's signature of a cone.
* :func:`run_summary` / :func:`runs_table`: those, the measures of :mod:`conelib.measures` and the
  final accuracies, per run; :func:`seed_spread`: mean, min and max over seeds.
* :func:`stack_seeds`: runs of one model as one Dataset with a ``seed`` dimension, for the charts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from conelib import measures

__all__ = ["fit_step", "phase_two_floor", "run_summary", "runs_table", "seed_spread", "stack_seeds", "run_label"]


def _config(ds: xr.Dataset) -> Any:
    from conelib.experiments.kernel_dynamics import config_of

    return config_of(ds)


def fit_step(ds: xr.Dataset, threshold: float = 1.0) -> int | None:
    """First snapshot step with training accuracy ``>= threshold`` (``None``: never reached)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    acc = ds["train_acc"].values
    hit = np.nonzero(acc >= threshold - 1e-12)[0]
    return int(ds["step"].values[hit[0]]) if hit.size else None


def phase_two_floor(ds: xr.Dataset, start: int | None = None) -> xr.DataArray:
    """Median of :math:`S(\\theta_t, \\theta_{t+dt})` over the snapshots ``t >= start`` (default: the
    second half of the run) where ``t + dt`` is a snapshot, for every ``dt``."""
    T = int(ds["step"].max())
    start = T // 2 if start is None else int(start)
    adj = ds["adjacent_distance"].where(ds["step"] >= start)
    floor = adj.median("step", skipna=True)
    floor.attrs = {"long_name": f"median S(θ_t, θ_t+dt) over t >= {start}", "units": "1"}
    return floor


def run_label(ds: xr.Dataset) -> dict[str, Any]:
    """``model``, ``seed`` and ``config_hash`` of a stored run."""
    cfg = _config(ds)
    return {"model": cfg.model, "seed": int(cfg.seed), "config_hash": str(ds.attrs.get("config_hash", ""))}


def run_summary(ds: xr.Dataset, **verdict_kwargs: Any) -> dict[str, Any]:
    """One row of numbers for a kernel-dynamics run (see the module docstring).

    Keys: model, seed, config_hash, T, the measures of :func:`conelib.measures.verdict` (with
    ``verdict_kwargs``: phase_one_end, drop, laziness, floor_exponent, max_growth_exponent,
    plateau_refs, late_growth_share, embedding_share, verdict; adjacent_peak and adjacent_floor,
    the two values ``drop`` is the ratio of),
    fit_99 and fit_100 (:func:`fit_step`), final_test_acc, final_train_acc, final_train_loss,
    floor_dt<dt> for every dt, dist_T_tau<tau> (:math:`S(\\theta_T, \\theta_\\tau)`) for every tau,
    dist_T_init.
    """
    v = measures.verdict(ds, **verdict_kwargs)
    row: dict[str, Any] = run_label(ds)
    row.update({
        "T": int(ds["step"].max()),
        "phase_one_end": v.phase_one_end,
        "drop": v.drop,
        "adjacent_peak": v.peak,
        "adjacent_floor": v.floor,
        "laziness": v.laziness,
        "floor_exponent": v.floor_exponent,
        "max_growth_exponent": v.max_growth_exponent,
        "plateau_refs": None if v.n_refs is None else f"{v.plateau_refs}/{v.n_refs}",
        "late_growth_share": v.late_growth_share,
        "embedding_share": v.embedding_share,
        "verdict": v.verdict,
        "fit_99": fit_step(ds, 0.99),
        "fit_100": fit_step(ds, 1.0),
        "final_test_acc": float(ds["test_acc"].isel(step=-1)),
        "final_train_acc": float(ds["train_acc"].isel(step=-1)),
        "final_train_loss": float(ds["train_loss"].isel(step=-1)),
        "dist_T_init": float(ds["dist_to_init"].isel(step=-1)),
    })
    for dt, value in zip(ds["dt"].values, phase_two_floor(ds).values):
        row[f"floor_dt{int(dt)}"] = float(value)
    for tau in ds["ref_step"].values:
        row[f"dist_T_tau{int(tau)}"] = float(ds["dist_to_ref"].sel(ref_step=tau).isel(step=-1))
    return row


def runs_table(runs: Sequence[xr.Dataset], **verdict_kwargs: Any) -> pd.DataFrame:
    """:func:`run_summary` of every run, one row each, sorted by model and seed."""
    rows = [run_summary(ds, **verdict_kwargs) for ds in runs]
    return pd.DataFrame(rows).sort_values(["model", "seed"]).reset_index(drop=True)


def seed_spread(table: pd.DataFrame, columns: Sequence[str], by: str = "model") -> pd.DataFrame:
    """Mean, min, max and count over seeds of numeric ``columns`` for each ``by`` value
    (``None`` entries, e.g. a Phase I that never ends, are left out and counted in ``n_missing``)."""
    out = []
    for key, group in table.groupby(by, sort=False):
        for col in columns:
            vals = pd.to_numeric(group[col], errors="coerce")
            ok = vals.dropna()
            out.append({by: key, "measure": col, "mean": ok.mean() if len(ok) else np.nan,
                        "min": ok.min() if len(ok) else np.nan, "max": ok.max() if len(ok) else np.nan,
                        "n": int(len(ok)), "n_missing": int(vals.isna().sum())})
    return pd.DataFrame(out)


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


def describe_range(values: Any, fmt: str = "{:.3g}", *, unit: str = "", none: str = "—") -> str:
    """Values over seeds as text: ``"6,550–6,750"`` (``"-400 to +350"`` when the range starts below
    zero, where a dash would read as a minus sign), or one value when all agree; ``None``/NaN
    entries are named (``"6,600 (1 of 3: none found)"``)."""
    vals = [v for v in pd.to_numeric(pd.Series(list(values)), errors="coerce")]
    ok = [float(v) for v in vals if np.isfinite(v)]
    missing = len(vals) - len(ok)
    if not ok:
        return none
    lo, hi = fmt.format(min(ok)), fmt.format(max(ok))
    text = (lo if lo == hi else f"{lo} to {hi}" if min(ok) < 0 else f"{lo}–{hi}") + unit
    if missing:
        text += f" ({missing} of {len(vals)}: {none})"
    return text


class Facts(dict):
    """Formatted numbers for a notebook's prose, read as attributes (``facts.lenet5.t_end``);
    a missing one reads as ``"—"`` (a model that was not run), so the prose never breaks."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name, Facts() if name in _FACT_GROUPS else "—")

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


#: facts that are groups (a model's numbers): missing ones read as empty groups
_FACT_GROUPS = {"lenet5", "lenet_300_100", "mlp", "resnet20", "vgg16"}
