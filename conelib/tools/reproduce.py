"""Rerun every experiment the book shows and compare with the stored reference results.

``conelib reproduce`` (``make reproduce``) recomputes, into a scratch results folder, the runs the
book's chapters are drawn from (the profile's kernel-dynamics and switching runs, the atlas and
controls sweeps (:data:`SWEEP_GRIDS`), and the spawning runs when the profile has a spawning
section) and prints, per run, the stored and the recomputed measures side by side with a pass/fail
mark. The table is also written to ``book/reproducibility_table.md`` (shown on the book's
"Reproducibility" page) and to ``<scratch>/reproduce.json``.

How it runs. Every run is one job on Dask distributed, through the same engine as ``conelib sweep``
(:mod:`conelib.sweep.cluster`): a ``LocalCluster`` of ``workers`` single-threaded processes, a running
scheduler (``address``), or a client the caller made (SLURM with the ``slurm`` extra). A switching
run is split into one job per seed (each seed's standard run and its continuations; the same
computation as in the stored multi-seed file, whose seeds are independent); so is a spawning run
(each seed's parent and its children). Jobs are submitted
longest first, their expected cost read from the stored results' wall times (:func:`plan`), and
the same configuration needed by two figures is computed once. A run already in the scratch folder
is loaded, not recomputed, so an interrupted reproduction resumes where it stopped (the default
scratch folder is the same from one call to the next: ``<cache>/reproduce/<profile>``; ``fresh``
starts over in a new temporary folder). A failed job is reported with its error; the others go on.

``quick`` recomputes one run per figure, the cheapest by the stored wall times (for Figure 2: one
seed of the switching run), and compares it with the stored one: a spot-check of minutes rather
than hours. The tolerances are the same.

Tolerance. On the same machine, with the same torch version and thread count, a recomputation is
bitwise identical to the stored run (the data order, augmentation and initialisation are pure
functions of the seed; the tests check it). Across torch versions, builds or thread counts the
floating-point sums differ in their last bits, and 10^4 SGD steps amplify such differences into a
different trajectory: a recomputed run is then *another sample*, not the same numbers. Each
measure of both runs carries a 95% bootstrap interval (:func:`conelib.measures.assess`), which says
how much that measure moves with the run's own noise; a measure passes when the two values differ by
no more than :math:`\\sqrt{h_s^2 + h_r^2}` (the half-widths of the stored and the recomputed
intervals: the difference of two independent estimates), with a small floor (:data:`FLOORS`). A
stable measure therefore gets a tight tolerance and an unstable one a wide one, whatever the run
length. A verdict must be the same, unless either run's verdict is itself unstable (fewer than
:data:`STABLE` of the bootstrap draws agree with it): then the row says so and does not fail.
Test accuracies (no bootstrap) are compared within 3 binomial standard errors of the difference of
two independent estimates on the test set (at least :data:`FLOORS`). A spawning run's error barrier
is compared within 3 binomial standard errors of the children's test error, its loss barrier within
3 standard errors of a mean test loss (from the per-image spread), each with a floor
(:data:`SP_MEASURES`): on the same machine and thread count the recomputation is bitwise equal;
elsewhere it is another sample, and a barrier that varies from run to run by more than the test
set's resolution (early spawn steps) may fail.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from conelib import __version__
from conelib.analysis.atlas_summary import summarize, summary_path
from conelib.analysis.spawning import error_tolerance, loss_tolerance
from conelib.experiments import kernel_dynamics_configs, spawning_configs, switching_configs
from conelib.experiments.kernel_dynamics import KernelDynamicsConfig, kernel_dynamics
from conelib.experiments.spawning import SpawningConfig, spawning
from conelib.experiments.switching import SwitchingConfig, switching
from conelib.measures import assess
from conelib.paths import cache_dir, default_results_root, repo_root, sweeps_dir
from conelib.profiles import profile_path
from conelib.results import config_hash, load_result, result_path, result_status
from conelib.sweep import expand_grid, load_grid
from conelib.sweep.cluster import Job, JobError, check_workers, dask_client, describe, run_jobs
from conelib.yamlio import load_file

__all__ = ["reproduce", "ReproduceReport", "FLOORS", "STABLE", "compare", "compare_assessed", "accuracy_tolerance",
           "KD_MEASURES", "SP_MEASURES", "PlannedRun", "plan", "projected_seconds"]

#: the kernel-dynamics measures compared (version 3), with their tolerance floors
KD_MEASURES: dict[str, float] = {
    "phase_one_end": 50.0,         # one snapshot of the mnist profile
    "total_movement": 0.005,
    "laziness": 0.005,
    "jitter_ratio": 0.005,
    "growth_exponent": 0.02,
    "drift_decay": 0.02,
}
#: tolerance floors for the accuracies
SW_MEASURES: dict[str, float] = {"final_test_acc": 0.001}
#: the spawning measures compared, with their tolerance floors (percentage points, nats, accuracy)
SP_MEASURES: dict[str, float] = {"error_barrier": 0.01, "loss_barrier": 1e-4,
                                 "child_test_acc": SW_MEASURES["final_test_acc"]}
FLOORS = {**KD_MEASURES, **SW_MEASURES, **SP_MEASURES}
#: a verdict counts as stable when at least this share of its bootstrap draws agree with it
STABLE = 0.8


@dataclass
class ReproduceReport:
    """Rows of (experiment, run, measure, stored, recomputed, tolerance, passed), and timings."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    scratch: Path | None = None
    #: one entry per run: experiment, run, status (computed | resumed | failed), seconds, pid, error
    jobs: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cluster: str = ""
    quick: bool = False

    @property
    def ok(self) -> bool:
        return not self.missing and not self.failed and all(r["passed"] for r in self.rows)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def markdown(self) -> str:
        import torch


        head = (f"Last run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, conelib {__version__}, torch "
                f"{torch.__version__}, {torch.get_num_threads()} threads"
                + (f", on {self.cluster}" if self.cluster else "") + (" (--quick)" if self.quick else "")
                + "; time: " + ", ".join(f"{k} {v / 60:.0f} min" for k, v in self.seconds.items()) + ". "
                + ("All measures within tolerance." if self.ok else
                   f"{sum(not r['passed'] for r in self.rows)} of {len(self.rows)} measures outside tolerance"
                   + (f"; not stored: {self.missing}" if self.missing else "")
                   + (f"; failed: {self.failed}" if self.failed else "") + "."))
        lines = [head, "", "| experiment | run | measure | stored | recomputed | tolerance | |",
                 "|---|---|---|---:|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r['experiment']} | {r['run']} | {r['measure']} | {_fmt(r['stored'])} | "
                         f"{_fmt(r['recomputed'])} | {_fmt(r['tolerance'])} | {'pass' if r['passed'] else '**FAIL**'} |")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        df = self.frame()
        text = df.to_string(index=False, float_format=lambda x: f"{x:.4g}") if len(df) else "(nothing compared)"
        status = "PASS" if self.ok else "FAIL"
        counts = {k: sum(j["status"] == k for j in self.jobs) for k in ("computed", "resumed", "failed")}
        runs = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        lines = [text] + [f"[conelib] failed: {f}" for f in self.failed] + [f"[conelib] not stored: {m}" for m in self.missing]
        return ("\n".join(lines) + f"\n[conelib] reproduce: {status}; runs: {runs or 'none'}"
                + (f" on {self.cluster}" if self.cluster else "") + f"; scratch {self.scratch}; "
                + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    return "—" if v is None else str(v)


def compare(experiment: str, run: str, stored: dict[str, Any], recomputed: dict[str, Any],
            spread: dict[str, float], floors: dict[str, float]) -> list[dict[str, Any]]:
    """The rows for one run: every measure of ``floors`` (and the verdict, when present)."""
    rows = []
    if "verdict" in stored:
        rows.append({"experiment": experiment, "run": run, "measure": "verdict", "stored": stored["verdict"],
                     "recomputed": recomputed.get("verdict"), "tolerance": "equal",
                     "passed": stored["verdict"] == recomputed.get("verdict")})
    for m, floor in floors.items():
        a, b = _num(stored.get(m)), _num(recomputed.get(m))
        tol = max(floor, spread.get(m, 0.0))
        both_missing = not math.isfinite(a) and not math.isfinite(b)
        passed = both_missing or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol + 1e-12)
        rows.append({"experiment": experiment, "run": run, "measure": m, "stored": a, "recomputed": b,
                     "tolerance": tol, "passed": bool(passed)})
    return rows


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def compare_assessed(experiment: str, run: str, stored: Any, recomputed: Any, *,
                     floors: dict[str, float] = KD_MEASURES) -> list[dict[str, Any]]:
    """The rows for one kernel-dynamics run from the :class:`~conelib.measures.bootstrap.Assessment`
    of the stored and of the recomputed run (see the module docstring)."""
    rows = []
    vs, vr = stored.point.verdict, recomputed.point.verdict
    unstable = min(stored.agreement, recomputed.agreement) < STABLE
    rows.append({"experiment": experiment, "run": run, "measure": "verdict", "stored": vs, "recomputed": vr,
                 "tolerance": (f"unstable ({100 * stored.agreement:.0f}% / {100 * recomputed.agreement:.0f}% of "
                               "draws agree): not compared") if unstable and vs != vr else "equal",
                 "passed": vs == vr or unstable})
    for m, floor in floors.items():
        a, b = _num(getattr(stored.point, m)), _num(getattr(recomputed.point, m))
        ha, hb = stored.half_width(m), recomputed.half_width(m)
        hw = math.sqrt((ha if math.isfinite(ha) else 0.0) ** 2 + (hb if math.isfinite(hb) else 0.0) ** 2)
        tol = max(floor, hw)
        both_missing = not math.isfinite(a) and not math.isfinite(b)
        passed = both_missing or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol + 1e-12)
        rows.append({"experiment": experiment, "run": run, "measure": m, "stored": a, "recomputed": b,
                     "tolerance": tol, "passed": bool(passed)})
    return rows


