"""Charts of a sweep (:mod:`conelib.sweep`) and of the counterexample (the paper's Figure 3).

* :func:`sweep_verdict_chart`: the summary Dataset as a heatmap over two swept fields, faceted by
  the others; colour = verdict of :func:`conelib.measures.verdict`; the tooltip holds the measures.
  A legend click isolates one verdict (shift-click for several).
* :func:`sweep_measures_chart`: every run placed by its two continuous measures (velocity drop,
  late-growth share) with the verdict thresholds drawn; selecting verdicts in the heatmap's legend
  highlights the same runs here (both together: :func:`sweep_chart`).
* :func:`counterexample_chart`: the three panels of Figure 1 (Zhou et al. 2025) for several runs
  side by side, one column per run, plus a fourth row with the velocity the measures read.

Charts are always redrawn from stored Datasets, never by retraining.
"""

from __future__ import annotations

from collections.abc import Mapping

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from conelib.charts.common import LEGEND, PANEL_H, PANEL_W, _step_axis, _tidy
from conelib.measures import VERDICTS, phase_one_end, smoothed_velocity

#: verdict -> colour (fixed, so that every chart and page uses the same legend)
VERDICT_COLORS: dict[str, str] = dict(zip((*VERDICTS, "missing"), ("#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#bdbdbd")))
_VERDICT_SCALE = alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values()))

#: the summary's measures shown in tooltips: variable -> (title, format)
_TOOLTIP_MEASURES: dict[str, tuple[str, str]] = {
    "phase_one_end": ("end of Phase I t*", ".0f"),
    "late_growth_share": ("late-growth share", ".2f"),
    "cone_final": ("ĝ(T) from H(t*)", ".4f"),
    "velocity_drop": ("velocity drop", ".0f"),
    "dist_to_init_final": ("S(θ_T, θ_0)", ".3f"),
    "final_test_acc": ("test accuracy", ".3f"),
    "wall_seconds": ("wall time (s)", ".0f"),
    "config_hash": ("config hash", ""),
}


def _label(v: object) -> str:
    """Grid values as short text (0.005 → "0.005", 5e-4 → "0.0005")."""
    if isinstance(v, (float, np.floating)):
        return np.format_float_positional(float(v), trim="-")
    return str(v)


def sweep_frame(summary: xr.Dataset) -> tuple[pd.DataFrame, list[str]]:
    """The summary as one row per run (grid values as text columns) and the swept dimensions."""
    dims = list(summary["verdict"].dims)
    df = summary.to_dataframe().reset_index()
    for d in dims:
        order = [_label(v) for v in summary[d].values]
        df[d] = pd.Categorical([_label(v) for v in df[d]], categories=order, ordered=True)
    df["verdict"] = df["verdict"].astype(str)
    return df, dims


def _sort(summary: xr.Dataset, dim: str) -> list[str]:
    return [_label(v) for v in summary[dim].values]


