"""The spawning chapter ("Linear mode connectivity of spawned children"): its facts, tables and sentences.

:func:`spawning_report` takes the stored spawning runs (one Dataset per model) and returns what the
notebook glues or displays, so that the notebook holds no analysis: the setting
(:attr:`SpawningReport.facts`), per model the barrier table over spawn steps with every seed's value
and a Student-t interval over seeds (:meth:`SpawningReport.barrier_table`), the end of Phase I of
each seed beside its onset of linear mode connectivity (:meth:`SpawningReport.phase_table`), the
children's kernel distance against the Phase II jitter (:meth:`SpawningReport.kernel_table`), and
the sentences that answer the chapter's question (:meth:`SpawningReport.findings`), phrased from
what all, some or none of the seeds show. The definitions are in :mod:`conelib.analysis.spawning`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from conelib.analysis import spawning as an
from conelib.analysis.text import Facts, describe_range, format_interval

__all__ = ["SpawningReport", "spawning_report", "phase_interval_text", "ANSWERS"]

#: the answers of :meth:`SpawningReport.answer` to "does Phase I end when the children become
#: linearly connected?", by where the seeds' onsets lie relative to their end of Phase I
ANSWERS: dict[str, str] = {
    "before": "no: the children are linearly connected before the kernel's Phase I ends (before the low end of its "
              "95% interval)",
    "within": "yes, within the uncertainty: the children become linearly connected where the kernel's Phase I ends",
    "after": "no: the children become linearly connected only after the kernel's Phase I has ended (or not at all "
             "on the grid)",
    "mixed": "the seeds disagree",
    "unknown": "cannot be told: no seed has an end of Phase I measured on a stored kernel-dynamics run",
}


def phase_interval_text(p: an.SeedPhase) -> str:
    """``"1,950 [1,800, 2,100]"`` (or why there is none)."""
    if not p.found:
        return "not measured"
    if p.phase_one_end is None:
        return "none found"
    return format_interval(float(p.phase_one_end), p.phase_one_low, p.phase_one_high, "{:,.0f}")


def _step(t: int | None) -> str:
    return "not reached" if t is None else f"{t:,}"


@dataclass
class SpawningReport:
    """What the chapter shows (see the module docstring)."""

    by_model: dict[str, xr.Dataset]
    phases: dict[str, dict[int, an.SeedPhase]]
    tolerance: dict[str, float]
    facts: Facts

    @property
    def models(self) -> list[str]:
        return list(self.by_model)

    def tolerances(self, model: str) -> tuple[float, float]:
        """The two tolerances of the onset: the test set's resolution and Frankle et al.'s 2 points."""
        return self.tolerance[model], an.FRANKLE_TOLERANCE

    def barrier_table(self, model: str) -> pd.DataFrame:
        """Rows: spawn steps. Columns: the error barrier (percentage points) and the loss barrier
        (nats) of every seed and their mean over seeds [95% Student-t interval]."""
        ds = self.by_model[model]
        out = pd.DataFrame({"spawn step": [f"{int(t):,}" for t in ds["spawn_step"].values]})
        for name, label, fmt in (("error_barrier", "error barrier (points)", "{:.2f}"),
                                 ("loss_barrier", "loss barrier (nats)", "{:.4f}")):
            summ = an.barrier_summary(ds, name)
            for s in ds["seed"].values.astype(int):
                out[f"{label}, seed {s}"] = [fmt.format(v) for v in summ[f"seed_{s}"]]
            out[f"{label}, mean [95% t]"] = [format_interval(m, lo, hi, fmt)
                                             for m, lo, hi in zip(summ["mean"], summ["low"], summ["high"])]
        return out

    def phase_table(self, model: str) -> pd.DataFrame:
        """Per seed: the end of Phase I [bootstrap interval] of the matching kernel-dynamics run, the
        onset of linear mode connectivity at each tolerance and where it lies relative to that end."""
        ds = self.by_model[model]
        tol, frankle = self.tolerances(model)
        t = an.onset_table(ds, self.phases[model], (tol, frankle))
        return pd.DataFrame({
            "seed": t.seed,
            "end of Phase I t* [95%]": [phase_interval_text(self.phases[model][int(s)]) for s in t.seed],
            f"onset (barrier ≤ {tol:.2f} points)": [_step(v) for v in t.onset_0],
            "relative to t*": t.relation_0,
            f"onset (barrier ≤ {frankle:g} points)": [_step(v) for v in t.onset_1],
            "relative to t* ": t.relation_1,
            "kernel-dynamics verdict": t.kd_verdict,
        })

    def kernel_table(self, model: str) -> pd.DataFrame:
        """Rows: spawn steps. Per seed: the chord between the children's kernels at T, and its ratio
        to the chord between two independent draws from the seed's Phase II noise ball."""
        ds = self.by_model[model]
        kv = an.sibling_vs_jitter(ds, self.phases[model])
        out = pd.DataFrame({"spawn step": [f"{int(t):,}" for t in ds["spawn_step"].values]})
        for s in ds["seed"].values.astype(int):
            rows = kv[kv.seed == s].set_index("spawn_step").loc[ds["spawn_step"].values]
            out[f"sibling chord √(2S), seed {s}"] = [f"{v:.3f}" for v in rows.chord]
            out[f"÷ √2·J, seed {s}"] = ["—" if not np.isfinite(v) else f"{v:.2f}" for v in rows.ratio]
        return out

    def answer(self, model: str, which: int = 0) -> str:
        """One of :data:`ANSWERS` from the seeds' relations at tolerance ``which`` (0: the test
        set's resolution, 1: Frankle et al.'s 2 points)."""
        t = an.onset_table(self.by_model[model], self.phases[model], self.tolerances(model))
        rels = list(t[f"relation_{which}"])
        known = [r for r in rels if r != "no Phase I end"]
        note = "" if len(known) == len(rels) else \
            f" ({len(rels) - len(known)} of {len(rels)} seeds have no end of Phase I and are left out)"
        rel = set(known)
        if not rel:
            return ANSWERS["unknown"]
        for key in ("before", "within"):
            if rel == {key}:
                return ANSWERS[key] + note
        if rel <= {"after", "not reached"}:
            return ANSWERS["after"] + note
        counts = pd.Series(known).value_counts()
        return ANSWERS["mixed"] + f" ({'; '.join(f'{n} × {v}' for v, n in counts.items())})" + note

    def findings(self, model: str) -> str:
        """What the runs of ``model`` show, as Markdown bullet points (every number from the runs)."""
        f = self.facts[model]
        lines = [
            f"* **Barrier at the start.** Children spawned at step {f.step0} end with a test error barrier of "
            f"{f.barrier0} points and a loss barrier of {f.loss0} nats (mean over {f.n_seeds} seeds [95% Student-t "
            f"interval]); the largest error barrier of any spawn step and seed is {f.max_barrier} points.",
            f"* **Onset of linear mode connectivity.** The error barrier stays within the test set's resolution "
            f"({f.tol} points, three binomial standard errors of a {f.child_error}% error on {f.n_test} images) in every "
            f"seed from spawn step **{f.onset}** on, and within Frankle et al.'s 2 points from step {f.onset_frankle} on.",
            f"* **The end of Phase I** on the kernel-dynamics runs of the same training: {f.phase_ends} (per seed, "
            f"bootstrap 95% interval). Does Phase I end when the children become linearly connected? At the test "
            f"set's resolution, {f.answer}; at 2 points, {f.answer_frankle}.",
            f"* **The kernels of siblings.** Children spawned at or after the end of Phase I end with kernels "
            f"{f.late_chord} apart (chord √(2S)), that is {f.late_ratio} times √2·J, the distance between two single "
            f"kernels of one run's Phase II noise ball (J = {f.jitter} per seed); children spawned at step 0 end "
            f"{f.chord0} apart ({f.ratio0} × √2·J).",
            f"* **Optimisation state.** Children's final test accuracy {f.child_acc}, train loss {f.child_loss}; the "
            f"parents {f.parent_acc} and {f.parent_loss}.",
        ]
        return "\n".join(lines)


