"""Charts of the spawning experiment (linear mode connectivity of spawned children), from its Dataset.

* :func:`barrier_chart`: the test error barrier and the test loss barrier against the spawn step
  (symmetric-log axis, so that step 0 has its place), one line per seed, with each seed's end of
  Phase I as a shaded interval and a rule at its point estimate, and the onset tolerance as a
  dashed rule on the error panel.
* :func:`sibling_kernel_chart`: the chord :math:`\\sqrt{2S}` between the two children's kernels at
  :math:`T` (and, lighter, between each child's and the parent's) against the spawn step, with each
  seed's Phase II reference :math:`\\sqrt2\\,J` as a dashed rule.
* :func:`barrier_curves_chart`: the test error and test loss along the straight line between the
  children, one curve per spawn step; a seed selector picks the seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from conelib.charts.common import PANEL_H, PANEL_W

__all__ = ["barrier_chart", "sibling_kernel_chart", "barrier_curves_chart", "barrier_frame"]

_W = min(PANEL_W, 230)
#: the symmetric-log axis of the spawn step is linear below this many steps
_SYMLOG = 50


def _step_x(title: str = "spawn step t (symlog)") -> alt.X:
    return alt.X("spawn_step:Q", title=title, scale=alt.Scale(type="symlog", constant=_SYMLOG))


def _check(ds: xr.Dataset) -> None:
    missing = [v for v in ("error_barrier", "loss_barrier", "sibling_kernel_distance") if v not in ds]
    if missing:
        raise ValueError(f"ds is not a spawning Dataset: it lacks {missing}")


def barrier_frame(ds: xr.Dataset) -> pd.DataFrame:
    """One row per (spawn step, seed): the error and loss barriers (mean over pairs of children)."""
    _check(ds)
    err = ds["error_barrier"].mean("pair").to_dataframe(name="error").reset_index()[["spawn_step", "seed", "error"]]
    loss = ds["loss_barrier"].mean("pair").to_dataframe(name="loss").reset_index()[["spawn_step", "seed", "loss"]]
    return err.merge(loss, on=["spawn_step", "seed"])


def _phase_frame(phase: Mapping[int, tuple[float | None, float, float]]) -> pd.DataFrame:
    rows = []
    for s, (end, lo, hi) in phase.items():
        if end is None:
            continue
        lo = lo if np.isfinite(lo) else end
        hi = hi if np.isfinite(hi) else end
        rows.append({"seed": str(s), "end": float(end), "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows, columns=["seed", "end", "lo", "hi"])


def barrier_chart(ds: xr.Dataset, phase: Mapping[int, tuple[float | None, float, float]] | None = None,
                  tolerance: float | None = None) -> alt.HConcatChart:
    """Error barrier (points) and loss barrier (nats) against the spawn step, one line per seed.

    Args:
        ds: a spawning Dataset.
        phase: seed -> (end of Phase I, interval low, interval high), drawn as a shaded band and a rule.
        tolerance: drawn as a dashed rule on the error panel (the onset's tolerance, points).
    """
    df = barrier_frame(ds)
    df["seed"] = df["seed"].astype(str)
    ph = _phase_frame(phase or {})
    panels = []
    for col, title, fmt in (("error", "test error barrier (points)", ".2f"), ("loss", "test loss barrier (nats)", ".4f")):
        layers: list[alt.Chart] = []
        if len(ph):
            layers.append(alt.Chart(ph).mark_rect(opacity=0.12).encode(
                x=alt.X("lo:Q", scale=alt.Scale(type="symlog", constant=_SYMLOG)), x2="hi:Q",
                color=alt.Color("seed:N", title="seed", legend=None),
                tooltip=[alt.Tooltip("seed:N"), alt.Tooltip("end:Q", title="end of Phase I", format=",.0f"),
                         alt.Tooltip("lo:Q", title="95% low", format=",.0f"),
                         alt.Tooltip("hi:Q", title="95% high", format=",.0f")]))
            layers.append(alt.Chart(ph).mark_rule(strokeDash=[4, 2]).encode(
                x=alt.X("end:Q", scale=alt.Scale(type="symlog", constant=_SYMLOG)), color=alt.Color("seed:N", legend=None)))
        if col == "error" and tolerance is not None:
            layers.append(alt.Chart(pd.DataFrame({"tol": [float(tolerance)]})).mark_rule(
                color="black", strokeDash=[6, 3], opacity=0.7).encode(
                y="tol:Q", tooltip=[alt.Tooltip("tol:Q", title="tolerance (points)", format=".2f")]))
        layers.append(alt.Chart(df).mark_line(point=True).encode(
            x=_step_x(), y=alt.Y(f"{col}:Q", title=title),
            color=alt.Color("seed:N", title="seed", legend=alt.Legend(orient="bottom", direction="horizontal")),
            tooltip=[alt.Tooltip("spawn_step:Q", title="spawn step", format=",.0f"), alt.Tooltip("seed:N"),
                     alt.Tooltip(f"{col}:Q", title=title, format=fmt)]))
        sub = ["shaded: each seed's end of Phase I (95% interval), dashed: its estimate"] if len(ph) else []
        if col == "error" and tolerance is not None:
            sub.append("black dashed: the test set's resolution")
        panels.append(alt.layer(*layers).properties(width=_W, height=PANEL_H,
                                                   title=alt.TitleParams(title, subtitle=sub)))
    return alt.hconcat(*panels).resolve_scale(color="shared")


def sibling_kernel_chart(ds: xr.Dataset, jitter: Mapping[int, float] | None = None) -> alt.LayerChart:
    """Chord between the children's kernels at T (and to the parent's, lighter) against the spawn
    step, with each seed's :math:`\\sqrt2 J` (two draws of one Phase II noise ball) dashed."""
    _check(ds)
    sib = ds["sibling_kernel_distance"].mean("pair").to_dataframe(name="S").reset_index()[["spawn_step", "seed", "S"]]
    sib["chord"], sib["what"] = np.sqrt(2 * sib["S"]), "child – child"
    par = ds["child_parent_kernel_distance"].mean("child").to_dataframe(name="S").reset_index()[["spawn_step", "seed", "S"]]
    par["chord"], par["what"] = np.sqrt(2 * par["S"]), "child – parent"
    df = pd.concat([sib, par], ignore_index=True)
    df["seed"] = df["seed"].astype(str)
    layers: list[alt.Chart] = []
    jit = pd.DataFrame([{"seed": str(s), "ref": math.sqrt(2) * j} for s, j in (jitter or {}).items() if np.isfinite(j)],
                       columns=["seed", "ref"])
    if len(jit):
        layers.append(alt.Chart(jit).mark_rule(strokeDash=[6, 3]).encode(
            y="ref:Q", color=alt.Color("seed:N", legend=None),
            tooltip=[alt.Tooltip("seed:N"), alt.Tooltip("ref:Q", title="√2·J (Phase II noise ball)", format=".3f")]))
    layers.append(alt.Chart(df).mark_line(point=True).encode(
        x=_step_x(), y=alt.Y("chord:Q", title="chord √(2S) between kernels at T"),
        color=alt.Color("seed:N", title="seed", legend=alt.Legend(orient="bottom", direction="horizontal")),
        strokeDash=alt.StrokeDash("what:N", title="", legend=alt.Legend(orient="bottom", direction="horizontal")),
        opacity=alt.condition(alt.datum.what == "child – child", alt.value(1.0), alt.value(0.45)),
        tooltip=[alt.Tooltip("what:N"), alt.Tooltip("spawn_step:Q", title="spawn step", format=",.0f"),
                 alt.Tooltip("seed:N"), alt.Tooltip("S:Q", title="kernel distance S", format=".4f"),
                 alt.Tooltip("chord:Q", title="chord", format=".3f")]))
    sub = "dashed rules: √2·J, the chord between two kernels of one run's Phase II noise ball" if len(jit) else ""
    return alt.layer(*layers).properties(width=2 * _W, height=PANEL_H,
                                         title=alt.TitleParams("the children's kernels at T", subtitle=sub))


