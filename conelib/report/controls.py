"""The controls of the chapter "Is it a cone?": facts, small tables and plain sentences.

:func:`controls_report` reads the summaries of ``sweeps/controls.yaml`` (:math:`T = 10^4`: the
learning-rate decay after Phase I, momentum at the base's effective step, with a warm-up, and the
Figure 3 candidate) and ``sweeps/long.yaml`` (:math:`T = 3 \\times 10^4`), and optionally the atlas
summary (the jitter radius against :math:`\\eta / B`), through :mod:`conelib.analysis.controls`, and
returns what the chapter glues. Every claim is phrased from what all, some or none of the seeds
show (:func:`quantify`), with the intervals; where a control contradicts the noise-ball reading or
the paper's reading, the sentence says so.

A self-check cell for the chapter's notebook::

    from conelib.analysis.atlas import load_summary
    from conelib.report.controls import controls_report
    from conelib.charts.controls import jitter_schedule_chart, long_run_chart, verdict_loss_chart

    rep = controls_report(load_summary("controls"), load_summary("long"), atlas=load_summary("atlas"))
    print(rep.sentences["noise_ball"])        # the learning-rate decay against the prediction
    print(rep.sentences["long"])              # converging or a stationary wobble?
    print(rep.sentences["counterexample"])    # "no two phases" or "not converged"?
    print(rep.sentences["synthesis"])         # momentum or step size? under-trained?
    display(rep.decay_table(), rep.runs_table(), rep.long_table(), rep.counterexample_table())
    assert rep.facts.n_decay_runs == "6" and rep.facts.n_long_runs == "6"   # every run stored
    jitter_schedule_chart(rep.controls) & verdict_loss_chart(rep.runs) & long_run_chart(rep.long)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from conelib.analysis import controls as C
from conelib.analysis.text import Facts, describe_range, format_interval

__all__ = ["ControlsReport", "controls_report", "quantify", "decay_sentence", "long_sentence",
           "prefix_sentence", "counterexample_sentence", "synthesis_sentence", "atlas_sentence",
           "phase_two_sentence"]


def quantify(k: int, n: int, noun: str = "seeds") -> str:
    """``"all 3 seeds"``, ``"none of the 3 seeds"``, ``"2 of 3 seeds"``; ``"both seeds"`` and
    ``"neither seed"`` for two, ``"the one seed"`` and ``"no seed"`` for one. Reads after "in"."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    one = noun[:-1] if noun.endswith("s") else noun
    if n == 1:
        return f"the one {one}" if k == 1 else f"no {one}"
    if n == 2 and k in (0, 2):
        return f"both {noun}" if k == 2 else f"neither {one}"
    if k == n:
        return f"all {n} {noun}"
    if k == 0:
        return f"none of the {n} {noun}"
    return f"{k} of {n} {noun}"


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "—"
    return fmt.format(x) if np.isfinite(x) else "—"


def _iv(v: float, lo: float, hi: float, fmt: str = "{:.2f}") -> str:
    return format_interval(v, lo, hi, fmt)


def _factor_text(factor: float) -> str:
    inv = 1.0 / factor
    return f"divided by {inv:g}" if abs(inv - round(inv)) < 1e-9 else f"multiplied by {factor:g}"


# --------------------------------------------------------------------------------------------
# sentences (pure functions of the analysis tables: tested on constructed tables)
# --------------------------------------------------------------------------------------------