def sweep_verdict_chart(
    summary: xr.Dataset,
    *,
    x: str | None = None,
    y: str | None = None,
    column: str | None = None,
    row: str | None = None,
    selection: alt.Parameter | None = None,
) -> alt.FacetChart | alt.Chart:
    """A heatmap of the verdicts over two swept fields, faceted by up to two others.

    Args:
        summary: the Dataset of :func:`conelib.sweep.summarize`.
        x, y: swept fields on the axes (default: the first two dimensions).
        column, row: swept fields to facet by (default: the remaining dimensions, in order).
        selection: a legend-bound point selection on ``verdict`` to use (default: a new one).

    Every dimension of the summary must be placed (at most four); the tooltip shows the grid values
    and the measures of the run.
    """
    df, dims = sweep_frame(summary)
    if len(dims) > 4:
        raise ValueError(f"the heatmap shows at most 4 swept fields (x, y, column, row); the summary has {dims}: "
                         "select a slice first, e.g. summary.sel(seed=0)")
    rest = [d for d in dims if d not in (x, y, column, row)]
    x = x or (rest.pop(0) if rest else None)
    y = y or (rest.pop(0) if rest else None)
    column = column or (rest.pop(0) if rest else None)
    row = row or (rest.pop(0) if rest else None)
    placed = [d for d in (x, y, column, row) if d is not None]
    unknown = [d for d in placed if d not in dims]
    if unknown or len(set(placed)) != len(placed):
        raise ValueError(f"x, y, column and row must be distinct swept fields of the summary {dims}; got {placed}")
    pick = selection or alt.selection_point(fields=["verdict"], bind="legend", name="pick_verdict")
    tooltip = [alt.Tooltip(f"{d}:N", title=d) for d in dims] + [alt.Tooltip("verdict:N", title="verdict")]
    tooltip += [alt.Tooltip(f"{k}:{'N' if k == 'config_hash' else 'Q'}", title=t, **({"format": f} if f else {}))
                for k, (t, f) in _TOOLTIP_MEASURES.items() if k in df]
    enc = {
        "x": alt.X(f"{x}:O", title=x, sort=_sort(summary, x), axis=alt.Axis(labelAngle=0)),
        "color": alt.Color("verdict:N", title="verdict", scale=_VERDICT_SCALE, legend=LEGEND),
        "opacity": alt.condition(pick, alt.value(1.0), alt.value(0.2)),
        "tooltip": tooltip,
    }
    if y is not None:
        enc["y"] = alt.Y(f"{y}:O", title=y, sort=_sort(summary, y))
    chart = alt.Chart(df).mark_rect(stroke="white", strokeWidth=1).encode(**enc).add_params(pick).properties(
        width=max(90, 45 * summary.sizes[x]), height=max(40, 40 * (summary.sizes[y] if y else 1)))
    facet = {}
    if column is not None:
        facet["column"] = alt.Column(f"{column}:N", title=column, sort=_sort(summary, column))
    if row is not None:
        facet["row"] = alt.Row(f"{row}:N", title=row, sort=_sort(summary, row))
    if facet:
        chart = chart.facet(**facet)
    return chart.properties(title=alt.TitleParams("verdict per run", subtitle="hover a cell for its measures; "
                                                  "click a legend entry to isolate a verdict"))


def sweep_measures_chart(
    summary: xr.Dataset,
    *,
    selection: alt.Parameter | None = None,
    fraction: float = 0.1,
    plateau_share: float = 0.3,
) -> alt.LayerChart:
    """Each run at (late-growth share, velocity drop), coloured by verdict, with the thresholds.

    Runs with no Phase II (no late-growth share) sit at share = 1 with an open mark. The dashed
    rules are the verdict's thresholds: a drop of ``1 / fraction`` and a share of ``plateau_share``
    (the drop is a guide only: the verdict asks that the smoothed velocity *stays* below
    ``fraction`` of its peak, not just its late median).
    """
    df, dims = sweep_frame(summary)
    df = df[df["verdict"] != "missing"].copy()
    df["share"] = df["late_growth_share"].fillna(1.0)
    df["phase_two"] = np.where(df["late_growth_share"].notna(), "yes", "no Phase II")
    df["run"] = df[dims].astype(str).apply(lambda r: ", ".join(f"{d}={v}" for d, v in zip(dims, r)), axis=1)
    opacity = alt.condition(selection, alt.value(1.0), alt.value(0.15)) if selection is not None else alt.value(0.9)
    pts = alt.Chart(df).mark_point(size=90, filled=True).encode(
        x=alt.X("share:Q", title="late-growth share (no Phase II → 1)", scale=alt.Scale(domain=[-0.2, 1.05])),
        y=alt.Y("velocity_drop:Q", title="velocity drop (peak / late median)", scale=alt.Scale(type="log")),
        color=alt.Color("verdict:N", scale=_VERDICT_SCALE, legend=None),
        shape=alt.Shape("phase_two:N", title="Phase II", legend=LEGEND,
                        scale=alt.Scale(domain=["yes", "no Phase II"], range=["circle", "diamond"])),
        opacity=opacity,
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("verdict:N"),
                 alt.Tooltip("late_growth_share:Q", format=".2f", title="late-growth share"),
                 alt.Tooltip("velocity_drop:Q", format=".1f", title="velocity drop"),
                 alt.Tooltip("phase_one_end:Q", format=".0f", title="t*")],
    )
    rules = pd.DataFrame({"share": [plateau_share], "drop": [1.0 / fraction]})
    vrule = alt.Chart(rules).mark_rule(strokeDash=[4, 3], color="gray").encode(x="share:Q")
    hrule = alt.Chart(rules).mark_rule(strokeDash=[4, 3], color="gray").encode(y="drop:Q")
    return alt.layer(pts, vrule, hrule).properties(
        title=alt.TitleParams("the measures behind the verdicts", subtitle="dashed: thresholds of the verdict"),
        width=PANEL_W + 60, height=PANEL_H)