def barrier_curves_chart(ds: xr.Dataset) -> alt.HConcatChart:
    """Test error and test loss along the line between the children (first pair), one curve per
    spawn step, for the seed picked in the drop-down."""
    _check(ds)
    parts = []
    for var, col in (("barrier_error_curve", "error"), ("barrier_loss_curve", "loss")):
        d = ds[var].isel(pair=0).to_dataframe(name=col).reset_index()[["spawn_step", "seed", "alpha", col]]
        parts.append(d.set_index(["spawn_step", "seed", "alpha"]))
    df = pd.concat(parts, axis=1).reset_index()
    seeds = [int(s) for s in ds["seed"].values]
    pick = alt.param(name="pick_seed", value=seeds[0], bind=alt.binding_select(options=seeds, name="seed "))
    steps = [int(t) for t in ds["spawn_step"].values]
    panels = []
    for col, title, fmt in (("error", "test error (%)", ".2f"), ("loss", "test loss (nats)", ".4f")):
        panels.append(alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
            x=alt.X("alpha:Q", title="α (0: child a, 1: child b)"), y=alt.Y(f"{col}:Q", title=title,
                                                                           scale=alt.Scale(zero=False)),
            color=alt.Color("spawn_step:O", title="spawn step", scale=alt.Scale(scheme="viridis", domain=steps),
                            legend=alt.Legend(orient="bottom", direction="horizontal", columns=8)),
            tooltip=[alt.Tooltip("spawn_step:Q", title="spawn step", format=",.0f"), alt.Tooltip("seed:N"),
                     alt.Tooltip("alpha:Q", format=".2f"), alt.Tooltip(f"{col}:Q", title=title, format=fmt)],
        ).transform_filter(alt.datum.seed == pick).properties(width=_W, height=PANEL_H,
                                                              title=f"{title} along the line between two children"))
    return alt.hconcat(*panels).add_params(pick).resolve_scale(color="shared")
