"""Charts of the switching experiment (the paper's Figure 2), from its stored Dataset.

Top row: the test accuracy and the test loss of :math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)`
against the switching step :math:`t` (mean over seeds, with a min–max band when there are
several), and the fully standard run as a horizontal reference rule (with its own min–max band).
Bottom row: the test curves of the continuations against the training step, over the standard
run's curve in grey. Clicking a switching-step point in the top row keeps only that continuation
in the bottom row (shift-click for several, double-click to clear); with nothing selected all
continuations are drawn, coloured by their switching step.
"""

from __future__ import annotations

import warnings

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from conelib.charts.common import PANEL_H, PANEL_W, _step_axis

#: a little narrower than the other charts' panels, so that two fit the book's column with axes
_W = min(PANEL_W, 230)

#: (metric label, final variable, curve variable, standard curve, standard final, tooltip format)
_METRICS = (
    ("test accuracy", "final_test_acc", "test_acc_curve", "standard_test_acc", "standard_final_test_acc", ".2%"),
    ("test loss", "final_test_loss", "test_loss_curve", "standard_test_loss", "standard_final_test_loss", ".4f"),
)
_SELECTION = "pick_switch"


def _summary(da: xr.DataArray) -> pd.DataFrame:
    """Mean, min, max and count over seeds of a (switch_step, seed) variable."""
    df = pd.DataFrame({"switch_step": da["switch_step"].values,
                       "mean": da.mean("seed", skipna=True).values,
                       "lo": da.min("seed", skipna=True).values,
                       "hi": da.max("seed", skipna=True).values,
                       "n_seeds": da.count("seed").values})
    return df[df["n_seeds"] > 0]


def switching_summary(ds: xr.Dataset) -> pd.DataFrame:
    """The numbers the top row draws: one row per (metric, switch_step) with mean/lo/hi over seeds."""
    rows = []
    for label, final, *_ in _METRICS:
        df = _summary(ds[final])
        df.insert(0, "metric", label)
        rows.append(df)
    return pd.concat(rows, ignore_index=True)


def _versus_switch_step(ds: xr.Dataset, metric: int, pick: alt.Parameter) -> alt.LayerChart:
    label, final, _, _, std_final, fmt = _METRICS[metric]
    df = _summary(ds[final])
    n_seeds = int(ds.sizes["seed"])
    std = ds[std_final].values
    std_df = pd.DataFrame({"mean": [float(np.nanmean(std))], "lo": [float(np.nanmin(std))],
                           "hi": [float(np.nanmax(std))], "what": ["standard run"]})
    x = alt.X("switch_step:Q", title="switching step t")
    y_title = f"{label} at T"
    layers: list[alt.Chart] = []
    if n_seeds > 1:
        layers.append(alt.Chart(std_df).mark_rect(color="gray", opacity=0.15).encode(y="lo:Q", y2="hi:Q"))
        layers.append(alt.Chart(df).mark_area(color="steelblue", opacity=0.2).encode(x=x, y="lo:Q", y2="hi:Q"))
    layers.append(alt.Chart(std_df).mark_rule(color="gray", strokeDash=[6, 3], strokeWidth=2).encode(
        y="mean:Q",
        tooltip=[alt.Tooltip("what:N", title="reference"), alt.Tooltip("mean:Q", title=label, format=fmt)]))
    layers.append(alt.Chart(df).mark_line(color="steelblue").encode(x=x, y=alt.Y("mean:Q", title=y_title)))
    tooltip = [alt.Tooltip("switch_step:Q", title="switching step t"),
               alt.Tooltip("mean:Q", title=f"{label} (mean)" if n_seeds > 1 else label, format=fmt)]
    if n_seeds > 1:
        tooltip += [alt.Tooltip("lo:Q", title="min over seeds", format=fmt),
                    alt.Tooltip("hi:Q", title="max over seeds", format=fmt),
                    alt.Tooltip("n_seeds:Q", title="seeds")]
    points = alt.Chart(df).mark_point(filled=True, color="steelblue", cursor="pointer").encode(
        x=x, y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False)),
        size=alt.condition(pick, alt.value(130), alt.value(45), empty=False),
        stroke=alt.condition(pick, alt.value("black"), alt.value("white"), empty=False),
        tooltip=tooltip,
    ).add_params(pick)
    layers.append(points)
    sub = "dashed: the standard run" + (f"; bands: min–max over {n_seeds} seeds" if n_seeds > 1 else "")
    return alt.layer(*layers).properties(
        title=alt.TitleParams(f"{label} of θ_std→lin(T; t)", subtitle=[sub, "click a point to see its test curve"]),
        width=_W, height=PANEL_H)


