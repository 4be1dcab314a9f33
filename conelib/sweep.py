"""Sweeps: the kernel-dynamics experiment over a grid of settings, run on Dask distributed.

The paper shows one setting with a cone and one without, and leaves open which factors decide
(Zhou et al. 2025, Section 5 and Figure 3). A sweep makes that question measurable: it runs
:func:`conelib.experiments.kernel_dynamics.kernel_dynamics` once per point of a grid (model,
dataset, learning rate, width, normalisation, batch size, seed, ...), each job writing its own
Dataset, and then reads the measures of :mod:`conelib.measures` off every stored run into one
summary Dataset whose dimensions are the swept fields.

A grid file (YAML)::

    # sweeps/example.yaml
    base:                      # parameters shared by every run (any of `conelib params kernel_dynamics`)
      profile: mnist           # optional: start from a profile's kernel_dynamics section
      model: lenet_300_100     # ... and override some of its parameters
    grid:                      # parameter -> values, crossed with everything (here: two seeds)
      seed: [0, 1]
    blocks:                    # optional: a union of small cartesian products ("factor pairs")
      - {lr: [0.03, 0.3], batch_size: [32, 512]}
      - {output_scale: [1, 16]}
    results_root: null         # optional (relative: to this file); default: the repository's results/

Without ``blocks`` the runs are the cartesian product of ``grid``. With them, each block's product
is crossed with ``grid``; a configuration reached twice (the base setting, typically) is one run.
Values are coerced like any parameter (``1e-3`` is a number).

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

* **Nothing silent.** ``conelib sweep`` exits 1 when any run failed; a failed job leaves a
  ``<hash>.failed.json`` record beside the results, and the summary lists every run of the grid
  as stored, failed (with its error), unreadable or missing.

The summary (:func:`summarize`: one row per run, the measures of :mod:`conelib.measures`, the
runs' curves, and the verdict counts for other thresholds) is stored with
:func:`conelib.results.save_result` under ``<results_root>/sweeps/<grid hash>.nc``; the grid hash
covers the resolved base configuration, the axes and the blocks, not the profile's name or the
file's path.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from conelib.atomic import atomic_write
from conelib.cluster import Job, JobError, check_workers, dask_client, describe, run_jobs
from conelib.config import ParameterError, coerce, unknown_names_error
from conelib.experiments.kernel_dynamics import EXPERIMENT, KernelDynamicsConfig, kernel_dynamics
from conelib.measures import VERDICTS, check_thresholds, verdict
from conelib.profiles import load_profile, merge
from conelib.results import (
    config_hash,
    load_result,
    provenance_attrs,
    resolve_root,
    result_path,
    result_status,
    save_result,
)
from conelib.yamlio import load_file

__all__ = [
    "GRID_KEYS",
    "SUMMARY_EXPERIMENT",
    "SENSITIVITY",
    "Grid",
    "GridPoint",
    "JobFailure",
    "SweepJobError",
    "SweepReport",
    "expand_grid",
    "failure_path",
    "load_grid",
    "pending",
    "run_sweep",
    "run_sweep_file",
    "summarize",
    "summary_path",
]

#: top-level keys of a grid file
GRID_KEYS: tuple[str, ...] = ("base", "grid", "blocks", "results_root")
#: summaries are stored as ``<results_root>/<SUMMARY_EXPERIMENT>/<grid hash>.nc``
SUMMARY_EXPERIMENT = "sweeps"
#: integer code of a grid point whose result is not stored (in ``verdict_code``)
MISSING_CODE = -1
#: the other values of each threshold at which the summary also counts the verdicts (one change at
#: a time from :data:`conelib.measures.THRESHOLDS`): the sensitivity table of the book
SENSITIVITY: dict[str, tuple[float, ...]] = {
    "fraction": (0.05, 0.2),
    "min_drop": (2.0, 8.0),
    "hold": (0.0, 0.2),
    "lazy_ratio": (0.05, 0.2),
    "plateau_exponent": (0.15, 0.35),
}


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


def _axes(raw: Any, where: str) -> dict[str, tuple[Any, ...]]:
    """Validated axes: parameter -> its values, coerced like any parameter."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping: parameter -> list of values")
    params = KernelDynamicsConfig.parameters()
    unknown = [n for n in raw if n not in params]
    if unknown:
        raise unknown_names_error(unknown, params, where)
    axes: dict[str, tuple[Any, ...]] = {}
    for name, values in raw.items():
        if params[name].runtime:
            raise ParameterError(name, f"grid parameter {name!r} says where/how to run, not what is computed "
                                 f"(a runtime parameter): set it under 'base', do not sweep it")
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ParameterError(name, f"grid parameter {name!r} must list at least one value, got {values!r}")
        vals = tuple(coerce(params[name], v) for v in values)
        if len(set(map(repr, vals))) != len(vals):
            raise ParameterError(name, f"grid parameter {name!r} lists a value twice: {list(values)}")
        axes[name] = vals
    return axes


