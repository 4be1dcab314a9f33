"""Sweeps: the kernel-dynamics experiment over a grid of settings, run on Dask distributed.

The package: :mod:`conelib.sweep.grid` (grid files and their runs), :mod:`conelib.sweep.run` (the
engine: one Dask job per run) and :mod:`conelib.sweep.cluster` (the Dask client, shared with
``conelib reproduce``). The atlas summary and its reading live in :mod:`conelib.analysis`.

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

from conelib.sweep.grid import (
    EXPERIMENT,
    GRID_KEYS,
    SUMMARY_EXPERIMENT,
    Grid,
    GridPoint,
    expand_grid,
    failure_path,
    grid_results_root,
    load_grid,
    pending,
)
from conelib.sweep.run import JobFailure, SweepJobError, SweepReport, run_sweep, run_sweep_file

__all__ = ["EXPERIMENT", "GRID_KEYS", "SUMMARY_EXPERIMENT", "Grid", "GridPoint", "JobFailure", "SweepJobError",
           "SweepReport", "expand_grid", "failure_path", "grid_results_root", "load_grid", "pending", "run_sweep",
           "run_sweep_file"]