def sweep_chart(summary: xr.Dataset, **placement: str | None) -> alt.VConcatChart:
    """:func:`sweep_verdict_chart` above :func:`sweep_measures_chart`, linked by the verdict legend.

    ``placement`` (``x``, ``y``, ``column``, ``row``) goes to :func:`sweep_verdict_chart`.
    """
    pick = alt.selection_point(fields=["verdict"], bind="legend", name="pick_verdict")
    return alt.vconcat(sweep_verdict_chart(summary, selection=pick, **placement),
                       sweep_measures_chart(summary, selection=pick)).resolve_scale(color="shared")


# --------------------------------------------------------------------------------------------
# The counterexample: Figure 1's panels for several runs, side by side
# --------------------------------------------------------------------------------------------


def _stack(runs: Mapping[str, xr.Dataset], make) -> pd.DataFrame:
    frames = []
    for name, ds in runs.items():
        df = make(ds)
        df["setting"] = name
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _cone_frame(ds: xr.Dataset) -> pd.DataFrame:
    return pd.DataFrame({"step": ds["step"].values, "x": ds["cone_x"].values, "y": ds["cone_y"].values,
                         "S0": ds["dist_to_init"].values, "first": ds["step"].values == ds["step"].values.min()})


def _velocity_frame(ds: xr.Dataset) -> pd.DataFrame:
    dt = int(ds["dt"].min())
    raw = ds["velocity"].sel(dt=dt)
    smooth = smoothed_velocity(ds, dt=dt)
    t_end = phase_one_end(ds)
    thresh = 0.1 * float(smooth.max())
    df = pd.concat([
        pd.DataFrame({"step": raw["step"].values, "v": raw.values, "series": "v(t), smallest dt"}),
        pd.DataFrame({"step": smooth["step"].values, "v": smooth.values, "series": "running median (5)"}),
    ], ignore_index=True)
    df = df[np.isfinite(df["v"]) & (df["v"] > 0)]
    df["dt"] = dt
    df["threshold"] = thresh
    df["t_end"] = np.nan if t_end is None else float(t_end)
    return df


