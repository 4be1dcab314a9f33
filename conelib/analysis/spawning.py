"""What stored spawning runs show, as numbers: barriers over seeds, the onset of linear mode
connectivity, and how both relate to the end of Phase I and the Phase II jitter of the kernel.

Definitions (the chapter quotes these; the notebook only loads, draws and glues):

* :func:`barrier_summary`: per spawn step, a barrier (or any ``(spawn_step, seed[, pair])``
  variable) averaged over the pairs of children of a seed, then over seeds: the mean, the
  two-sided Student-t interval :math:`\\bar b \\pm t_{1-a/2,\\,n-1}\\, s/\\sqrt n` (NaN with one seed;
  with three seeds it has two degrees of freedom and is wide), the range, and every seed's value.
* :func:`error_tolerance`: the resolution of a test error measured on :math:`n` images,
  :math:`k\\,\\sqrt{e(1-e)/n}` (:math:`k = 3` binomial standard errors, in percentage points). An
  error barrier below it cannot be told from zero with this test set. Frankle et al. (2020) call a
  network stable when its error barrier is under 2 percentage points (:data:`FRANKLE_TOLERANCE`), a
  coarser, fixed rule.
* :func:`lmc_onset`: the first spawn step from which the error barrier stays at or below a tolerance
  in every seed (and every pair) at every later spawn step: the onset of linear mode connectivity
  (``None``: not reached on the grid). :func:`seed_onsets` gives it per seed.
* :func:`phase_one_of_seeds`: the end of Phase I :math:`t^*` with its bootstrap interval and the
  Phase II jitter radius :math:`J` with its interval, measured by :func:`conelib.measures.assess` on
  the stored kernel-dynamics run that follows the same training as the parent (same model, data,
  recipe and seed, at least as long); ``same_kernel`` says whether that run's probe set and kernel
  are the spawning run's, which the jitter comparison needs.
* :func:`sibling_vs_jitter`: the kernel distance :math:`S` between two children at :math:`T` as a
  chord :math:`c = \\sqrt{2S}`, beside :math:`\\sqrt 2\\,J`, the chord expected between two single
  kernels drawn independently from one Phase II noise ball of radius :math:`J` (see
  :mod:`conelib.measures.centroids`: :math:`J^2` is the mean :math:`S` between far-apart single
  kernels of one window). Their ratio :math:`\\sqrt{S}/J` is about 1 when the children's kernels
  differ by no more than one run's kernels jitter around their local mean, and well above 1 when
  the children end at different kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from conelib.experiments.spawning import SpawningConfig, config_of
from conelib.analysis.kernel_dynamics import kernel_dynamics_of_trajectory
from conelib.measures import assess
from conelib.measures.bootstrap import t_interval

__all__ = ["FRANKLE_TOLERANCE", "SeedPhase", "barrier_summary", "error_tolerance", "loss_tolerance", "lmc_onset",
           "seed_onsets", "matching_kernel_dynamics", "phase_one_of_seeds", "sibling_vs_jitter", "relation",
           "per_seed"]

#: Frankle et al. (2020): a network is stable to SGD noise when its error barrier is below 2 points
FRANKLE_TOLERANCE = 2.0


def _check(ds: xr.Dataset) -> None:
    if "error_barrier" not in ds or "spawn_step" not in ds.dims:
        raise ValueError("ds is not a spawning Dataset (it needs error_barrier over spawn_step)")


def per_seed(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Variable ``name`` as ``(spawn_step, seed)``: averaged over the pairs (or children) of a seed."""
    _check(ds)
    da = ds[name]
    for dim in ("pair", "child"):
        if dim in da.dims:
            da = da.mean(dim)
    return da.transpose("spawn_step", "seed")