def decay_sentence(seeds_row: pd.Series | dict, rows: pd.DataFrame, milestone: int) -> str:
    """What one decay factor does to the jitter radius, against the noise-ball prediction (plain,
    and adjusted for the decayed run's higher training loss when the table has it).

    Args:
        seeds_row: a row of :func:`conelib.analysis.controls.lr_decay_seeds`.
        rows: the rows of :func:`conelib.analysis.controls.lr_decay_table` for that factor.
        milestone: the step of the decay.
    """
    r = dict(seeds_row)
    n = len(rows)
    factor = float(r["factor"])
    pred = f"{_f(r['pred_lo'])}–{_f(r['pred_hi'])}"
    head = (f"With the learning rate {_factor_text(factor)} at step {milestone:,}, the jitter radius after step "
            f"{int(rows['after'].iloc[0][0]):,} is {_iv(r['paired'], r['paired_lo'], r['paired_hi'])} times the "
            f"same seed's undecayed run (geometric mean over {n} seeds, 95% hierarchical-bootstrap interval; "
            f"per seed {describe_range(rows['paired'], '{:.2f}')}); an SGD noise ball with fixed noise predicts {pred}.")
    within = int((rows["against"] == "within").sum())
    above = int((rows["against"] == "above").sum())
    below = int((rows["against"] == "below").sum())
    text = head + (f" The interval of {quantify(within, n)} overlaps that range"
                   + (f"; {quantify(above, n)} lie above it" if above else "")
                   + (f"; {quantify(below, n)} lie below it" if below else "") + ".")
    adjusted = "against_loss" in r and np.isfinite(float(r.get("loss_ratio", np.nan)))
    if adjusted:
        wl = int((rows["against_loss"] == "within").sum())
        text += (f" The decayed runs' training loss stays {_f(r['loss_ratio'], '{:.1f}')} times the undecayed runs' "
                 f"over that window (geometric mean); if SGD's noise scales with the loss, the prediction becomes "
                 f"{_f(r['pred_loss_lo'])}–{_f(r['pred_loss_hi'])}, which the interval of {quantify(wl, n)} overlaps.")
    if "paired_soon" in r and np.isfinite(float(r["paired_soon"])):
        w = rows["soon"].iloc[0]
        ws = int((rows["against_soon"] == "within").sum())
        text += (f" Soon after the decay (windows centred on steps {int(w[0]):,}–{int(w[1]):,}, losses within a factor "
                 f"{_f(r['loss_ratio_soon'], '{:.1f}')}), the ratio is "
                 f"{_iv(r['paired_soon'], r['paired_soon_lo'], r['paired_soon_hi'])} against "
                 f"{_f(r['pred_soon_lo'])}–{_f(r['pred_soon_hi'])} predicted ({r['against_soon']}; "
                 f"the interval of {quantify(ws, n)} overlaps it).")
    plain, loss = r["against"], r.get("against_loss") if adjusted else None
    no_shrink = int((rows["paired_hi"] >= 1.0).sum())
    if plain == "within":
        text += (" This is what the noise-ball reading predicts: the Phase II jitter scales with the step size as "
                 "SGD noise does.")
    elif plain == "above" and loss == "within":
        text += (" The jitter shrinks less than a noise ball with fixed noise would, but as much as one whose noise "
                 "follows the decayed run's higher loss: consistent with the noise-ball reading once the loss is "
                 "accounted for.")
    elif plain == "above" and no_shrink == n:
        text += (" The jitter does not shrink with the step size in any seed: this contradicts the reading "
                 "of the Phase II jitter as an SGD noise ball.")
    elif plain == "above":
        text += (" The jitter shrinks, but less than an SGD noise ball would" + (" even with the loss accounted for"
                 if adjusted else "") + ": the data contradict the pure noise-ball reading (part of the Phase II "
                 "movement does not scale with the step).")
    elif plain == "below":
        text += (" The jitter shrinks more than the noise-ball bounds allow (e.g. the smaller step has not "
                 "let the new ball fill in by the end of the run); the shrinking itself is what the "
                 "noise-ball reading predicts.")
    else:
        text += " The interval could not be determined."
    return text


