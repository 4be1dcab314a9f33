"""Charts of the controls of "Is it a cone?" (:mod:`conelib.analysis.controls`), redrawn from the
stored summaries, never by retraining.

* :func:`jitter_schedule_chart`: the jitter radius over training for the learning-rate schedules
  (constant, divided by 10 and by 100 at the milestone), one line per seed, the milestone marked
  and the analysis windows shaded.
* :func:`long_run_chart`: the Phase II curves (:func:`conelib.charts.kernel_dynamics.phase_two_chart`:
  the noise ball, the structure function, the drift at equal lag) of each cell of the long runs.
* :func:`verdict_loss_chart`: every control run at (final train loss, drop of the kernel velocity),
  coloured by verdict: is "no two phases" a kernel without an early phase, or a run that has not
  converged?
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from conelib.analysis import controls as C
from conelib.analysis.atlas_summary import run_from_summary
from conelib.charts.common import LEGEND, PANEL_H, PANEL_W
from conelib.charts.kernel_dynamics import phase_two_chart
from conelib.charts.atlas import VERDICT_COLORS
from conelib.measures import THRESHOLDS

__all__ = ["jitter_schedule_chart", "long_run_chart", "verdict_loss_chart"]

_VERDICT_SCALE = alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values()))


def jitter_schedule_chart(summary: xr.Dataset, *, decay: pd.DataFrame | None = None) -> alt.LayerChart:
    """The jitter radius :math:`r(t)` (log scale) of the base runs and the decayed runs of a controls
    summary, colour by schedule, one line per seed (dash by seed), the milestone as a vertical rule;
    with ``decay`` (:func:`conelib.analysis.controls.lr_decay_table`), its before/after windows
    shaded."""
    table = C.control_table(summary)
    keep = table[(table.status == "stored") & (table.momentum == 0) & (table.warmup_steps == 0)
                 & (table.weight_decay == 0)]
    df = C.jitter_curves(summary, list(keep.run))
    if not df.empty:  # (no stored run: an empty chart with its axes)
        df = df[np.isfinite(df.jitter.astype(float)) & (df.jitter > 0) & (df.step > 0)]
    milestones = sorted({int(m) for ms in keep.milestones for m in ms})
    base = alt.Chart(df).mark_line(opacity=0.85).encode(
        x=alt.X("step:Q", title="training step t"),
        y=alt.Y("jitter:Q", title="jitter radius r(t) (chord)", scale=alt.Scale(type="log")),
        color=alt.Color("schedule:N", title="learning rate", legend=LEGEND),
        strokeDash=alt.StrokeDash("seed:N", title="seed", legend=LEGEND),
        detail="run:N",
        tooltip=["schedule:N", "seed:N", "step:Q", alt.Tooltip("jitter:Q", format=".4f")],
    )
    layers: list[alt.Chart] = []
    if decay is not None and len(decay):
        d = decay.iloc[0]
        spans = pd.DataFrame({"from": [d.before[0], d.after[0]], "to": [d.before[1], d.after[1]],
                              "window": ["before", "after"]})
        layers.append(alt.Chart(spans).mark_rect(opacity=0.08, color="gray").encode(
            x="from:Q", x2="to:Q", tooltip=["window:N", "from:Q", "to:Q"]))
    if milestones:
        layers.append(alt.Chart(pd.DataFrame({"step": milestones})).mark_rule(strokeDash=[4, 3], color="black").encode(
            x="step:Q", tooltip=[alt.Tooltip("step:Q", title="learning rate decayed at")]))
    return alt.layer(*layers, base).properties(width=2 * PANEL_W, height=PANEL_H, title=alt.TitleParams(
        "does the noise ball shrink with the step size?",
        subtitle="jitter radius of single kernels around the window mean; dashed: the decay; shaded: the windows compared"))


def long_run_chart(summary: xr.Dataset, **thresholds: float) -> alt.VConcatChart:
    """For each cell of the long runs' summary, the Phase II curves of its seeds
    (:func:`conelib.charts.kernel_dynamics.phase_two_chart`), one row per cell."""
    table = C.control_table(summary)
    table = table[table.status == "stored"]
    rows = []
    for cell, g in table.groupby("cell", sort=False):
        runs = {int(s): run_from_summary(summary, int(r)) for s, r in zip(g.seed, g.run)}
        T = int(g.steps.iloc[0])
        rows.append(phase_two_chart(runs, **thresholds).properties(title=alt.TitleParams(
            f"{cell}, T = {T:,}", subtitle="Phase II, denoised; all axes logarithmic")))
    return alt.vconcat(*rows)


def verdict_loss_chart(runs: pd.DataFrame, *, min_drop: float = THRESHOLDS["min_drop"]) -> alt.LayerChart:
    """Every stored control run (rows of :func:`conelib.analysis.controls.control_table`, both grids)
    at its final train loss (log) and the drop of its kernel velocity (peak over late median; below
    ``min_drop``, dashed, no two phases), coloured by verdict, shaped by its run length."""
    df = runs[runs.status == "stored"].copy()
    df = df[np.isfinite(df["drop"].astype(float)) & (df["final_train_loss"].astype(float) > 0)]
    df["T"] = [f"T = {int(t):,}" for t in df.steps]
    df["test acc."] = df.final_test_acc
    pts = alt.Chart(df).mark_point(size=90, filled=True, opacity=0.85).encode(
        x=alt.X("final_train_loss:Q", title="final train loss", scale=alt.Scale(type="log")),
        y=alt.Y("drop:Q", title="drop of the kernel velocity (peak / late floor)", scale=alt.Scale(type="log")),
        color=alt.Color("verdict:N", scale=_VERDICT_SCALE, legend=LEGEND, title="verdict"),
        shape=alt.Shape("T:N", title="run length", legend=LEGEND),
        tooltip=["cell:N", "seed:N", "T:N", "verdict:N", alt.Tooltip("verdict_agreement:Q", format=".2f"),
                 alt.Tooltip("final_train_loss:Q", format=".2e"), alt.Tooltip("final_train_acc:Q", format=".4f"),
                 alt.Tooltip("test acc.:Q", format=".4f"), alt.Tooltip("drop:Q", format=".1f"),
                 alt.Tooltip("effective_step:Q", format="g")],
    )
    rule = alt.Chart(pd.DataFrame({"drop": [min_drop]})).mark_rule(strokeDash=[4, 3], color="gray").encode(y="drop:Q")
    return alt.layer(rule, pts).properties(width=PANEL_W + 120, height=PANEL_H + 40, title=alt.TitleParams(
        "verdict beside the optimisation", subtitle="below the dashed line: no two phases; hover a point for the run"))