def barrier_summary(ds: xr.Dataset, name: str = "error_barrier", *, level: float = 0.95) -> pd.DataFrame:
    """One row per spawn step: ``mean`` over seeds, the Student-t interval ``low``/``high`` at
    ``level``, ``min``, ``max``, ``n`` and each seed's value as ``seed_<s>`` (see the module docstring)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    da = per_seed(ds, name)
    rows = []
    for t in da["spawn_step"].values:
        v = da.sel(spawn_step=t).values.astype(float)
        ok = v[np.isfinite(v)]
        mean, low, high = t_interval(ok, level)
        row = {"spawn_step": int(t), "mean": mean, "low": low, "high": high,
               "min": float(ok.min()) if ok.size else float("nan"), "max": float(ok.max()) if ok.size else float("nan"),
               "n": int(ok.size)}
        row.update({f"seed_{int(s)}": float(x) for s, x in zip(da["seed"].values, v)})
        rows.append(row)
    return pd.DataFrame(rows)


def error_tolerance(error: float, n_test: int, k: float = 3.0) -> float:
    """``k`` binomial standard errors of a test error of ``error`` percent on ``n_test`` images, in
    percentage points: :math:`100\\,k\\sqrt{e(1-e)/n}` with :math:`e` = ``error``/100."""
    if not 0 <= error <= 100 or n_test < 1 or k <= 0:
        raise ValueError(f"error must be a percentage, n_test >= 1 and k > 0; got {error}, {n_test}, {k}")
    e = error / 100.0
    return 100.0 * k * math.sqrt(e * (1.0 - e) / n_test)


def loss_tolerance(sd: float, n_test: int, k: float = 3.0) -> float:
    """``k`` standard errors of a mean test loss whose per-image losses have standard deviation ``sd``."""
    if sd < 0 or n_test < 1 or k <= 0:
        raise ValueError(f"sd must be >= 0, n_test >= 1 and k > 0; got {sd}, {n_test}, {k}")
    return k * sd / math.sqrt(n_test)


def default_tolerance(ds: xr.Dataset, k: float = 3.0) -> float:
    """:func:`error_tolerance` at the children's mean test error over the whole run."""
    _check(ds)
    err = 100.0 * (1.0 - float(ds["child_test_acc"].mean()))
    return error_tolerance(err, int(ds.attrs.get("n_test", 10_000)), k)


def _onset(values: np.ndarray, steps: np.ndarray, tolerance: float) -> int | None:
    """First step from which every later value (rows: steps) is <= tolerance; NaN counts as above."""
    ok = np.all(np.nan_to_num(values, nan=np.inf).reshape(len(steps), -1) <= tolerance + 1e-12, axis=1)
    for i in range(len(steps)):
        if ok[i:].all():
            return int(steps[i])
    return None


def lmc_onset(ds: xr.Dataset, tolerance: float | None = None, name: str = "error_barrier") -> int | None:
    """The first spawn step from which ``name`` is at most ``tolerance`` (default
    :func:`default_tolerance`) in every seed and pair at every later spawn step; ``None`` if none."""
    _check(ds)
    tol = default_tolerance(ds) if tolerance is None else float(tolerance)
    da = ds[name].transpose("spawn_step", ...)
    return _onset(da.values, da["spawn_step"].values, tol)


def seed_onsets(ds: xr.Dataset, tolerance: float | None = None, name: str = "error_barrier") -> dict[int, int | None]:
    """:func:`lmc_onset` of each seed alone."""
    _check(ds)
    tol = default_tolerance(ds) if tolerance is None else float(tolerance)
    out = {}
    for s in ds["seed"].values:
        da = ds[name].sel(seed=s).transpose("spawn_step", ...)
        out[int(s)] = _onset(da.values, da["spawn_step"].values, tol)
    return out


# --------------------------------------------------------------------------------------------
# the kernel-dynamics run of the same training
# --------------------------------------------------------------------------------------------


def matching_kernel_dynamics(cfg: SpawningConfig, seed: int, *,
                             results_root: str | Path | None = None) -> tuple[xr.Dataset | None, bool]:
    """The newest stored kernel-dynamics run of the parent's training for ``seed`` (same trajectory,
    at least as long; :func:`conelib.experiments.common.same_trajectory`) and whether it used the
    same probe set and kernel (``probe_size``, ``kernel_kind``). ``(None, False)`` if none is stored;
    a run on the same kernel is preferred."""
    want = cfg.for_seed(seed)
    found: tuple[xr.Dataset | None, bool] = (None, False)
    for ds, kd in kernel_dynamics_of_trajectory(want, results_root=results_root):
        if kd.probe_size == want.probe_size and kd.kernel_kind == want.kernel_kind:
            return ds, True
        if found[0] is None:
            found = (ds, False)
    return found


@dataclass(frozen=True)
class SeedPhase:
    """The end of Phase I and the Phase II jitter of one seed's parent training (see the module
    docstring); NaN / ``None`` where no matching kernel-dynamics run is stored or no Phase I end found."""

    seed: int
    config_hash: str | None
    same_kernel: bool
    phase_one_end: int | None
    phase_one_low: float
    phase_one_high: float
    jitter_radius: float
    jitter_low: float
    jitter_high: float
    verdict: str

    @property
    def found(self) -> bool:
        return self.config_hash is not None


