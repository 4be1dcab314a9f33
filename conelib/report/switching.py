"""The switching chapter (the paper's Figure 2): the facts, tables and sentences it shows.

:func:`switching_report` takes the stored switching results (one per model) and their
configurations and returns a :class:`SwitchingReport`: the setting (:attr:`SwitchingReport.facts`),
per model a table of every switching step (:meth:`SwitchingReport.table`), McNemar's p-values per
seed (:meth:`SwitchingReport.mcnemar_table`), the claims with a plain yes / no / cannot tell
(:meth:`SwitchingReport.claims`, which the chapter "Is it a cone?" also reads) and the sentences
that say what the runs show (:meth:`SwitchingReport.findings`). :func:`profile_report` does the
same for the stored runs of a profile without computing anything (for other chapters)::

    from conelib.report.switching import profile_report

    report = profile_report("mnist")
    report.claims("lenet_300_100")["later_better_at_matched_loss"].supported   # True / False / None

"Later is better" is read at the comparison step ``compare_from`` fixed in advance in the
configuration (the profile), never from the data; the end of Phase I measured on the
kernel-dynamics runs of the same training is quoted beside it. A claim is *supported* when the
95% paired-bootstrap interval (seeds and test images; :func:`conelib.analysis.switching.compare`)
lies above zero, *contradicted* when it lies below, and *not shown* otherwise; results without
per-image data use the Student-t interval over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from conelib.analysis.switching import (
    Comparison,
    arm_metric,
    compare,
    end_step,
    has_per_image,
    paired_gain,
    phase_one_ends,
    standard_step_at_loss,
    switch_steps,
)
from conelib.analysis.text import Facts, describe_range, format_interval
from conelib.experiments.switching import EXPERIMENT, SwitchingConfig, config_of, switching_configs
from conelib.results import load_result, result_path

__all__ = ["Claim", "ModelFindings", "SwitchingReport", "switching_report", "profile_report", "CLAIMS"]

#: the claims the chapter weighs (name -> what it says)
CLAIMS: dict[str, str] = {
    "later_better_at_T": "switching after Phase I later rather than at the comparison step lowers the test error at T",
    "later_better_at_matched_loss": "the same, with every model compared at the standard run's final train loss",
    "later_better_small_lr": "the same for the small-learning-rate baseline (the kernel keeps moving, slowly)",
    "standard_beats_linearized_at_equal_loss": "at the train loss the linearized continuation from the comparison "
                                               "step ends at, the standard run has the lower test error",
    "small_lr_beats_linearized": "at the comparison step, slow standard training beats linearized training at T",
    "test_loss_rises_late": "the standard run's test loss rises after its minimum (overconfidence)",
}

#: the p-value below which a seed's McNemar test is counted as significant
ALPHA = 0.05


@dataclass(frozen=True)
class Claim:
    """One claim about one model: ``supported`` is True / False, or None when it cannot be told
    (missing data); ``sentence`` says it with its numbers."""

    name: str
    supported: bool | None
    sentence: str


def _verdict(c: Comparison) -> bool | None:
    """True: interval above 0; False: not above 0 (includes it or below); None: not available on every seed."""
    return c.supports_gain()


def _interval(c: Comparison, scale: float = 100.0, fmt: str = "{:+.2f}") -> str:
    """``"+0.12 [+0.05, +0.20]"`` points: the bootstrap interval (t-interval without per-image data)."""
    lo, hi = (c.boot.low, c.boot.high) if c.boot is not None else (c.gain.low, c.gain.high)
    return format_interval(c.gain.mean * scale, lo * scale, hi * scale, fmt)


def _interval_kind(ds: xr.Dataset) -> str:
    return "95% paired bootstrap over seeds and test images" if has_per_image(ds) else "95% Student-t over seeds"


def _mcnemar_text(c: Comparison) -> str:
    if not c.tests:
        return "no per-image data"
    up, down = c.n_significant(ALPHA)
    ps = sorted(x.p_mid for x in c.tests)
    return (f"McNemar (mid-p < {ALPHA}) in {up} of {len(c.tests)} seeds in favour, {down} against; median p = "
            f"{np.median(ps):.2g}")


@dataclass
class ModelFindings:
    """Everything the chapter says about one model (built by :func:`switching_report`)."""

    model: str
    ds: xr.Dataset
    config: SwitchingConfig
    compare_from: int | None
    phase_one: pd.DataFrame
    rows: pd.DataFrame
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)


@dataclass
class SwitchingReport:
    """What the chapter shows (see the module docstring)."""

    by_model: dict[str, ModelFindings]
    facts: Facts

    @property
    def models(self) -> list[str]:
        return list(self.by_model)

    def dataset(self, model: str) -> xr.Dataset:
        return self.by_model[model].ds

    def compare_from(self, model: str) -> int | None:
        return self.by_model[model].compare_from

    def table(self, model: str) -> pd.DataFrame:
        """One row per switching step: test error and test loss at T (mean over seeds [95% t-interval]),
        the test error at matched train loss and of the small-lr baseline, and the paired gains in
        test error (points) over t = 0 and over the comparison step, with their intervals."""
        return self.by_model[model].rows

    def mcnemar_table(self, model: str) -> pd.DataFrame:
        """Per seed, McNemar's mid-p and exact p-values (and the images gained / lost) of each
        comparison from the comparison step (and from t = 0) to T; empty without per-image data."""
        f = self.by_model[model]
        rows = []
        for name, c in f.comparisons.items():
            for s, x in zip(c.seeds, c.tests):
                rows.append({"comparison": f"{c.frm} → {c.to}", "key": name, "seed": s, "gained": x.gained,
                             "lost": x.lost, "p_mid": x.p_mid, "p_exact": x.p_exact})
        return pd.DataFrame(rows, columns=["comparison", "key", "seed", "gained", "lost", "p_mid", "p_exact"])

    def claims(self, model: str) -> dict[str, Claim]:
        """:data:`CLAIMS` for ``model``, each with its verdict and sentence."""
        return self.by_model[model].claims

    def findings(self, model: str) -> str:
        """What the runs of ``model`` show, as Markdown bullet points (every number from the runs)."""
        f = self.by_model[model]
        ds = f.ds
        T = end_step(ds)
        n = int(ds.sizes["seed"])
        err0, errT = 1 - arm_metric(ds, "at_T", 0), 1 - ds["standard_final_test_acc"].values
        c0 = f.comparisons["zero_to_T"]
        lines = [
            f"* **Figure 2 at T = {T:,}** ({n} seeds, switching steps {', '.join(f'{t:,}' for t in switch_steps(ds))}): "
            f"test error {describe_range(100 * err0, '{:.2f}', unit='%')} fully linearized (t = 0), "
            f"{describe_range(100 * errT, '{:.2f}', unit='%')} for the standard run; switching at T rather than at 0 "
            f"reduces it by {_interval(c0)} points ({_interval_kind(ds)}; {_mcnemar_text(c0)}). Here and below, "
            "reductions of the test error are in percentage points, negative where it rises."]
        if f.compare_from is None:
            lines.append("* **No comparison step was declared** for this run (``compare_from``), so the question "
                         "\"does switching later than the end of Phase I help?\" is not asked of it.")
            return "\n".join(lines)
        tc = f.compare_from
        ends = f.phase_one
        end_text = ("not measured (no kernel-dynamics run of the same training is stored)" if ends.empty else
                    "; ".join(f"seed {int(r.seed)}: " + format_interval(r.phase_one_end, r.low, r.high, "{:,.0f}")
                              for r in ends.itertuples()))
        paper = " (the step after which the paper reports the gain: \"especially when t > 2000\")" if tc == 2000 else ""
        lines.append(f"* **The comparison step** t = {tc:,} was fixed in the profile before the runs{paper}. Beside "
                     f"it, the end of Phase I measured on the kernel-dynamics runs of the same training (version-3 "
                     f"measure, 95% bootstrap interval): {end_text}.")
        for key in ("later_better_at_T", "later_better_at_matched_loss", "standard_beats_linearized_at_equal_loss",
                    "later_better_small_lr", "small_lr_beats_linearized", "test_loss_rises_late"):
            claim = f.claims.get(key)
            if claim is not None:
                lines.append(f"* {claim.sentence}")
        return "\n".join(lines)

    def claims_frame(self) -> pd.DataFrame:
        """Every claim of every model: verdict (yes / no / cannot tell) and sentence."""
        word = {True: "yes", False: "no", None: "cannot tell"}
        return pd.DataFrame([{"model": m, "claim": c.name, "what": CLAIMS[c.name], "holds": word[c.supported]}
                             for m, f in self.by_model.items() for c in f.claims.values()])


# --------------------------------------------------------------------------------------------
# building the report
# --------------------------------------------------------------------------------------------


def _mean_ci(values: np.ndarray, scale: float, fmt: str) -> str:
    g = paired_gain(values)
    return format_interval(g.mean * scale, g.low * scale, g.high * scale, fmt)


def _rows(ds: xr.Dataset, compare_from: int | None, n_boot: int) -> pd.DataFrame:
    rows = []
    small = "small_lr_final_test_acc" in ds
    matched = "matched_test_acc" in ds
    for t in switch_steps(ds):
        row: dict[str, Any] = {"t": t}
        row["test error at T (%)"] = _mean_ci(1 - arm_metric(ds, "at_T", t), 100, "{:.2f}")
        row["test loss at T"] = _mean_ci(arm_metric(ds, "at_T", t, "test_loss"), 1, "{:.4f}")
        row["train loss at T"] = describe_range(arm_metric(ds, "at_T", t, "train_loss"), "{:.1e}")
        row["gain over t = 0 (points)"] = _interval(compare(ds, ("at_T", 0), ("at_T", t), n_boot=n_boot))
        if compare_from is not None and t >= compare_from:
            row[f"gain over t = {compare_from:,} at T"] = _interval(
                compare(ds, ("at_T", compare_from), ("at_T", t), n_boot=n_boot))
        if matched:
            e = 1 - arm_metric(ds, "matched", t)
            steps = ds["matched_step"].sel(switch_step=t).values if t != end_step(ds) else np.full(len(e), t)
            row["matched: step reached"] = describe_range(steps, "{:,.0f}", none="not reached")
            row["matched: test error (%)"] = _mean_ci(e, 100, "{:.2f}") if np.isfinite(e).all() else \
                describe_range(100 * e, "{:.2f}", none="not reached")
            if compare_from is not None and t >= compare_from:
                row[f"matched: gain over t = {compare_from:,}"] = _interval(
                    compare(ds, ("matched", compare_from), ("matched", t), n_boot=n_boot))
        if small:
            row["small-lr: test error at T (%)"] = _mean_ci(1 - arm_metric(ds, "small_lr", t), 100, "{:.2f}")
            row["small-lr: train loss at T"] = describe_range(arm_metric(ds, "small_lr", t, "train_loss"), "{:.1e}")
            row["small-lr minus linearized error (points)"] = _interval(
                compare(ds, ("small_lr", t), ("at_T", t), n_boot=n_boot))
        rows.append(row)
    frame = pd.DataFrame(rows)
    first = ["t", "test error at T (%)", "test loss at T", "train loss at T", "gain over t = 0 (points)"]
    if compare_from is not None:
        first.append(f"gain over t = {compare_from:,} at T")
    order = [c for c in first if c in frame] + [c for c in frame if c not in first]
    return frame[order].fillna("")


def _test_loss_claim(ds: xr.Dataset) -> Claim:
    T = end_step(ds)
    loss = ds["standard_test_loss"].sel(step=ds["step"][ds["step"] <= T])
    mean = loss.mean("seed")
    s_min = int(mean["step"].values[int(np.nanargmin(mean.values))])
    at_min, at_T = loss.sel(step=s_min).values, loss.sel(step=T).values
    rise = at_T - at_min
    err = 1 - ds["standard_test_acc"]
    e_min, e_T = err.sel(step=s_min).values, err.sel(step=T).values
    g = paired_gain(rise)
    holds = bool(np.isfinite(g.low) and g.low > 0) if g.n >= 2 else bool(g.mean > 0)
    lower = [t for t in switch_steps(ds)[:-1] if np.nanmean(arm_metric(ds, "at_T", t, "test_loss"))
             < np.nanmean(at_T)]
    change = f"{format_interval(g.mean, g.low, g.high, '{:+.4f}')} (95% t-interval over seeds)"
    if s_min == T:
        text = (f"**Test loss, with its caveat.** The standard run's test loss is lowest at T ({np.mean(at_T):.4f}): "
                "no late rise here. The claims use the test error.")
    else:
        text = (f"**Test loss, with its caveat.** The standard run's test loss is lowest at step {s_min:,} (mean "
                f"{np.mean(at_min):.4f}) and ends at {np.mean(at_T):.4f} at T, a change of {change}"
                + ("" if holds else ", an interval that includes zero") +
                f", while its test error goes from {100 * np.mean(e_min):.2f}% to {100 * np.mean(e_T):.2f}%. "
                + ("Falling error with rising loss is overconfidence: the network grows more certain on the images "
                   "it gets wrong. A model that stops learning early (a linearized continuation) is spared that "
                   "rise, so the test loss can favour it for a reason unrelated to the kernel; the claims use the "
                   "test error." if holds else "The claims use the test error."))
    if lower:
        text += (" Here switching at t = " + ", ".join(f"{t:,}" for t in lower) +
                 " gives a lower mean test loss at T than the standard run.")
    return Claim("test_loss_rises_late", holds, text)


def _claims(ds: xr.Dataset, tc: int, comps: dict[str, Comparison], n_boot: int) -> dict[str, Claim]:
    T = end_step(ds)
    kind = _interval_kind(ds)
    out: dict[str, Claim] = {}

    def verdict_words(v: bool | None, c: Comparison) -> str:
        if v is None:
            return f"cannot be told ({len(c.seeds)} of {c.n_seeds} seeds have both models)"
        if v:
            return "**supported**: the interval lies above zero"
        lo = c.boot.low if c.boot is not None else c.gain.low
        hi = c.boot.high if c.boot is not None else c.gain.high
        return ("**contradicted**: the interval lies below zero" if hi < 0 else
                "**not shown**: the interval includes zero" if lo <= 0 else "**not shown**")

    c = comps["compare_to_T"]
    v = _verdict(c)
    trend = "; ".join(f"t = {t:,}: {_interval(compare(ds, ('at_T', tc), ('at_T', t), n_boot=n_boot))}"
                      for t in switch_steps(ds) if tc < t < T)
    out["later_better_at_T"] = Claim("later_better_at_T", v, (
        f"**Later is better, at T.** Switching at T rather than at t = {tc:,} reduces the test error by {_interval(c)} "
        f"points ({kind}; {_mcnemar_text(c)}; {c.gain.n_positive} of {c.gain.n} seeds lower): {verdict_words(v, c)}."
        + (f" Against t = {tc:,}, the switches in between: {trend} points." if trend else "")))

    if "matched" in comps:
        c = comps["matched"]
        v = _verdict(c)
        level = describe_range(ds["standard_final_train_loss"].values, "{:.1e}")
        reached = ds["matched_step"].sel(switch_step=tc).values
        horizon = int(ds["step"].max())
        r_text = (f"the continuation from t = {tc:,} reaches it in {int(np.isfinite(reached).sum())} of "
                  f"{len(reached)} seeds, at step {describe_range(reached, '{:,.0f}', none='not reached')} "
                  f"(trained on past T, to {horizon:,} at most)")
        missing = [t for t in switch_steps(ds)[:-1] if not np.isfinite(ds["matched_step"].sel(switch_step=t)).all()]
        m_text = (" Not reached (training stopped at the horizon, or where a loss falling as 1/(steps since t) "
                  f"could not reach it): t = {', '.join(f'{t:,}' for t in missing)}." if missing else "")
        out["later_better_at_matched_loss"] = Claim("later_better_at_matched_loss", v, (
            f"**Later is better, at matched train loss.** Every model is compared at the standard run's final "
            f"train loss ({level}); {r_text}. There, switching at T rather than at t = {tc:,} reduces the test "
            f"error by {_interval(c)} points ({kind}; {_mcnemar_text(c)}): {verdict_words(v, c)}.{m_text}"))

        c = comps["standard_at_equal_loss"]
        v = _verdict(c)
        steps = standard_step_at_loss(ds).sel(switch_step=tc).values
        out["standard_beats_linearized_at_equal_loss"] = Claim("standard_beats_linearized_at_equal_loss", v, (
            f"**Stopping the standard run early instead.** The linearized continuation from t = {tc:,} ends at T "
            f"with train loss {describe_range(arm_metric(ds, 'at_T', tc, 'train_loss'), '{:.1e}')}; the standard run "
            f"first gets there at step {describe_range(steps, '{:,.0f}')}. Stopped there, its test error is lower by "
            f"{_interval(c)} points ({kind}; {_mcnemar_text(c)}): {verdict_words(v, c)}."))

    if "small_lr_compare_to_T" in comps:
        c = comps["small_lr_compare_to_T"]
        v = _verdict(c)
        loss = describe_range(arm_metric(ds, "small_lr", tc, "train_loss"), "{:.1e}")
        out["later_better_small_lr"] = Claim("later_better_small_lr", v, (
            f"**The small-learning-rate baseline** (Fort et al. 2020: the network itself trains on with the learning "
            f"rate times {_small_factor(ds)} after t). From t = {tc:,} it ends at train loss {loss}; slowing down at "
            f"T instead (that is, the standard run) reduces the test error by {_interval(c)} points ({kind}): "
            f"{verdict_words(v, c)}."))
        c = comps["small_lr_vs_linearized"]
        v = _verdict(c)
        out["small_lr_beats_linearized"] = Claim("small_lr_beats_linearized", v, (
            f"**Slow but non-linear against linear**, both from t = {tc:,}: the small-lr continuation's test error at "
            f"T is below the linearized one's by {_interval(c)} points ({kind}; {_mcnemar_text(c)}): "
            f"{verdict_words(v, c)}."))
    out["test_loss_rises_late"] = _test_loss_claim(ds)
    return out


def _small_factor(ds: xr.Dataset) -> str:
    try:
        return f"{config_of(ds).small_lr_factor:g}"
    except (KeyError, TypeError, ValueError):
        return "a factor"


def model_findings(ds: xr.Dataset, config: SwitchingConfig | None = None, *, results_root: str | Path | None = None,
                   n_boot: int = 10_000, phase_boot: int = 100) -> ModelFindings:
    """The findings of one switching result; ``config`` (default: the one the result records)
    gives the comparison step ``compare_from``."""
    cfg = config if config is not None else config_of(ds)
    tc = cfg.compare_from
    if tc is not None and tc not in switch_steps(ds):
        raise ValueError(f"compare_from={tc} is not a switching step of the result; they are {switch_steps(ds)}")
    T = end_step(ds)
    comps: dict[str, Comparison] = {"zero_to_T": compare(ds, ("at_T", 0), ("at_T", T), n_boot=n_boot)}
    claims: dict[str, Claim] = {}
    if tc is not None:
        comps["compare_to_T"] = compare(ds, ("at_T", tc), ("at_T", T), n_boot=n_boot)
        if "matched_test_acc" in ds:
            comps["matched"] = compare(ds, ("matched", tc), ("matched", T), n_boot=n_boot)
            comps["standard_at_equal_loss"] = compare(ds, ("at_T", tc), ("standard_at_loss", tc), n_boot=n_boot)
        if "small_lr_final_test_acc" in ds:
            comps["small_lr_compare_to_T"] = compare(ds, ("small_lr", tc), ("small_lr", T), n_boot=n_boot)
            comps["small_lr_vs_linearized"] = compare(ds, ("at_T", tc), ("small_lr", tc), n_boot=n_boot)
        claims = _claims(ds, tc, comps, n_boot)
    else:
        claims["test_loss_rises_late"] = _test_loss_claim(ds)
    phase = phase_one_ends(cfg, results_root=results_root, n_boot=phase_boot) if tc is not None else \
        pd.DataFrame(columns=["seed", "phase_one_end", "low", "high", "config_hash"])
    return ModelFindings(cfg.model, ds, cfg, tc, phase, _rows(ds, tc, min(n_boot, 4000)), comps, claims)


def switching_report(results: Mapping[str, xr.Dataset] | Sequence[xr.Dataset],
                     configs: Sequence[SwitchingConfig] | None = None, *, results_root: str | Path | None = None,
                     n_boot: int = 10_000, phase_boot: int = 100) -> SwitchingReport:
    """The chapter's report on the stored switching results (one per model).

    Args:
        results: the results, by model or as a list.
        configs: the configurations the notebook asked for (they give ``compare_from``, fixed in
            the profile); default: the ones the results record.
        results_root: where the kernel-dynamics runs of the same training are stored (the end of
            Phase I quoted beside the comparison step).
        n_boot: bootstrap draws of the paired intervals.
        phase_boot: bootstrap draws of the end of Phase I.
    """
    datasets = list(results.values()) if isinstance(results, Mapping) else list(results)
    if not datasets:
        raise ValueError("no switching results to report on")
    by_cfg = {c.model: c for c in (configs or [])}
    by_model: dict[str, ModelFindings] = {}
    for ds in datasets:
        cfg = config_of(ds)
        wanted = by_cfg.get(cfg.model)
        if wanted is not None:
            cfg = cfg.replace(compare_from=wanted.compare_from)
        by_model[cfg.model] = model_findings(ds, cfg, results_root=results_root, n_boot=n_boot, phase_boot=phase_boot)
    first = next(iter(by_model.values()))
    facts = Facts(
        T=f"{end_step(first.ds):,}",
        models=", ".join(by_model),
        seeds="; ".join(f"{m}: {int(f.ds.sizes['seed'])}" for m, f in by_model.items()),
        compare_from=", ".join(sorted({f"{f.compare_from:,}" for f in by_model.values()
                                       if f.compare_from is not None})) or "—",
        small_lr=", ".join(sorted({_small_factor(f.ds) for f in by_model.values()
                                   if "small_lr_final_test_acc" in f.ds})) or "—",
        horizon=", ".join(f"{int(f.ds['step'].max()):,}" for f in by_model.values() if "matched_step" in f.ds) or "—",
        n_test=f"{int(first.ds.attrs.get('n_test', first.ds.sizes.get('image', 0))):,}",
        n_boot=f"{n_boot:,}",
        alpha=f"{ALPHA}",
    )
    return SwitchingReport(by_model, facts)


def profile_report(profile: str = "mnist", *, results_root: str | Path | None = None, missing_ok: bool = False,
                   **kwargs: Any) -> SwitchingReport | None:
    """:func:`switching_report` on the stored switching runs of ``profile`` (their configurations,
    hence their comparison step, from the profile); nothing is computed.

    Raises:
        FileNotFoundError: none of the profile's runs is stored (the message names them); with
            ``missing_ok``, ``None`` is returned instead.
    """
    configs = switching_configs(profile)
    found, missing = [], []
    for cfg in configs:
        path = result_path(EXPERIMENT, cfg.identity(), results_root)
        (found if path.exists() else missing).append((cfg, path))
    if not found and missing_ok:
        return None
    if not found:
        raise FileNotFoundError(f"no switching run of profile {profile!r} is stored: "
                                + ", ".join(f"{c.model} ({p})" for c, p in missing))
    return switching_report([load_result(p) for _, p in found], [c for c, _ in found], results_root=results_root,
                            **kwargs)