def _curves(ds: xr.Dataset, metric: int, pick: alt.Parameter) -> alt.LayerChart:
    label, _, curve, std_curve, _, fmt = _METRICS[metric]
    df = ds[curve].to_dataframe(name="value").reset_index()
    df = df[np.isfinite(df["value"])][["switch_step", "seed", "step", "value"]]
    std = ds[std_curve].to_dataframe(name="value").reset_index()
    std = std[np.isfinite(std["value"])][["seed", "step", "value"]]
    std["what"] = "standard run"
    y = alt.Y("value:Q", title=label, scale=alt.Scale(zero=False))
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
    return alt.layer(base_std, lines, rule).properties(
        title=alt.TitleParams(f"{label} during the continuations",
                              subtitle="grey dashed: the standard run; dotted rule: the switch"),
        width=_W, height=PANEL_H)


def switching_chart(ds: xr.Dataset) -> alt.VConcatChart:
    """The paper's Figure 2 with the continuations' test curves, as linked interactive panels.

    Args:
        ds: a switching Dataset (:func:`conelib.experiments.switching`).

    Returns:
        Two rows of two panels: test accuracy and test loss at :math:`T` against the switching
        step (top), the continuations' test curves against the step (bottom), linked by a click
        selection on the switching step.
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


def switching_gain_chart(ds: xr.Dataset, t_from: int, *, level: float = 0.95, scale: float = 100.0) -> alt.LayerChart:
    """The paired gain in test accuracy from switching at ``t`` instead of ``t_from``, against ``t``.

    One thin line per seed (the same seed's accuracy at ``t`` minus at ``t_from``), the mean over
    seeds as points with the Student-t interval at ``level`` as error bars
    (:func:`conelib.experiments.switching.paired_gain_table`), and a rule at 0. ``scale`` = 100
    shows percentage points.
    """
    from conelib.experiments.switching import paired_gain_table

    table = paired_gain_table(ds, t_from, level=level)
    seeds = [c for c in table.columns if c.startswith("seed_")]
    per_seed = table.melt(id_vars=["t"], value_vars=seeds, var_name="seed", value_name="gain")
    per_seed["seed"] = per_seed["seed"].str.removeprefix("seed_")
    per_seed["gain"] *= scale
    means = table.assign(mean=table["mean"] * scale, low=table["low"] * scale, high=table["high"] * scale)
    x = alt.X("t:Q", title="switching step t")
    lines = alt.Chart(per_seed).mark_line(strokeWidth=1, opacity=0.5, color="gray").encode(
        x=x, y=alt.Y("gain:Q", title=f"test accuracy gain over t = {t_from} (points)"), detail="seed:N",
        tooltip=["seed:N", "t:Q", alt.Tooltip("gain:Q", format="+.2f")])
    bars = alt.Chart(means.dropna(subset=["low"])).mark_errorbar(color="black").encode(
        x=x, y=alt.Y("low:Q", title=""), y2="high:Q")
    pts = alt.Chart(means).mark_point(filled=True, size=60, color="black").encode(
        x=x, y="mean:Q",
        tooltip=["t:Q", alt.Tooltip("mean:Q", format="+.2f", title="mean gain"),
                 alt.Tooltip("low:Q", format="+.2f", title=f"{level:.0%} low"),
                 alt.Tooltip("high:Q", format="+.2f", title=f"{level:.0%} high"),
                 alt.Tooltip("n_positive:Q", title="seeds with a gain"), alt.Tooltip("n:Q", title="seeds")])
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[3, 3]).encode(y="y:Q")
    return alt.layer(zero, lines, bars, pts).properties(
        width=2 * _W, height=PANEL_H,
        title=alt.TitleParams(f"gain from switching later than t = {t_from}, paired by seed",
                              subtitle=f"grey: each seed; black: mean with a {level:.0%} t-interval"))