def phase_one_of_seeds(ds: xr.Dataset, *, results_root: str | Path | None = None,
                       n_boot: int = 200) -> dict[int, SeedPhase]:
    """:class:`SeedPhase` of every seed of a spawning result (:func:`conelib.measures.assess` on the
    matching kernel-dynamics run, ``n_boot`` bootstrap draws)."""
    _check(ds)
    cfg = config_of(ds)
    out = {}
    nan = float("nan")
    for s in ds["seed"].values.astype(int):
        kd, same = matching_kernel_dynamics(cfg, int(s), results_root=results_root)
        if kd is None:
            out[int(s)] = SeedPhase(int(s), None, False, None, nan, nan, nan, nan, nan, "not measured")
            continue
        a = assess(kd, n_boot=n_boot, sensitivity=False)
        lo, hi = a.interval("phase_one_end")
        jlo, jhi = a.interval("jitter_radius")
        out[int(s)] = SeedPhase(int(s), str(kd.attrs.get("config_hash")), bool(same), a.point.phase_one_end,
                                lo, hi, float(a.point.jitter_radius), jlo, jhi, a.point.verdict)
    return out


def relation(onset: int | None, phase: SeedPhase) -> str:
    """Where the onset of linear mode connectivity lies relative to the end of Phase I: ``"before"``
    (before the interval's low end), ``"within"``, ``"after"``, ``"not reached"`` (no onset on the
    grid) or ``"no Phase I end"``. Without an interval the point estimate is used."""
    if phase.phase_one_end is None:
        return "no Phase I end"
    if onset is None:
        return "not reached"
    lo = phase.phase_one_low if np.isfinite(phase.phase_one_low) else phase.phase_one_end
    hi = phase.phase_one_high if np.isfinite(phase.phase_one_high) else phase.phase_one_end
    if onset < lo:
        return "before"
    if onset > hi:
        return "after"
    return "within"


def sibling_vs_jitter(ds: xr.Dataset, phases: dict[int, SeedPhase]) -> pd.DataFrame:
    """One row per (spawn step, seed): the children's kernel distance ``S`` (mean over pairs), its
    chord :math:`\\sqrt{2S}`, the child–parent chord (mean over children), the seed's reference chord
    :math:`\\sqrt2 J` and the ratio :math:`\\sqrt S / J` (NaN without a matching run on the same kernel)."""
    sib = per_seed(ds, "sibling_kernel_distance")
    par = per_seed(ds, "child_parent_kernel_distance")
    rows = []
    for t in sib["spawn_step"].values:
        for s in sib["seed"].values.astype(int):
            S = float(sib.sel(spawn_step=t, seed=s))
            p = phases.get(int(s))
            J = p.jitter_radius if p is not None and p.same_kernel else float("nan")
            rows.append({"spawn_step": int(t), "seed": int(s), "S": S, "chord": math.sqrt(2 * S),
                         "parent_chord": math.sqrt(2 * float(par.sel(spawn_step=t, seed=s))),
                         "jitter_chord": math.sqrt(2) * J, "ratio": math.sqrt(S) / J if J > 0 else float("nan")})
    return pd.DataFrame(rows)


def child_summary(ds: xr.Dataset) -> dict[str, Any]:
    """The optimisation state beside the verdicts: the children's and parents' final test accuracy
    and train loss (min and max over everything stored)."""
    _check(ds)
    return {"child_test_acc": (float(ds["child_test_acc"].min()), float(ds["child_test_acc"].max())),
            "child_train_loss": (float(ds["child_train_loss"].min()), float(ds["child_train_loss"].max())),
            "parent_test_acc": (float(ds["parent_test_acc"].min()), float(ds["parent_test_acc"].max())),
            "parent_train_loss": (float(ds["parent_train_loss"].min()), float(ds["parent_train_loss"].max()))}


def onset_table(ds: xr.Dataset, phases: dict[int, SeedPhase], tolerances: Sequence[float]) -> pd.DataFrame:
    """Per seed: the end of Phase I with its interval, the jitter radius, and for each tolerance the
    seed's onset of linear mode connectivity and its :func:`relation` to the end of Phase I."""
    rows = []
    onsets = {tol: seed_onsets(ds, tol) for tol in tolerances}
    for s in ds["seed"].values.astype(int):
        p = phases[int(s)]
        row: dict[str, Any] = {"seed": int(s), "phase_one_end": p.phase_one_end, "phase_one_low": p.phase_one_low,
                               "phase_one_high": p.phase_one_high, "jitter_radius": p.jitter_radius,
                               "same_kernel": p.same_kernel, "kd_verdict": p.verdict}
        for i, tol in enumerate(tolerances):
            row[f"onset_{i}"] = onsets[tol][int(s)]
            row[f"relation_{i}"] = relation(onsets[tol][int(s)], p)
        rows.append(row)
    return pd.DataFrame(rows)