def long_sentence(rows: pd.DataFrame, cell: str = "base setting") -> str:
    """Converging or still moving: the long runs of one cell (rows of
    :func:`conelib.analysis.controls.long_run_table`)."""
    n = len(rows)
    T = int(rows["steps"].iloc[0])
    two = rows[rows["verdict"] != "no two phases"]
    conv = int((rows["drift_decay_lo"] > 1.0).sum())
    conv_point = int((rows["verdict"] == "two phases, converging").sum())
    shrink = int((rows["j_ratio_hi"] < 1.0).sum())
    verdicts = "; ".join(f"seed {int(s)}: {v} ({100 * a:.0f}% of draws)"
                         for s, v, a in zip(rows["seed"], rows["verdict"], rows["verdict_agreement"]))
    text = (f"Run to T = {T:,} ({cell}), the verdicts are {verdicts}. "
            f"The drift decay α is {describe_range(rows['drift_decay'], '{:.2f}')} "
            f"(its interval lies above 1, a converging kernel, in {quantify(conv, n)}), the growth exponent γ "
            f"{describe_range(rows['growth_exponent'], '{:.2f}')}, and the jitter radius over the last third of the "
            f"run is {describe_range(rows['j_ratio'], '{:.2f}')} times that over steps "
            f"{int(rows['early'].iloc[0][0]):,}–{int(rows['early'].iloc[0][1]):,} (below 1 with its interval in "
            f"{quantify(shrink, n)}).")
    if len(two) == 0:
        return text + " No seed shows two phases, so the Phase II reading does not apply."
    if conv_point == n and conv == n:
        text += " The kernel converges: its Phase II drift slows faster than 1/t, so its path is finite."
    elif conv_point == n:
        text += (f" The point estimates say converging in {quantify(n, n)}, but the interval of α reaches below 1 in "
                 f"{quantify(n - conv, n)}: convergence is suggested, not established.")
    elif conv_point == 0 and conv == 0:
        text += (" The kernel does not converge at this length: its Phase II drift does not slow faster than 1/t in "
                 "any seed.")
    else:
        text += f" The kernel is labelled converging in {quantify(conv_point, n)} only: the long runs do not settle it."
    exps = rows["jitter_loss_exponent"]
    if np.isfinite(exps).any():
        text += (f" The jitter radius falls with the training loss as loss^{describe_range(exps, '{:.2f}')} "
                 "(1/2 for SGD noise proportional to the loss).")
    return text


def prefix_sentence(rows: pd.DataFrame) -> str:
    """Does the end of Phase I read from the first :math:`10^4` steps agree with the whole run's?"""
    n = len(rows)
    agree = int(rows["phase_one_agree"].sum())
    prefix = int(rows["prefix"].iloc[0])
    T = int(rows["steps"].iloc[0])
    same = int((rows["prefix_verdict"] == rows["verdict"]).sum())
    pairs = "; ".join(f"seed {int(s)}: {_f(a, '{:,.0f}')} vs {_f(b, '{:,.0f}')}" for s, a, b in
                      zip(rows["seed"], rows["prefix_phase_one_end"], rows["phase_one_end"]))
    return (f"The end of Phase I read from the first {prefix:,} steps and from all {T:,} ({pairs}) agree within "
            f"their bootstrap intervals in {quantify(agree, n)}; the verdict of the first {prefix:,} steps is the "
            f"whole run's in {quantify(same, n)}.")


def counterexample_sentence(row: pd.Series | dict, what: str) -> str:
    """One counterexample control (a row of :func:`conelib.analysis.controls.counterexample_table`)."""
    r = dict(row)
    n, k = int(r["n"]), int(r["n_two_phases"])
    fit = int(r["n_fit"])
    verdicts = ", ".join(dict.fromkeys(r["verdicts"]))
    text = (f"{what} (T = {int(r['steps']):,}, effective step {r['effective_step']:g}): "
            f"two phases in {quantify(k, n)} ({verdicts}); final train loss "
            f"{describe_range(r['final_train_loss'], '{:.1e}')}, test accuracy "
            f"{describe_range(100 * np.asarray(r['final_test_acc'], float), '{:.2f}', unit='%')}; the training set is "
            f"fit (train accuracy ≥ {100 * C.FIT_ACCURACY:.0f}%) in {quantify(fit, n)}.")
    if k < n and fit < n:
        none_unfit = sum(1 for v, a in zip(r["verdicts"], r["final_train_acc"])
                         if v == "no two phases" and not a >= C.FIT_ACCURACY)
        if none_unfit:
            text += f" Of the runs without two phases, {none_unfit} had not fit the training set: not converged."
    if isinstance(r.get("matched_step"), list):
        steps = r["matched_step"]
        reached = [(s, v) for s, v in zip(steps, r["matched_verdict"]) if s is not None]
        if reached:
            k2 = sum(1 for _, v in reached if v != "no two phases")
            text += (f" Read at the step where it first reaches the base's final train loss at T = 10^4 "
                     f"(reached in {quantify(len(reached), n)}, at steps "
                     f"{describe_range([s for s, _ in reached], '{:,.0f}')}), it shows two phases in "
                     f"{quantify(k2, len(reached), 'runs')}.")
        else:
            text += f" None of the seeds reaches the base's final train loss by step {int(r['steps']):,}."
    return text


