"""Charts of the switching experiment (the paper's Figure 2), from its stored Dataset.

* :func:`switching_chart`: top row, the test error (the primary measure) and the test loss of
  :math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)` against the switching step :math:`t` (mean
  over seeds, min–max band), the small-learning-rate baseline beside it when the result has it
  (dashed orange), and the fully standard run as a horizontal reference rule. Bottom row: the
  continuations' test curves against the training step (past :math:`T` where they trained on
  to a matched train loss), over the standard run's curve in grey. Clicking a switching-step
  point keeps only that continuation in the bottom row (shift-click for several, double-click
  to clear).
* :func:`switching_gain_chart`: the paired gain in test error from switching at :math:`t` rather
  than at a reference step, per seed and as a mean with its paired-bootstrap interval, at
  :math:`T`, at matched train loss and for the small-lr baseline
  (:func:`conelib.analysis.switching.comparison_table`).
* :func:`error_vs_train_loss_chart`: test error against train loss along every continuation and
  the standard run (means over seeds): a comparison at equal train loss reads off vertically.
"""

from __future__ import annotations

import warnings

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from conelib.analysis.switching import comparison_table, end_step, has_per_image
from conelib.charts.common import PANEL_H, PANEL_W, _step_axis

__all__ = ["switching_chart", "switching_gain_chart", "switching_points", "error_vs_train_loss_chart"]

#: a little narrower than the other charts' panels, so that two fit the book's column with axes
_W = min(PANEL_W, 230)

#: (metric label, final variable, curve variable, standard curve, standard final, small-lr final, tooltip
#: format, whether the stored value is an accuracy to show as an error)
_METRICS = (
    ("test error", "final_test_acc", "test_acc_curve", "standard_test_acc", "standard_final_test_acc",
     "small_lr_final_test_acc", ".2%", True),
    ("test loss", "final_test_loss", "test_loss_curve", "standard_test_loss", "standard_final_test_loss",
     "small_lr_final_test_loss", ".4f", False),
)
_SELECTION = "pick_switch"
_LIN_COLOR, _SMALL_COLOR = "steelblue", "darkorange"


def _as_shown(da: xr.DataArray, error: bool) -> xr.DataArray:
    return 1 - da if error else da


def _summary(da: xr.DataArray) -> pd.DataFrame:
    """Mean, min, max and count over seeds of a (switch_step, seed) variable."""
    df = pd.DataFrame({"switch_step": da["switch_step"].values,
                       "mean": da.mean("seed", skipna=True).values,
                       "lo": da.min("seed", skipna=True).values,
                       "hi": da.max("seed", skipna=True).values,
                       "n_seeds": da.count("seed").values})
    return df[df["n_seeds"] > 0]


def switching_points(ds: xr.Dataset) -> pd.DataFrame:
    """The numbers the top row draws: one row per (metric, arm, switch_step) with mean/lo/hi over
    seeds (``arm``: ``linearized``, and ``small_lr`` when the result has it)."""
    rows = []
    for label, final, _, _, _, small, _, error in _METRICS:
        for arm, name in (("linearized", final), ("small_lr", small)):
            if name not in ds:
                continue
            df = _summary(_as_shown(ds[name], error))
            df.insert(0, "arm", arm)
            df.insert(0, "metric", label)
            rows.append(df)
    return pd.concat(rows, ignore_index=True)


