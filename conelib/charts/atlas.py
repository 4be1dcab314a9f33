"""Charts of the atlas (a sweep of kernel-dynamics runs) and of runs side by side (the paper's Figure 3).

* :func:`atlas_chart`: the summary as one panel per block of the grid (a factor pair: a heatmap;
  one factor: a strip), a small square per seed, coloured by the verdict of
  :func:`conelib.measures.verdict`, every measure in the tooltip. Clicking a square draws that
  run's Figure 1 panels (from the curves the summary keeps) underneath.
* :func:`measures_chart`: every run placed by the two Phase II coordinates the verdict reads (the
  drift-decay exponent and the growth exponent, with their intervals), the thresholds drawn.
* :func:`side_by_side_chart`: the panels of Figure 1 (Zhou et al. 2025) for several runs side by
  side, one column per run, plus a row with what the end of Phase I is read from.

Charts are always redrawn from stored Datasets, never by retraining.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from conelib.charts.common import LEGEND, PANEL_H, PANEL_W, _step_axis, _tidy
from conelib.measures import THRESHOLDS, VERDICTS
from conelib.measures.v3 import MEASURE_FORMATS, phase_one_trace

#: verdict -> colour (fixed, so that every chart and page uses the same legend)
VERDICT_COLORS: dict[str, str] = dict(zip((*VERDICTS, "missing", "failed"),
                                          ("#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#66a61e", "#bdbdbd",
                                           "#000000")))
_VERDICT_SCALE = alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values()))

#: the summary's measures shown in tooltips: variable -> (title, format)
_TOOLTIP_MEASURES: dict[str, tuple[str, str]] = {
    **{k: MEASURE_FORMATS[k] for k in ("phase_one_end", "total_movement", "laziness", "jitter_ratio", "drift_ratio",
                                       "growth_exponent", "drift_decay", "verdict_agreement", "threshold_agreement",
                                       "loss_correlation")},
    "final_train_loss": ("final train loss", ".2e"), "final_test_acc": ("test accuracy", ".4f"),
    "v2_verdict": ("version-2 verdict", ""), "wall_seconds": ("wall time (s)", ".0f"),
    "config_hash": ("config hash", ""),
}
_TEXT_FIELDS = {"config_hash", "v2_verdict"}


def _label(v: object) -> str:
    """Grid values as short text (0.005 → "0.005", NaN → "base")."""
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "none"
        return np.format_float_positional(float(v), trim="-")
    return str(v)


def sweep_frame(summary: xr.Dataset) -> pd.DataFrame:
    """The summary as one row per run: swept values as text columns, the verdict (``failed`` for a
    failed run), the measures, and ``run_label`` (every swept value)."""
    swept = json.loads(summary.attrs.get("swept_fields", "[]"))
    cols = [k for k in (*_TOOLTIP_MEASURES, "status", "error", "verdict") if k in summary]
    df = pd.DataFrame({"run": summary["run"].values})
    for k in cols:
        df[k] = summary[k].values
    for d in swept:
        df[d] = [_label(v) for v in summary[d].values]
    df["verdict"] = np.where(df["status"] == "failed", "failed", df["verdict"].astype(str))
    df["run_label"] = df[swept].apply(lambda r: ", ".join(f"{d}={v}" for d, v in zip(swept, r)), axis=1)
    return df


def _tooltip(df: pd.DataFrame, swept: list[str]) -> list:
    tips = [alt.Tooltip(f"{d}:N", title=d) for d in swept] + [alt.Tooltip("verdict:N")]
    tips += [alt.Tooltip(f"{k}:{'N' if k in _TEXT_FIELDS else 'Q'}", title=t, **({"format": f} if f else {}))
             for k, (t, f) in _TOOLTIP_MEASURES.items() if k in df]
    if "error" in df:
        tips.append(alt.Tooltip("error:N"))
    return tips


def _order(summary: xr.Dataset, name: str) -> list[str]:
    vals = summary[name].values
    uniq = sorted(set(vals.tolist()), key=lambda v: (isinstance(v, str), -1e300 if v != v else v)
                  if not isinstance(v, str) else (True, v))
    return [_label(v) for v in uniq]


def atlas_chart(summary: xr.Dataset, *, panels: bool = True, seed_field: str = "seed") -> alt.VConcatChart:
    """The atlas: one panel per block, a square per run (seeds side by side), coloured by verdict.

    Clicking a square selects that run; with ``panels``, its Figure 1 panels (a: distance to the
    reference steps, b: adjacent distance, log scale, c: the 2-D trajectory) are drawn below from
    the summary's curves. A legend click isolates a verdict.
    """
    df = sweep_frame(summary)
    swept = json.loads(summary.attrs["swept_fields"])
    blocks = [str(b) for b in summary["block"].values]
    member = summary["in_block"].values
    pick_v = alt.selection_point(fields=["verdict"], bind="legend", name="atlas_pick_verdict")
    first = int(df["run"].iloc[0])
    pick_run = alt.selection_point(fields=["run"], name="atlas_pick_run", value=[{"run": first}], toggle=False)
    tips = _tooltip(df, swept)
    charts = []
    for b, label in enumerate(blocks):
        factors = [f for f in label.split(" × ") if f in swept and f != seed_field]
        sub = df[member[:, b] == 1]
        if sub.empty:
            continue
        x = factors[0] if factors else seed_field
        enc = {
            "x": alt.X(f"{x}:O", sort=_order(summary, x), title=x, axis=alt.Axis(labelAngle=0)),
            "color": alt.Color("verdict:N", scale=_VERDICT_SCALE, legend=LEGEND, title="verdict"),
            "opacity": alt.condition(pick_v, alt.value(1.0), alt.value(0.2)),
            "stroke": alt.condition(pick_run, alt.value("black"), alt.value("white")),
            "tooltip": tips,
        }
        if len(factors) > 1:
            enc["y"] = alt.Y(f"{factors[1]}:O", sort=_order(summary, factors[1])[::-1], title=factors[1])
        if seed_field in sub:
            enc["xOffset"] = alt.XOffset(f"{seed_field}:N")
        n_x = sub[x].nunique()
        n_y = sub[factors[1]].nunique() if len(factors) > 1 else 1
        charts.append(alt.Chart(sub).mark_rect(strokeWidth=2).encode(**enc).add_params(pick_v, pick_run).properties(
            width=max(80, 40 * n_x), height=max(30, 30 * n_y), title=label))
    rows = [alt.hconcat(*charts[i:i + 3]) for i in range(0, len(charts), 3)]
    top = alt.vconcat(*rows).properties(title=alt.TitleParams(
        "the atlas: one panel per factor pair, one square per seed",
        subtitle="hover a square for its measures; click it for its panels below; click a legend entry to isolate a verdict"))
    if not panels:
        return top
    return alt.vconcat(top, _run_panels(summary, pick_run, df)).resolve_scale(color="independent")


def _run_panels(summary: xr.Dataset, pick: alt.Parameter, df: pd.DataFrame) -> alt.HConcatChart:
    """Figure 1's panels of the clicked run, from the curves the summary keeps (every 2nd snapshot)."""
    ok = summary["status"].values == "stored"
    s = summary.isel(run=np.nonzero(ok)[0], step=slice(None, None, 2))
    runs = df.set_index("run")["run_label"]
    a = _tidy(s["dist_to_ref"], "S")
    b = _tidy(s["adjacent_distance"], "S")
    b = b[b["S"] > 0]
    c = s[["cone_x", "cone_y"]].to_dataframe().reset_index().dropna()
    for frame in (a, b, c):
        frame["run_label"] = frame["run"].map(runs)
    w, h = PANEL_W - 20, PANEL_H - 40
    ca = alt.Chart(a).mark_line().encode(
        x=_step_axis(), y=alt.Y("S:Q", title="S(θ_t, θ_τ)"),
        color=alt.Color("ref_step:O", title="τ", scale=alt.Scale(scheme="viridis"), legend=LEGEND),
        tooltip=["run_label:N", alt.Tooltip("ref_step:O", title="τ"), "step:Q", alt.Tooltip("S:Q", format=".4f")],
    ).transform_filter(pick).properties(width=w, height=h, title="(a) distance to a reference step")
    cb = alt.Chart(b).mark_line().encode(
        x=_step_axis(), y=alt.Y("S:Q", title="S(θ_t, θ_{t+dt})", scale=alt.Scale(type="log")),
        color=alt.Color("dt:O", title="dt", scale=alt.Scale(scheme="plasma"), legend=LEGEND),
        tooltip=["run_label:N", "dt:O", "step:Q", alt.Tooltip("S:Q", format=".2e")],
    ).transform_filter(pick).properties(width=w, height=h, title="(b) adjacent kernel distance")
    cc = alt.Chart(c).mark_circle(size=25).encode(
        x=alt.X("cone_x:Q", title="embedding axis 1"), y=alt.Y("cone_y:Q", title="embedding axis 2"),
        color=alt.Color("step:Q", scale=alt.Scale(scheme="blues"), title="step", legend=LEGEND),
        tooltip=["run_label:N", "step:Q"],
    ).transform_filter(pick).properties(width=w, height=h, title="(c) the kernels' trajectory")
    return alt.hconcat(ca, cb, cc).resolve_scale(color="independent").properties(
        title=alt.TitleParams("the clicked run", subtitle="its settings are in every tooltip"))


