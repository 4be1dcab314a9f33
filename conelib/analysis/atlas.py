"""Reading an atlas: what its summary (:func:`conelib.analysis.atlas_summary.summarize`) says about where the cone is.

The atlas chapter quotes these; the definitions are here:

* :func:`cells`: one row per *cell* (a setting of the swept parameters other than the seed),
  with the verdict of each seed and whether the seeds agree.
* :func:`regions`: for each verdict, the cells where every seed got it (disagreeing cells are
  listed apart: they are the atlas' uncertainty).
* :func:`deciding_factors`: for each block and swept factor, the values at which the cells'
  verdict changes as that factor changes with the others fixed.
* :func:`figure3_candidate`: the run closest to the paper's Figure 3 ("the kernel keeps evolving
  during training, and no clear two-phase pattern"): a run with no two phases and the smallest
  drop if there is one, else the drifting run with the smallest drop; and
  :func:`contrast_for`: another cone run, of the same block if possible, that differs from it in as
  few factors as possible (the factor that separates them).
* :func:`sensitivity_table`: the verdict counts over the whole sweep for each threshold setting.
* :func:`optimisation_by_verdict`: the final training loss and test accuracy of the runs of each
  verdict (is a verdict a statement about the kernel or about how far training got?).
* :func:`loss_clock`: how the end of Phase I and the measures relate to the optimisation across the
  atlas (rank correlations, the training loss at the end of Phase I).
* :func:`noise_ball`: the jitter radius against the SGD noise scale lr / batch size.
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

import typing

from scipy import stats

from conelib.analysis.atlas_summary import summarize, summary_path
from conelib.config import values_equal
from conelib.experiments.kernel_dynamics import KernelDynamicsConfig
from conelib.measures import VERDICTS
from conelib.paths import sweeps_dir
from conelib.results import load_result
from conelib.sweep import load_grid, run_sweep

__all__ = ["cells", "regions", "deciding_factors", "figure3_candidate", "contrast_for", "sensitivity_table",
           "load_summary", "swept", "run_name", "base_values", "fit_steps", "optimisation_by_verdict",
           "loss_clock", "noise_ball", "values_equal"]


def swept(summary: xr.Dataset, *, seed: str = "seed") -> list[str]:
    """The swept parameters other than the seed."""
    return [d for d in json.loads(summary.attrs["swept_fields"]) if d != seed]


def _int_fields() -> set[str]:
    """The run parameters declared as integers (the summary stores them as floats when one is None)."""
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


def _text_key(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One text key per row over ``columns`` (None and NaN become text: pandas keeps NaN through
    ``astype(str)``, and groupby drops it)."""
    return df[columns].apply(lambda col: col.map(str)).agg(" | ".join, axis=1)


def _changed(values: dict[str, Any], base: dict[str, Any]) -> str:
    """``"lr=0.3, batch_size=32"``: the values that differ from the base setting."""
    return ", ".join(f"{d}={v}" for d, v in values.items() if not values_equal(v, base.get(d)))


def run_name(summary: xr.Dataset, run: int, *, only: list[str] | None = None) -> str:
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
    """The stored run closest to the paper's Figure 3 ("no clear two-phase pattern"; the kernel keeps
    moving): the "no two phases" run with the smallest velocity drop; when there is none, the
    "drifting" run with the smallest drop; ``None`` if neither is stored."""
    ok = summary["status"].values == "stored"
    if not ok.any():
        return None
    runs = summary["run"].values[ok]
    verdict = summary["verdict"].values[ok].astype(str)
    drop = summary["drop"].values[ok].astype(float)
    for label in ("no two phases", "two phases, drifting"):
        pick = verdict == label
        if pick.any():
            d = np.where(np.isfinite(drop[pick]), drop[pick], np.inf)
            return int(runs[pick][int(np.argmin(d))])
    return None


def contrast_for(summary: xr.Dataset, run: int) -> int | None:
    """A stored cone run other than ``run``, of the same block if possible, that differs from ``run`` in
    as few swept values as possible; ``None`` if the atlas has no other cone run."""
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
        if j == i:
            continue
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


def fit_steps(summary: xr.Dataset, threshold: float = 0.99) -> np.ndarray:
    """Per run, the first snapshot step at which the training accuracy reaches ``threshold`` (NaN:
    never, or not stored)."""
    acc = summary["train_acc"].values
    steps = summary["step"].values
    out = np.full(acc.shape[0], np.nan)
    for i in range(acc.shape[0]):
        hit = np.nonzero(acc[i] >= threshold - 1e-12)[0]
        if hit.size:
            out[i] = steps[hit[0]]
    return out


def optimisation_by_verdict(summary: xr.Dataset) -> pd.DataFrame:
    """Per verdict: number of stored runs, median (and range of) final training loss, median final
    test accuracy."""
    ok = summary["status"].values == "stored"
    df = pd.DataFrame({"verdict": summary["verdict"].values[ok].astype(str),
                       "loss": summary["final_train_loss"].values[ok],
                       "acc": summary["final_test_acc"].values[ok]})
    rows = []
    for v in VERDICTS:
        g = df[df.verdict == v]
        rows.append({"verdict": v, "runs": len(g),
                     "median_final_train_loss": g.loss.median() if len(g) else np.nan,
                     "min_final_train_loss": g.loss.min() if len(g) else np.nan,
                     "max_final_train_loss": g.loss.max() if len(g) else np.nan,
                     "median_final_test_acc": g.acc.median() if len(g) else np.nan})
    return pd.DataFrame(rows)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 4:
        return float("nan"), int(ok.sum())
    return float(stats.spearmanr(x[ok], y[ok]).statistic), int(ok.sum())