@dataclass(frozen=True)
class Grid:
    """A sweep: a base :class:`KernelDynamicsConfig`, and the values of the swept parameters.

    The runs are the union over ``blocks`` of each block's cartesian product, each crossed with the
    cartesian product of ``axes`` (e.g. the seeds); without blocks, just the product of ``axes``.
    A configuration reached by several blocks (typically the base setting) is one run.

    Attributes:
        base: every parameter of the base configuration by name (a profile, if one was named,
            already merged).
        axes: swept parameter -> its values, crossed with every block.
        blocks: each a mapping swept parameter -> values (an "atlas" of factor pairs).
        results_root: where results are stored (``None``: :func:`conelib.results.default_results_root`).
        source: the grid file, if it came from one.
    """

    base: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    blocks: tuple[Mapping[str, tuple[Any, ...]], ...] = ()
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
        raw_axes = mapping.get("grid") or {}
        raw_blocks = mapping.get("blocks") or []
        if not raw_axes and not raw_blocks:
            raise ValueError(f"key 'grid' of {where} must be a non-empty mapping: parameter -> list of values "
                             "(or give 'blocks')")
        axes = _axes(raw_axes, f"'grid' of {where}")
        if not isinstance(raw_blocks, (list, tuple)):
            raise ValueError(f"key 'blocks' of {where} must be a list of mappings: parameter -> list of values")
        blocks = tuple(_axes(b, f"block {i} of {where}") for i, b in enumerate(raw_blocks))
        for i, b in enumerate(blocks):
            both = sorted(set(b) & set(axes))
            if both or not b:
                raise ValueError(f"block {i} of {where} must be non-empty and sweep none of the 'grid' parameters "
                                 f"{list(axes)}; it has {sorted(b)}")
        root = mapping.get("results_root")
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise ValueError(f"key 'results_root' of {where} must be a path or null, got {root!r}")
        if root is not None and source is not None and not Path(root).expanduser().is_absolute():
            root = Path(source).resolve().parent / root  # relative to the grid file
        grid = cls(base_cfg.flat(), axes, blocks, None if root is None else str(root), source)
        expand_grid(grid)  # every point must be a valid configuration
        return grid

    @property
    def swept(self) -> list[str]:
        """Every swept parameter: the blocks' (in order of appearance), then the axes'."""
        names: list[str] = []
        for b in self.blocks:
            names += [n for n in b if n not in names]
        return names + [n for n in self.axes if n not in names]

    @property
    def size(self) -> int:
        return len(expand_grid(self))

    def block_label(self, i: int) -> str:
        return " × ".join(self.blocks[i]) if self.blocks else " × ".join(self.axes)

    def identity(self) -> dict[str, Any]:
        """What the grid computes: the base configuration's identity (swept parameters left out),
        the axes and the blocks."""
        base = KernelDynamicsConfig.from_mapping(self.base).identity()
        for name in self.swept:
            base.pop(name, None)
        out: dict[str, Any] = {"base": base, "grid": {k: list(v) for k, v in self.axes.items()}}
        if self.blocks:
            out["blocks"] = [{k: list(v) for k, v in b.items()} for b in self.blocks]
        return out

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
    """One run of a sweep: its swept values (``coords``; the base value where a block does not vary
    a parameter), the blocks it belongs to, and its full configuration."""

    coords: dict[str, Any]
    config: KernelDynamicsConfig
    blocks: tuple[int, ...] = (0,)