def _versus_switch_step(ds: xr.Dataset, metric: int, pick: alt.Parameter) -> alt.LayerChart:
    label, final, _, _, std_final, small, fmt, error = _METRICS[metric]
    df = _summary(_as_shown(ds[final], error))
    n_seeds = int(ds.sizes["seed"])
    std = _as_shown(ds[std_final], error).values
    std_df = pd.DataFrame({"mean": [float(np.nanmean(std))], "lo": [float(np.nanmin(std))],
                           "hi": [float(np.nanmax(std))], "what": ["standard run"]})
    x = alt.X("switch_step:Q", title="switching step t")
    y_title = f"{label} at T"
    y_axis = alt.Axis(format=".1%" if error else ".3f")
    layers: list[alt.Chart] = []
    if n_seeds > 1:
        layers.append(alt.Chart(std_df).mark_rect(color="gray", opacity=0.15).encode(y="lo:Q", y2="hi:Q"))
        layers.append(alt.Chart(df).mark_area(color=_LIN_COLOR, opacity=0.2).encode(x=x, y="lo:Q", y2="hi:Q"))
    layers.append(alt.Chart(std_df).mark_rule(color="gray", strokeDash=[6, 3], strokeWidth=2).encode(
        y="mean:Q",
        tooltip=[alt.Tooltip("what:N", title="reference"), alt.Tooltip("mean:Q", title=label, format=fmt)]))
    if small in ds:
        sdf = _summary(_as_shown(ds[small], error)).assign(what="small-lr baseline")
        layers.append(alt.Chart(sdf).mark_line(color=_SMALL_COLOR, strokeDash=[4, 2]).encode(
            x=x, y=alt.Y("mean:Q", title=y_title),
            tooltip=[alt.Tooltip("what:N", title="arm"), alt.Tooltip("switch_step:Q", title="t"),
                     alt.Tooltip("mean:Q", title=f"{label} (mean)", format=fmt)]))
    layers.append(alt.Chart(df).mark_line(color=_LIN_COLOR).encode(x=x, y=alt.Y("mean:Q", title=y_title,
                                                                                  axis=y_axis)))
    tooltip = [alt.Tooltip("switch_step:Q", title="switching step t"),
               alt.Tooltip("mean:Q", title=f"{label} (mean)" if n_seeds > 1 else label, format=fmt)]
    if n_seeds > 1:
        tooltip += [alt.Tooltip("lo:Q", title="min over seeds", format=fmt),
                    alt.Tooltip("hi:Q", title="max over seeds", format=fmt),
                    alt.Tooltip("n_seeds:Q", title="seeds")]
    points = alt.Chart(df).mark_point(filled=True, color=_LIN_COLOR, cursor="pointer").encode(
        x=x, y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False), axis=y_axis),
        size=alt.condition(pick, alt.value(130), alt.value(45), empty=False),
        stroke=alt.condition(pick, alt.value("black"), alt.value("white"), empty=False),
        tooltip=tooltip,
    ).add_params(pick)
    layers.append(points)
    sub = ["blue: linearized after t" + ("; orange dashed: lr x 0.1 after t" if small in ds else ""),
           "grey dashed: the standard run" + (f"; bands: min–max over {n_seeds} seeds" if n_seeds > 1 else ""),
           "click a point to see its test curve"]
    return alt.layer(*layers).properties(title=alt.TitleParams(f"{label} of θ_std→lin(T; t)", subtitle=sub),
                                         width=_W, height=PANEL_H)


def _curves(ds: xr.Dataset, metric: int, pick: alt.Parameter) -> alt.LayerChart:
    label, _, curve, std_curve, _, _, fmt, error = _METRICS[metric]
    df = _as_shown(ds[curve], error).to_dataframe(name="value").reset_index()
    df = df[np.isfinite(df["value"]) & (df["value"] > 0)][["switch_step", "seed", "step", "value"]]
    std = _as_shown(ds[std_curve], error).to_dataframe(name="value").reset_index()
    std = std[np.isfinite(std["value"]) & (std["value"] > 0)][["seed", "step", "value"]]
    std["what"] = "standard run"
    # a log scale: the first steps (error near 0.9) would otherwise flatten the part that matters
    y = alt.Y("value:Q", title=f"{label} (log scale)", scale=alt.Scale(type="log"),
              axis=alt.Axis(format=".1%" if error else ".2f"))
    base_std = alt.Chart(std).mark_line(color="gray", strokeDash=[6, 3]).encode(
        x=_step_axis(), y=y, detail="seed:N",
        tooltip=[alt.Tooltip("what:N", title="run"), alt.Tooltip("seed:N"), alt.Tooltip("step:Q", title="step"),
                 alt.Tooltip("value:Q", title=label, format=fmt)])
    lines = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=14)).encode(
        x=_step_axis(), y=y,
        color=alt.Color("switch_step:O", title="switching step t",
                        scale=alt.Scale(scheme="viridis", domain=[int(t) for t in ds["switch_step"].values]),
                        legend=alt.Legend(orient="bottom", direction="horizontal", columns=10)),
        detail="seed:N",
        tooltip=[alt.Tooltip("switch_step:Q", title="switched at t"), alt.Tooltip("seed:N"),
                 alt.Tooltip("step:Q", title="step"), alt.Tooltip("value:Q", title=label, format=fmt)],
    ).transform_filter(pick)
    rule = alt.Chart(pd.DataFrame({"switch_step": ds["switch_step"].values})).mark_rule(
        color="black", strokeDash=[2, 2], opacity=0.6).encode(x="switch_step:Q").transform_filter(pick)
    past_T = "; past T: trained on to a matched train loss" if int(ds["step"].max()) > end_step(ds) else ""
    return alt.layer(base_std, lines, rule).properties(
        title=alt.TitleParams(f"{label} during the continuations",
                              subtitle=f"grey dashed: the standard run; dotted rule: the switch{past_T}"),
        width=_W, height=PANEL_H)


