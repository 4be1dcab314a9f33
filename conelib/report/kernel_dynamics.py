"""The kernel-dynamics chapter (the paper's Figure 1): the facts, tables and sentences it shows.

:func:`kernel_dynamics_report` takes the stored runs and returns everything the notebook glues
or displays, so that the notebook holds no analysis: the setting (:attr:`KernelDynamicsReport.facts`),
the per-model table of measures with intervals (:meth:`KernelDynamicsReport.measures_table`), the
per-run table, and, per model, the sentences that say what the runs show
(:meth:`KernelDynamicsReport.findings`), phrased from what all, some or none of the seeds show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import xarray as xr

from conelib.analysis.kernel_dynamics import (
    RunAssessment,
    assess_runs,
    runs_table,
    seed_table,
    stack_seeds,
)
from conelib.analysis.text import Facts, describe_range, format_interval
from conelib.measures import THRESHOLDS
from conelib.measures.v3 import MEASURE_FORMATS

__all__ = ["KernelDynamicsReport", "kernel_dynamics_report", "claim", "MEASURE_LABELS"]

#: the measures of the chapter's table: name -> (label, format) (:data:`conelib.measures.v3.MEASURE_FORMATS`)
MEASURE_LABELS: dict[str, tuple[str, str]] = {name: (label, "{:" + spec + "}") for name, (label, spec)
                                              in MEASURE_FORMATS.items() if not name.endswith("_agreement")}


def claim(flags: Sequence[bool], all_: str, none: str, some: str) -> str:
    """A sentence that says what the seeds show: all of them, none of them, or some (with the count)."""
    flags = [bool(f) for f in flags]
    if all(flags):
        return all_
    if not any(flags):
        return none
    return some.format(k=sum(flags), n=len(flags))


@dataclass
class KernelDynamicsReport:
    """What the chapter shows (see the module docstring)."""

    assessed: list[RunAssessment]
    table: pd.DataFrame
    seeds: pd.DataFrame
    by_model: dict[str, xr.Dataset]
    facts: Facts
    datasets: dict[str, xr.Dataset]

    def seeds_of(self, model: str) -> dict[int, xr.Dataset]:
        """seed -> the stored run of ``model`` (for charts that take runs one by one)."""
        return {int(r.label["seed"]): self.datasets[r.label["config_hash"]] for r in self.assessed
                if r.label["model"] == model}

    @property
    def models(self) -> list[str]:
        return list(self.by_model)

    def rows(self, model: str) -> pd.DataFrame:
        return self.table[self.table.model == model]

    def seed_value(self, model: str, name: str, fmt: str = "{:.3g}") -> str:
        """``"mean [lo, hi]"`` over the seeds of ``model`` (hierarchical bootstrap)."""
        r = self.seeds[(self.seeds.model == model) & (self.seeds.measure == name)]
        if r.empty:
            return "—"
        r = r.iloc[0]
        return format_interval(r["mean"], r["lo"], r["hi"], fmt)

    def measures_table(self) -> pd.DataFrame:
        """Rows: measures; columns: models; cells: mean over seeds [95% hierarchical-bootstrap
        interval] (range over seeds)."""
        out: dict[str, dict[str, str]] = {}
        for m in self.models:
            col = {}
            for name, (label, fmt) in MEASURE_LABELS.items():
                r = self.seeds[(self.seeds.model == m) & (self.seeds.measure == name)]
                if r.empty or not r.iloc[0]["n"]:
                    col[label] = "—"
                    continue
                r = r.iloc[0]
                rng = describe_range(self.rows(m)[name], fmt)
                col[label] = f"{format_interval(r['mean'], r['lo'], r['hi'], fmt)} (seeds: {rng})"
            col["verdicts"] = "; ".join(f"{n} × {v}" for v, n in self.rows(m).verdict.value_counts().items())
            col["verdict: share of bootstrap draws"] = describe_range(100 * self.rows(m).verdict_agreement, "{:.0f}",
                                                                     unit="%")
            col["verdict: share of threshold settings"] = describe_range(100 * self.rows(m).threshold_agreement,
                                                                        "{:.0f}", unit="%")
            col["version-2 verdicts"] = "; ".join(f"{n} × {v}" for v, n in self.rows(m).v2_verdict.value_counts().items())
            out[m] = col
        return pd.DataFrame(out)

    def runs_frame(self) -> pd.DataFrame:
        """One row per run with the main measures as ``value [interval]``, the verdict and training numbers."""
        rows = []
        for r in self.assessed:
            a = r.assessment
            row = {"model": r.label["model"], "seed": r.label["seed"], "verdict": a.point.verdict,
                   "agreement": f"{a.agreement:.0%}", "thresholds": f"{a.threshold_agreement:.0%}"}
            for name, (label, fmt) in MEASURE_LABELS.items():
                row[name] = a.describe(name, fmt)
            row.update({"fit_99": r.extra["fit_99"], "final_train_loss": f"{r.extra['final_train_loss']:.2e}",
                        "final_test_acc": f"{100 * r.extra['final_test_acc']:.2f}%",
                        "v2_verdict": r.extra["v2_verdict"], "config_hash": r.label["config_hash"]})
            rows.append(row)
        return pd.DataFrame(rows)

    def findings(self, model: str) -> str:
        """What the runs of ``model`` show, as Markdown bullet points (every number from the runs)."""
        rows = self.rows(model)
        pts = [r for r in self.assessed if r.label["model"] == model]
        n = len(rows)
        two = [p.point.phase_one_end is not None for p in pts]
        t = self.facts
        lines = []
        lines.append(
            "* **" + claim(two, f"Two phases in all {n} seeds.", f"No two phases in any of the {n} seeds.",
                           "Two phases in {k} of {n} seeds.") + "** "
            f"The denoised kernel velocity at a gap of {t.lag} steps falls from its peak by "
            f"{describe_range(rows['drop'], '{:.0f}', unit='×')} to its late level; Phase I ends (the velocity "
            f"down to {t.fraction} of its peak) at step {self.seed_value(model, 'phase_one_end', '{:,.0f}')} "
            f"(mean over seeds, 95% interval; seeds {describe_range(rows.phase_one_end, '{:,.0f}', none='none found')}).")
        lines.append(
            f"* **Phase I is where the kernel goes.** The mean kernel ends {self.seed_value(model, 'total_movement', '{:.3f}')} "
            f"(chord) from the initial one, and {describe_range(100 * rows.phase_one_movement / rows.total_movement, '{:.0f}', unit='%')} "
            "of that distance is covered by the end of Phase I.")
        lines.append(
            f"* **Jitter and drift in Phase II.** Single kernels scatter around the local mean kernel with a radius of "
            f"{describe_range(rows.jitter_radius, '{:.3f}')} ({self.seed_value(model, 'jitter_ratio', '{:.3f}')} of the "
            f"Phase I movement), a radius that "
            + claim([x < -0.25 for x in rows.jitter_trend], "shrinks as training goes on", "stays about constant",
                    "shrinks in {k} of {n} seeds")
            + f" (log-log slope against t: {describe_range(rows.jitter_trend, '{:.2f}')}). Beyond that noise ball the mean "
            f"kernel moves {describe_range(rows.drift_ratio, '{:.1f}')} jitter radii across Phase II.")
        conv = [v == "two phases, converging" for v in rows.verdict]
        lines.append(
            f"* **Converging or drifting?** Between mean kernels a fixed {t.stationarity_lag} steps apart, the distance "
            f"falls like τ^-α with α = {self.seed_value(model, 'drift_decay', '{:.2f}')} (above 1: a finite path, the "
            f"kernel converges); across lags the distance grows like ℓ^γ with γ = "
            f"{self.seed_value(model, 'growth_exponent', '{:.2f}')} (0: a bounded wobble, ½: a random walk). "
            + claim(conv, "Every seed's verdict is *converging*", "No seed's verdict is *converging*",
                    "{k} of {n} seeds' verdicts are *converging*")
            + f", and the bootstrap draws agree with each seed's verdict in "
            f"{describe_range(100 * rows.verdict_agreement, '{:.0f}', unit='%')} of draws.")
        lines.append(
            f"* **The loss as the clock.** Over the whole run the log velocity follows the log training loss with "
            f"r = {describe_range(rows.loss_correlation, '{:.2f}')} (exponent κ = "
            f"{describe_range(rows.loss_exponent, '{:.2f}')}); Phase I ends at a training loss of "
            f"{describe_range(rows.loss_at_phase_one_end, '{:.3f}')}, "
            f"{describe_range(rows.phase_one_end_minus_fit_99, '{:+,.0f}', none='—')} steps from the step at which 99% "
            f"of the training subset is fit (negative: before).")
        lines.append(
            f"* **Verdicts:** {'; '.join(f'{k} × {v}' for v, k in rows.verdict.value_counts().items())} "
            f"(version 2's rules: {'; '.join(f'{k} × {v}' for v, k in rows.v2_verdict.value_counts().items())}). "
            f"Final test accuracy {describe_range(100 * rows.final_test_acc, '{:.2f}', unit='%')}, final training loss "
            f"{describe_range(rows.final_train_loss, '{:.1e}')}.")
        return "\n".join(lines)


def kernel_dynamics_report(results: Sequence[xr.Dataset], config: Any = None, *, n_boot: int = 200,
                           **thresholds: Any) -> KernelDynamicsReport:
    """Assess every run (:func:`conelib.analysis.kernel_dynamics.assess_runs`) and gather the chapter's
    facts; ``config`` (the notebook's configuration) gives the training recipe quoted."""
    if not results:
        raise ValueError("no kernel-dynamics results to report on")
    assessed = assess_runs(results, n_boot=n_boot, **thresholds)
    table = runs_table(assessed)
    models = list(dict.fromkeys(table.model))
    by_hash = {ds.attrs.get("config_hash"): ds for ds in results}
    by_model = {m: stack_seeds([by_hash[h] for h in table[table.model == m].config_hash]) for m in models}
    first = results[0]
    t = {**THRESHOLDS, **thresholds}
    facts = Facts(
        T=f"{int(table['T'].max()):,}",
        probe=int(first.attrs.get("probe_size", 0)),
        every=int(first["step"].diff("step").min()),
        n_snap=int(first.sizes["step"]),
        models=", ".join(models),
        seeds=", ".join(str(s) for s in sorted(set(table.seed))),
        n_seeds=int(table.groupby("model").size().min()),
        dts=", ".join(str(int(d)) for d in first["dt"].values),
        taus=", ".join(str(int(x)) for x in first["ref_step"].values),
        lag=int(t["lag"]), stationarity_lag=int(t["stationarity_lag"]), half_width=int(t["half_width"]),
        fraction=f"{t['fraction']:g}", n_boot=int(n_boot),
    )
    if config is not None:
        facts.update(dataset=config.dataset, lr=f"{config.lr:g}", batch=config.batch_size,
                     momentum=f"{config.momentum:g}", wd=f"{config.weight_decay:g}")
    return KernelDynamicsReport(assessed, table, seed_table(assessed), by_model, facts, by_hash)