def expand_grid(grid: Grid) -> list[GridPoint]:
    """Every run of the grid, in order of first appearance (blocks in order, each row-major).

    Raises:
        ParameterError: naming the grid point whose configuration is invalid.
    """
    blocks = grid.blocks or ({},)
    names = grid.swept
    seen: dict[str, int] = {}
    points: list[GridPoint] = []
    for b, block in enumerate(blocks):
        dims = {**block, **grid.axes}
        for combo in itertools.product(*dims.values()):
            values = dict(zip(dims, combo))
            try:
                cfg = KernelDynamicsConfig.from_mapping({**grid.base, **values})
            except ParameterError as err:
                raise ParameterError(err.name, f"grid point {values} is not a valid configuration: {err}") from None
            h = config_hash(cfg.identity())
            if h in seen:
                i = seen[h]
                points[i] = points[i]._replace(blocks=(*points[i].blocks, b))
                continue
            coords = {n: getattr(cfg, n) for n in names}
            seen[h] = len(points)
            points.append(GridPoint(coords, cfg, (b,)))
    return points


def _root(grid: Grid, results_root: str | os.PathLike | None) -> Path:
    return resolve_root(results_root if results_root is not None else grid.results_root)


def pending(grid: Grid, results_root: str | os.PathLike | None = None) -> list[GridPoint]:
    """The grid points whose result is not stored yet (what a sweep would submit)."""
    root = _root(grid, results_root)
    return [p for p in expand_grid(grid) if result_status(result_path(EXPERIMENT, p.config.identity(), root)) != "ok"]


def failure_path(config: KernelDynamicsConfig, root: str | os.PathLike | None) -> Path:
    """``<root>/kernel_dynamics/<hash>.failed.json``: the record of a run whose last sweep job failed."""
    p = result_path(EXPERIMENT, config.identity(), root)
    return p.with_name(p.stem + ".failed.json")


# --------------------------------------------------------------------------------------------
# Running on Dask
# --------------------------------------------------------------------------------------------


class SweepJobError(JobError):
    """A sweep job failed; the message holds the original exception's type, message and traceback.

    (Raised on the worker in place of the original exception, which may not survive pickling on its
    way back to the client.)
    """


def _run_job(config: dict[str, Any], results_root: str, torch_threads: int | None) -> dict[str, Any]:
    """One sweep job, run on a Dask worker: the kernel-dynamics experiment for ``config``."""
    import torch

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    cfg = KernelDynamicsConfig.from_mapping(config)
    record = failure_path(cfg, results_root)
    try:
        ds = kernel_dynamics(cfg, results_root=results_root, progress=False)
    except Exception as err:  # noqa: BLE001 - every failure is reported with its configuration
        info = {"error": f"{type(err).__name__}: {err}", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "config": cfg.identity()}
        try:  # the summary lists it as failed, with its error, until a later job succeeds
            atomic_write(record, lambda tmp: Path(tmp).write_text(json.dumps(info, default=str) + "\n"))
        except OSError:
            pass
        raise SweepJobError(f"{type(err).__name__}: {err}\n{traceback.format_exc()}") from None
    record.unlink(missing_ok=True)
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
        axes = "; ".join(self.grid.block_label(i) for i in range(max(1, len(self.grid.blocks))))
        if self.grid.blocks and self.grid.axes:
            axes += f"; each × {' × '.join(self.grid.axes)}"
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
            cols = [*self.grid.swept, "status", "verdict", "phase_one_end", "laziness", "max_growth_exponent",
                    "floor_exponent", "final_test_acc"]
            df = self.summary.reset_coords()[cols].to_dataframe()
            lines.append("  " + df.to_string(float_format=lambda x: f"{x:.3g}").replace("\n", "\n  "))
        return "\n".join(lines)


