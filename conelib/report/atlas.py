"""The atlas chapter ("When does the cone appear?"): the facts, tables and sentences it shows.

:func:`atlas_report` reads an atlas summary (:mod:`conelib.analysis.atlas_summary`) and returns what
the notebook glues or displays: counts of verdicts and their robustness, the regions, the verdicts
beside the optimisation (final training loss), the textbook lazy check, the loss clock, the noise
ball, the run closest to the paper's Figure 3 and its contrast, and the threshold sensitivity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from conelib.analysis import atlas
from conelib.analysis.text import Facts, describe_range
from conelib.measures import VERDICTS

__all__ = ["AtlasReport", "atlas_report"]

#: short keys of the verdicts, for facts
KEYS = dict(zip(VERDICTS, ("cone", "lazy", "drift", "none", "conv")))


@dataclass
class AtlasReport:
    """What the atlas chapter shows (see the module docstring)."""

    summary: xr.Dataset
    cells: pd.DataFrame
    facts: Facts
    fig3: int | None
    contrast: int | None

    def regions_markdown(self) -> str:
        """One bullet per verdict: the cells where every seed got it; then disagreeing and failed cells."""
        reg = atlas.regions(self.summary)
        lines = [f"* **{v}** in every seed: {'; '.join(reg[v]) or 'none'}." for v in VERDICTS]
        lines.append(f"* seeds disagree: {'; '.join(reg['seeds disagree']) or 'none'}; failed: "
                     f"{'; '.join(reg['failed']) or 'none'}.")
        return "\n".join(lines)

    def cells_table(self) -> pd.DataFrame:
        """One row per cell: its label, each seed's verdict with its bootstrap agreement, the final
        training loss and test accuracy of its seeds."""
        s = self.summary
        rows = []
        for _, c in self.cells.iterrows():
            runs = list(c.runs)
            rows.append({
                "cell": c.label,
                "verdicts (bootstrap agreement)": "; ".join(
                    f"{s.verdict.values[r]} ({100 * float(s.verdict_agreement.values[r]):.0f}%)"
                    if s.status.values[r] == "stored" else str(s.status.values[r]) for r in runs),
                "total movement M": describe_range(s.total_movement.values[runs], "{:.3f}"),
                "drift decay α": describe_range(s.drift_decay.values[runs], "{:.2f}"),
                "growth γ": describe_range(s.growth_exponent.values[runs], "{:.2f}"),
                "final train loss": describe_range(s.final_train_loss.values[runs], "{:.1e}"),
                "final test acc.": describe_range(100 * s.final_test_acc.values[runs], "{:.2f}", unit="%"),
            })
        return pd.DataFrame(rows)

    def optimisation_table(self) -> pd.DataFrame:
        """Per verdict: runs, median and range of the final training loss, median test accuracy."""
        t = atlas.optimisation_by_verdict(self.summary)
        t = t[t.runs > 0].copy()
        return t.assign(
            final_train_loss=[describe_range([a, b], "{:.1e}") + f" (median {m:.1e})"
                              for a, b, m in zip(t.min_final_train_loss, t.max_final_train_loss,
                                                 t.median_final_train_loss)],
            median_final_test_acc=[f"{100 * x:.2f}%" for x in t.median_final_test_acc],
        )[["verdict", "runs", "final_train_loss", "median_final_test_acc"]]

    def sensitivity_table(self) -> pd.DataFrame:
        return atlas.sensitivity_table(self.summary)

    def noise_ball_frame(self) -> pd.DataFrame:
        return atlas.noise_ball(self.summary)["frame"]


def _fmt(x: float, fmt: str = "{:.2f}") -> str:
    return "—" if x is None or not np.isfinite(x) else fmt.format(x)


def atlas_report(summary: xr.Dataset) -> AtlasReport:
    """Read the summary into the chapter's facts (see the module docstring)."""
    s = summary
    c = atlas.cells(s)
    stored = s.status.values == "stored"
    verdicts = s.verdict.values.astype(str)
    base = json.loads(s.attrs["grid_json"])["base"]
    bv = atlas.base_values(s)
    f = Facts(
        n_runs=int(s.attrs["n_runs"]), n_stored=int(s.attrs["n_stored"]), n_failed=int(s.attrs["n_failed"]),
        n_cells=len(c), n_agree=int(c.agree.sum()), blocks="; ".join(str(b) for b in s.block.values),
        base=(f"{base.get('model', 'lenet5')} on {base.get('dataset', 'mnist')}, T = {int(base.get('steps', 0)):,}, "
              f"lr {bv.get('lr', base.get('lr'))}, batch {bv.get('batch_size', base.get('batch_size'))}"),
        minutes=f"{np.nansum(s.wall_seconds.values) / 60:.0f}", n_boot=int(s.attrs.get("n_boot", 0)),
    )
    for v, key in KEYS.items():
        f[f"n_{key}"] = int((verdicts[stored] == v).sum())
    v2 = s.v2_verdict.values.astype(str)[stored] if "v2_verdict" in s else np.asarray([])
    f.v2_counts = "; ".join(f"{int((v2 == v).sum())} {v}" for v in VERDICTS if (v2 == v).any()) or "—"
    f.n_changed = int((v2 != verdicts[stored]).sum()) if v2.size else 0
    agree = s.verdict_agreement.values[stored]
    f.agree_median = _fmt(100 * np.nanmedian(agree), "{:.0f}%") if agree.size else "—"
    f.n_robust = int((agree >= 0.9).sum())
    f.n_shaky = int((agree < 0.7).sum())
    thr = s.threshold_agreement.values[stored]
    f.thr_median = _fmt(100 * np.nanmedian(thr), "{:.0f}%") if thr.size else "—"
    # textbook lazy: the largest output scale
    if "output_scale" in s:
        scales = s.output_scale.values.astype(float)
        top = np.nanmax(scales) if np.isfinite(scales).any() else np.nan
        sel = stored & (scales == top)
        f.lazy_scale = _fmt(top, "{:g}")
        f.lazy_verdicts = "; ".join(f"{atlas.run_name(s, int(r))}: {s.verdict.values[r]}"
                                    for r in s.run.values[sel]) or "—"
        f.lazy_movement = describe_range(s.total_movement.values[sel], "{:.3f}")
        f.lazy_all = bool(sel.any() and all(verdicts[sel] == "two phases, lazy"))
    # the optimisation
    lc = atlas.loss_clock(s)
    f.end_vs_fit = f"{_fmt(lc['end_vs_fit'][0])} (n = {lc['end_vs_fit'][1]})"
    q = lc["end_minus_fit"]
    f.end_minus_fit = f"{_fmt(q[1], '{:+,.0f}')} (quartiles {_fmt(q[0], '{:+,.0f}')} to {_fmt(q[2], '{:+,.0f}')})"
    q = lc["loss_at_end"]
    f.loss_at_end = f"{_fmt(q[1], '{:.3f}')} (quartiles {_fmt(q[0], '{:.3f}')}–{_fmt(q[2], '{:.3f}')})"
    f.drop_vs_loss = _fmt(lc["drop_vs_loss"][0])
    f.laziness_vs_loss = _fmt(lc["laziness_vs_loss"][0])
    f.movement_vs_loss = _fmt(lc["movement_vs_loss"][0])
    f.loss_correlation = _fmt(lc["loss_correlation"])
    obv = atlas.optimisation_by_verdict(s)
    f.loss_by_verdict = "; ".join(f"{r.verdict} {r.median_final_train_loss:.1e}" for r in obv.itertuples()
                                  if r.runs > 0)
    # the noise ball
    nb = atlas.noise_ball(s)
    f.nb_rho, f.nb_n = _fmt(nb["rho"]), nb["n"]
    f.nb_slope = f"{_fmt(nb['slope'][0])} [{_fmt(nb['slope'][1])}, {_fmt(nb['slope'][2])}]"
    # Figure 3
    fig3 = atlas.figure3_candidate(s)
    pair = None if fig3 is None else atlas.contrast_for(s, fig3)
    if fig3 is not None:
        f.fig3 = atlas.run_name(s, fig3)
        f.fig3_verdict = str(s.verdict.sel(run=fig3).values)
        f.fig3_drop = _fmt(float(s["drop"].sel(run=fig3)), "{:.1f}")
        f.fig3_agree = _fmt(100 * float(s.verdict_agreement.sel(run=fig3)), "{:.0f}%")
        f.fig3_thr = _fmt(100 * float(s.threshold_agreement.sel(run=fig3)), "{:.0f}%")
        f.fig3_loss = _fmt(float(s.final_train_loss.sel(run=fig3)), "{:.3f}")
        f.fig3_acc = _fmt(100 * float(s.final_test_acc.sel(run=fig3)), "{:.2f}%")
        cell3 = c[c.runs.apply(lambda r: fig3 in r)].iloc[0]
        f.fig3_seeds = ((("both seeds" if len(cell3.runs) == 2 else f"all {len(cell3.runs)} seeds")
                         + f" of its cell agree ({cell3.verdict})") if cell3.agree else
                        f"the seeds of its cell disagree ({', '.join(cell3.verdicts)})")
    if pair is not None:
        f.pair = atlas.run_name(s, pair)
        f.pair_verdict = str(s.verdict.sel(run=pair).values)
        f.pair_loss = _fmt(float(s.final_train_loss.sel(run=pair)), "{:.1e}")
        names = json.loads(s.attrs["swept_fields"])
        f.separating = ", ".join(f"{d} ({s[d].sel(run=pair).values.item()} vs {s[d].sel(run=fig3).values.item()})"
                                 for d in names if str(s[d].sel(run=pair).values) != str(s[d].sel(run=fig3).values))
    sens = atlas.sensitivity_table(s)
    f.sens_n = len(sens)
    for v, key in KEYS.items():
        if v in sens:
            f[f"sens_{key}"] = describe_range(sens[v], "{:.0f}")
    return AtlasReport(s, c, f, fig3, pair)

