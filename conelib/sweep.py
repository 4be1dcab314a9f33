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

A relative path in a grid file (``results_root``, ``data_root``, a profile's ``.yaml`` file) is taken
from the grid file's folder, one in a profile from the profile's folder; ``--results-root`` on the
command line from the current directory. Each is made absolute before a job is sent to a worker.

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

The engine knows no measures: :func:`run_sweep` takes a ``summarize`` callable, and the atlas'
(:func:`conelib.analysis.atlas_summary.summarize`: one row per run, the measures of
:mod:`conelib.measures` with intervals, the runs' curves, and the verdict counts for other
thresholds) is stored under ``<results_root>/sweeps/<grid hash>.nc``; the grid hash
covers the resolved base configuration, the axes and the blocks, not the profile's name or the
file's path.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from conelib.atomic import atomic_write
from conelib.cluster import Job, JobError, check_workers, dask_client, describe, run_jobs
from conelib.config import ParameterError, absolute_path, absolute_paths, coerce, unknown_names_error
from conelib.experiments.kernel_dynamics import EXPERIMENT, KernelDynamicsConfig, kernel_dynamics
from conelib.profiles import load_profile, merge, profile_path
from conelib.results import (
    config_hash,
    resolve_root,
    result_path,
    result_status,
)
from conelib.yamlio import load_file

__all__ = [
    "GRID_KEYS",
    "SUMMARY_EXPERIMENT",
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
]

#: top-level keys of a grid file
GRID_KEYS: tuple[str, ...] = ("base", "grid", "blocks", "results_root")
#: summaries are stored as ``<results_root>/<SUMMARY_EXPERIMENT>/<grid hash>.nc``
SUMMARY_EXPERIMENT = "sweeps"
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
        # a relative path written in a grid file is taken from the grid file's folder (as results_root)
        folder = Path(source).resolve().parent if source is not None else None
        base = absolute_paths(dict(base), KernelDynamicsConfig.parameters(), folder)
        profile = base.pop("profile", None)
        if profile is not None:
            if str(profile).endswith((".yaml", ".yml")):
                profile = absolute_path(profile, folder)
            section = absolute_paths(load_profile(profile, EXPERIMENT), KernelDynamicsConfig.parameters(),
                                     profile_path(profile).parent)
            base = merge(section, base)
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
            cols = [*self.grid.swept, "status", "verdict", "phase_one_end", "total_movement", "laziness",
                    "growth_exponent", "drift_decay", "final_train_loss", "final_test_acc"]
            df = self.summary.reset_coords()[[c for c in cols if c in self.summary.variables]].to_dataframe()
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
    summarize: Callable[[Grid, Path], xr.Dataset] | None = None,
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
        summarize: afterwards, called with the grid and the results root to summarise the stored
            runs (e.g. :func:`conelib.analysis.atlas_summary.summarize`; the engine itself knows no measures).

    Returns:
        A :class:`SweepReport`: the configurations skipped, completed and failed (with their
        errors), the wall time, and the summary.

    Raises:
        conelib.config.ParameterError: on a ``LocalCluster`` started here, a run to compute whose
            device is missing or whose batch cannot fit in memory (checked before anything starts).
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
    if todo and client is None and address is None:
        from conelib.experiments.common import preflight

        for p in todo:  # a LocalCluster runs them here: this machine's device and memory, before anything starts
            preflight(p.config)
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
    if summarize is not None:
        report.summary = summarize(grid, root)
        report.summary_path = result_path(SUMMARY_EXPERIMENT, grid.identity(), root)
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
