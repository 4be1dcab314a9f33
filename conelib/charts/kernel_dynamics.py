"""Charts of the kernel-dynamics experiment (the paper's Figure 1), from its stored Dataset.

Charts are always redrawn from a Dataset, never by retraining. Interactions: hover tooltips, a
legend click isolates one ``tau`` / ``dt`` / switching step (shift-click for several), and a brush over
steps in panel (b) highlights the same steps in panels (a) and (c).

Every chart takes one run, or several seeds of one configuration stacked along a ``seed``
dimension (:func:`conelib.analysis.kernel_dynamics.stack_seeds`): then each seed is its own line (same colour,
one line per seed), and the tooltips name the seed.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from conelib.charts.common import LEGEND, PANEL_H, PANEL_W, _step_axis, _tidy
from conelib.measures import v3


def _seeds(df: pd.DataFrame, tooltip: list) -> dict:
    """Extra encodings when the frame holds several seeds: one line per seed, seed in the tooltip."""
    if "seed" not in df:
        return {}
    tooltip.insert(0, alt.Tooltip("seed:O"))
    return {"detail": alt.Detail("seed:O")}


def distance_to_reference_chart(ds: xr.Dataset, brush: alt.Parameter | None = None) -> alt.Chart:
    """Panel (a): :math:`S(\\theta_t, \\theta_\\tau)` against ``t``, one line per ``tau`` (and seed)."""
    df = _tidy(ds["dist_to_ref"], "S")
    pick = alt.selection_point(fields=["ref_step"], bind="legend", name="pick_tau")
    tooltip = [alt.Tooltip("ref_step:O", title="τ"), alt.Tooltip("step:Q", title="t"), alt.Tooltip("S:Q", format=".4f")]
    extra = _seeds(df, tooltip)
    base = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=10), strokeWidth=1.2).encode(
        x=_step_axis(),
        y=alt.Y("S:Q", title="S(θ_t, θ_τ)"),
        color=alt.Color("ref_step:O", title="τ", scale=alt.Scale(scheme="viridis"), legend=LEGEND),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=tooltip, **extra,
    ).add_params(pick)
    rules = alt.Chart(pd.DataFrame({"ref_step": ds["ref_step"].values})).mark_rule(strokeDash=[3, 3], color="gray").encode(
        x="ref_step:Q")
    layers = [base, rules]
    if brush is not None:
        layers.insert(0, _brush_band(brush))
    return alt.layer(*layers).properties(title="(a) distance to a reference step", width=PANEL_W, height=PANEL_H)


def adjacent_distance_chart(ds: xr.Dataset, brush: alt.Parameter | None = None, *, log: bool = False) -> alt.Chart:
    """Panel (b): :math:`S(\\theta_t, \\theta_{t+dt})` against ``t``, one line per ``dt`` (and seed);
    holds the step brush. ``log``: a log scale, on which a Phase II floor of 1e-4 and a Phase I
    peak of 1e-2 are both readable."""
    df = _tidy(ds["adjacent_distance"], "S")
    if log:
        df = df[df["S"] > 0]
    pick = alt.selection_point(fields=["dt"], bind="legend", name="pick_dt")
    tooltip = [alt.Tooltip("dt:O"), alt.Tooltip("step:Q", title="t"), alt.Tooltip("S:Q", format=".2e")]
    extra = _seeds(df, tooltip)
    chart = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=10), strokeWidth=1.2).encode(
        x=_step_axis(),
        y=alt.Y("S:Q", title="S(θ_t, θ_{t+dt})", scale=alt.Scale(type="log") if log else alt.Undefined),
        color=alt.Color("dt:O", title="dt", scale=alt.Scale(scheme="plasma"), legend=LEGEND),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=tooltip, **extra,
    ).add_params(pick)
    if brush is not None:
        chart = chart.add_params(brush)
    return chart.properties(title=alt.TitleParams("(b) adjacent kernel distance", subtitle="drag to select steps"), width=PANEL_W, height=PANEL_H)


def cone_chart(ds: xr.Dataset, brush: alt.Parameter | None = None) -> alt.Chart:
    """Panel (c): the trajectory of kernels in 2-D (classical MDS), H(0) marked, colour by step
    (for several seeds: the first seed's; each run's embedding has its own axes)."""
    seed_note = ""
    if "seed" in ds.dims:
        seed_note = f"seed {int(ds['seed'].values[0])}; "
        ds = ds.isel(seed=0)
    df = pd.DataFrame({"step": ds["step"].values, "x": ds["cone_x"].values, "y": ds["cone_y"].values,
                       "S0": ds["dist_to_init"].values})
    line = alt.Chart(df).mark_line(color="lightgray", strokeWidth=1).encode(x="x:Q", y="y:Q", order="step:Q")
    opacity = alt.condition(brush, alt.value(1.0), alt.value(0.15)) if brush is not None else alt.value(0.9)
    pts = alt.Chart(df).mark_circle(size=45).encode(
        x=alt.X("x:Q", title="embedding axis 1"),
        y=alt.Y("y:Q", title="embedding axis 2"),
        color=alt.Color("step:Q", title="step", scale=alt.Scale(scheme="blues")),
        opacity=opacity,
        tooltip=[alt.Tooltip("step:Q", title="t"), alt.Tooltip("S0:Q", title="S(θ_t, θ_0)", format=".4f")],
    )
    origin = alt.Chart(df.iloc[:1]).mark_point(shape="diamond", size=140, color="black", filled=True).encode(
        x="x:Q", y="y:Q", tooltip=[alt.Tooltip("step:Q", title="H(0) at step")])
    fid = ds.attrs.get("embedding_fidelity")
    sub = seed_note + (f"2-D keeps {float(fid):.0%} of the variance" if fid is not None and not seed_note else "")
    return alt.layer(line, pts, origin).properties(
        title=alt.TitleParams("(c) the kernels' trajectory (◆ = H(0))", subtitle=sub), width=PANEL_W, height=PANEL_H)


def _brush_band(brush: alt.Parameter) -> alt.Chart:
    """A shaded band showing the brushed step range in another panel."""
    return alt.Chart(pd.DataFrame({"_": [0]})).mark_rect(color="orange", opacity=0.15).encode(
        x=alt.X("lo:Q"), x2="hi:Q").transform_calculate(
        lo=f"{brush.name}.step ? {brush.name}.step[0] : 0", hi=f"{brush.name}.step ? {brush.name}.step[1] : 0")


def kernel_dynamics_chart(ds: xr.Dataset, *, log: bool = False) -> alt.VConcatChart:
    """The paper's Figure 1 as three linked interactive panels: (a) | (b) above (c)."""
    brush = alt.selection_interval(encodings=["x"], name="steps")
    top = alt.hconcat(distance_to_reference_chart(ds, brush), adjacent_distance_chart(ds, brush, log=log)).resolve_scale(
        color="independent").resolve_legend(color="independent")
    return alt.vconcat(top, cone_chart(ds, brush)).resolve_scale(color="independent").resolve_legend(
        color="independent")


