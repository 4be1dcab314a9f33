"""What all chart builders share: the renderer, panel sizes, tidy data frames."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

PANEL_W, PANEL_H = 250, 220
LEGEND = alt.Legend(orient="bottom", direction="horizontal")


def enable_renderer() -> None:
    """Render charts as Altair's HTML output (call once per notebook).

    The book serves the Vega scripts that this output needs from its own ``_static`` folder, so
    the charts draw offline there; JupyterLab draws the same output in a trusted notebook.
    (Altair 6's Vega-Lite MIME bundle uses a key that nbformat's schema rejects, so papermill
    could not store it; the HTML output has no such problem.)
    """
    alt.renderers.enable("html")
    alt.data_transformers.disable_max_rows()


def _tidy(da: xr.DataArray, value: str = "value") -> pd.DataFrame:
    df = da.to_dataframe(name=value).reset_index()
    df = df[np.isfinite(df[value])]
    return df[[c for c in df.columns if c in (*da.dims, value)]]


def _step_axis(title: str = "training step t") -> alt.X:
    return alt.X("step:Q", title=title)