def switching_chart(ds: xr.Dataset) -> alt.VConcatChart:
    """The paper's Figure 2 (test error and test loss against the switching step) with the
    continuations' test curves, as linked interactive panels (see the module docstring).

    Raises:
        ValueError: ``ds`` is not a switching Dataset.
    """
    missing = [v for m in _METRICS for v in m[1:5] if v not in ds]
    if missing:
        raise ValueError(f"ds is not a switching Dataset: it lacks {missing}")
    pick = alt.selection_point(fields=["switch_step"], on="click", clear="dblclick", name=_SELECTION)
    with warnings.catch_warnings():
        # one selection shared by the points of both top panels is what we want: Altair merges it
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        top = alt.hconcat(_versus_switch_step(ds, 0, pick), _versus_switch_step(ds, 1, pick))
    bottom = alt.hconcat(_curves(ds, 0, pick), _curves(ds, 1, pick))
    return alt.vconcat(top, bottom).resolve_scale(color="shared")


#: the views the gain chart draws, with their colours and labels
_GAIN_VIEWS = {"at_T": (_LIN_COLOR, "linearized, at T"), "matched": ("seagreen", "linearized, at matched train loss"),
               "small_lr": (_SMALL_COLOR, "lr x 0.1 (Fort et al.), at T")}


def switching_gain_chart(ds: xr.Dataset, t_from: int, *, level: float = 0.95, n_boot: int = 4000,
                         scale: float = 100.0) -> alt.LayerChart:
    """How much lower the test error is when switching at ``t`` rather than at ``t_from``, against ``t``.

    For each view of :data:`conelib.analysis.switching.VIEWS` the result has (at :math:`T`, at
    matched train loss, the small-lr baseline): the mean over seeds with its paired-bootstrap
    interval over seeds and test images (:func:`conelib.analysis.switching.comparison_table`), and,
    at :math:`T`, one thin grey line per seed; a rule at 0. ``scale`` = 100 shows percentage points.
    Without per-image data the intervals are Student-t intervals over seeds.
    """
    frames, per_seed = [], []
    per_image = has_per_image(ds)
    for view, (_, name) in _GAIN_VIEWS.items():
        if view == "matched" and "matched_test_correct" not in ds or view == "small_lr" and "small_lr_test_correct" \
                not in ds:
            continue
        table = comparison_table(ds, view, t_from, level=level, n_boot=n_boot)
        low, high = ("boot_low", "boot_high") if per_image else ("t_low", "t_high")
        frames.append(pd.DataFrame({"t": table.t, "view": name, "mean": table.gain * scale,
                                    "low": table[low] * scale, "high": table[high] * scale, "n": table.n,
                                    "n_seeds": table.n_seeds}))
        if view == "at_T":
            for _, row in table.iterrows():
                a = ds["final_test_acc"].sel(switch_step=int(t_from)).values
                b = ds["final_test_acc"].sel(switch_step=int(row.t)).values if int(row.t) != end_step(ds) else \
                    ds["standard_final_test_acc"].values
                for s, d in zip(ds["seed"].values, (b - a) * scale):
                    per_seed.append({"t": int(row.t), "seed": int(s), "gain": float(d)})
    means = pd.concat(frames, ignore_index=True)
    colours = {name: c for c, name in _GAIN_VIEWS.values()}
    colour = alt.Color("view:N", title="", scale=alt.Scale(domain=list(means.view.unique()),
                                                           range=[colours[v] for v in means.view.unique()]),
                       legend=alt.Legend(orient="bottom", direction="vertical"))
    x = alt.X("t:Q", title="switching step t")
    title_y = f"test error reduction over t = {t_from:,} (points)"
    lines = alt.Chart(pd.DataFrame(per_seed)).mark_line(strokeWidth=1, opacity=0.4, color="gray").encode(
        x=x, y=alt.Y("gain:Q", title=title_y), detail="seed:N",
        tooltip=["seed:N", "t:Q", alt.Tooltip("gain:Q", format="+.2f")])
    bars = alt.Chart(means.dropna(subset=["low"])).mark_errorbar().encode(
        x=x, y=alt.Y("low:Q", title=title_y), y2="high:Q", color=colour)
    what = "paired bootstrap over seeds and test images" if per_image else "Student-t over seeds"
    pts = alt.Chart(means).mark_point(filled=True, size=60).encode(
        x=x, y="mean:Q", color=colour, shape=alt.Shape("view:N", legend=None),
        tooltip=["view:N", "t:Q", alt.Tooltip("mean:Q", format="+.3f", title="mean reduction"),
                 alt.Tooltip("low:Q", format="+.3f", title=f"{level:.0%} low"),
                 alt.Tooltip("high:Q", format="+.3f", title=f"{level:.0%} high"),
                 alt.Tooltip("n:Q", title="seeds compared"), alt.Tooltip("n_seeds:Q", title="seeds")])
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[3, 3]).encode(y="y:Q")
    return alt.layer(zero, lines, bars, pts).properties(
        width=2 * _W, height=PANEL_H,
        title=alt.TitleParams(f"switching later than t = {t_from:,}: the paired gain in test error",
                              subtitle=[f"grey: each seed at T; points: mean with a {level:.0%} interval ({what})",
                                        "a view is left out at a step where a seed lacks it"]))


