"""Running a sweep grid on Dask distributed: one job per run, resumable, failures isolated (see
:mod:`conelib.sweep` for the guarantees and for running on a cluster)."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from conelib.atomic import atomic_write
from conelib.experiments.common import preflight
from conelib.experiments.kernel_dynamics import EXPERIMENT, KernelDynamicsConfig, kernel_dynamics
from conelib.results import config_hash, result_path, result_status
from conelib.sweep.cluster import Job, JobError, check_workers, dask_client, describe, run_jobs
from conelib.sweep.grid import SUMMARY_EXPERIMENT, Grid, expand_grid, failure_path, grid_results_root, load_grid

__all__ = ["JobFailure", "SweepJobError", "SweepReport", "run_sweep", "run_sweep_file"]


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


_describe = describe  # the name this module used before the engine moved to conelib.sweep.cluster


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
    root = grid_results_root(grid, results_root)
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