def measures_chart(summary: xr.Dataset, *, selection: alt.Parameter | None = None,
                   thresholds: Mapping[str, float] | None = None) -> alt.LayerChart:
    """Each stored run with two phases at (drift decay α, growth exponent γ), with their 95%
    bootstrap intervals as bars, coloured by verdict, and the summary's thresholds (dashed: right of
    the vertical a converging kernel, below the horizontal a plateau)."""
    t = {**THRESHOLDS, **json.loads(summary.attrs.get("thresholds_json", "{}")), **(thresholds or {})}
    df = sweep_frame(summary)
    swept = json.loads(summary.attrs["swept_fields"])
    for k in ("drift_decay_lo", "drift_decay_hi", "growth_exponent_lo", "growth_exponent_hi"):
        df[k] = summary[k].values if k in summary else np.nan
    df = df[np.isfinite(df["drift_decay"].astype(float)) & np.isfinite(df["growth_exponent"].astype(float))]
    opacity = alt.condition(selection, alt.value(1.0), alt.value(0.15)) if selection is not None else alt.value(0.9)
    base = alt.Chart(df)
    color = alt.Color("verdict:N", scale=_VERDICT_SCALE, legend=None)
    pts = base.mark_point(size=80, filled=True).encode(
        x=alt.X("drift_decay:Q", title="drift decay α (D(τ, τ+ℓ) ∝ τ^-α)"),
        y=alt.Y("growth_exponent:Q", title="growth exponent γ (V(ℓ) ∝ ℓ^γ)"),
        color=color, opacity=opacity, tooltip=["run_label:N", *_tooltip(df, swept)])
    xbar = base.mark_rule(opacity=0.35).encode(x="drift_decay_lo:Q", x2="drift_decay_hi:Q", y="growth_exponent:Q",
                                               color=color)
    ybar = base.mark_rule(opacity=0.35).encode(y="growth_exponent_lo:Q", y2="growth_exponent_hi:Q",
                                               x="drift_decay:Q", color=color)
    rules = pd.DataFrame({"conv": [t["converging_exponent"]], "plateau": [t["plateau_exponent"]]})
    v = alt.Chart(rules).mark_rule(strokeDash=[4, 3], color="gray").encode(x="conv:Q")
    h = alt.Chart(rules).mark_rule(strokeDash=[4, 3], color="gray").encode(y="plateau:Q")
    return alt.layer(xbar, ybar, pts, v, h).properties(width=PANEL_W + 80, height=PANEL_H, title=alt.TitleParams(
        "the Phase II coordinates behind the verdicts",
        subtitle="right of the vertical: converging; below the horizontal: a plateau (bars: 95% bootstrap intervals)"))


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
    dt = int(ds["dt"].max())
    raw = ds["adjacent_distance"].sel(dt=dt)
    tr = phase_one_trace(ds)
    df = pd.concat([
        pd.DataFrame({"step": raw["step"].values, "v": raw.values, "series": "S(t, t+Δ), single kernels"}),
        pd.DataFrame({"step": tr["step"], "v": tr["profile"], "series": "denoised (window means)"}),
    ], ignore_index=True)
    df = df[np.isfinite(df["v"]) & (df["v"] > 0)]
    df["dt"] = tr["lag"]
    df["threshold"] = tr["threshold"]
    df["t_end"] = np.nan if tr["end"] is None else float(tr["end"])
    return df