def accuracy_tolerance(acc: float, n_test: int, floor: float = SW_MEASURES["final_test_acc"]) -> float:
    """3 standard errors of the difference of two independent accuracies on ``n_test`` images."""
    if not math.isfinite(acc) or n_test <= 0:
        return floor
    return max(floor, 3.0 * math.sqrt(2.0 * acc * (1.0 - acc) / n_test))


# --------------------------------------------------------------------------------------------
# The plan: which runs, at what expected cost
# --------------------------------------------------------------------------------------------

#: the experiments :func:`reproduce` knows, in the order it compares them
EXPERIMENTS = ("kernel_dynamics", "switching", "atlas", "controls", "spawning")

#: the sweeps the book draws from, compared through their summaries: name -> grid file in sweeps/
SWEEP_GRIDS: dict[str, str] = {"atlas": "atlas.yaml", "controls": "controls.yaml"}


@dataclass
class PlannedRun:
    """One run to recompute: ``experiment`` (the function: kernel_dynamics, switching or spawning), its
    ``config`` (one seed), the ``figures`` it is compared in, its ``label`` there, and its
    expected ``cost`` in seconds on one single-threaded worker (from the stored results; NaN when
    they do not say)."""

    experiment: str
    config: Any
    figures: list[str]
    label: str
    cost: float

    @property
    def hash(self) -> str:

        return config_hash(self.config.identity())


