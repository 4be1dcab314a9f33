"""The "Measuring the phases" chapter: the validation panel of the measures, stored and quoted.

:func:`validation_report` loads (or computes once, about three minutes) the panel of
:func:`conelib.measures.synthetic.panel` as a stored result (``results/validation/<hash>.nc``),
and returns the table and sentence the chapter shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xarray as xr

from conelib.measures import synthetic
from conelib.results import load_or_compute

__all__ = ["ValidationReport", "validation_report", "EXPERIMENT", "PANEL_CONFIG"]

EXPERIMENT = "validation"
#: what identifies the stored panel (the measures' version is part of it: a new version, a new panel)
PANEL_CONFIG = {"n_draws": 20, "seed": 100, "measures_version": 3}


@dataclass
class ValidationReport:
    """The panel and what the chapter says of it."""

    panel: xr.Dataset

    def table(self) -> pd.DataFrame:
        """Per process: what it is, the verdict it must get, the share of draws that get it (v3, v2),
        and the median of the main coordinates over the draws."""
        p = self.panel
        rows = []
        for name in p.process.values:
            r = p.sel(process=name)
            rows.append({
                "process": str(name), "what it is": str(r.description.values), "right verdict": str(r.expected.values),
                "version 3": f"{100 * float(r.success):.0f}%", "version 2": f"{100 * float(r.v2_success):.0f}%",
                "growth γ (median)": f"{float(r.growth_exponent.median()):.2f}",
                "drift decay α (median)": f"{float(r.drift_decay.median()):.2f}",
                "total movement M (median)": f"{float(r.total_movement.median()):.3f}",
            })
        return pd.DataFrame(rows).set_index("process")

    def summary_sentence(self) -> str:
        p = self.panel
        n = int(p.attrs["n_draws"])
        lo, hi = float(p.success.min()), float(p.success.max())
        if lo == hi == 1.0:
            v3 = f"Over {n} independent noise draws per process, version 3 judges every draw of every process right"
        else:
            v3 = (f"Over {n} independent noise draws per process, version 3 judges {100 * lo:.0f}–{100 * hi:.0f}% of "
                  f"the draws of each process right (lowest: {p.success.idxmin().item()})")
        wrong2 = [str(x) for x in p.process.values[p.v2_success.values < 1]]
        return (f"{v3}; version 2 judged {100 * float(p.v2_success.min()):.0f}–{100 * float(p.v2_success.max()):.0f}% "
                f"right (not all draws of: {', '.join(wrong2) or 'none'}), and it has no label for a converging kernel.")


def validation_report(results_root: str | Path | None = None, *, recompute: bool = False) -> ValidationReport:
    """The stored validation panel (computed and stored when missing)."""
    cfg = dict(PANEL_CONFIG)
    ds = load_or_compute(EXPERIMENT, cfg, lambda: synthetic.panel(cfg["n_draws"], cfg["seed"]), root=results_root,
                         recompute=recompute, device="cpu", full=cfg)
    return ValidationReport(ds)
