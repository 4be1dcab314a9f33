"""Reading an atlas: what a sweep summary (:func:`conelib.sweep.summarize`) says about where the cone is.

The atlas chapter quotes these; the definitions are here:

* :func:`cells`: one row per *cell* (a setting of the swept parameters other than the seed),
  with the verdict of each seed and whether the seeds agree.
* :func:`regions`: for each verdict, the cells where every seed got it (disagreeing cells are
  listed apart: they are the atlas' uncertainty).
* :func:`deciding_factors`: for each block and swept factor, the values at which the cells'
  verdict changes as that factor changes with the others fixed.
* :func:`figure3_candidate`: the run closest to the paper's Figure 3 ("the kernel keeps evolving
  during training, and no clear two-phase pattern"): a run with no two phases and the smallest
  drop if there is one, else the run with the largest growth exponent; and
  :func:`contrast_for`: a cone run of the same block that differs from it in as few factors as
  possible (the factor that separates them).
* :func:`sensitivity_table`: the verdict counts over the whole sweep for each threshold setting.
* :func:`load_summary`: the stored summary of a grid, recomputed from the stored runs if asked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from conelib.measures import VERDICTS

__all__ = ["cells", "regions", "deciding_factors", "figure3_candidate", "contrast_for", "sensitivity_table",
           "load_summary", "swept", "run_label", "base_values"]


def swept(summary: xr.Dataset, *, seed: str = "seed") -> list[str]:
    """The swept parameters other than the seed."""
    return [d for d in json.loads(summary.attrs["swept_fields"]) if d != seed]


def _int_fields() -> set[str]:
    """The run parameters declared as integers (the summary stores them as floats when one is None)."""
    import typing

    from conelib.experiments.kernel_dynamics import KernelDynamicsConfig

    return {k for k, p in KernelDynamicsConfig.parameters().items()
            if p.type is int or int in typing.get_args(p.type)}


def _value(v: Any, name: str | None = None) -> Any:
    """A summary coordinate's value as a plain Python value: NaN → None, and an integral float of an
    integer parameter (``n_train``, stored as float beside a None) → int."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float):
        if not np.isfinite(v):
            return None
        if name is not None and v.is_integer() and name in _int_fields():
            return int(v)
    return v


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-12, atol=0))
    except (TypeError, ValueError):
        return str(a) == str(b)