def _find(counter: pd.DataFrame, *, lr: float, wd: float, warmup: bool, longest: bool = False) -> dict | None:
    """The momentum-0.9 cell of the counterexample table with these settings (the shortest runs, or
    the longest with ``longest``); ``None`` if there is none."""
    if counter.empty:
        return None
    sel = counter[np.isclose(counter.momentum, 0.9) & np.isclose(counter.lr, lr) & np.isclose(counter.weight_decay, wd)
                  & ((counter.warmup_steps > 0) == warmup)]
    if sel.empty:
        return None
    return dict(sel.sort_values("steps").iloc[-1 if longest else 0])


def _two(r: dict) -> str:
    return f"two phases in {quantify(int(r['n_two_phases']), int(r['n']))}"


def synthesis_sentence(counter: pd.DataFrame) -> str:
    """What the momentum controls say together (rows of
    :func:`conelib.analysis.controls.counterexample_table`): momentum or step size, warm-up, and
    "no two phases" against "not converged" for the Figure 3 candidate trained longer."""
    out = []
    for wd in (0.0, 5e-3):
        high = _find(counter, lr=0.1, wd=wd, warmup=False)
        matched = _find(counter, lr=0.01, wd=wd, warmup=False)
        if high is None or matched is None:
            continue
        label = "momentum 0.9" + (f" with weight decay {wd:g}" if wd else "")
        kh, km = int(high["n_two_phases"]), int(matched["n_two_phases"])
        nh, nm = int(high["n"]), int(matched["n"])
        text = (f"With {label}, lr 0.1 (effective step {high['effective_step']:g}) gives {_two(high)}, lr 0.01 "
                f"(effective step {matched['effective_step']:g}, the base's) {_two(matched)}")
        if km == nm and kh < nh:
            text += ": at the base's effective step the two phases are back, so the step size, not momentum, removes them."
        elif km == 0 and kh == 0:
            text += ": momentum removes the early phase even at the base's effective step."
        elif km == kh:
            text += ": matching the effective step changes nothing."
        else:
            text += ": the seeds do not settle whether it is momentum or the step size."
        out.append(text)
    high, warm = _find(counter, lr=0.1, wd=0.0, warmup=False), _find(counter, lr=0.1, wd=0.0, warmup=True)
    if high is not None and warm is not None:
        kh, kw, nw = int(high["n_two_phases"]), int(warm["n_two_phases"]), int(warm["n"])
        text = (f"A linear warm-up over the first {int(warm['warmup_steps']):,} steps at lr 0.1 gives {_two(warm)} "
                f"(without it: {_two(high)})")
        text += (": the warm-up restores an early phase." if kw == nw and kh < int(high["n"]) else
                 ": the warm-up does not change the verdict." if kw == kh else ".")
        out.append(text)
    short, long = _find(counter, lr=0.1, wd=5e-3, warmup=False), _find(counter, lr=0.1, wd=5e-3, warmup=False,
                                                                        longest=True)
    if short is not None and long is not None and int(long["steps"]) > int(short["steps"]):
        n = int(long["n"])
        text = (f"The Figure 3 candidate (momentum 0.9, weight decay 0.005, lr 0.1) ends at train loss "
                f"{describe_range(short['final_train_loss'], '{:.2f}')} at T = {int(short['steps']):,} and "
                f"{describe_range(long['final_train_loss'], '{:.2g}')} at T = {int(long['steps']):,}; it fits the training "
                f"set in {quantify(int(long['n_fit']), n)} and shows {_two(long)} over the long run")
        if int(long["n_fit"]) == 0:
            text += (": it never converges at this step size, so its \"no two phases\" is the verdict on a run that has "
                     "not finished optimising." if int(long["n_two_phases"]) == 0 else
                     ", without fitting the training set.")
        elif int(long["n_two_phases"]) == n:
            text += ": once trained longer it has two phases, so its \"no two phases\" at T = 10^4 was an under-trained run."
        else:
            text += "."
        out.append(text)
    return " ".join(out)


