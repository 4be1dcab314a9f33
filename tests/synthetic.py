"""Synthetic kernel trajectories whose phase and cone measures are known by construction.

A test helper (not a test module). Each kernel is a unit vector :math:`v_t \\in \\mathbb R^D` taken
as a diagonal kernel, so that :math:`S(\\theta_s, \\theta_t) = 1 - v_s \\cdot v_t` exactly (the cosine
of eq. 4). Phase I turns :math:`v` fast by an angle :math:`A(1 - e^{-t/t_0})` in one plane; then:

* ``cone``: i.i.d. jitter of size ``sigma`` in the other dimensions: every pair of Phase II
  kernels is the same chord distance apart whatever their gap (floor exponent 0, growth 0);
* ``lazy``: the same with a negligible jitter (laziness about 0);
* ``steady``: a steady turn at ``omega`` rad/step in a third direction (chord proportional to
  the gap: floor exponent 1, growth 1);
* ``walk``: the direction performs a random walk in many dimensions (chord proportional to the
  square root of the gap: exponents 1/2);
* ``none``: a steady turn from the start and no Phase I (no drop: no two phases).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from conelib.trajectory import distances_dataset

STEPS = np.arange(0, 10001, 50)
DTS = (50, 100, 200, 400, 800)
TAUS = (2000, 4000, 6000, 8000)
KINDS = ("cone", "lazy", "steady", "walk", "none")


def vectors(kind: str, seed: int = 0, *, dim: int = 200, angle: float = 1.0, t0: float = 300.0,
            sigma: float = 0.1, omega: float = 4e-5, walk: float = 0.01, steps: np.ndarray = STEPS) -> np.ndarray:
    """The unit vectors :math:`v_t`, one row per snapshot (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    rng = np.random.default_rng(seed)
    t = steps.astype(float)
    v = np.zeros((len(t), dim))
    if kind == "none":
        phi = 1e-4 * t
        v[:, 0], v[:, 1] = np.cos(phi), np.sin(phi)
        return v
    phi = angle * (1 - np.exp(-t / t0))
    v[:, 0], v[:, 1] = np.cos(phi), np.sin(phi)
    if kind in ("cone", "lazy"):
        size = sigma if kind == "cone" else 1e-4
        v[:, 3:] += size * rng.standard_normal((len(t), dim - 3)) / np.sqrt(dim - 3)
    elif kind == "steady":
        psi = omega * t
        v[:, :2] *= np.cos(psi)[:, None]
        v[:, 2] = np.sin(psi)
    else:  # walk
        v[:, 3:] += np.cumsum(walk * rng.standard_normal((len(t), dim - 3)) / np.sqrt(dim - 3), axis=0)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def trajectory(kind: str, seed: int = 0, *, dts=DTS, taus=TAUS, steps: np.ndarray = STEPS, **kw) -> xr.Dataset:
    """A kernel-dynamics Dataset of the trajectory (pairwise distances, adjacent distances, ...)."""
    v = vectors(kind, seed, steps=steps, **kw)
    s = np.clip(1.0 - v @ v.T, 0.0, None)
    np.fill_diagonal(s, 0.0)
    return distances_dataset(steps, s, np.ones(len(steps)), dts=dts, taus=taus)


#: the stand-ins' kinds as processes of the validation panel (conelib.measures.synthetic)
PANEL = {"cone": "jitter cone", "lazy": "frozen", "steady": "steady drift", "walk": "random walk",
         "none": "no early phase", "converging": "converging drift", "tiny": "tiny movement"}


def stand_in(kind: str, acc: float = 0.9, seed: int = 0) -> xr.Dataset:
    """A stored-run stand-in: a trajectory of the validation panel (:data:`PANEL`; the verdict of
    each is known) plus training curves and a wall time."""
    from conelib.measures import synthetic as panel

    ds = panel.trajectory(PANEL[kind], seed=seed).drop_vars(["train_loss", "train_acc"])
    n = ds.sizes["step"]
    ds["test_acc"] = ("step", np.linspace(0.1, acc, n))
    ds["train_acc"] = ("step", np.linspace(0.1, 1.0, n))
    ds["train_loss"] = ("step", np.linspace(2.3, 0.01, n))
    ds.attrs["wall_seconds"] = 12.5
    return ds
