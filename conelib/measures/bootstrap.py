"""Intervals for the version-3 measures and the robustness of a verdict.

**Within a run: a block bootstrap over snapshots.** A run is one realisation of SGD; its snapshots
carry jitter that is (nearly) independent from one snapshot to the next (at the paper's MNIST scale
two kernels 50 steps apart differ by :math:`\\sqrt 2` times the jitter radius, as independent draws
do). A bootstrap draw gives every block of ``block`` consecutive snapshots a weight drawn from
Exp(1) (the Bayesian bootstrap, Rubin 1981: the continuous version of resampling with
replacement, whose weights are never zero, so that a window holding a single early snapshot keeps
it) and recomputes every measure with those weights (:func:`conelib.measures.v3.measure`): window
means, jitter variances (with the reliability-weight correction), all-pair medians and regressions
are weighted. The initial kernel keeps weight 1 (it is fixed by the initial weights, not sampled). The interval of a measure is the
percentile interval of its draws; the verdict's **agreement** is the share of draws that give the
same label as the point estimate. The percentile interval is re-centred on the point estimate
(the draws' median moved onto it): reweighting snapshots shifts non-linear measures a little,
and the interval should describe the spread, not that shift.

**Over thresholds**: the verdict at every setting of :data:`conelib.measures.v3.SENSITIVITY` (each
threshold moved alone to both ends of its range); ``threshold_agreement`` is the share of those
settings that give the point estimate's label.

**Over seeds: a hierarchical bootstrap** (:func:`seed_interval`): draw seeds with replacement, then
one within-run draw for each, and average: the interval of the mean over seeds reflects both the
seed-to-seed spread and each run's own noise. With three seeds it is rough, and says so by its width.

This bootstrap treats the trajectory as fixed and resamples its noise; it does not know about the
variability of the drift itself from one training run to the next, which only seeds show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from conelib.measures.v3 import (
    VERDICTS,
    Verdict,
    check_thresholds,
    measure,
    sensitivity_settings,
)

__all__ = ["Assessment", "assess", "seed_interval", "snapshot_weights", "format_interval", "t_interval"]

#: default number of bootstrap draws, block length (snapshots) and interval level
N_BOOT, BLOCK, LEVEL = 200, 2, 0.95


def snapshot_weights(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Bayesian-bootstrap weights: one Exp(1) draw per block of ``block`` consecutive snapshots
    (the first snapshot, the initial kernel, keeps weight 1)."""
    if block < 1:
        raise ValueError(f"block must be a positive number of snapshots, got {block}")
    counts = rng.exponential(1.0, size=-(-n // block))
    w = np.repeat(counts, block)[:n]
    w[0] = 1.0
    return w


def format_interval(value: float, lo: float, hi: float, fmt: str = "{:.3g}") -> str:
    """``"0.12 [0.09, 0.15]"`` (``"—"`` for a missing value)."""
    if value is None or not np.isfinite(value):
        return "—"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(lo)}, {fmt.format(hi)}]"