def phase_two_sentence(runs: pd.DataFrame) -> str:
    """Whether momentum changes the Phase II verdict: for each momentum cell without weight decay
    or warm-up (rows of :func:`conelib.analysis.controls.control_table`), how many of its stored
    seeds get the base setting's verdict (the most common one over its seeds), at which effective
    step, and the median jitter radius beside the base's."""
    t = runs[(runs.status == "stored")]
    base = t[t.cell == "base setting"]
    if base.empty:
        return ""
    usual = base.verdict.mode().iloc[0]
    j0 = float(np.median(base.jitter_radius))
    parts = []
    cells = t[(t.momentum.astype(float) > 0) & (t.weight_decay.astype(float) == 0) & (t.warmup_steps.astype(float) == 0)]
    for cell, g in cells.groupby("cell", sort=False):
        same = int((g.verdict == usual).sum())
        parts.append(f"momentum {float(g.momentum.iloc[0]):g} at lr {float(g.lr.iloc[0]):g} (effective step "
                     f"{float(g.effective_step.iloc[0]):g}) gives it in {quantify(same, len(g))} "
                     f"({'; '.join(g.verdict)}), with a median jitter radius {float(np.median(g.jitter_radius)) / j0:.1f} "
                     f"times the base's")
    if not parts:
        return ""
    return (f"The base setting's Phase II verdict is *{usual}* ({quantify(int((base.verdict == usual).sum()), len(base))}); "
            + "; ".join(parts) + ".")