def counterexample_chart(runs: Mapping[str, xr.Dataset], *, panel_width: int = 200) -> alt.VConcatChart:
    """Figure 1's three panels for each run, one column per run (the paper's Figure 3 beside Figure 1).

    Rows: (a) :math:`S(\\theta_t, \\theta_\\tau)` per reference step; (b) the adjacent distance per
    ``dt``; (c) the 2-D embedding of the kernels' trajectory (◆ = H(0)); (d) the kernel velocity for
    the smallest ``dt`` on a log scale with its running median, the threshold
    :math:`0.1\\,\\bar v^*` and the measured end of Phase I (red) of :mod:`conelib.measures`.
    Each panel's y axis is independent per run. Legend clicks isolate a ``tau`` or ``dt``.

    Args:
        runs: column title -> kernel-dynamics Dataset (in display order).
    """
    if not runs:
        raise ValueError("runs must map at least one column title to a kernel-dynamics Dataset")
    order = list(runs)
    col = alt.Column("setting:N", sort=order, title=None,
                     header=alt.Header(labelFontSize=12, labelFontWeight="bold", labelLimit=panel_width + 40))
    w, h = panel_width, int(PANEL_H * 0.85)

    pick_tau = alt.selection_point(fields=["ref_step"], bind="legend", name="cmp_pick_tau")
    a = alt.Chart(_stack(runs, lambda ds: _tidy(ds["dist_to_ref"], "S"))).mark_line(point=alt.OverlayMarkDef(size=10)).encode(
        x=_step_axis(), y=alt.Y("S:Q", title="S(θ_t, θ_τ)"),
        color=alt.Color("ref_step:O", title="(a) τ", scale=alt.Scale(scheme="viridis"), legend=LEGEND),
        opacity=alt.condition(pick_tau, alt.value(1.0), alt.value(0.12)),
        tooltip=[alt.Tooltip("setting:N"), alt.Tooltip("ref_step:O", title="τ"), alt.Tooltip("step:Q", title="t"),
                 alt.Tooltip("S:Q", format=".4f")],
    ).add_params(pick_tau).properties(width=w, height=h, title="(a) distance to a reference step").facet(
        column=col).resolve_scale(y="independent")

    pick_dt = alt.selection_point(fields=["dt"], bind="legend", name="cmp_pick_dt")
    b = alt.Chart(_stack(runs, lambda ds: _tidy(ds["adjacent_distance"], "S"))).mark_line(
        point=alt.OverlayMarkDef(size=10)).encode(
        x=_step_axis(), y=alt.Y("S:Q", title="S(θ_t, θ_{t+dt})"),
        color=alt.Color("dt:O", title="(b) dt", scale=alt.Scale(scheme="plasma"), legend=LEGEND),
        opacity=alt.condition(pick_dt, alt.value(1.0), alt.value(0.12)),
        tooltip=[alt.Tooltip("setting:N"), alt.Tooltip("dt:O"), alt.Tooltip("step:Q", title="t"),
                 alt.Tooltip("S:Q", format=".4f")],
    ).add_params(pick_dt).properties(width=w, height=h, title="(b) adjacent kernel distance").facet(
        column=col).resolve_scale(y="independent")

    cone_df = _stack(runs, _cone_frame)
    base = alt.Chart()
    line = base.mark_line(color="lightgray", strokeWidth=1).encode(x="x:Q", y="y:Q", order="step:Q")
    pts = base.mark_circle(size=35).encode(
        x=alt.X("x:Q", title="embedding axis 1"), y=alt.Y("y:Q", title="embedding axis 2"),
        color=alt.Color("step:Q", title="(c) step", scale=alt.Scale(scheme="blues"), legend=LEGEND),
        tooltip=[alt.Tooltip("setting:N"), alt.Tooltip("step:Q", title="t"),
                 alt.Tooltip("S0:Q", title="S(θ_t, θ_0)", format=".4f")])
    origin = base.mark_point(shape="diamond", size=120, color="black", filled=True).encode(
        x="x:Q", y="y:Q").transform_filter("datum.first")
    c = alt.layer(line, pts, origin, data=cone_df).properties(
        width=w, height=h, title="(c) the kernels' trajectory (◆ = H(0))").facet(column=col).resolve_scale(
        x="independent", y="independent")

    vel_df = _stack(runs, _velocity_frame)
    vbase = alt.Chart()
    vlines = vbase.mark_line().encode(
        x=_step_axis(), y=alt.Y("v:Q", title="v(t) (per step)", scale=alt.Scale(type="log")),
        color=alt.Color("series:N", title="(d)", legend=LEGEND,
                        scale=alt.Scale(domain=["v(t), smallest dt", "running median (5)"], range=["#9ecae1", "#08519c"])),
        tooltip=[alt.Tooltip("setting:N"), alt.Tooltip("series:N"), alt.Tooltip("dt:Q"), alt.Tooltip("step:Q", title="t"),
                 alt.Tooltip("v:Q", format=".2e")])
    thresh = vbase.mark_rule(strokeDash=[4, 3], color="gray").encode(
        y="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", title="0.1 × peak of the median", format=".2e")])
    t_end = vbase.mark_rule(color="red", strokeDash=[6, 2]).encode(
        x="t_end:Q", tooltip=[alt.Tooltip("t_end:Q", title="end of Phase I t*")]).transform_filter("isValid(datum.t_end)")
    d = alt.layer(vlines, thresh, t_end, data=vel_df).properties(
        width=w, height=h, title="(d) velocity; red: end of Phase I").facet(column=col).resolve_scale(
        y="independent")

    return alt.vconcat(a, b, c, d).resolve_scale(color="independent")