def _model_of(ds: xr.Dataset) -> str:
    cfg = json.loads(ds.attrs.get("config_full_json") or ds.attrs.get("config_json") or "{}")
    return str(cfg.get("model", "lenet5"))


def _range_pct(lo_hi: tuple[float, float], scale: float = 100.0, fmt: str = "{:.2f}", unit: str = "%") -> str:
    return describe_range([scale * lo_hi[0], scale * lo_hi[1]], fmt, unit=unit)


def _model_facts(ds: xr.Dataset, phases: dict[int, an.SeedPhase], tol: float) -> Facts:
    err = an.barrier_summary(ds, "error_barrier")
    loss = an.barrier_summary(ds, "loss_barrier")
    first = err.iloc[0]
    kv = an.sibling_vs_jitter(ds, phases)
    ends = [p.phase_one_end for p in phases.values() if p.phase_one_end is not None]
    late = kv[kv.spawn_step >= (max(ends) if ends else np.inf)]
    at0 = kv[kv.spawn_step == int(ds["spawn_step"].values.min())]
    eb = ds["error_barrier"]
    i = np.unravel_index(int(np.nanargmax(eb.values)), eb.shape)
    cs = an.child_summary(ds)
    f = Facts(
        n_seeds=int(ds.sizes["seed"]),
        step0=f"{int(first.spawn_step):,}",
        barrier0=format_interval(first["mean"], first["low"], first["high"], "{:.2f}"),
        loss0=format_interval(loss.iloc[0]["mean"], loss.iloc[0]["low"], loss.iloc[0]["high"], "{:.4f}"),
        max_barrier=f"{float(eb.values[i]):.2f} (spawn step {int(ds['spawn_step'].values[i[0]]):,}, seed "
                    f"{int(ds['seed'].values[i[1]])})",
        tol=f"{tol:.2f}", n_test=f"{int(ds.attrs.get('n_test', 0)):,}",
        child_error=f"{100 * (1 - float(ds['child_test_acc'].mean())):.2f}",
        onset=_step(an.lmc_onset(ds, tol)), onset_frankle=_step(an.lmc_onset(ds, an.FRANKLE_TOLERANCE)),
        phase_ends="; ".join(f"seed {s}: {phase_interval_text(p)}" for s, p in phases.items()),
        late_chord=describe_range(late.chord, "{:.3f}", none="— (no spawn step after every seed's end of Phase I)"),
        late_ratio=describe_range(late.ratio, "{:.2f}", none="—"),
        chord0=describe_range(at0.chord, "{:.3f}"), ratio0=describe_range(at0.ratio, "{:.2f}", none="—"),
        jitter=describe_range([p.jitter_radius if p.same_kernel else np.nan for p in phases.values()], "{:.3f}",
                              none="not measured"),
        child_acc=_range_pct(cs["child_test_acc"]), child_loss=_range_pct(cs["child_train_loss"], 1.0, "{:.1e}", ""),
        parent_acc=_range_pct(cs["parent_test_acc"]), parent_loss=_range_pct(cs["parent_train_loss"], 1.0, "{:.1e}", ""),
        wall_min=f"{float(ds.attrs.get('wall_seconds', np.nan)) / 60:.0f}",
        cpu_min=f"{float(ds.attrs.get('cpu_seconds', np.nan)) / 60:.0f}",
        child_steps=f"{int(ds.attrs.get('child_steps', 0)):,}",
    )
    return f