def atlas_sentence(nb: dict[str, Any]) -> str:
    """The jitter radius against :math:`\\eta/B` over the atlas (:func:`conelib.analysis.controls.atlas_noise_ball`)."""
    if not nb.get("n"):
        return "The atlas summary holds no version-3 jitter radius: the lr/B comparison is not available."
    s = nb["slope"]
    where = {"within": "within", "below": "below", "above": "above", "undetermined": "undetermined against"}[nb["against"]]
    text = (f"Over the atlas' {nb['n']} learning-rate × batch-size runs, the Phase II jitter radius rises with "
            f"lr/B (Spearman {_f(nb['rho'])}) with a log-log slope of {_iv(*s)}, {where} the noise-ball "
            f"range 1/2–1.")
    if nb["against"] == "below":
        text += (" It grows more slowly with the noise scale than an SGD noise ball would; across settings the runs also "
                 "differ in how far they trained, so this is the weaker of the two tests.")
    return text


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclass
class ControlsReport:
    """What the chapter shows of the controls (see the module docstring).

    Attributes:
        controls, long, atlas: the summaries read (``None`` where not given).
        runs: :func:`conelib.analysis.controls.control_table` of every control run (both grids).
        decay, decay_seeds: the learning-rate decay per seed and over seeds.
        long_runs: :func:`conelib.analysis.controls.long_run_table`.
        counter: :func:`conelib.analysis.controls.counterexample_table` (with the matched-loss reading).
        noise: :func:`conelib.analysis.controls.atlas_noise_ball` (``{}`` without an atlas).
        facts: formatted numbers; sentences: the chapter's claims by topic.
    """

    controls: xr.Dataset
    long: xr.Dataset | None
    atlas: xr.Dataset | None
    runs: pd.DataFrame
    decay: pd.DataFrame
    decay_seeds: pd.DataFrame
    long_runs: pd.DataFrame
    counter: pd.DataFrame
    noise: dict[str, Any]
    facts: Facts
    sentences: dict[str, str] = field(default_factory=dict)

    def decay_table(self) -> pd.DataFrame:
        """Per decayed run: the jitter radii, the within-run and paired ratios with intervals, the
        prediction, the verdict and the optimisation state (empty when no decayed run is stored)."""
        d = self.decay
        if d.empty:
            return pd.DataFrame()
        return pd.DataFrame({
            "lr factor": [f"×{x:g}" for x in d.factor], "seed": d.seed.astype(int),
            "jitter before": [_f(x, "{:.4f}") for x in d.j_before], "jitter after": [_f(x, "{:.4f}") for x in d.j_after],
            "after / before": [_iv(*x) for x in zip(d.ratio, d.ratio_lo, d.ratio_hi)],
            "undecayed: after / before": [_iv(*x) for x in zip(d.ref_ratio, d.ref_ratio_lo, d.ref_ratio_hi)],
            "paired: decayed / undecayed": [_iv(*x) for x in zip(d.paired, d.paired_lo, d.paired_hi)],
            "noise ball predicts": [f"{_f(a)}–{_f(b)}" for a, b in zip(d.pred_lo, d.pred_hi)],
            "against it": d.against,
            "loss ratio": [_f(x, "{:.1f}") for x in d.loss_ratio],
            "noise ∝ loss predicts": [f"{_f(a)}–{_f(b)}" for a, b in zip(d.pred_loss_lo, d.pred_loss_hi)],
            "against that": d.against_loss,
            "paired, soon after": [_iv(*x) for x in zip(d.paired_soon, d.paired_soon_lo, d.paired_soon_hi)],
            "predicted there": [f"{_f(a)}–{_f(b)}" for a, b in zip(d.pred_soon_lo, d.pred_soon_hi)], "verdict": [f"{v} ({100 * a:.0f}%)" for v, a in zip(d.verdict, d.verdict_agreement)],
            "final train loss": [_f(x, "{:.1e}") for x in d.final_train_loss],
            "test acc.": [_f(100 * x, "{:.2f}%") for x in d.final_test_acc],
        })

    def runs_table(self) -> pd.DataFrame:
        """Every control run: its cell and seed, the verdict with its bootstrap agreement, the
        coordinates with intervals, and the optimisation state at the end."""
        t = self.runs[self.runs.status == "stored"]
        if t.empty:
            return pd.DataFrame()
        return pd.DataFrame({
            "cell": t.cell, "T": t.steps, "seed": t.seed.astype(int), "effective step": t.effective_step,
            "verdict (bootstrap)": [f"{v} ({100 * a:.0f}%)" for v, a in zip(t.verdict, t.verdict_agreement)],
            "t*": [_iv(*x, fmt="{:,.0f}") for x in zip(t.phase_one_end, t.phase_one_end_lo, t.phase_one_end_hi)],
            "drop": [_f(x, "{:.1f}") for x in t["drop"]],
            "jitter radius": [_iv(*x, fmt="{:.4f}") for x in zip(t.jitter_radius, t.jitter_radius_lo, t.jitter_radius_hi)],
            "drift decay α": [_iv(*x) for x in zip(t.drift_decay, t.drift_decay_lo, t.drift_decay_hi)],
            "growth γ": [_iv(*x) for x in zip(t.growth_exponent, t.growth_exponent_lo, t.growth_exponent_hi)],
            "final train loss": [_f(x, "{:.1e}") for x in t.final_train_loss],
            "train acc.": [_f(100 * x, "{:.2f}%") for x in t.final_train_acc],
            "test acc.": [_f(100 * x, "{:.2f}%") for x in t.final_test_acc],
        }).reset_index(drop=True)

    def long_table(self) -> pd.DataFrame:
        """Per long run: the whole run's verdict and coordinates, the first 10^4 steps' end of
        Phase I and verdict, the late-over-early jitter ratio, and the losses."""
        t = self.long_runs
        if t.empty:
            return pd.DataFrame()
        return pd.DataFrame({
            "cell": t.cell, "seed": t.seed.astype(int),
            "verdict": [f"{v} ({100 * a:.0f}%)" for v, a in zip(t.verdict, t.verdict_agreement)],
            "t* (all)": [_iv(*x, fmt="{:,.0f}") for x in zip(t.phase_one_end, t.phase_one_end_lo, t.phase_one_end_hi)],
            "t* (first 10⁴)": [_iv(*x, fmt="{:,.0f}") for x in
                               zip(t.prefix_phase_one_end, t.prefix_phase_one_end_lo, t.prefix_phase_one_end_hi)],
            "verdict (first 10⁴)": t.prefix_verdict,
            "drift decay α": [_iv(*x) for x in zip(t.drift_decay, t.drift_decay_lo, t.drift_decay_hi)],
            "growth γ": [_iv(*x) for x in zip(t.growth_exponent, t.growth_exponent_lo, t.growth_exponent_hi)],
            "jitter trend": [_iv(*x) for x in zip(t.jitter_trend, t.jitter_trend_lo, t.jitter_trend_hi)],
            "jitter late / early": [_iv(*x) for x in zip(t.j_ratio, t.j_ratio_lo, t.j_ratio_hi)],
            "train loss at 10⁴": [_f(x, "{:.1e}") for x in t.prefix_train_loss],
            "final train loss": [_f(x, "{:.1e}") for x in t.final_train_loss],
            "test acc. (10⁴ → T)": [f"{_f(100 * a, '{:.2f}')} → {_f(100 * b, '{:.2f}')}%"
                                    for a, b in zip(t.prefix_test_acc, t.final_test_acc)],
        })

    def counterexample_table(self) -> pd.DataFrame:
        """Per cell: steps, effective step, the verdicts, how many seeds have two phases and fit
        the training set, the final train losses, and (long runs) the verdict at the base's loss."""
        t = self.counter
        if t.empty:
            return pd.DataFrame()
        out = pd.DataFrame({
            "cell": t.cell, "T": t.steps, "effective step": t.effective_step,
            "verdicts": ["; ".join(v) for v in t.verdicts],
            "two phases": [f"{k} of {n}" for k, n in zip(t.n_two_phases, t.n)],
            "fit": [f"{k} of {n}" for k, n in zip(t.n_fit, t.n)],
            "final train loss": [describe_range(x, "{:.1e}") for x in t.final_train_loss],
            "test acc.": [describe_range(100 * np.asarray(x, float), "{:.2f}", unit="%") for x in t.final_test_acc],
        })
        if "matched_step" in t:
            out["at the base's loss"] = [
                "—" if not isinstance(s, list) else "; ".join("not reached" if a is None else f"{a:,}: {b}"
                                                              for a, b in zip(s, v))
                for s, v in zip(t.matched_step, t.matched_verdict)]
        return out


