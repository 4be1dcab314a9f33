"""What all chart builders share: the renderer, panel sizes, tidy data frames."""

from __future__ import annotations

import os

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

PANEL_W, PANEL_H = 250, 220
LEGEND = alt.Legend(orient="bottom", direction="horizontal")


#: what the charts are rendered as, by where the notebook runs (see :func:`choose_renderer`)
RENDERERS = ("html", "jupyter")


def choose_renderer() -> str:
    """``"jupyter"`` in a kernel started by a Jupyter server (JupyterLab: it sets
    ``JPY_SESSION_NAME``), else ``"html"`` (papermill, ``conelib run``, the book, nbconvert).
    ``$CONELIB_RENDERER`` (``html`` or ``jupyter``) overrides it."""
    env = os.environ.get("CONELIB_RENDERER", "").strip()
    if env:
        if env not in RENDERERS:
            raise ValueError(f"CONELIB_RENDERER={env!r}; allowed: {list(RENDERERS)}")
        return env
    return "jupyter" if os.environ.get("JPY_SESSION_NAME") else "html"


def enable_renderer(renderer: str | None = None) -> str:
    """Choose how charts are shown (call once per notebook); returns the renderer used.

    * ``"html"``: Altair's HTML output. The book serves the Vega scripts it needs from its own
      ``_static`` folder, so the charts draw offline there. (Altair 6's Vega-Lite MIME bundle uses
      a key that nbformat's schema rejects, so papermill could not store it; HTML has no such
      problem.)
    * ``"jupyter"`` with ``offline=True``: Altair's JupyterChart widget (needs ``anywidget``, in
      the ``lab`` extra), whose Vega bundle comes from the Python package, not a CDN: charts draw
      in JupyterLab with no network. (Its html output would load Vega from a CDN there, and
      JupyterLab's own renderer knows Vega-Lite only up to v5.)

    Default: :func:`choose_renderer`.
    """
    renderer = renderer or choose_renderer()
    if renderer not in RENDERERS:
        raise ValueError(f"renderer={renderer!r}; allowed: {list(RENDERERS)}")
    if renderer == "jupyter":
        try:
            import anywidget  # noqa: F401
        except ImportError:  # no lab extra: fall back to html, which needs a network in JupyterLab
            renderer = "html"
    if renderer == "jupyter":
        alt.renderers.enable("jupyter", offline=True)
    else:
        alt.renderers.enable("html")
    alt.data_transformers.disable_max_rows()
    return renderer


def _tidy(da: xr.DataArray, value: str = "value") -> pd.DataFrame:
    df = da.to_dataframe(name=value).reset_index()
    df = df[np.isfinite(df[value])]
    return df[[c for c in df.columns if c in (*da.dims, value)]]


def _step_axis(title: str = "training step t") -> alt.X:
    return alt.X("step:Q", title=title)