@dataclass
class Assessment:
    """One run's measures with intervals and the robustness of its verdict (see the module docstring).

    Attributes:
        point: the point estimate (all snapshots weighted 1).
        draws: one row per bootstrap draw: every numeric measure and the ``verdict``.
        level: the intervals' coverage (0.95).
        thresholds: the thresholds used.
        threshold_labels: the verdict at each sensitivity setting.
    """

    point: Verdict
    draws: pd.DataFrame
    level: float
    thresholds: dict[str, float]
    threshold_labels: dict[str, str] = field(default_factory=dict)

    def interval(self, name: str) -> tuple[float, float]:
        """The percentile interval of measure ``name`` over the draws (NaN, NaN if undefined in
        most draws)."""
        if name not in self.draws:
            raise KeyError(f"no measure {name!r}; measures: {Verdict.numeric_fields()}")
        vals = pd.to_numeric(self.draws[name], errors="coerce").to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        point = getattr(self.point, name)
        if vals.size < max(10, 0.5 * len(self.draws)) or point is None or not np.isfinite(float(point)):
            return float("nan"), float("nan")
        a = (1.0 - self.level) / 2.0
        shift = float(point) - float(np.median(vals))
        return float(np.quantile(vals, a)) + shift, float(np.quantile(vals, 1.0 - a)) + shift

    def half_width(self, name: str) -> float:
        lo, hi = self.interval(name)
        return 0.5 * (hi - lo)

    @property
    def label_shares(self) -> dict[str, float]:
        """Share of the draws giving each label."""
        counts = self.draws["verdict"].value_counts(normalize=True)
        return {label: float(counts.get(label, 0.0)) for label in VERDICTS}

    @property
    def agreement(self) -> float:
        """Share of the bootstrap draws that give the point estimate's label."""
        return self.label_shares[self.point.verdict]

    @property
    def threshold_agreement(self) -> float:
        """Share of the sensitivity settings that give the point estimate's label."""
        if not self.threshold_labels:
            return float("nan")
        return float(np.mean([v == self.point.verdict for v in self.threshold_labels.values()]))

    def describe(self, name: str, fmt: str = "{:.3g}") -> str:
        """``"value [lo, hi]"`` for measure ``name``."""
        value = getattr(self.point, name)
        return format_interval(np.nan if value is None else float(value), *self.interval(name), fmt=fmt)

    def row(self) -> dict[str, Any]:
        """A flat record: every numeric measure with ``_lo`` and ``_hi``, the verdict, its
        agreement over draws and over thresholds, and the share of each label over the draws."""
        out: dict[str, Any] = {"verdict": self.point.verdict, "stationarity": self.point.stationarity}
        for name in Verdict.numeric_fields():
            v = getattr(self.point, name)
            lo, hi = self.interval(name)
            out[name] = np.nan if v is None else float(v)
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        out["verdict_agreement"] = self.agreement
        out["threshold_agreement"] = self.threshold_agreement
        for label, share in self.label_shares.items():
            out[f"share_{label.replace('two phases, ', '').replace(' ', '_')}"] = share
        return out


def assess(ds: xr.Dataset, *, n_boot: int = N_BOOT, block: int = BLOCK, seed: int = 0, level: float = LEVEL,
           sensitivity: Mapping[str, Sequence[float]] | None | bool = None, **thresholds: Any) -> Assessment:
    """The version-3 measures of a run with bootstrap intervals and the verdict's robustness.

    Args:
        ds: a kernel-dynamics Dataset.
        n_boot: bootstrap draws (>= 20).
        block: snapshots per bootstrap block.
        seed: seeds the draws (the same seed gives the same intervals).
        level: coverage of the intervals, in (0, 1).
        sensitivity: the threshold ranges to try (default :data:`SENSITIVITY`; ``False``: none).
        thresholds: override :data:`conelib.measures.v3.THRESHOLDS`.
    """
    if int(n_boot) < 20:
        raise ValueError(f"n_boot must be at least 20 draws, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    t = check_thresholds(**thresholds)
    point = measure(ds, None, **t)
    rng = np.random.default_rng(seed)
    n = ds.sizes["step"]
    rows = []
    for _ in range(int(n_boot)):
        v = measure(ds, snapshot_weights(n, int(block), rng), **t)
        rows.append({**{k: getattr(v, k) for k in Verdict.numeric_fields()}, "verdict": v.verdict})
    draws = pd.DataFrame(rows)
    labels: dict[str, str] = {}
    if sensitivity is not False:
        for name, change in sensitivity_settings(None if sensitivity in (None, True) else dict(sensitivity)):
            if name != "defaults":
                labels[name] = measure(ds, None, **{**t, **change}).verdict
    return Assessment(point, draws, float(level), t, labels)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the finite ``values`` (e.g. one number per seed) with the Student-t
    interval at ``level``: :math:`\bar x \pm t_{n-1}\, s / \sqrt n`; NaN bounds below two values.

    Raises:
        ValueError: ``level`` outside (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    mean = float(x.mean()) if x.size else float("nan")
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def seed_interval(draws: Sequence[Sequence[float]], *, n_boot: int = 2000, seed: int = 0,
                  level: float = LEVEL) -> tuple[float, float, float]:
    """Mean over seeds of a measure and its hierarchical-bootstrap interval.

    Args:
        draws: per seed, that run's bootstrap draws of the measure (its first entry may be the
            point estimate; NaN entries are ignored).
    Returns:
        ``(centre, lo, hi)``: the mean over seeds of each seed's median draw, and the interval.
    """
    per_seed = [np.asarray(d, dtype=float) for d in draws]
    per_seed = [d[np.isfinite(d)] for d in per_seed]
    per_seed = [d for d in per_seed if d.size]
    if not per_seed:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    k = len(per_seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, k, size=k)
        means[b] = np.mean([per_seed[i][rng.integers(0, per_seed[i].size)] for i in pick])
    a = (1.0 - level) / 2.0
    centre = float(np.mean([np.median(d) for d in per_seed]))
    return centre, float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))