def spawning_report(results: Sequence[xr.Dataset], *, results_root: str | Path | None = None,
                    k: float = 3.0, n_boot: int = 200) -> SpawningReport:
    """The chapter's report from one stored spawning Dataset per model.

    Args:
        results: the spawning Datasets (one per model).
        results_root: where the matching kernel-dynamics runs are stored (for the end of Phase I).
        k: the onset's tolerance is ``k`` binomial standard errors of the children's test error.
        n_boot: bootstrap draws of :func:`conelib.measures.assess` on each kernel-dynamics run.
    """
    if not results:
        raise ValueError("no spawning results to report on")
    by_model = {_model_of(ds): ds for ds in results}
    phases = {m: an.phase_one_of_seeds(ds, results_root=results_root, n_boot=n_boot) for m, ds in by_model.items()}
    tolerance = {m: an.default_tolerance(ds, k) for m, ds in by_model.items()}
    first = results[0]
    cfg = json.loads(first.attrs.get("config_full_json") or first.attrs["config_json"])
    facts = Facts(
        dataset=cfg.get("dataset"), T=f"{int(cfg.get('steps', 0)):,}", lr=f"{cfg.get('lr', 0):g}",
        batch=cfg.get("batch_size"), momentum=f"{cfg.get('momentum', 0):g}", wd=f"{cfg.get('weight_decay', 0):g}",
        spawn_steps=", ".join(f"{int(t):,}" for t in first["spawn_step"].values), children=int(first.sizes["child"]),
        points=int(first.sizes["alpha"]), probe=int(first.attrs.get("probe_size", 0)),
        kernel_kind=str(first.attrs.get("kernel_kind", "")), n_test=f"{int(first.attrs.get('n_test', 0)):,}",
        models=", ".join(by_model), seeds=", ".join(str(int(s)) for s in first["seed"].values), k=f"{k:g}",
        frankle=f"{an.FRANKLE_TOLERANCE:g}", n_boot=int(n_boot),
    )
    facts.costs = "; ".join(
        f"{m}: {float(ds.attrs.get('wall_seconds', np.nan)) / 60:.0f} min wall and "
        f"{float(ds.attrs.get('cpu_seconds', np.nan)) / 60:.0f} CPU-minutes for {int(ds.attrs.get('child_steps', 0)):,} "
        f"child steps and {int(ds.sizes['seed'])} parents of {int(cfg.get('steps', 0)):,} steps "
        f"({int(ds.attrs.get('torch_num_threads', 0))} torch thread(s), {ds.attrs.get('device', 'unknown')})"
        for m, ds in by_model.items())
    report = SpawningReport(by_model, phases, tolerance, facts)
    for m, ds in by_model.items():
        mf = _model_facts(ds, phases[m], tolerance[m])
        facts[m] = mf
        mf.answer = report.answer(m, 0)
        mf.answer_frankle = report.answer(m, 1)
    return report