def controls_report(controls: xr.Dataset, long: xr.Dataset | None = None, *, atlas: xr.Dataset | None = None,
                    n_boot: int = 200, seed: int = 0) -> ControlsReport:
    """Read the summaries into the chapter's facts, tables and sentences (see the module docstring).

    Args:
        controls: the summary of ``sweeps/controls.yaml``.
        long: the summary of ``sweeps/long.yaml`` (``None``: no long-run facts).
        atlas: the atlas summary (version 3; ``None``: no lr/B facts).
        n_boot: bootstrap draws for the intervals computed here.
        seed: seeds those draws.
    """
    runs = C.control_table(controls)
    decay = C.lr_decay_table(controls, n_boot=n_boot, seed=seed)
    decay_seeds = C.lr_decay_seeds(decay, seed=seed) if len(decay) else pd.DataFrame()
    long_runs = C.long_run_table(long, n_boot=n_boot, seed=seed) if long is not None else pd.DataFrame()
    base = runs[(runs.status == "stored") & (runs.cell == "base setting")]
    target = float(np.median(base.final_train_loss)) if len(base) else None
    counter = C.counterexample_table([controls])
    if long is not None:  # the long runs also read at the base's train loss
        counter = pd.concat([counter, C.counterexample_table([long], target=target)], ignore_index=True)
    noise = C.atlas_noise_ball(atlas) if atlas is not None else {}
    all_runs = pd.concat([runs] + ([C.control_table(long)] if long is not None else []), ignore_index=True)

    f = Facts()
    stored = runs.status == "stored"
    f.n_control_runs = str(int(stored.sum()))
    f.n_decay_runs = str(len(decay))
    f.n_long_runs = str(len(long_runs))
    f.base_loss = _f(target, "{:.1e}") if target is not None else "—"
    f.minutes = _f(np.nansum(controls["wall_seconds"].values) / 60, "{:.0f}")
    if long is not None:
        f.long_minutes = _f(np.nansum(long["wall_seconds"].values) / 60, "{:.0f}")
    sentences: dict[str, str] = {}
    # the learning-rate decay
    parts = []
    for _, r in decay_seeds.iterrows():
        rows = decay[np.isclose(decay.factor, r.factor)]
        key = f"x{1 / r.factor:g}"
        f[f"decay_{key}"] = _iv(r.paired, r.paired_lo, r.paired_hi)
        f[f"decay_{key}_pred"] = f"{_f(r.pred_lo)}–{_f(r.pred_hi)}"
        f[f"decay_{key}_against"] = r.against
        f[f"decay_{key}_loss_ratio"] = _f(r.loss_ratio, "{:.1f}")
        f[f"decay_{key}_pred_loss"] = f"{_f(r.pred_loss_lo)}–{_f(r.pred_loss_hi)}"
        f[f"decay_{key}_against_loss"] = r.against_loss
        f[f"decay_{key}_soon"] = _iv(r.paired_soon, r.paired_soon_lo, r.paired_soon_hi)
        f[f"decay_{key}_pred_soon"] = f"{_f(r.pred_soon_lo)}–{_f(r.pred_soon_hi)}"
        f[f"decay_{key}_against_soon"] = r.against_soon
        f[f"decay_{key}_verdicts"] = "; ".join(rows.verdict)
        parts.append(decay_sentence(r, rows, int(rows.milestone.iloc[0])))
    if parts:
        ref = decay.drop_duplicates("reference")
        parts.append(f"Without the decay the jitter radius changes by a factor "
                     f"{describe_range(ref.ref_ratio, '{:.2f}')} between the same windows (the seeds' undecayed runs), "
                     f"and over the after window it goes as the training loss to the power "
                     f"{describe_range(ref.ref_jitter_loss_exponent, '{:.2f}')} (1/2 for noise proportional to the "
                     f"loss, 0 for fixed noise).")
        f.ref_jitter_loss_exponent = describe_range(ref.ref_jitter_loss_exponent, "{:.2f}")
    sentences["noise_ball"] = " ".join(parts) or "No decayed run is stored."
    # the long runs
    if len(long_runs):
        texts = [long_sentence(g, cell) for cell, g in long_runs.groupby("cell", sort=False)]
        base_long = long_runs[long_runs.cell == "base setting"]
        sentences["long"] = " ".join(texts)
        sentences["prefix"] = prefix_sentence(base_long if len(base_long) else long_runs)
        for cell, g in long_runs.groupby("cell", sort=False):
            key = "base" if cell == "base setting" else "fig3" if "momentum" in cell else re.sub(r"\W+", "_", cell)
            f[f"long_{key}_alpha"] = describe_range(g.drift_decay, "{:.2f}")
            f[f"long_{key}_gamma"] = describe_range(g.growth_exponent, "{:.2f}")
            f[f"long_{key}_jratio"] = describe_range(g.j_ratio, "{:.2f}")
            f[f"long_{key}_loss"] = describe_range(g.final_train_loss, "{:.1e}")
            f[f"long_{key}_verdicts"] = "; ".join(g.verdict)
    # the counterexample
    texts = []
    for _, r in counter.iterrows():
        if r.momentum == 0:
            continue
        what = (f"Momentum 0.9 at lr {r.lr:g}" + (f", weight decay {r.weight_decay:g}" if r.weight_decay else "")
                + (f", warm-up over {r.warmup_steps:,} steps" if r.warmup_steps else ""))
        texts.append(counterexample_sentence(r, what))
    sentences["counterexample"] = " ".join(texts) or "No momentum control is stored."
    sentences["synthesis"] = synthesis_sentence(counter)
    sentences["phase_two"] = phase_two_sentence(runs)
    sentences["atlas"] = atlas_sentence(noise) if atlas is not None else ""
    if noise:
        f.atlas_slope = _iv(*noise["slope"])
        f.atlas_rho = _f(noise["rho"])
        f.atlas_n = str(noise["n"])
    return ControlsReport(controls, long, atlas, all_runs, decay, decay_seeds, long_runs, counter, noise, f, sentences)