def training_curves_chart(ds: xr.Dataset) -> alt.Chart:
    """Train/test loss and accuracy against the step, one colour per split."""
    rows = []
    for split in ("train", "test"):
        for metric in ("loss", "acc"):
            name = f"{split}_{metric}"
            if name in ds:
                rows.append(pd.DataFrame({"step": ds["step"].values, "value": ds[name].values, "split": split,
                                          "metric": "accuracy" if metric == "acc" else "loss"}))
    df = pd.concat(rows, ignore_index=True)
    base = alt.Chart(df).mark_line().encode(
        x=_step_axis(), y=alt.Y("value:Q", title=None),
        color=alt.Color("split:N", title="split"),
        tooltip=["split:N", "step:Q", alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=PANEL_W, height=180)
    return base.facet(column=alt.Column("metric:N", title=None)).resolve_scale(y="independent")


def kernel_velocity_chart(ds: xr.Dataset, phase_end: int | None = None) -> alt.Chart:
    """Kernel velocity :math:`v(t)` on a log scale, with the measured end of Phase I as a rule."""
    df = _tidy(ds["velocity"], "v")
    df = df[df["v"] > 0]
    pick = alt.selection_point(fields=["dt"], bind="legend", name="pick_dt_v")
    chart = alt.Chart(df).mark_line().encode(
        x=_step_axis(), y=alt.Y("v:Q", title="v(t) (per step)", scale=alt.Scale(type="log")),
        color=alt.Color("dt:O", scale=alt.Scale(scheme="plasma")),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=["dt:O", "step:Q", alt.Tooltip("v:Q", format=".2e")],
    ).add_params(pick)
    if phase_end is not None:
        rule = alt.Chart(pd.DataFrame({"step": [phase_end]})).mark_rule(color="red", strokeDash=[4, 2]).encode(
            x="step:Q", tooltip=[alt.Tooltip("step:Q", title="end of Phase I")])
        chart = alt.layer(chart, rule)
    return chart.properties(title="kernel velocity", width=PANEL_W, height=PANEL_H)


def velocity_and_fit_chart(ds: xr.Dataset, phase_ends: dict[int, int | None] | None = None,
                           fit_steps: dict[int, int | None] | None = None) -> alt.VConcatChart:
    """The single-kernel adjacent distance :math:`S(\\theta_t, \\theta_{t+\\Delta})` at the largest gap
    (log scale), above the training accuracy and loss, on one
    step axis, one line per seed; red rules: the end of Phase I, green rules: the step at which the
    training subset is first fit (both per seed; tooltips say which seed).

    Answers at a glance whether the end of Phase I coincides with memorising the training set.
    """
    dt = int(ds["dt"].max())
    vel = _tidy(ds["adjacent_distance"].sel(dt=dt, drop=True), "v")
    vel = vel[vel["v"] > 0]
    seeds_in = "seed" in vel
    seed_enc = {"detail": alt.Detail("seed:O")} if seeds_in else {}
    tip_seed = [alt.Tooltip("seed:O")] if seeds_in else []
    v_chart = alt.Chart(vel).mark_line(color="#6a3d9a", strokeWidth=1.2).encode(
        x=_step_axis(), y=alt.Y("v:Q", title=f"S(θ_t, θ_t+{dt})", scale=alt.Scale(type="log")),
        tooltip=[*tip_seed, "step:Q", alt.Tooltip("v:Q", format=".2e")], **seed_enc,
    ).properties(width=2 * PANEL_W, height=150, title=f"adjacent distance at dt = {dt}, training accuracy and loss")
    rows = []
    for name, label in (("train_acc", "train accuracy"), ("train_loss", "train loss")):
        df = _tidy(ds[name], "value")
        df["metric"] = label
        rows.append(df)
    curves = pd.concat(rows, ignore_index=True)
    acc = alt.Chart(curves[curves["metric"] == "train accuracy"]).mark_line(color="#1f78b4", strokeWidth=1.2).encode(
        x=_step_axis(), y=alt.Y("value:Q", title="train accuracy", scale=alt.Scale(zero=False)),
        tooltip=[*tip_seed, "step:Q", alt.Tooltip("value:Q", format=".4f")], **seed_enc,
    ).properties(width=2 * PANEL_W, height=120)
    loss = alt.Chart(curves[(curves["metric"] == "train loss") & (curves["value"] > 0)]).mark_line(
        color="#33a02c", strokeWidth=1.2).encode(
        x=_step_axis(), y=alt.Y("value:Q", title="train loss", scale=alt.Scale(type="log")),
        tooltip=[*tip_seed, "step:Q", alt.Tooltip("value:Q", format=".2e")], **seed_enc,
    ).properties(width=2 * PANEL_W, height=120)
    marks = []
    for steps, colour, what in ((phase_ends, "red", "end of Phase I"), (fit_steps, "green", "training subset fit")):
        if steps:
            pts = pd.DataFrame([{"seed": s, "step": t, "what": what} for s, t in steps.items() if t is not None])
            if len(pts):
                marks.append(alt.Chart(pts).mark_rule(color=colour, strokeDash=[4, 2]).encode(
                    x="step:Q", tooltip=["what:N", "seed:O", "step:Q"]))
    panels = [alt.layer(c, *marks) if marks else c for c in (v_chart, acc, loss)]
    return alt.vconcat(*panels)


def phase_two_chart(runs: dict[int, xr.Dataset], **thresholds: float) -> alt.HConcatChart:
    """The Phase II curves behind the version-3 coordinates (:func:`conelib.measures.v3.phase_two_curves`),
    one line per seed, all on log-log axes: (d) the jitter radius of single kernels around the local
    mean kernel against :math:`t`; (e) the structure function :math:`V(\\ell)` of the mean kernels
    against the lag, with dotted guides of slope 0, ½ and 1 (plateau, random walk, steady turning);
    (f) the distance between mean kernels a fixed lag apart against :math:`\\tau`, with a guide of
    slope −1 (steeper: a converging kernel).

    Args:
        runs: seed -> kernel-dynamics Dataset.
    """
    jit, sf, eq = [], [], []
    lag = None
    for seed, ds in runs.items():
        c = v3.phase_two_curves(ds, **thresholds)
        if not c:
            continue
        lag = c["stationarity_lag"]
        jit.append(pd.DataFrame({"seed": seed, "step": c["jitter"][0], "r": c["jitter"][1]}))
        sf.append(pd.DataFrame({"seed": seed, "lag": c["structure"][0], "V": c["structure"][1]}))
        eq.append(pd.DataFrame({"seed": seed, "tau": c["equal_lag"][0], "D": c["equal_lag"][1]}))
    if not jit:
        return alt.hconcat(alt.Chart(pd.DataFrame({"text": ["no two phases: no Phase II to draw"]})).mark_text().encode(
            text="text:N"))
    jit_df, sf_df, eq_df = (pd.concat(x, ignore_index=True) for x in (jit, sf, eq))
    jit_df, sf_df, eq_df = jit_df[jit_df.r > 0], sf_df[sf_df.V > 0], eq_df[eq_df.D > 0]
    seed_color = alt.Color("seed:N", title="seed", legend=LEGEND)
    log = alt.Scale(type="log")
    w, h = int(PANEL_W * 0.9), PANEL_H
    d = alt.Chart(jit_df).mark_line().encode(
        x=alt.X("step:Q", title="step t", scale=log), y=alt.Y("r:Q", title="jitter radius r(t) (chord)", scale=log),
        color=seed_color, tooltip=["seed:N", "step:Q", alt.Tooltip("r:Q", format=".4f")],
    ).properties(width=w, height=h, title="(d) the noise ball")

    def guides(df: pd.DataFrame, x: str, y: str, slopes: dict[str, float]) -> pd.DataFrame:
        x0, x1 = float(df[x].min()), float(df[x].max())
        y0 = float(np.exp(np.mean(np.log(df[y]))))
        xm = float(np.sqrt(x0 * x1))
        return pd.concat([pd.DataFrame({x: [x0, x1], y: [y0 * (x0 / xm) ** s, y0 * (x1 / xm) ** s], "guide": name})
                          for name, s in slopes.items()], ignore_index=True)

    g1 = guides(sf_df, "lag", "V", {"slope 0": 0.0, "slope ½": 0.5, "slope 1": 1.0})
    e = alt.layer(
        alt.Chart(g1).mark_line(strokeDash=[2, 3], color="gray").encode(x="lag:Q", y="V:Q", detail="guide:N",
                                                                         tooltip=["guide:N"]),
        alt.Chart(sf_df).mark_line(point=True).encode(
            x=alt.X("lag:Q", title="lag ℓ (steps)", scale=log), y=alt.Y("V:Q", title="V(ℓ) (chord)", scale=log),
            color=seed_color, tooltip=["seed:N", "lag:Q", alt.Tooltip("V:Q", format=".4f")]),
    ).properties(width=w, height=h, title="(e) growth with the lag")
    g2 = guides(eq_df, "tau", "D", {"slope −1": -1.0})
    f = alt.layer(
        alt.Chart(g2).mark_line(strokeDash=[2, 3], color="gray").encode(x="tau:Q", y="D:Q", tooltip=["guide:N"]),
        alt.Chart(eq_df).mark_line(opacity=0.8).encode(
            x=alt.X("tau:Q", title="reference step τ", scale=log),
            y=alt.Y("D:Q", title=f"D(τ, τ+{lag}) (chord)", scale=log),
            color=seed_color, tooltip=["seed:N", "tau:Q", alt.Tooltip("D:Q", format=".4f")]),
    ).properties(width=w, height=h, title=f"(f) drift over {lag} steps")
    return alt.hconcat(d, e, f).properties(title=alt.TitleParams(
        "Phase II, denoised", subtitle="mean kernels over windows; all axes logarithmic"))