def _text_key(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One text key per row over ``columns`` (None and NaN become text: pandas keeps NaN through
    ``astype(str)``, and groupby drops it)."""
    return df[columns].apply(lambda col: col.map(str)).agg(" | ".join, axis=1)


def _changed(values: dict[str, Any], base: dict[str, Any]) -> str:
    """``"lr=0.3, batch_size=32"``: the values that differ from the base setting."""
    return ", ".join(f"{d}={v}" for d, v in values.items() if not _equal(v, base.get(d)))


def run_label(summary: xr.Dataset, run: int, *, only: list[str] | None = None) -> str:
    """``"lr=0.3, batch_size=32, seed=0"``: the run's swept values that differ from the base setting,
    and its seed (or the values of ``only``)."""
    row = summary.sel(run=run)
    if only is not None:
        return ", ".join(f"{d}={_value(row[d].values, d)}" for d in only)
    values = {d: _value(row[d].values, d) for d in swept(summary)}
    seed = [f"seed={_value(row['seed'].values, 'seed')}"] if "seed" in summary else []
    return ", ".join([x for x in [_changed(values, base_values(summary))] if x] + seed)


def base_values(summary: xr.Dataset) -> dict[str, Any]:
    """The value of every swept factor at the grid's base setting (the base's own value, else the
    run parameter's default)."""
    from conelib.experiments.kernel_dynamics import KernelDynamicsConfig

    base = json.loads(summary.attrs["grid_json"])["base"]
    flat = KernelDynamicsConfig.from_mapping(base).flat()
    return {d: flat.get(d) for d in json.loads(summary.attrs["swept_fields"])}


def cells(summary: xr.Dataset, *, seed: str = "seed") -> pd.DataFrame:
    """One row per cell: its swept values, the runs, each seed's verdict, ``agree``, and a ``label``
    naming only the factors that differ from the base setting ("base setting" for the base itself)."""
    factors = swept(summary, seed=seed)
    base = base_values(summary)
    # object columns: a ``None`` value of a factor (n_train=None: the whole training set) stays None
    df = pd.DataFrame({d: pd.Series([_value(v, d) for v in summary[d].values], dtype=object) for d in factors})
    df["run"] = summary["run"].values
    df["verdict"] = np.where(summary["status"].values == "failed", "failed", summary["verdict"].values.astype(str))
    out = []
    for _, g in df.groupby(_text_key(df, factors), sort=False):
        verdicts = list(g["verdict"])
        row = {d: g[d].iloc[0] for d in factors}
        row.update(runs=list(g["run"]), verdicts=verdicts, agree=len(set(verdicts)) == 1,
                   verdict=verdicts[0] if len(set(verdicts)) == 1 else "seeds disagree",
                   label=_changed(row, base) or "base setting")
        out.append(row)
    frame = pd.DataFrame(out)
    for d in factors:  # keep None (and ints) as they are, not NaN and floats
        frame[d] = pd.Series([row[d] for row in out], dtype=object)
    return frame


def regions(summary: xr.Dataset) -> dict[str, list[str]]:
    """Verdict (and "seeds disagree", "failed", "missing") -> the labels of its cells."""
    c = cells(summary)
    return {v: list(c.loc[c.verdict == v, "label"]) for v in (*VERDICTS, "seeds disagree", "failed", "missing")}


def deciding_factors(summary: xr.Dataset) -> list[dict[str, Any]]:
    """Where a verdict changes along one factor within a block, the other factors fixed.

    Returns:
        One entry per change: block, factor, the two neighbouring values, the verdicts on both
        sides, and the fixed values of the other factors.
    """
    c = cells(summary)
    factors = swept(summary)
    member = summary["in_block"].values
    blocks = [str(b) for b in summary["block"].values]
    changes = []
    for b, label in enumerate(blocks):
        runs_in = set(summary["run"].values[member[:, b] == 1].tolist())
        in_block = c[c.runs.apply(lambda r: bool(set(r) & runs_in))]
        for f in [x for x in label.split(" × ") if x in factors]:
            others = [x for x in label.split(" × ") if x in factors and x != f]
            groups = [g for _, g in in_block.groupby(_text_key(in_block, others), sort=False)] if others else [in_block]
            for g in groups:
                fixed = tuple(g[o].iloc[0] for o in others)
                g = g.sort_values(f, key=lambda s: pd.to_numeric(s, errors="coerce").fillna(-np.inf))
                vals, verd = list(g[f]), list(g["verdict"])
                for i in range(len(vals) - 1):
                    if verd[i] != verd[i + 1]:
                        changes.append({"block": label, "factor": f, "from": vals[i], "to": vals[i + 1],
                                        "verdict_from": verd[i], "verdict_to": verd[i + 1],
                                        "fixed": dict(zip(others, fixed))})
    return changes


def figure3_candidate(summary: xr.Dataset) -> int | None:
    """The stored run closest to the paper's Figure 3 (see the module docstring); ``None`` if none is stored."""
    ok = summary["status"].values == "stored"
    if not ok.any():
        return None
    runs = summary["run"].values[ok]
    verdict = summary["verdict"].values[ok].astype(str)
    none = verdict == "no two phases"
    if none.any():
        drop = summary["drop"].values[ok][none]
        return int(runs[none][int(np.nanargmin(drop))])
    gamma = summary["max_growth_exponent"].values[ok].astype(float)
    return int(runs[int(np.nanargmax(np.where(np.isfinite(gamma), gamma, -np.inf)))])


def contrast_for(summary: xr.Dataset, run: int) -> int | None:
    """A stored cone run of the same block (same seed if possible) that differs from ``run`` in as few
    swept values as possible; ``None`` if the atlas has no cone run."""
    member = summary["in_block"].values
    i = int(np.flatnonzero(summary["run"].values == run)[0])
    blocks = np.flatnonzero(member[i])
    cone = (summary["verdict"].values.astype(str) == VERDICTS[0]) & (summary["status"].values == "stored")
    if not cone.any():
        return None
    factors = json.loads(summary.attrs["swept_fields"])
    mine = [str(summary[d].values[i]) for d in factors]
    best, best_key = None, None
    for j in np.flatnonzero(cone):
        same_block = bool(member[j, blocks].any())
        diff = sum(str(summary[d].values[j]) != m for d, m in zip(factors, mine))
        key = (not same_block, diff)
        if best_key is None or key < best_key:
            best, best_key = int(summary["run"].values[j]), key
    return best


def sensitivity_table(summary: xr.Dataset) -> pd.DataFrame:
    """The stored verdict counts, one row per threshold setting (the defaults first)."""
    counts = summary["verdict_counts"]
    df = pd.DataFrame(counts.values, index=[str(s) for s in counts["setting"].values],
                      columns=[str(v) for v in counts["verdict_label"].values])
    df.index.name = "thresholds"
    return df


def grid_path(grid: str | os.PathLike) -> Path:
    """The file of a grid given by name (``"atlas"``: ``sweeps/atlas.yaml``) or as a ``.yaml`` path."""
    from conelib.paths import sweeps_dir

    path = Path(grid)
    return path if path.suffix in (".yaml", ".yml") else sweeps_dir() / f"{grid}.yaml"


def load_summary(grid: str | os.PathLike = "atlas", *, results_root: str | os.PathLike | None = None,
                 compute: bool = False, workers: int = 2) -> xr.Dataset:
    """The summary of a grid (a name in ``sweeps/`` or a file): with ``compute``, run the missing
    points first (:func:`conelib.sweep.run_sweep`); else the stored summary, or, when none is
    stored, one read now from the stored runs."""
    from conelib.results import load_result
    from conelib.sweep import load_grid, run_sweep, summarize, summary_path

    g = load_grid(grid_path(grid))
    if compute:
        return run_sweep(g, results_root=results_root, workers=workers).summary
    stored = summary_path(g, results_root)
    if stored.exists():
        return load_result(stored)
    return summarize(g, results_root, save=False)
