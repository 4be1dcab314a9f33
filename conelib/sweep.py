"""Sweeps: the kernel-dynamics experiment over a grid of settings, run on Dask distributed.

The paper shows one setting with a cone and one without, and leaves open which factors decide
(Zhou et al. 2025, Section 5 and Figure 3). A sweep makes that question measurable: it runs
:func:`conelib.experiments.kernel_dynamics.kernel_dynamics` once per point of a grid (model,
dataset, learning rate, width, normalisation, batch size, seed, ...), each job writing its own
Dataset, and then reads the measures of :mod:`conelib.measures` off every stored run into one
summary Dataset whose dimensions are the swept fields.

A grid file (YAML)::

    # sweeps/example.yaml
    base:                      # KernelDynamicsConfig fields shared by every run
      profile: quick           # optional: start from profiles/quick.yaml's kernel_dynamics section
      steps: 1000              # ... and override some of its fields
    grid:                      # field -> values; the runs are the cartesian product
      lr: [0.005, 0.05]
      weight_decay: [0.0, 5.0e-4]
      model: [lenet5, lenet_300_100]
    results_root: null         # optional; default: the repository's results/

Running it (each configuration is one Dask task; the CLI and Python do the same thing)::

    conelib sweep sweeps/example.yaml                                # a LocalCluster, 2 workers
    conelib sweep sweeps/example.yaml --workers 4
    conelib sweep sweeps/example.yaml --address tcp://scheduler:8786  # any running scheduler

    >>> from conelib.sweep import load_grid, run_sweep
    >>> report = run_sweep(load_grid("sweeps/example.yaml"), workers=2)   # doctest: +SKIP
    >>> print(report)                                                       # doctest: +SKIP

On a SLURM cluster, start the workers as batch jobs with dask-jobqueue (the optional extra
``pip install 'conelib[slurm]'``), one GPU per worker, and hand the client to :func:`run_sweep`::

    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(cores=8, memory="32GB", processes=1,
                           job_extra_directives=["--gres=gpu:1"], walltime="04:00:00")
    cluster.scale(jobs=4)                         # four SLURM jobs = four workers = four GPUs
    report = run_sweep(grid, client=Client(cluster), results_root="/shared/conelib-results")

Every worker must see the same ``results_root`` (a shared file system) and have ``conelib``
installed. With ``device: auto`` each run uses its worker's GPU.

Guarantees:

* **Skips what is stored.** A configuration whose result file exists
  (:func:`conelib.results.result_path`) is not submitted.
* **Nothing partial.** Each job stores its Dataset atomically (through
  :func:`conelib.results.load_or_compute`); a killed job leaves no file, so it counts as missing.
* **Failures are isolated.** A job that raises is reported with its configuration and error
  (:class:`JobFailure`) and does not cancel the others.
* **Resumable.** Running the same grid again submits only the missing and failed configurations.

The summary (:func:`summarize`) is stored with :func:`conelib.results.save_result` under
``<results_root>/sweeps/<grid hash>.nc``; the grid hash covers the resolved base configuration and
the axes, not the profile's name or the file's path.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import json
import os
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
import yaml

from conelib.experiments.kernel_dynamics import EXPERIMENT, KernelDynamicsConfig, kernel_dynamics
from conelib.measures import VERDICTS, check_thresholds, verdict
from conelib.config import ParameterError, coerce, unknown_names_error
from conelib.profiles import load_profile, merge
from conelib.yamlio import load_file
from conelib.results import (
    config_hash,
    load_result,
    provenance_attrs,
    resolve_root,
    result_path,
    result_status,
    save_result,
)

__all__ = [
    "GRID_KEYS",
    "SUMMARY_EXPERIMENT",
    "Grid",
    "GridPoint",
    "JobFailure",
    "SweepJobError",
    "SweepReport",
    "expand_grid",
    "load_grid",
    "pending",
    "run_sweep",
    "run_sweep_file",
    "summarize",
    "summary_path",
]

#: top-level keys of a grid file
GRID_KEYS: tuple[str, ...] = ("base", "grid", "results_root")
#: summaries are stored as ``<results_root>/<SUMMARY_EXPERIMENT>/<grid hash>.nc``
SUMMARY_EXPERIMENT = "sweeps"
#: integer code of a grid point whose result is not stored (in ``verdict_code``)
MISSING_CODE = -1

_VERDICT_PARAMS = {"fraction", "min_phase_two", "smooth", "lazy_tol", "plateau_share"}


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A sweep: a base :class:`KernelDynamicsConfig` and the values of the swept fields.

    Attributes:
        base: every parameter of the base configuration by name (a profile, if one was named,
            already merged).
        axes: swept parameter -> its values, coerced like any parameter (the summary's dimensions).
        results_root: where results are stored (``None``: :func:`conelib.results.default_results_root`).
        source: the grid file, if it came from one.
    """

    base: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    results_root: str | None = None
    source: str | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, source: str | None = None) -> Grid:
        """Build and validate a grid from the mapping a grid file holds (see the module docstring)."""
        where = f"the grid {source}" if source else "the grid"
        if not isinstance(mapping, Mapping):
            raise ValueError(f"a grid must be a mapping with keys {list(GRID_KEYS)}, got {type(mapping).__name__}")
        unknown = sorted(set(mapping) - set(GRID_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {list(GRID_KEYS)}")
        base = mapping.get("base") or {}
        if not isinstance(base, Mapping):
            raise ValueError(f"key 'base' of {where} must be a mapping of parameters (and optionally 'profile')")
        base = dict(base)
        profile = base.pop("profile", None)
        if profile is not None:
            base = merge(load_profile(profile, EXPERIMENT), base)
            for key in ("models", "seeds"):  # a profile's lists of runs: a grid sweeps model/seed itself
                base.pop(key, None)
        base_cfg = KernelDynamicsConfig.from_mapping(base, where=f"'base' of {where}")
        raw_axes = mapping.get("grid")
        if not isinstance(raw_axes, Mapping) or not raw_axes:
            raise ValueError(f"key 'grid' of {where} must be a non-empty mapping: parameter -> list of values")
        params = KernelDynamicsConfig.parameters()
        unknown = [n for n in raw_axes if n not in params]
        if unknown:
            raise unknown_names_error(unknown, params, f"'grid' of {where}")
        axes: dict[str, tuple[Any, ...]] = {}
        for name, values in raw_axes.items():
            if params[name].runtime:
                raise ParameterError(name, f"grid parameter {name!r} says where/how to run, not what is computed "
                                     f"(a runtime parameter): set it under 'base', do not sweep it")
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ParameterError(name, f"grid parameter {name!r} must list at least one value, got {values!r}")
            vals = tuple(coerce(params[name], v) for v in values)
            if len(set(map(repr, vals))) != len(vals):
                raise ParameterError(name, f"grid parameter {name!r} lists a value twice: {list(values)}")
            axes[name] = vals
        root = mapping.get("results_root")
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise ValueError(f"key 'results_root' of {where} must be a path or null, got {root!r}")
        if root is not None and source is not None and not Path(root).expanduser().is_absolute():
            root = Path(source).resolve().parent / root  # relative to the grid file
        grid = cls(base_cfg.flat(), axes, None if root is None else str(root), source)
        expand_grid(grid)  # every point must be a valid configuration
        return grid

    @property
    def size(self) -> int:
        return int(np.prod([len(v) for v in self.axes.values()]))

    def identity(self) -> dict[str, Any]:
        """What the grid computes: the base configuration's identity and the axes."""
        base = KernelDynamicsConfig.from_mapping(self.base).identity()
        for name in self.axes:
            base.pop(name, None)
        return {"base": base, "grid": {k: list(v) for k, v in self.axes.items()}}

    @property
    def hash(self) -> str:
        return config_hash(self.identity())


def load_grid(path: str | os.PathLike) -> Grid:
    """Read a grid file (YAML; see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"grid file not found: {p}")
    mapping = load_file(p)
    return Grid.from_mapping(mapping if mapping is not None else {}, source=str(p))


class GridPoint(NamedTuple):
    """One run of a sweep: its coordinates on the grid and its full configuration."""

    coords: dict[str, Any]
    config: KernelDynamicsConfig


def expand_grid(grid: Grid) -> list[GridPoint]:
    """The cartesian product of the axes applied to the base configuration, in row-major order.

    Raises:
        ValueError: naming the grid point whose configuration is invalid.
    """
    names = list(grid.axes)
    points = []
    for combo in itertools.product(*(grid.axes[n] for n in names)):
        coords = dict(zip(names, combo))
        try:
            cfg = KernelDynamicsConfig.from_mapping({**grid.base, **coords})
        except ParameterError as err:
            raise ParameterError(err.name, f"grid point {coords} is not a valid configuration: {err}") from None
        points.append(GridPoint(coords, cfg))
    return points


def _root(grid: Grid, results_root: str | os.PathLike | None) -> Path:
    return resolve_root(results_root if results_root is not None else grid.results_root)


def pending(grid: Grid, results_root: str | os.PathLike | None = None) -> list[GridPoint]:
    """The grid points whose result is not stored yet (what a sweep would submit)."""
    root = _root(grid, results_root)
    return [p for p in expand_grid(grid) if result_status(result_path(EXPERIMENT, p.config.identity(), root)) != "ok"]


# --------------------------------------------------------------------------------------------
# Running on Dask
# --------------------------------------------------------------------------------------------


class SweepJobError(RuntimeError):
    """A sweep job failed; the message holds the original exception's type, message and traceback.

    (Raised on the worker in place of the original exception, which may not survive pickling on its
    way back to the client.)
    """


def _run_job(config: dict[str, Any], results_root: str, torch_threads: int | None) -> dict[str, Any]:
    """One sweep job, run on a Dask worker: the kernel-dynamics experiment for ``config``."""
    import torch

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    try:
        cfg = KernelDynamicsConfig.from_mapping(config)
        ds = kernel_dynamics(cfg, results_root=results_root, progress=False)
    except Exception as err:  # noqa: BLE001 - every failure is reported with its configuration
        raise SweepJobError(f"{type(err).__name__}: {err}\n{traceback.format_exc()}") from None
    return {"config_hash": str(ds.attrs["config_hash"]), "wall_seconds": float(ds.attrs.get("wall_seconds", np.nan))}


@dataclass(frozen=True)
class JobFailure:
    """A configuration whose job failed: where it sits on the grid, what it was, and why."""

    coords: dict[str, Any]
    config_hash: str
    config: dict[str, Any]
    error: str  # "<ExceptionType>: <message>"
    traceback: str = ""

    def __str__(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.coords.items())
        return f"{where} [{self.config_hash}]: {self.error}"


@dataclass
class SweepReport:
    """What a sweep did. ``str(report)`` is the text the ``conelib sweep`` command prints."""

    grid: Grid
    results_root: Path
    total: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    completed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[JobFailure] = field(default_factory=list)
    wall_seconds: float = 0.0
    cluster: str = ""
    summary_path: Path | None = None
    summary: xr.Dataset | None = None

    @property
    def submitted(self) -> int:
        return len(self.completed) + len(self.failed)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        axes = " × ".join(f"{k} ({len(v)})" for k, v in self.grid.axes.items())
        lines = [
            f"sweep {self.grid.source or '<grid>'} (grid {self.grid.hash}): {self.total} configurations over {axes}",
            f"  already stored: {len(self.skipped)}, computed now: {len(self.completed)}, failed: {len(self.failed)}"
            + (f" (recomputed because unreadable: {len(self.unreadable)})" if self.unreadable else "")
            + f"  ({self.wall_seconds:.0f} s on {self.cluster or 'no cluster'})",
            f"  results: {self.results_root}",
        ]
        if self.failed:
            lines.append("  failed configurations (rerun the sweep to retry them):")
            lines += [f"    {f}" for f in self.failed]
        if self.summary_path is not None:
            lines.append(f"  summary: {self.summary_path}")
        if self.summary is not None:
            cols = ["verdict", "phase_one_end", "late_growth_share", "velocity_drop", "final_test_acc"]
            df = self.summary[cols].to_dataframe()
            lines.append("  " + df.to_string(float_format=lambda x: f"{x:.3g}").replace("\n", "\n  "))
        return "\n".join(lines)


def _describe(client: Any) -> str:
    try:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
        return f"{len(workers)} Dask workers ({threads} threads) at {info.get('address', '?')}"
    except Exception:  # noqa: BLE001 - only a description
        return "a Dask cluster"


def run_sweep(
    grid: Grid,
    *,
    client: Any | None = None,
    address: str | None = None,
    workers: int = 2,
    results_root: str | os.PathLike | None = None,
    retries: int = 0,
    torch_threads: int | None = None,
    progress: bool = True,
    write_summary: bool = True,
) -> SweepReport:
    """Run every configuration of ``grid`` whose result is not stored, one Dask task each.

    Args:
        grid: the grid (:func:`load_grid` reads one from YAML).
        client: a ``dask.distributed.Client`` to use (e.g. on a ``SLURMCluster``; see the module
            docstring); it is left open.
        address: else, the address of a running scheduler (``tcp://host:8786``).
        workers: else, the number of workers of the ``LocalCluster`` started here (one process per
            worker, one thread each) and shut down at the end.
        results_root: where results are stored (default: the grid's, else the default root); every
            worker must see it.
        retries: Dask retries per job (for transient failures; a deterministic failure fails again).
        torch_threads: ``torch.set_num_threads`` in each job; ``None`` → 1 on the LocalCluster
            started here (so ``workers`` jobs share the cores), torch's default on other clusters.
        progress: a text progress bar over the jobs.
        write_summary: afterwards, :func:`summarize` the grid and store the summary.

    Returns:
        A :class:`SweepReport`: the configurations skipped, completed and failed (with their
        errors), the wall time, and the summary.
    """
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    if int(workers) < 1:
        raise ValueError(f"workers must be a positive number of LocalCluster workers, got {workers}")
    if int(retries) < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if client is not None and address is not None:
        raise ValueError("give either client or address, not both")
    root = _root(grid, results_root)
    points = expand_grid(grid)
    report = SweepReport(grid=grid, results_root=root, total=len(points))
    todo = []
    for p in points:
        status = result_status(result_path(EXPERIMENT, p.config.identity(), root))
        if status == "ok":
            report.skipped.append(p.coords)
        else:  # missing, or unreadable / changed: the job recomputes it (with a warning)
            if status != "missing":
                report.unreadable.append(p.coords)
            todo.append(p)
    t0 = time.perf_counter()
    if todo:
        own_cluster = own_client = None
        if client is None:
            if address is not None:
                client = own_client = Client(address)
            else:
                own_cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.CRITICAL)
                client = own_client = Client(own_cluster)
                torch_threads = 1 if torch_threads is None else torch_threads
        report.cluster = _describe(client)
        try:
            futures = {}
            for p in todo:
                h = config_hash(p.config.identity())
                fut = client.submit(_run_job, p.config.flat(), str(root), torch_threads,
                                    key=f"kernel_dynamics-{h}", pure=False, retries=int(retries))
                futures[fut] = (p, h)
            bar = tqdm(total=len(futures), desc=f"sweep {grid.hash}", unit="run", disable=not progress)
            for fut in as_completed(list(futures)):
                p, h = futures[fut]
                if fut.status == "finished":
                    report.completed.append({**p.coords, **fut.result()})
                else:
                    exc = fut.exception()
                    text = str(exc)
                    head, _, tb = text.partition("\n")
                    if not isinstance(exc, SweepJobError):  # e.g. KilledWorker: the worker died
                        head, tb = f"{type(exc).__name__}: {exc}", ""
                    report.failed.append(JobFailure(p.coords, h, p.config.identity(), head, tb))
                bar.update(1)
                bar.set_postfix(failed=len(report.failed))
            bar.close()
        finally:
            if own_client is not None:
                own_client.close()
            if own_cluster is not None:
                own_cluster.close()
    report.wall_seconds = time.perf_counter() - t0
    if write_summary:
        report.summary = summarize(grid, root)
        report.summary_path = summary_path(grid, root)
    return report


def run_sweep_file(
    path: str | os.PathLike,
    *,
    address: str | None = None,
    workers: int = 2,
    results_root: str | os.PathLike | None = None,
    **kwargs: Any,
) -> SweepReport:
    """:func:`run_sweep` on the grid file at ``path`` (what ``conelib sweep GRID.yaml`` calls)."""
    return run_sweep(load_grid(path), address=address, workers=workers, results_root=results_root, **kwargs)


# --------------------------------------------------------------------------------------------
# The summary
# --------------------------------------------------------------------------------------------


def summary_path(grid: Grid, results_root: str | os.PathLike | None = None) -> Path:
    """``<results_root>/sweeps/<grid hash>.nc``."""
    return result_path(SUMMARY_EXPERIMENT, grid.identity(), _root(grid, results_root))


def _coord_values(values: Sequence[Any]) -> np.ndarray:
    """netCDF-safe coordinate values: numbers and strings as they are; None, bools, tuples as text."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.asarray(values)
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=object)
    return np.asarray(["none" if v is None else json.dumps(v) if isinstance(v, (bool, tuple, list)) else str(v)
                       for v in values], dtype=object)


#: the summary's variables: name -> (long_name, units)
SUMMARY_VARIABLES: dict[str, tuple[str, str]] = {
    "verdict": ("verdict of conelib.measures.verdict ('missing' when the run is not stored)", ""),
    "verdict_code": ("index of the verdict in conelib.measures.VERDICTS (-1: not stored)", "1"),
    "phase_one_end": ("end of Phase I t* (NaN: no two phases)", "steps"),
    "phase_one_end_frac": ("end of Phase I as a fraction of the run, t*/T", "1"),
    "cone_final": ("distance from H(t*) at the end, fitted: ĝ(T)", "1"),
    "late_growth_share": ("late-growth share (ĝ(T) - ĝ(m)) / ĝ(T)", "1"),
    "velocity_drop": ("peak / late median of the smoothed kernel velocity", "1"),
    "dist_to_init_final": ("kernel distance from initialisation at the end S(θ_T, θ_0)", "1"),
    "final_test_acc": ("test accuracy at the last step", "1"),
    "final_train_acc": ("train accuracy at the last step", "1"),
    "final_train_loss": ("train loss at the last step", "1"),
    "wall_seconds": ("wall time of the run (training + eNTK snapshots)", "s"),
    "config_hash": ("config hash of the run's stored Dataset", ""),
}


def summarize(
    grid: Grid,
    results_root: str | os.PathLike | None = None,
    *,
    save: bool = True,
    **verdict_kwargs: Any,
) -> xr.Dataset:
    """One Dataset of the measures over the grid's dimensions, from the stored runs.

    Each grid point's stored Dataset is read and passed to :func:`conelib.measures.verdict`
    (``verdict_kwargs`` change its thresholds). Points not stored get ``verdict = "missing"``,
    ``verdict_code = -1`` and NaN measures. ``verdict_code`` carries the legend as CF
    ``flag_values``/``flag_meanings`` attributes. With ``save``, the summary is stored atomically
    at :func:`summary_path` (a few kB).
    """
    unknown = sorted(set(verdict_kwargs) - _VERDICT_PARAMS)
    if unknown:
        raise ValueError(f"unknown verdict parameter(s) {unknown}; allowed: {sorted(_VERDICT_PARAMS)}")
    check_thresholds(**verdict_kwargs)
    root = _root(grid, results_root)
    points = expand_grid(grid)
    dims = list(grid.axes)
    shape = tuple(len(grid.axes[d]) for d in dims)
    num = {k: np.full(shape, np.nan) for k in SUMMARY_VARIABLES if k not in ("verdict", "verdict_code", "config_hash")}
    labels = np.full(shape, "missing", dtype=object)
    codes = np.full(shape, MISSING_CODE, dtype=np.int16)
    hashes = np.full(shape, "", dtype=object)
    index = list(itertools.product(*(range(n) for n in shape)))
    for idx, p in zip(index, points):
        h = config_hash(p.config.identity())
        hashes[idx] = h
        path = result_path(EXPERIMENT, p.config.identity(), root)
        if not path.exists():
            continue
        try:
            ds = load_result(path)
        except (OSError, ValueError) as err:  # unreadable or changed: counts as missing
            warnings.warn(f"stored run {path} at {p.coords} is not usable and counts as missing: {err}",
                          RuntimeWarning, stacklevel=2)
            continue
        try:
            v = verdict(ds, **verdict_kwargs)
        except ValueError as err:  # a stored run the measures cannot read stays "missing", with a warning
            warnings.warn(f"stored run {path} at {p.coords} could not be measured: {err}", RuntimeWarning, stacklevel=2)
            continue
        labels[idx], codes[idx] = v.verdict, v.code
        T = float(ds["step"].max())
        for key, val in (("phase_one_end", v.phase_one_end), ("cone_final", v.cone_final),
                         ("late_growth_share", v.late_growth_share), ("velocity_drop", v.velocity_drop)):
            num[key][idx] = np.nan if val is None else float(val)
        num["phase_one_end_frac"][idx] = np.nan if v.phase_one_end is None else v.phase_one_end / T
        num["dist_to_init_final"][idx] = float(ds["dist_to_init"].isel(step=-1))
        for key, var in (("final_test_acc", "test_acc"), ("final_train_acc", "train_acc"),
                         ("final_train_loss", "train_loss")):
            if var in ds:
                num[key][idx] = float(ds[var].isel(step=-1))
        num["wall_seconds"][idx] = float(ds.attrs.get("wall_seconds", np.nan))
    data_vars: dict[str, Any] = {k: (dims, a) for k, a in num.items()}
    data_vars["verdict"] = (dims, labels)
    data_vars["verdict_code"] = (dims, codes)
    data_vars["config_hash"] = (dims, hashes)
    out = xr.Dataset(data_vars, coords={d: (d, _coord_values(grid.axes[d])) for d in dims})
    for k, (long_name, units) in SUMMARY_VARIABLES.items():
        out[k].attrs.update({"long_name": long_name, **({"units": units} if units else {})})
    out["verdict_code"].attrs.update({
        "flag_values": np.arange(-1, len(VERDICTS), dtype=np.int16),
        "flag_meanings": " ".join(s.replace(", ", "_").replace(" ", "_") for s in ("missing", *VERDICTS)),
        "legend": json.dumps({str(i): s for i, s in enumerate(VERDICTS)} | {str(MISSING_CODE): "missing"}),
    })
    out.attrs.update(provenance_attrs(grid.identity()))
    out.attrs.update({
        "experiment": SUMMARY_EXPERIMENT,
        "title": "kernel-dynamics sweep: measures over the grid",
        "grid_json": json.dumps({"base": grid.identity()["base"], "grid": grid.identity()["grid"]}),
        "grid_source": grid.source or "none",
        "swept_fields": json.dumps(dims),
        "verdict_kwargs": json.dumps(verdict_kwargs),
        "n_runs": len(points),
        "n_missing": int((codes == MISSING_CODE).sum()),
    })
    if save:
        save_result(out, summary_path(grid, root))
    return out