def loss_clock(summary: xr.Dataset) -> dict[str, Any]:
    """How the phases relate to the optimisation across the stored runs.

    Returns:
        ``end_vs_fit``: Spearman correlation of the end of Phase I with the 99%-fit step (and n);
        ``end_minus_fit``: the median and quartiles of t* minus the 99%-fit step;
        ``loss_at_end``: median and quartiles of the training loss at t*;
        ``drop_vs_loss``, ``laziness_vs_loss``, ``movement_vs_loss``: Spearman correlations of those
        measures with the final training loss; ``loss_correlation``: median over runs of the
        per-run correlation of the kernel velocity with the training loss.
    """
    ok = summary["status"].values == "stored"
    t1 = summary["phase_one_end"].values[ok]
    fit = fit_steps(summary)[ok]
    loss = summary["final_train_loss"].values[ok]
    diff = t1 - fit
    le = summary["loss_at_phase_one_end"].values[ok]

    def quart(x: np.ndarray) -> tuple[float, float, float]:
        x = x[np.isfinite(x)]
        return tuple(float(q) for q in np.quantile(x, [0.25, 0.5, 0.75])) if x.size else (np.nan,) * 3

    return {
        "end_vs_fit": _spearman(t1, fit),
        "end_minus_fit": quart(diff),
        "loss_at_end": quart(le),
        "drop_vs_loss": _spearman(summary["drop"].values[ok], loss),
        "laziness_vs_loss": _spearman(summary["laziness"].values[ok], loss),
        "movement_vs_loss": _spearman(summary["total_movement"].values[ok], loss),
        "loss_correlation": float(np.nanmedian(summary["loss_correlation"].values[ok])) if ok.any() else np.nan,
    }


def noise_ball(summary: xr.Dataset, *, lr: str = "lr", batch: str = "batch_size") -> dict[str, Any]:
    """The Phase II jitter radius against the SGD noise scale :math:`\\eta / B` over the runs of the
    atlas that vary the learning rate or the batch size (all stored runs with both known):
    Spearman correlation, the log-log slope with a bootstrap interval over runs, and the frame."""
    if lr not in summary or batch not in summary:
        return {"rho": np.nan, "n": 0, "slope": (np.nan, np.nan, np.nan), "frame": pd.DataFrame()}
    ok = (summary["status"].values == "stored") & np.isfinite(summary["jitter_radius"].values)
    base = base_values(summary)
    lr_v = np.asarray([base.get(lr) if not np.isfinite(v) else v for v in summary[lr].values.astype(float)], float)
    b_v = np.asarray([base.get(batch) if not np.isfinite(v) else v for v in summary[batch].values.astype(float)], float)
    others = [d for d in swept(summary) if d not in (lr, batch)]
    at_base = np.ones(len(ok), bool)
    for d in others:
        at_base &= np.asarray([values_equal(_value(v, d), base.get(d)) for v in summary[d].values])
    sel = ok & at_base & np.isfinite(lr_v) & np.isfinite(b_v)
    x, y = lr_v[sel] / b_v[sel], summary["jitter_radius"].values[sel]
    rho, n = _spearman(x, y)
    slope = (np.nan, np.nan, np.nan)
    if n >= 4:
        lx, ly = np.log(x), np.log(y)
        point = float(np.polyfit(lx, ly, 1)[0])
        rng = np.random.default_rng(0)
        boots = []
        for _ in range(2000):
            idx = rng.integers(0, n, n)
            if np.ptp(lx[idx]) > 0:
                boots.append(np.polyfit(lx[idx], ly[idx], 1)[0])
        slope = (point, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)))
    frame = pd.DataFrame({"run": summary["run"].values[sel], "lr": lr_v[sel], "batch_size": b_v[sel],
                          "lr_over_batch": x, "jitter_radius": y,
                          "verdict": summary["verdict"].values[sel].astype(str)})
    return {"rho": rho, "n": n, "slope": slope, "frame": frame}
def grid_path(grid: str | os.PathLike) -> Path:
    """The file of a grid given by name (``"atlas"``: ``sweeps/atlas.yaml``) or as a ``.yaml`` path."""
    path = Path(grid)
    return path if path.suffix in (".yaml", ".yml") else sweeps_dir() / f"{grid}.yaml"


def load_summary(grid: str | os.PathLike = "atlas", *, results_root: str | os.PathLike | None = None,
                 compute: bool = False, workers: int = 2) -> xr.Dataset:
    """The summary of a grid (a name in ``sweeps/`` or a file): with ``compute``, run the missing
    points first (:func:`conelib.sweep.run_sweep`) and summarise; else the stored summary, or, when
    none is stored, one read now from the stored runs."""
    g = load_grid(grid_path(grid))
    if compute:
        return run_sweep(g, results_root=results_root, workers=workers, summarize=summarize).summary
    stored = summary_path(g, results_root)
    if stored.exists():
        return load_result(stored)
    return summarize(g, results_root, save=False)