_describe = describe  # the name this module used before the engine moved to conelib.cluster


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
    check_workers(workers)
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
        with dask_client(client=client, address=address, workers=workers) as (cl, default_threads):
            threads = default_threads if torch_threads is None else torch_threads
            report.cluster = describe(cl)
            jobs = []
            for p in todo:
                h = config_hash(p.config.identity())
                jobs.append(Job(f"kernel_dynamics-{h}", _run_job, (p.config.flat(), str(root), threads),
                                meta={"point": p, "hash": h}))
            for out in run_jobs(cl, jobs, retries=retries, progress=progress, desc=f"sweep {grid.hash}"):
                p, h = out.job.meta["point"], out.job.meta["hash"]
                if out.ok:
                    report.completed.append({**p.coords, **out.result})
                else:
                    report.failed.append(JobFailure(p.coords, h, p.config.identity(), out.error, out.traceback))
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
    """netCDF-safe coordinate values: numbers as numbers (None as NaN), else text."""
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return np.asarray(["none" if v is None else json.dumps(v) if isinstance(v, (bool, tuple, list)) else str(v)
                       for v in values], dtype=object)


#: the summary's per-run variables: name -> (long_name, units)
SUMMARY_VARIABLES: dict[str, tuple[str, str]] = {
    "status": ("stored | failed | missing | unreadable", ""),
    "error": ("the error of the last failed job ('' when none)", ""),
    "verdict": ("verdict of conelib.measures.verdict ('missing' when the run is not stored)", ""),
    "verdict_code": ("index of the verdict in conelib.measures.VERDICTS (-1: not stored)", "1"),
    "phase_one_end": ("end of Phase I t* (NaN: no two phases)", "steps"),
    "phase_one_end_frac": ("end of Phase I as a fraction of the run, t*/T", "1"),
    "drop": ("peak / Phase II floor of the smoothed S(t, t+dt), largest dt", "1"),
    "laziness": ("chord c(t*, T) / c(0, t*): how far the kernel turns in Phase II relative to Phase I", "1"),
    "floor_exponent": ("log-log slope of the Phase II floor of c(t, t+dt) against dt", "1"),
    "max_growth_exponent": ("largest log-log slope of c(t, tau) against t - tau, tau >= t*", "1"),
    "plateau_refs": ("judged reference steps that plateau", "1"),
    "n_refs": ("judged reference steps", "1"),
    "late_growth_share": ("late-growth share of S(t, t*) (1 - 2^-p for S ~ (t - t*)^p)", "1"),
    "embedding_share": ("share of the Phase II chord distances kept by the 2-D embedding", "1"),
    "dist_to_init_final": ("kernel distance from initialisation at the end S(θ_T, θ_0)", "1"),
    "final_test_acc": ("test accuracy at the last step", "1"),
    "final_train_acc": ("train accuracy at the last step", "1"),
    "final_train_loss": ("train loss at the last step", "1"),
    "wall_seconds": ("wall time of the run (training + eNTK snapshots)", "s"),
    "config_hash": ("config hash of the run's stored Dataset", ""),
}
#: the curves of every stored run kept in the summary (for the atlas' Figure 1 panels)
CURVES: tuple[str, ...] = ("dist_to_ref", "adjacent_distance", "dist_to_init", "cone_x", "cone_y", "train_acc",
                           "train_loss", "test_acc")
_NUMERIC = ("phase_one_end", "phase_one_end_frac", "drop", "laziness", "floor_exponent", "max_growth_exponent",
            "plateau_refs", "n_refs", "late_growth_share", "embedding_share", "dist_to_init_final",
            "final_test_acc", "final_train_acc", "final_train_loss", "wall_seconds")


