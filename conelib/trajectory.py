"""Kernel-dynamics Datasets from a trajectory of kernels (or their pairwise distances).

:func:`trajectory_dataset` builds, from kernels :math:`H(\\theta_t)` at snapshot steps, the Dataset
that :mod:`conelib.experiments.kernel_dynamics` stores and that :mod:`conelib.measures` reads:
pairwise distances (eq. 4 of Zhou et al. 2025), adjacent distances and velocities (eq. 5),
distances to reference steps, and the 2-D cone embedding. :func:`distances_dataset` does the same
from the pairwise distances and the kernels' norms (for callers that never keep the kernels), and
is the one implementation of both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from conelib.kernels import (
    ArrayLike,
    adjacent_distance,
    cone_embedding,
    distance_to_reference,
    embedding_fidelity,
    kernel_norms,
    pairwise_distances,
)

__all__ = ["trajectory_dataset", "distances_dataset"]


def trajectory_dataset(
    steps: Sequence[int],
    kernels: Sequence[ArrayLike],
    *,
    dts: Sequence[int],
    taus: Sequence[int] = (),
) -> xr.Dataset:
    """A kernel-dynamics Dataset (without training curves) from a trajectory of kernels.

    Holds the same kernel variables as the kernel-dynamics experiment:
    ``pairwise_distance`` :math:`S(\\theta_s, \\theta_t)` (``step`` × ``other_step``),
    ``adjacent_distance`` :math:`S(\\theta_t, \\theta_{t+dt})` and ``velocity`` (``step`` ×
    ``dt``; NaN where :math:`t + dt` is no snapshot), ``dist_to_ref``
    :math:`S(\\theta_t, \\theta_\\tau)` (``step`` × ``ref_step``), ``dist_to_init``,
    ``kernel_norm`` and the cone embedding ``cone_x``/``cone_y`` (Zhou et al. 2025, eqs. 4-5).

    Args:
        steps: increasing snapshot steps, one per kernel.
        kernels: the kernels :math:`H(\\theta_t)` (any one layout; torch or numpy).
        dts: gaps for the adjacent distance, positive.
        taus: reference steps, each one of ``steps``.

    Raises:
        ValueError: if the lengths differ, steps do not increase, a ``dt`` is not positive or a
            ``tau`` is not a snapshot step.
    """
    if len(steps) != len(kernels):
        raise ValueError(f"steps and kernels must have the same length, got {len(steps)} and {len(kernels)}")
    return distances_dataset(steps, pairwise_distances(kernels), kernel_norms(kernels), dts=dts, taus=taus)


def distances_dataset(
    steps: Sequence[int],
    distances: np.ndarray,
    norms: Sequence[float],
    *,
    dts: Sequence[int],
    taus: Sequence[int] = (),
) -> xr.Dataset:
    """:func:`trajectory_dataset` from the pairwise distances and norms of the kernels (for
    callers that never keep the kernels, like :class:`conelib.kernels.KernelTrajectory`)."""
    steps = np.asarray([int(s) for s in steps], dtype=np.int64)
    dist = np.asarray(distances, dtype=np.float64)
    if dist.shape != (len(steps), len(steps)) or len(norms) != len(steps):
        raise ValueError(f"distances must be ({len(steps)}, {len(steps)}) and norms of length {len(steps)}, "
                         f"got {dist.shape} and {len(norms)}")
    if len(steps) < 2 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"steps must hold at least two strictly increasing snapshot steps, got {steps.tolist()}")
    dts = [int(d) for d in dts]
    if not dts or any(d <= 0 for d in dts):
        raise ValueError(f"dts must be a non-empty list of positive step gaps, got {dts}")
    taus = [int(t) for t in taus]
    adj = np.stack([adjacent_distance(dist, steps, dt) for dt in dts], axis=1)
    ref = distance_to_reference(dist, steps, taus) if taus else np.zeros((len(steps), 0))
    xy = cone_embedding(dist)
    embed = "classical MDS of the chord distance sqrt(2 S)"
    ds = xr.Dataset(
        {
            "kernel_norm": ("step", np.asarray(norms, float), {"long_name": "Frobenius norm of the eNTK ‖H(θ_t)‖_F", "units": "1"}),
            "dist_to_init": ("step", dist[:, 0], {"long_name": "kernel distance to initialisation S(θ_t, θ_0)", "units": "1"}),
            "adjacent_distance": (("step", "dt"), adj,
                                  {"long_name": "adjacent kernel distance S(θ_t, θ_{t+dt})", "units": "1"}),
            "velocity": (("step", "dt"), adj / np.asarray(dts, float)[None, :],
                         {"long_name": "kernel velocity v(t) = S(θ_t, θ_{t+dt}) / dt", "units": "1/step"}),
            "dist_to_ref": (("step", "ref_step"), ref,
                            {"long_name": "kernel distance to a reference step S(θ_t, θ_τ)", "units": "1"}),
            "pairwise_distance": (("step", "other_step"), dist, {"long_name": "kernel distance S(θ_s, θ_t)", "units": "1"}),
            "cone_x": ("step", xy[:, 0], {"long_name": f"cone embedding, axis 1 ({embed})", "units": "1"}),
            "cone_y": ("step", xy[:, 1], {"long_name": f"cone embedding, axis 2 ({embed})", "units": "1"}),
        },
        coords={
            "step": ("step", steps, {"long_name": "training step t", "units": "steps"}),
            "dt": ("dt", np.asarray(dts, dtype=np.int64), {"long_name": "step gap dt", "units": "steps"}),
            "ref_step": ("ref_step", np.asarray(taus, dtype=np.int64), {"long_name": "reference step τ", "units": "steps"}),
            "other_step": ("other_step", steps, {"long_name": "training step", "units": "steps"}),
        },
        attrs={"embedding_fidelity": embedding_fidelity(dist), "embedding": embed + "; H(0) at the origin"},
    )
    return ds