def error_vs_train_loss_chart(ds: xr.Dataset) -> alt.LayerChart:
    """Test error against train loss along every linearized continuation (coloured by its switching
    step) and the standard run (grey dashed), each averaged over seeds at every curve step (the
    train loss as a geometric mean); the small-lr continuations are dotted when the result has
    them. A vertical line through the chart compares the runs at one train loss.
    """
    def frame(acc: xr.DataArray, loss: xr.DataArray) -> pd.DataFrame:
        ok = np.isfinite(acc) & np.isfinite(loss)
        n = ok.sum("seed")
        err = (1 - acc).where(ok).mean("seed")
        geo = np.exp(np.log(loss.where(ok)).mean("seed"))
        full = n == ds.sizes["seed"]  # every seed is there: no mixing of seeds that stopped
        return pd.DataFrame({"step": ds["step"].values[full.values], "error": err.values[full.values],
                             "train_loss": geo.values[full.values]})

    rows = []
    for t in ds["switch_step"].values:
        f = frame(ds["test_acc_curve"].sel(switch_step=t), ds["train_loss_curve"].sel(switch_step=t))
        rows.append(f.assign(run="linearized", t=int(t)))
        if "small_lr_test_acc_curve" in ds:
            g = frame(ds["small_lr_test_acc_curve"].sel(switch_step=t), ds["small_lr_train_loss_curve"].sel(
                switch_step=t))
            rows.append(g.assign(run="lr x 0.1", t=int(t)))
    df = pd.concat(rows, ignore_index=True)
    std = frame(ds["standard_test_acc"], ds["standard_train_loss"]).assign(run="standard", t=end_step(ds))
    x = alt.X("train_loss:Q", title="train loss (geometric mean over seeds)", scale=alt.Scale(type="log"))
    y = alt.Y("error:Q", title="test error (mean over seeds, log scale)", scale=alt.Scale(type="log"),
              axis=alt.Axis(format=".1%"))
    tooltip = [alt.Tooltip("run:N"), alt.Tooltip("t:Q", title="switched at t"), alt.Tooltip("step:Q"),
               alt.Tooltip("train_loss:Q", format=".2e"), alt.Tooltip("error:Q", format=".2%")]
    colour = alt.Color("t:O", title="switching step t", scale=alt.Scale(scheme="viridis",
                                                                        domain=[int(t) for t in ds.switch_step.values]),
                       legend=alt.Legend(orient="bottom", direction="horizontal", columns=10))
    lin = alt.Chart(df[df.run == "linearized"]).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=x, y=y, color=colour, order="step:Q", tooltip=tooltip)
    layers = [lin]
    if (df.run == "lr x 0.1").any():
        layers.append(alt.Chart(df[df.run == "lr x 0.1"]).mark_line(strokeDash=[2, 2], opacity=0.7).encode(
            x=x, y=y, color=colour, order="step:Q", tooltip=tooltip))
    layers.append(alt.Chart(std).mark_line(color="gray", strokeDash=[6, 3], strokeWidth=2).encode(
        x=x, y=y, order="step:Q", tooltip=tooltip))
    return alt.layer(*layers).properties(
        width=2 * _W, height=PANEL_H,
        title=alt.TitleParams("test error against train loss", subtitle=[
            "solid: linearized continuations; dotted: lr x 0.1 after t; grey dashed: the standard run",
            "read vertically: the runs compared at the same train loss"]))