def side_by_side_chart(runs: Mapping[str, xr.Dataset], *, panel_width: int = 200) -> alt.VConcatChart:
    """Figure 1's three panels for each run, one column per run (the paper's Figure 3 beside Figure 1).

    Rows: (a) :math:`S(\\theta_t, \\theta_\\tau)` per reference step; (b) the adjacent distance per
    ``dt`` (log scale); (c) the 2-D embedding of the kernels' trajectory (◆ = H(0)); (d) what the
    end of Phase I is read from (:func:`conelib.measures.v3.phase_one_trace`): the denoised
    :math:`S(\\theta_t, \\theta_{t+\\Delta})` beside the single-kernel one at the largest ``dt``, on a log
    scale, the threshold (dashed) and the end of Phase I (red).
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
    adj = _stack(runs, lambda ds: _tidy(ds["adjacent_distance"], "S"))
    b = alt.Chart(adj[adj["S"] > 0]).mark_line(
        point=alt.OverlayMarkDef(size=10)).encode(
        x=_step_axis(), y=alt.Y("S:Q", title="S(θ_t, θ_{t+dt})", scale=alt.Scale(type="log")),
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
        x=_step_axis(), y=alt.Y("v:Q", title="S(θ_t, θ_{t+Δ})", scale=alt.Scale(type="log")),
        color=alt.Color("series:N", title="(d)", legend=LEGEND,
                        scale=alt.Scale(domain=["S(t, t+Δ), single kernels", "denoised (window means)"],
                                        range=["#9ecae1", "#08519c"])),
        tooltip=[alt.Tooltip("setting:N"), alt.Tooltip("series:N"), alt.Tooltip("dt:Q"), alt.Tooltip("step:Q", title="t"),
                 alt.Tooltip("v:Q", format=".2e")])
    thresh = vbase.mark_rule(strokeDash=[4, 3], color="gray").encode(
        y="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", title="floor + fraction × (peak − floor)", format=".2e")])
    t_end = vbase.mark_rule(color="red", strokeDash=[6, 2]).encode(
        x="t_end:Q", tooltip=[alt.Tooltip("t_end:Q", title="end of Phase I t*")]).transform_filter("isValid(datum.t_end)")
    d = alt.layer(vlines, thresh, t_end, data=vel_df).properties(
        width=w, height=h, title="(d) what the end of Phase I is read from").facet(column=col).resolve_scale(
        y="independent")

    return alt.vconcat(a, b, c, d).resolve_scale(color="independent")
