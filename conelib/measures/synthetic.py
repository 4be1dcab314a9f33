"""Synthetic kernel trajectories whose answer is known by construction: the measures' test bench.

A kernel trajectory is reduced, for every measure here, to the *directions* of the kernels: unit
vectors :math:`u_t` with :math:`S(\\theta_s, \\theta_t) = 1 - \\langle u_s, u_t \\rangle` (eq. 4 of Zhou et
al. 2025 for kernels :math:`H_t = u_t`, e.g. diagonal kernels). Each process below draws
:math:`u_t = (\\mu_t + \\varepsilon_t) / \\lVert \\mu_t + \\varepsilon_t \\rVert`: a mean direction
:math:`\\mu_t` that the process prescribes, plus SGD-like jitter :math:`\\varepsilon_t` orthogonal to it
with a given radius and a small correlation from one snapshot to the next (AR(1), 0.2: what the
committed runs show, whose single-kernel distances at a lag of 50 steps are 73-83% of those at
lags of 150 steps and more). Angles are in radians; for small angles the
chord distance :math:`\\sqrt{2S}` equals the angle.

The magnitudes default to what the committed LeNet-300-100 runs show on full MNIST (see the book's
"Measuring the phases" page): an early turn of about 0.3 rad that slows with a time constant of
400 steps (Phase I ends near step 1000), jitter of radius 0.045 (15% of Phase I), snapshots every
50 steps to :math:`T = 10^4`.

:data:`PROCESSES` names the validation panel: for each process the verdict a sound measure must
return (:func:`expected_verdict`). :func:`trajectory` draws one trajectory as a kernel-dynamics
Dataset (with a training-loss curve, so every measure can run on it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from conelib.measures import v2, v3
from conelib.trajectory import distances_dataset

__all__ = ["PROCESSES", "Process", "expected_verdict", "trajectory", "unit_trajectory"]


@dataclass(frozen=True)
class Process:
    """One synthetic process: what it is and the verdict it must get."""

    name: str
    description: str
    verdict: str


#: the validation panel: process name -> :class:`Process` (its description and the right verdict)
PROCESSES: dict[str, Process] = {p.name: p for p in (
    Process("jitter cone", "an early turn, then the mean kernel stops and single kernels jitter around it "
            "(radius 15% of Phase I)", "two phases, cone"),
    Process("mean-reverting wobble", "an early turn, then the mean kernel wobbles around a fixed axis "
            "(Ornstein-Uhlenbeck in 16 directions, 0.06 rad RMS, correlation time 300 steps) plus half the jitter", "two phases, cone"),
    Process("converging drift", "an early turn, then a drift whose speed decays like t^-2 from step 1000 towards a "
            "limit 0.25 rad away (a finite path: 0.225 rad by T), plus jitter that shrinks like t^-1/2", "two phases, converging"),
    Process("random walk", "an early turn, then the mean kernel's direction performs a random walk "
            "(0.15 rad RMS over Phase II), plus jitter", "two phases, drifting"),
    Process("steady drift", "an early turn, then the mean kernel turns at a steady rate (0.15 rad over Phase II), "
            "plus jitter", "two phases, drifting"),
    Process("frozen", "an early turn, then the kernel freezes (jitter of 1% of Phase I)", "two phases, lazy"),
    Process("tiny movement", "the textbook lazy regime: the whole trajectory turns 0.02 rad, jitter 0.003",
            "two phases, lazy"),
    Process("no early phase", "no Phase I: a steady turn of 0.3 rad over the whole run, plus jitter",
            "no two phases"),
)}


def expected_verdict(process: str) -> str:
    """The verdict a sound measure returns for ``process`` (a key of :data:`PROCESSES`)."""
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; choose from {sorted(PROCESSES)}")
    return PROCESSES[process].verdict


def _basis_rotate(a: np.ndarray, b: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """``cos(angle) a + sin(angle) b`` for orthonormal ``a``, ``b`` (rows over ``angle``)."""
    return np.cos(angle)[:, None] * a[None, :] + np.sin(angle)[:, None] * b[None, :]


def unit_trajectory(process: str, steps: np.ndarray, rng: np.random.Generator, *, dim: int = 64,
                    turn: float = 0.3, tau1: float = 400.0, jitter: float = 0.045,
                    phase_two: float = 0.15, jitter_corr: float = 0.2,
                    jitter_schedule: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The unit vectors :math:`u_t` (rows) of one draw of ``process`` at ``steps``.

    Args:
        process: a key of :data:`PROCESSES`.
        steps: snapshot steps (the first is the initialisation, with no jitter).
        rng: the random generator (one draw per call).
        dim: dimension of the vectors (>= 8).
        turn: Phase I's total turn (rad); ``tau1`` its time constant (steps).
        jitter: the jitter radius (chord) of single kernels around the mean.
        phase_two: the size (rad) of the Phase II movement of the drifting and converging processes.
        jitter_corr: correlation of the jitter between consecutive snapshots (an AR(1) process).
        jitter_schedule: optional factor :math:`f(t)` multiplying the jitter radius at step :math:`t`
            (e.g. a radius that halves at a step, as a learning-rate decay would make a noise ball
            shrink); the same draw of the noise is used, so two trajectories of one seed that differ
            only in the schedule differ only in the jitter's size.
    """
    if not 0 <= jitter_corr < 1:
        raise ValueError(f"jitter_corr must be in [0, 1), got {jitter_corr}")
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; choose from {sorted(PROCESSES)}")
    if dim < 8:
        raise ValueError(f"dim must be >= 8, got {dim}")
    t = np.asarray(steps, dtype=float)
    e = np.eye(dim)
    if process == "tiny movement":
        turn, jitter = 0.02, 0.003
    if process == "frozen":
        jitter = 0.01 * turn
    phi = turn * (1.0 - np.exp(-t / tau1))
    if process == "no early phase":
        phi = turn * t / t[-1]
    mu = _basis_rotate(e[0], e[1], phi)  # Phase I: a turn in the (e0, e1) plane
    t2 = np.clip(t - 5 * tau1 / 2, 0.0, None)  # Phase II processes start near the end of Phase I
    if process == "converging drift":
        t0 = 5 * tau1 / 2  # from step t0 on, the drift speed is proportional to t^-2, towards a limit 0.25 rad away
        psi = 0.25 * (1.0 - t0 / (t2 + t0))
        mu = np.cos(psi)[:, None] * mu + np.sin(psi)[:, None] * e[2][None, :]
    elif process == "steady drift":
        psi = phase_two * t2 / max(t2[-1], 1.0)
        mu = np.cos(psi)[:, None] * mu + np.sin(psi)[:, None] * e[2][None, :]
    elif process == "random walk":
        n2 = int((t2 > 0).sum())
        step_sd = phase_two / np.sqrt(max(n2, 1)) / np.sqrt(dim - 3)
        walk = np.zeros((len(t), dim))
        inc = rng.normal(0.0, step_sd, size=(len(t), dim))
        inc[:, :2] = 0.0
        inc[t2 <= 0] = 0.0
        walk = np.cumsum(inc, axis=0)
        mu = mu + walk
    elif process == "mean-reverting wobble":
        amp, tc, k = 0.06 / np.sqrt(16), 300.0, 16
        gap = np.diff(t, prepend=t[0])
        x = np.zeros((len(t), k))
        x[0] = rng.normal(size=k)
        for i in range(1, len(t)):
            rho = np.exp(-gap[i] / tc)
            x[i] = rho * x[i - 1] + np.sqrt(1 - rho ** 2) * rng.normal(size=k)
        ramp = 1.0 - np.exp(-t / tau1)
        mu = mu + amp * (ramp[:, None] * x) @ e[2:2 + k]
        jitter = 0.5 * jitter
    mu = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    radius = np.full(len(t), float(jitter))
    if process == "converging drift":  # the noise ball shrinks as training converges (as t^-1/2 from step 1000)
        radius = jitter * np.minimum(1.0, (np.maximum(t, 1.0) / 1000.0) ** -0.5)
    if jitter_schedule is not None:
        factor = np.asarray(jitter_schedule(t), dtype=float)
        if factor.shape != t.shape or not np.all(np.isfinite(factor)) or np.any(factor < 0):
            raise ValueError("jitter_schedule(steps) must return one finite factor >= 0 per step")
        radius = radius * factor
    noise = rng.normal(size=mu.shape)
    for i in range(1, len(t)):  # AR(1) in time, correlation `jitter_corr` from one snapshot to the next
        noise[i] = jitter_corr * noise[i - 1] + np.sqrt(1.0 - jitter_corr ** 2) * noise[i]
    noise -= (noise * mu).sum(1, keepdims=True) * mu  # orthogonal to the mean direction
    noise *= radius[:, None] / np.sqrt(dim - 1)
    noise[t == t[0]] = 0.0  # the initial kernel is deterministic
    u = mu + noise
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def trajectory(process: str, seed: int = 0, *, steps: Sequence[int] | None = None,
               dts: Sequence[int] = (50, 100, 200, 400, 800), taus: Sequence[int] = (2000, 4000, 6000, 8000),
               **kwargs: float) -> xr.Dataset:
    """One draw of ``process`` as a kernel-dynamics Dataset (as :func:`conelib.trajectory.distances_dataset`
    builds it), with a training loss :math:`L(t) = 0.3 (1 + t/200)^{-1.5}` and accuracy curve.

    Args:
        process: a key of :data:`PROCESSES`.
        seed: seeds the draw.
        steps: snapshot steps (default every 50 steps to :math:`10^4`).
        dts, taus: gaps and reference steps stored in the Dataset.
        kwargs: passed to :func:`unit_trajectory`.
    """
    steps = np.arange(0, 10001, 50) if steps is None else np.asarray(steps)
    u = unit_trajectory(process, steps, np.random.default_rng(seed), **kwargs)
    dist = np.clip(1.0 - u @ u.T, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    ds = distances_dataset(steps, dist, np.ones(len(steps)), dts=dts, taus=[t for t in taus if t <= steps[-1]])
    loss = 0.3 * (1.0 + steps / 200.0) ** -1.5
    ds["train_loss"] = ("step", loss)
    ds["train_acc"] = ("step", 1.0 - 0.5 * loss / loss[0])
    ds.attrs.update({"synthetic_process": process, "synthetic_seed": int(seed)})
    return ds


#: what :func:`panel` records of each draw (besides the verdicts)
PANEL_MEASURES: tuple[str, ...] = ("phase_one_end", "total_movement", "laziness", "jitter_ratio", "drift_ratio",
                                   "growth_exponent", "drift_decay")


def panel(n_draws: int = 20, seed: int = 100, **thresholds: float) -> xr.Dataset:
    """The validation panel: every process of :data:`PROCESSES` over ``n_draws`` independent noise
    draws, judged by version 3 (:func:`conelib.measures.v3.verdict`) and version 2.

    Returns:
        A Dataset over ``process`` × ``draw``: ``verdict`` and ``v2_verdict`` (text), the measures of
        :data:`PANEL_MEASURES`, ``expected`` per process, and ``success`` / ``v2_success`` (the share
        of draws judged right).
    """
    if int(n_draws) < 1:
        raise ValueError(f"n_draws must be a positive number of draws, got {n_draws}")
    names = list(PROCESSES)
    shape = (len(names), int(n_draws))
    got3 = np.empty(shape, dtype=object)
    got2 = np.empty(shape, dtype=object)
    vals = {m: np.full(shape, np.nan) for m in PANEL_MEASURES}
    for i, name in enumerate(names):
        for d in range(int(n_draws)):
            ds = trajectory(name, seed=seed + d)
            v = v3.verdict(ds, **thresholds)
            got3[i, d], got2[i, d] = v.verdict, v2.verdict(ds).verdict
            for m in PANEL_MEASURES:
                x = getattr(v, m)
                vals[m][i, d] = np.nan if x is None else float(x)
    expected = np.asarray([PROCESSES[n].verdict for n in names], dtype=object)
    out = xr.Dataset(
        {"verdict": (("process", "draw"), got3), "v2_verdict": (("process", "draw"), got2),
         **{m: (("process", "draw"), a) for m, a in vals.items()},
         "expected": ("process", expected),
         "description": ("process", np.asarray([PROCESSES[n].description for n in names], dtype=object)),
         "success": ("process", (got3 == expected[:, None]).mean(axis=1)),
         "v2_success": ("process", (got2 == expected[:, None]).mean(axis=1))},
        coords={"process": np.asarray(names, dtype=object), "draw": np.arange(int(n_draws))},
        attrs={"title": "validation panel of the phase and cone measures", "n_draws": int(n_draws),
               "first_seed": int(seed)})
    return out