def _wall(ds: Any) -> float:
    try:
        return float(ds.attrs.get("wall_seconds", float("nan")))
    except (TypeError, ValueError):
        return float("nan")


def _sweep_grid(name: str, atlas_grid: str | Path | None = None) -> Any:
    """The grid of one of :data:`SWEEP_GRIDS` (``atlas_grid`` in place of the atlas' own)."""
    if name == "atlas" and atlas_grid is not None:
        return load_grid(atlas_grid)
    return load_grid(sweeps_dir() / SWEEP_GRIDS[name])


def _cheapest(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The run of least known cost (the first when no cost is known)."""
    if not runs:
        return []
    known = [r for r in runs if math.isfinite(r.cost)]
    return [min(known, key=lambda r: r.cost) if known else runs[0]]


#: per experiment stored over several seeds: the wall-time variables whose sums over one seed make
#: its cost (the first is required)
SEED_COSTS: dict[str, tuple[str, ...]] = {
    "switching": ("standard_seconds", "continuation_seconds", "small_lr_seconds"),
    "spawning": ("parent_seconds", "child_seconds", "barrier_seconds"),
}


def _seed_cost(ds: xr.Dataset, k: int, names: Sequence[str]) -> float:
    """Wall time of seed number ``k`` of a stored multi-seed result: the sum of ``names`` over it."""
    if names[0] not in ds:
        return float("nan")
    return float(sum(np.nansum(ds[n].isel(seed=k).values) for n in names if n in ds))


def _stored_runs(experiment: str, configs: Sequence[Any], missing: list[str], quick: bool) -> list[PlannedRun]:
    """The runs to recompute for the profile's ``configs`` of one experiment: one per stored run
    (one per seed of a multi-seed result, each on one process), with its stored cost; the cheapest
    only with ``quick``. Configurations with no stored result are added to ``missing``."""
    found = []
    for cfg in configs:
        seeded = experiment in SEED_COSTS
        path = result_path(experiment, cfg.identity())
        if not path.exists():
            missing.append(f"{experiment} {cfg.model}" + ("" if seeded else f" seed {cfg.seed}"))
            continue
        old = load_result(path)
        if not seeded:
            found.append(PlannedRun(experiment, cfg, [experiment], f"{cfg.model} seed {cfg.seed}", _wall(old)))
            continue
        for k, seed in enumerate(old["seed"].values.tolist()):
            one = cfg.for_seed(int(seed))
            if "processes" in one.parameters():
                one = one.replace(processes=1)
            found.append(PlannedRun(experiment, one, [experiment], f"{cfg.model} seed {int(seed)}",
                                    _seed_cost(old, k, SEED_COSTS[experiment])))
    return _cheapest(found) if quick else found


def has_section(profile: str, experiment: str) -> bool:
    """Whether ``profile`` has a section for ``experiment``."""
    data = load_file(profile_path(profile)) or {}
    return isinstance(data, dict) and experiment in data


def plan(profile: str = "mnist", only: Sequence[str] | None = None, *, quick: bool = False,
         atlas_grid: str | Path | None = None) -> tuple[list[PlannedRun], list[str]]:
    """The runs :func:`reproduce` recomputes, and the stored results it cannot find.

    Kernel dynamics: every run of the profile (one per model and seed). Switching: every seed of
    every model of the profile, one run each. Atlas: every run of the sweep grid. A run's cost is
    read from the stored results: a kernel-dynamics run's ``wall_seconds``; a switching seed's
    standard run plus its continuations (``standard_seconds``, ``continuation_seconds``); an atlas
    run's ``wall_seconds`` in the sweep summary. Spawning: every seed of every model of the
    profile, one run each (its parent plus its children, ``parent_seconds`` and ``child_seconds``
    plus ``barrier_seconds``); left out when ``only`` is not given and the profile has no spawning
    section. With ``quick``, one run per experiment: the cheapest.

    Returns:
        ``(runs, missing)``: runs whose stored counterpart exists, and the stored results not found.
    """

    only = list(only or default_experiments(profile))
    unknown = [e for e in only if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown} for reproduce; choose from {list(EXPERIMENTS)}")
    runs: list[PlannedRun] = []
    missing: list[str] = []
    if "kernel_dynamics" in only:
        runs += _stored_runs("kernel_dynamics", kernel_dynamics_configs(profile), missing, quick)
    if "switching" in only:
        runs += _stored_runs("switching", switching_configs(profile), missing, quick)
    for name in (n for n in SWEEP_GRIDS if n in only):
        grid = _sweep_grid(name, atlas_grid)
        path = summary_path(grid, default_results_root())
        if not path.exists():
            missing.append(f"{name} summary")
            continue
        summary = load_result(path)
        walls = dict(zip(summary["config_hash"].values.tolist(), summary["wall_seconds"].values.tolist()))
        found = [PlannedRun("kernel_dynamics", p.config, [name], ", ".join(f"{k}={v}" for k, v in p.coords.items()),
                            float(walls.get(_hash(p.config), float("nan"))))
                 for p in expand_grid(grid)]
        runs += _cheapest(found) if quick else found
    if "spawning" in only:
        runs += _stored_runs("spawning", spawning_configs(profile), missing, quick)
    return _merge(runs), missing


def default_experiments(profile: str) -> list[str]:
    """The experiments :func:`reproduce` compares when not told: :data:`EXPERIMENTS`, less spawning
    when the profile has no spawning section."""
    return [e for e in EXPERIMENTS if e != "spawning" or has_section(profile, "spawning")]


def _hash(cfg: Any) -> str:
    return config_hash(cfg.identity())


def _merge(runs: list[PlannedRun]) -> list[PlannedRun]:
    """One run per configuration: a run two figures need (e.g. the atlas' base point and a
    kernel-dynamics run of the profile) is computed once and compared in both."""
    out: dict[tuple[str, str], PlannedRun] = {}
    for r in runs:
        key = (r.experiment, r.hash)
        if key in out:
            out[key].figures += [f for f in r.figures if f not in out[key].figures]
            if not math.isfinite(out[key].cost):
                out[key].cost = r.cost
        else:
            out[key] = PlannedRun(r.experiment, r.config, list(r.figures), r.label, r.cost)
    return list(out.values())


def projected_seconds(costs: Sequence[float], workers: int) -> float:
    """Wall time of running jobs of the given costs on ``workers`` identical workers, longest first,
    each job to the first worker free (what :func:`reproduce` asks of the scheduler): the largest
    finishing time. 0 for no jobs; unknown (NaN) costs count as 0."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    free = [0.0] * int(workers)
    for c in sorted((c if math.isfinite(c) else 0.0 for c in costs), reverse=True):
        heapq.heappush(free, heapq.heappop(free) + c)
    return max(free) if costs else 0.0


# --------------------------------------------------------------------------------------------
# The jobs (run on Dask workers)
# --------------------------------------------------------------------------------------------


def _job(experiment: str, config: dict[str, Any], results_root: str, torch_threads: int | None) -> dict[str, Any]:
    """Recompute one run into ``results_root`` (loaded, not recomputed, when it is already there)."""
    import torch


    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    t0 = time.perf_counter()
    try:
        if experiment == "kernel_dynamics":
            ds = kernel_dynamics(KernelDynamicsConfig.from_mapping(config), results_root=results_root, progress=False)
        elif experiment == "spawning":
            ds = spawning(SpawningConfig.from_mapping(config), results_root=results_root, progress=False)
        else:
            ds = switching(SwitchingConfig.from_mapping(config), results_root=results_root, progress=False)
    except Exception as err:  # noqa: BLE001 - every failure is reported with its run
        raise JobError(f"{type(err).__name__}: {err}\n{traceback.format_exc()}") from None
    return {"seconds": time.perf_counter() - t0, "pid": os.getpid(), "config_hash": str(ds.attrs["config_hash"])}


def _recompute(report: ReproduceReport, runs: list[PlannedRun], scratch: Path, *, client: Any, address: str | None,
               workers: int, progress: bool) -> None:
    """Every run not yet in ``scratch``, as Dask jobs (longest first); the others are resumed."""
    todo = []
    for r in runs:
        if result_status(result_path(r.experiment, r.config.identity(), scratch)) == "ok":
            report.jobs.append({"experiment": r.experiment, "run": r.label, "figures": r.figures, "status": "resumed",
                                "seconds": 0.0, "pid": None, "error": None})
        else:
            todo.append(r)
    if not todo:
        return
    with dask_client(client=client, address=address, workers=workers) as (cl, threads):
        report.cluster = describe(cl)
        jobs = [Job(f"reproduce-{r.experiment}-{r.hash}", _job, (r.experiment, r.config.flat(), str(scratch), threads),
                    priority=r.cost if math.isfinite(r.cost) else 0.0, meta={"run": r}) for r in todo]
        for out in run_jobs(cl, jobs, progress=progress, desc="reproduce"):
            r = out.job.meta["run"]
            entry = {"experiment": r.experiment, "run": r.label, "figures": r.figures, "status": "computed",
                     "seconds": None, "pid": None, "error": None}
            if out.ok:
                entry.update(seconds=out.result["seconds"], pid=out.result["pid"])
            else:
                entry.update(status="failed", error=out.error)
                report.failed.append(f"{r.experiment} {r.label} ({'/'.join(r.figures)}): {out.error}")
            report.jobs.append(entry)


def _fresh(experiment: str, cfg: Any, scratch: Path) -> Any:
    """The recomputed run in ``scratch``, or ``None`` (its job failed)."""
    path = result_path(experiment, cfg.identity(), scratch)
    return load_result(path) if result_status(path) == "ok" else None


# --------------------------------------------------------------------------------------------
# The comparisons (the stored runs against the recomputed ones)
# --------------------------------------------------------------------------------------------


def _kernel_dynamics(report: ReproduceReport, profile: str, scratch: Path, runs: list[PlannedRun]) -> None:
    planned = {r.hash for r in runs if "kernel_dynamics" in r.figures}
    for cfg in kernel_dynamics_configs(profile):
        path = result_path("kernel_dynamics", cfg.identity())
        if not path.exists() or _hash(cfg) not in planned:
            continue
        new = _fresh("kernel_dynamics", cfg, scratch)
        if new is None:
            continue
        old = load_result(path)
        run = f"{cfg.model} seed {cfg.seed}"
        report.rows += compare_assessed("kernel_dynamics", run, assess(old), assess(new))
        a, b = float(old["test_acc"].isel(step=-1)), float(new["test_acc"].isel(step=-1))
        tol = accuracy_tolerance(a, int(old.attrs.get("n_test", 10000)))
        report.rows.append({"experiment": "kernel_dynamics", "run": run, "measure": "final_test_acc", "stored": a,
                            "recomputed": b, "tolerance": tol, "passed": bool(abs(a - b) <= tol + 1e-12)})


def _stored_and_fresh(experiment: str, configs: Sequence[Any], scratch: Path, runs: list[PlannedRun]
                      ) -> Iterator[tuple[Any, xr.Dataset, dict[int, xr.Dataset]]]:
    """For each of ``configs`` with a stored multi-seed result (switching, spawning): the
    configuration, the stored result and its recomputed one-seed runs by seed (those planned and
    found in ``scratch``)."""
    planned = {r.hash for r in runs if experiment in r.figures}
    for cfg in configs:
        path = result_path(experiment, cfg.identity())
        if not path.exists():
            continue
        old = load_result(path)
        new = {}
        for s in old["seed"].values.tolist():
            one = cfg.for_seed(int(s))
            ds = _fresh(experiment, one, scratch) if _hash(one) in planned else None
            if ds is not None:
                new[int(s)] = ds
        yield cfg, old, new


def _switching(report: ReproduceReport, profile: str, scratch: Path, runs: list[PlannedRun]) -> None:
    for cfg, old, new in _stored_and_fresh("switching", switching_configs(profile), scratch, runs):
        n_test = int(old.attrs.get("n_test", 10000))
        arms = [v for v in ("final_test_acc", "small_lr_final_test_acc") if v in old]  # the baseline, when stored
        for t in old["switch_step"].values:
            for s in old["seed"].values:
                if int(s) not in new:
                    continue
                a = {v: float(old[v].sel(switch_step=t, seed=s)) for v in arms}
                b = {v: float(new[int(s)][v].sel(switch_step=t, seed=s)) if v in new[int(s)] else float("nan")
                     for v in arms}
                report.rows += compare(
                    "switching", f"{cfg.model} t={int(t)} seed {int(s)}", a, b,
                    {v: accuracy_tolerance(a[v], n_test) for v in arms},
                    {v: SW_MEASURES["final_test_acc"] for v in arms})


def _sweep(report: ReproduceReport, name: str, scratch: Path, runs: list[PlannedRun], grid: Any,
           quick: bool) -> None:
    """One of :data:`SWEEP_GRIDS`: its stored summary against the summary of the recomputed runs
    (each run's verdict, and its final test accuracy)."""
    path = summary_path(grid, default_results_root())
    if not path.exists():
        return
    old = load_result(path)
    new = summarize(grid, scratch, save=not quick)  # a partial summary (--quick) is not stored
    planned = {r.hash for r in runs if name in r.figures}
    for r in old["run"].values:
        o, n = old.sel(run=r), new.sel(run=r)
        if str(o["config_hash"].values) not in planned or str(n["status"].values) != "stored":
            continue
        label = ", ".join(f"{d}={o[d].values}" for d in json.loads(old.attrs["swept_fields"]))
        vo, vn = str(o["verdict"].values), str(n["verdict"].values)
        agree = [float(x["verdict_agreement"]) for x in (o, n) if "verdict_agreement" in x]
        unstable = bool(agree) and min(agree) < STABLE
        report.rows.append({"experiment": name, "run": label, "measure": "verdict", "stored": vo,
                            "recomputed": vn, "tolerance": "unstable: not compared" if unstable and vo != vn
                            else "equal", "passed": vo == vn or unstable})
        a = float(o["final_test_acc"])
        report.rows += compare(name, label, {"final_test_acc": a}, {"final_test_acc": float(n["final_test_acc"])},
                               {"final_test_acc": accuracy_tolerance(a, 10000)}, SW_MEASURES)


def _spawning(report: ReproduceReport, profile: str, scratch: Path, runs: list[PlannedRun]) -> None:
    """Spawning (linear mode connectivity): per model, spawn step and seed, the error barrier, the
    loss barrier and the children's mean test accuracy (see the module docstring)."""
    for cfg, old, new in _stored_and_fresh("spawning", spawning_configs(profile), scratch, runs):
        n_test = int(old.attrs.get("n_test", 10000))
        for t in old["spawn_step"].values:
            for s in old["seed"].values:
                if int(s) not in new:
                    continue
                o, r = old.sel(spawn_step=t, seed=s), new[int(s)].sel(spawn_step=t, seed=s)
                acc = float(o["child_test_acc"].mean())
                values = [{m: float(x[m].mean()) for m in SP_MEASURES} for x in (o, r)]
                spread = {"error_barrier": error_tolerance(100 * (1 - acc), n_test),
                          "loss_barrier": loss_tolerance(float(o["child_test_loss_sd"].mean()), n_test),
                          "child_test_acc": accuracy_tolerance(acc, n_test)}
                report.rows += compare("spawning", f"{cfg.model} t={int(t)} seed {int(s)}", values[0], values[1],
                                       spread, SP_MEASURES)


def default_scratch(profile: str) -> Path:
    """``<cache>/reproduce/<profile name>``: the same folder from one call to the next (resumable)."""
    return cache_dir() / "reproduce" / Path(str(profile)).stem


def reproduce(*, scratch: str | Path | None = None, profile: str = "mnist", only: Sequence[str] | None = None,
              write_page: bool = True, quick: bool = False, fresh: bool = False, client: Any | None = None,
              address: str | None = None, workers: int = 2, atlas_grid: str | Path | None = None,
              progress: bool = True) -> ReproduceReport:
    """Recompute the book's runs into ``scratch`` on Dask (see the module docstring) and compare.

    Args:
        scratch: where the recomputed runs go; runs already there are loaded, not recomputed.
            Default :func:`default_scratch` (the same each time), or with ``fresh`` a new
            temporary folder.
        profile: the profile of the book's runs.
        only: the experiments to reproduce (default all of :data:`EXPERIMENTS`; spawning only when
            the profile has a spawning section).
        write_page: write the table into ``book/reproducibility_table.md`` (never with ``quick``,
            whose table is partial).
        quick: one run per experiment, the cheapest (see :func:`plan`).
        fresh: start over in a new temporary folder (with no ``scratch`` given).
        client, address, workers: where the jobs run (:func:`conelib.sweep.cluster.dask_client`).
        atlas_grid: the atlas sweep's grid file (default ``sweeps/atlas.yaml``).
        progress: a text progress bar over the jobs.

    Raises:
        ValueError: an unknown experiment in ``only``, ``workers`` < 1, ``fresh`` with a ``scratch``.
    """

    check_workers(workers)
    if fresh and scratch is not None:
        raise ValueError("fresh starts in a new temporary folder: give either scratch or fresh, not both")
    only = list(only or default_experiments(profile))
    runs, missing = plan(profile, only, quick=quick, atlas_grid=atlas_grid)
    if scratch is None:
        scratch = Path(tempfile.mkdtemp(prefix="conelib-reproduce-")) if fresh else default_scratch(profile)
    scratch = Path(scratch).expanduser().resolve()  # absolute: the jobs may run in other working directories
    scratch.mkdir(parents=True, exist_ok=True)
    report = ReproduceReport(scratch=scratch, missing=missing, quick=quick)
    t0 = time.perf_counter()
    _recompute(report, runs, scratch, client=client, address=address, workers=workers, progress=progress)
    report.seconds["total"] = time.perf_counter() - t0
    for name in only:
        spent = sum(j["seconds"] or 0.0 for j in report.jobs if name in j["figures"])
        if spent:
            report.seconds[f"{name} runs"] = spent
    if "kernel_dynamics" in only:
        _kernel_dynamics(report, profile, scratch, runs)
    if "switching" in only:
        _switching(report, profile, scratch, runs)
    for name in (n for n in SWEEP_GRIDS if n in only):
        _sweep(report, name, scratch, runs, _sweep_grid(name, atlas_grid), quick)
    if "spawning" in only:
        _spawning(report, profile, scratch, runs)
    (scratch / "reproduce.json").write_text(json.dumps({"rows": report.rows, "seconds": report.seconds,
                                                         "missing": report.missing, "failed": report.failed,
                                                         "jobs": report.jobs, "cluster": report.cluster,
                                                         "quick": quick}, indent=1, default=str))
    if write_page and not quick:

        root = repo_root()
        if root is not None:
            (root / "book" / "reproducibility_table.md").write_text(report.markdown(), encoding="utf-8")
    return report