def _sensitivity_settings() -> list[tuple[str, dict[str, float]]]:
    out = [("defaults", {})]
    for name, values in SENSITIVITY.items():
        out += [(f"{name}={v:g}", {name: v}) for v in values]
    return out


def summarize(
    grid: Grid,
    results_root: str | os.PathLike | None = None,
    *,
    save: bool = True,
    **thresholds: Any,
) -> xr.Dataset:
    """One Dataset over the grid's runs (dimension ``run``), read from the stored runs.

    Every run of the grid is a row, whatever happened to it: ``status`` is ``stored``, ``failed``
    (with the job's ``error``, from the record :func:`run_sweep` leaves), ``unreadable`` (a file
    that cannot be read or fails its checksum: it counts as missing) or ``missing``. Stored runs
    get the measures of :func:`conelib.measures.verdict` (``thresholds`` override its defaults),
    their final accuracies, and their curves (:data:`CURVES`, float32) for the atlas' panels.
    The swept parameters are coordinates over ``run``; ``in_block`` says which blocks each run
    belongs to. ``verdict_counts`` (``setting`` × ``verdict``) counts the verdicts of the stored runs
    at the defaults and with each threshold of :data:`SENSITIVITY` changed alone. With ``save``,
    the summary is stored atomically at :func:`summary_path`.
    """
    t = check_thresholds(**thresholds)
    root = _root(grid, results_root)
    points = expand_grid(grid)
    n = len(points)
    num = {k: np.full(n, np.nan) for k in _NUMERIC}
    status = np.full(n, "missing", dtype=object)
    errors = np.full(n, "", dtype=object)
    labels = np.full(n, "missing", dtype=object)
    codes = np.full(n, MISSING_CODE, dtype=np.int16)
    hashes = np.asarray([config_hash(p.config.identity()) for p in points], dtype=object)
    settings = _sensitivity_settings()
    counts = np.zeros((len(settings), len(VERDICTS)), dtype=np.int32)
    curves: list[xr.Dataset | None] = []
    for i, p in enumerate(points):
        path = result_path(EXPERIMENT, p.config.identity(), root)
        record = failure_path(p.config, root)
        curves.append(None)
        if not path.exists():
            if record.is_file():
                status[i] = "failed"
                try:
                    errors[i] = json.loads(record.read_text()).get("error", "")
                except (OSError, ValueError):
                    errors[i] = "(unreadable failure record)"
            continue
        try:
            ds = load_result(path)
        except (OSError, ValueError) as err:  # unreadable or changed: counts as missing
            warnings.warn(f"stored run {path} at {p.coords} is not usable and counts as missing: {err}",
                          RuntimeWarning, stacklevel=2)
            status[i], errors[i] = "unreadable", f"{type(err).__name__}: {err}"
            continue
        try:
            v = verdict(ds, **t)
            for s, (_, change) in enumerate(settings):
                counts[s, verdict(ds, **{**t, **change}).code] += 1
        except ValueError as err:  # a stored run the measures cannot read stays "missing", with a warning
            warnings.warn(f"stored run {path} at {p.coords} could not be measured: {err}", RuntimeWarning, stacklevel=2)
            status[i], errors[i] = "unreadable", f"{type(err).__name__}: {err}"
            continue
        status[i] = "stored"
        labels[i], codes[i] = v.verdict, v.code
        T = float(ds["step"].max())
        for key in ("phase_one_end", "drop", "laziness", "floor_exponent", "max_growth_exponent", "plateau_refs",
                    "n_refs", "late_growth_share", "embedding_share"):
            val = getattr(v, key)
            num[key][i] = np.nan if val is None else float(val)
        num["phase_one_end_frac"][i] = np.nan if v.phase_one_end is None else v.phase_one_end / T
        num["dist_to_init_final"][i] = float(ds["dist_to_init"].isel(step=-1))
        for key, var in (("final_test_acc", "test_acc"), ("final_train_acc", "train_acc"),
                         ("final_train_loss", "train_loss")):
            if var in ds:
                num[key][i] = float(ds[var].isel(step=-1))
        num["wall_seconds"][i] = float(ds.attrs.get("wall_seconds", np.nan))
        curves[i] = ds[[c for c in CURVES if c in ds]].astype("float32").drop_attrs(deep=False)

    run = np.arange(n)
    data_vars: dict[str, Any] = {k: ("run", a) for k, a in num.items()}
    data_vars.update(status=("run", status), error=("run", errors), verdict=("run", labels),
                     verdict_code=("run", codes), config_hash=("run", hashes))
    n_blocks = max(1, len(grid.blocks))
    member = np.zeros((n, n_blocks), dtype=np.int8)
    for i, p in enumerate(points):
        member[i, list(p.blocks)] = 1
    coords: dict[str, Any] = {"run": ("run", run, {"long_name": "run of the grid (in order of first appearance)"})}
    for name in grid.swept:
        coords[name] = ("run", _coord_values([p.coords[name] for p in points]), {"long_name": f"swept: {name}"})
    coords["block"] = ("block", np.asarray([grid.block_label(b) for b in range(n_blocks)], dtype=object))
    coords["in_block"] = (("run", "block"), member, {"long_name": "1 if the run belongs to the block"})
    coords["setting"] = ("setting", np.asarray([s for s, _ in settings], dtype=object),
                         {"long_name": "thresholds: the defaults, or one of them changed"})
    coords["verdict_label"] = ("verdict_label", np.asarray(VERDICTS, dtype=object))
    data_vars["verdict_counts"] = (("setting", "verdict_label"), counts,
                                   {"long_name": "verdict counts over the stored runs", "units": "runs"})
    out = xr.Dataset(data_vars, coords=coords)
    stored = [c for c in curves if c is not None]
    if stored:
        template = xr.concat(stored, dim="run", join="outer").isel(run=0) * np.nan
        filled = [c if c is not None else template for c in curves]
        out = out.merge(xr.concat(filled, dim=xr.DataArray(run, dims="run"), join="outer"), join="left")
        for c in CURVES:
            if c in out:
                out[c].attrs["long_name"] = f"{c} of each stored run (float32)"
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
        "grid_json": json.dumps(grid.identity()),
        "grid_source": grid.source or "none",
        "swept_fields": json.dumps(grid.swept),
        "thresholds_json": json.dumps(t),
        "sensitivity_json": json.dumps(SENSITIVITY),
        "n_runs": n,
        "n_stored": int((status == "stored").sum()),
        "n_failed": int((status == "failed").sum()),
        "n_missing": int((status != "stored").sum()),
    })
    if save:
        save_result(out, summary_path(grid, root))
    return out


def run_from_summary(summary: xr.Dataset, run: int) -> xr.Dataset:
    """One stored run's curves from a summary, as a kernel-dynamics-like Dataset (the variables of
    :data:`CURVES` over its snapshot steps), with its swept values and measures as attributes: what
    :func:`conelib.charts.counterexample_chart` and the Figure 1 charts draw."""
    row = summary.sel(run=run)
    if str(row["status"].values) != "stored":
        raise ValueError(f"run {run} of the summary is not stored ({row['status'].values}): it has no curves")
    ds = row[[c for c in CURVES if c in summary]].astype("float64")
    ds = ds.isel(step=np.nonzero(np.isfinite(ds["dist_to_init"].values))[0])
    swept = json.loads(summary.attrs["swept_fields"])
    ds.attrs = {**{k: (v.item() if hasattr(v, "item") else v) for k, v in ((k, row[k].values) for k in swept)},
                "config_hash": str(row["config_hash"].values), "verdict": str(row["verdict"].values)}
    return ds.drop_vars([c for c in ds.coords if c not in ("step", "dt", "ref_step")])
