"""Independent jobs on Dask distributed: the engine that ``conelib sweep`` and ``conelib reproduce`` share.

Where the jobs run (the same three choices for both commands):

* a ``LocalCluster`` started here and shut down at the end: ``workers`` processes, one thread each,
  and one torch thread per job (so that ``workers`` jobs share the cores instead of fighting over
  them);
* a running scheduler, by ``address`` (``tcp://host:8786``), left running;
* a ``dask.distributed.Client`` the caller made, e.g. on a SLURM cluster with dask-jobqueue (the
  ``slurm`` extra), left open::

      from dask.distributed import Client
      from dask_jobqueue import SLURMCluster

      cluster = SLURMCluster(cores=8, memory="32GB", processes=1, walltime="04:00:00")
      cluster.scale(jobs=4)
      client = Client(cluster)

Every worker must see the same results folder (a shared file system) and have ``conelib``
installed. A job's function runs on a worker; if it raises, the job is reported as failed with the
error and the other jobs go on (:func:`run_jobs`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "JobError", "JobOutcome", "dask_client", "describe", "run_jobs"]


class JobError(RuntimeError):
    """A job failed; the message holds the original exception's type, message and traceback (raised
    on the worker in place of the original exception, which may not survive pickling on its way
    back to the client)."""


@dataclass
class Job:
    """One task: ``fn(*args)`` on a worker, under the Dask ``key`` (unique among the jobs).

    ``priority``: higher runs first among queued jobs (e.g. the expected cost, so that the longest
    jobs start first and the last ones to finish are short). ``meta`` is the caller's (kept with
    the outcome)."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    priority: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobOutcome:
    """What became of a job: its ``result``, or its ``error`` (``"<Type>: <message>"``) and traceback."""

    job: Job
    result: Any = None
    error: str | None = None
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def check_workers(workers: Any) -> int:
    """``workers`` as a positive int, else a ``ValueError`` naming it."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive number of LocalCluster workers, got {workers!r}")
    return int(workers)


@contextlib.contextmanager
def dask_client(*, client: Any | None = None, address: str | None = None,
                workers: int = 2) -> Iterator[tuple[Any, int | None]]:
    """A Dask client: ``client`` as given, else one connected to ``address``, else one on a
    ``LocalCluster`` of ``workers`` single-threaded processes started here. Yields
    ``(client, torch_threads)``, the number of torch threads a job should use: 1 on the
    LocalCluster started here, ``None`` (torch's default) elsewhere. What was started here is
    closed on exit; a given client or scheduler is left running.

    Raises:
        ValueError: ``workers`` < 1, or both ``client`` and ``address``.
    """
    workers = check_workers(workers)
    if client is not None and address is not None:
        raise ValueError("give either client or address, not both")
    if client is not None:
        yield client, None
        return
    from dask.distributed import Client, LocalCluster

    if address is not None:
        own = Client(address)
        try:
            yield own, None
        finally:
            own.close()
        return
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.CRITICAL)
    own = Client(cluster)
    try:
        yield own, 1
    finally:
        own.close()
        cluster.close()


def describe(client: Any) -> str:
    """``"<n> Dask workers (<threads> threads) at <address>"`` (best effort)."""
    try:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
        return f"{len(workers)} Dask workers ({threads} threads) at {info.get('address', '?')}"
    except Exception:  # noqa: BLE001 - only a description
        return "a Dask cluster"


def run_jobs(client: Any, jobs: Sequence[Job], *, retries: int = 0, progress: bool = True,
             desc: str = "jobs") -> Iterator[JobOutcome]:
    """Submit every job to ``client`` and yield their outcomes as they finish (failures included;
    a failure does not cancel the other jobs).

    Raises:
        ValueError: ``retries`` < 0, or two jobs with the same key.
    """
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    if int(retries) < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("jobs must have distinct keys")
    if not jobs:
        return
    futures = {client.submit(j.fn, *j.args, key=j.key, pure=False, retries=int(retries), priority=j.priority): j
               for j in jobs}
    bar = tqdm(total=len(futures), desc=desc, unit="job", disable=not progress)
    failed = 0
    try:
        for fut in as_completed(list(futures)):
            job = futures[fut]
            if fut.status == "finished":
                yield JobOutcome(job, result=fut.result())
            else:
                exc = fut.exception()
                head, _, tb = str(exc).partition("\n")
                if not isinstance(exc, JobError):  # e.g. KilledWorker: the worker died
                    head, tb = f"{type(exc).__name__}: {exc}", ""
                failed += 1
                yield JobOutcome(job, error=head, traceback=tb)
            bar.update(1)
            bar.set_postfix(failed=failed)
    finally:
        bar.close()
