"""Kernel distance, kernel velocity and the geometry of a trajectory of eNTKs.

All functions take kernels in any layout (``(n, n)`` trace/logit-sum kernels or ``(n, n, c, c)``
full kernels) as torch tensors or numpy arrays: a kernel is treated as one vector of its entries,
and the Frobenius inner product :math:`\\langle H, H'\\rangle_F = \\mathrm{Tr}(H H'^\\top)` is the sum
of the entrywise product. Computations are done in float64.

Kernel distance (Fort et al. 2020; Zhou et al. 2025, eq. 4):

.. math::

    S(\\theta, \\theta') = 1 - \\frac{\\mathrm{Tr}(H(\\theta) H(\\theta')^\\top)}
        {\\sqrt{\\mathrm{Tr}(H(\\theta) H(\\theta)^\\top)}\\,\\sqrt{\\mathrm{Tr}(H(\\theta') H(\\theta')^\\top)}}
      = 1 - \\cos\\angle(H, H').

It is scale invariant, symmetric, 0 for proportional kernels, and in :math:`[0, 1]` for positive
semi-definite kernels (whose Frobenius inner product is non-negative). Writing
:math:`\\hat H = H / \\|H\\|_F`, :math:`\\|\\hat H - \\hat H'\\|_F^2 = 2S`, so :math:`\\sqrt{2S}` is the
Euclidean (chord) distance between normalised kernels on the unit sphere; the cone embedding uses it.

Kernel velocity (eq. 5): :math:`v(t) = S(\\theta_t, \\theta_{t+dt}) / dt`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor

EMBEDDINGS: tuple[str, ...] = ("classical", "smacof")


def _flat64(h: ArrayLike) -> np.ndarray:
    if isinstance(h, torch.Tensor):
        h = h.detach().to("cpu", torch.float64).numpy()
    return np.asarray(h, dtype=np.float64).reshape(-1)


def kernel_distance(h1: ArrayLike, h2: ArrayLike) -> float:
    """Kernel distance :math:`S` of Zhou et al. (2025), eq. (4), between two kernels of one layout.

    Round-off below zero is clipped to 0 (by Cauchy–Schwarz, :math:`S \\ge 0` exactly).

    Raises:
        ValueError: if the shapes differ or a kernel is identically zero.
    """
    shape1, shape2 = tuple(h1.shape), tuple(h2.shape)
    if shape1 != shape2:
        raise ValueError(f"h1 and h2 must have the same layout, got shapes {shape1} and {shape2}")
    a, b = _flat64(h1), _flat64(h2)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("kernel_distance is undefined for a zero kernel (h1 or h2 has zero Frobenius norm)")
    return float(max(0.0, 1.0 - float(a @ b) / (na * nb)))


def kernel_norms(kernels: Sequence[ArrayLike]) -> np.ndarray:
    """Frobenius norms :math:`\\|H_t\\|_F` of a trajectory of kernels."""
    return np.array([np.linalg.norm(_flat64(h)) for h in kernels])


def _stack_normalised(kernels: Sequence[ArrayLike]) -> np.ndarray:
    if len(kernels) == 0:
        raise ValueError("kernels must hold at least one kernel")
    shapes = {tuple(h.shape) for h in kernels}
    if len(shapes) != 1:
        raise ValueError(f"all kernels must have the same layout, got shapes {sorted(shapes)}")
    flat = np.stack([_flat64(h) for h in kernels])
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a kernel in the trajectory is identically zero; its distance is undefined")
    return flat / norms


def pairwise_distances(kernels: Sequence[ArrayLike]) -> np.ndarray:
    """The matrix :math:`D_{st} = S(\\theta_s, \\theta_t)` over a trajectory of kernels, shape (T, T).

    Equal to :func:`kernel_distance` on every pair (a single Gram product of the normalised
    kernels). The diagonal is exactly 0 and the matrix exactly symmetric.
    """
    u = _stack_normalised(kernels)
    d = 1.0 - u @ u.T
    d = np.clip((d + d.T) / 2, 0.0, None)
    np.fill_diagonal(d, 0.0)
    return d


class KernelTrajectory:
    """Accumulates the normalised kernels of a run and their pairwise distances.

    Only the normalised, flattened kernels (float64 on the CPU) and the Gram matrix are kept, so a
    training loop can ``add`` one kernel per snapshot and read the distances at the end.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.norms: list[float] = []
        self._unit: list[np.ndarray] = []

    def add(self, step: int, kernel: ArrayLike) -> None:
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"step must increase along a trajectory, got {step} after {self.steps[-1]}")
        flat = _flat64(kernel)
        if self._unit and flat.shape != self._unit[0].shape:
            raise ValueError(f"kernel has {flat.size} entries, earlier kernels had {self._unit[0].size}")
        norm = float(np.linalg.norm(flat))
        if norm == 0:
            raise ValueError(f"the kernel at step {step} is identically zero")
        self.steps.append(int(step))
        self.norms.append(norm)
        self._unit.append(flat / norm)

    def distances(self) -> np.ndarray:
        """Pairwise kernel distances, (T, T); see :func:`pairwise_distances`."""
        return pairwise_distances(self._unit)

    def __len__(self) -> int:
        return len(self.steps)


def _index(steps: Sequence[int]) -> dict[int, int]:
    idx = {int(s): i for i, s in enumerate(steps)}
    if len(idx) != len(steps):
        raise ValueError("steps must be distinct")
    return idx


def adjacent_distance(distances: np.ndarray, steps: Sequence[int], dt: int) -> np.ndarray:
    """:math:`S(\\theta_t, \\theta_{t+dt})` for every snapshot step ``t``; NaN where ``t + dt`` is no snapshot."""
    if dt <= 0:
        raise ValueError(f"dt must be a positive number of steps, got {dt}")
    idx = _index(steps)
    out = np.full(len(steps), np.nan)
    for i, t in enumerate(steps):
        j = idx.get(int(t) + int(dt))
        if j is not None:
            out[i] = distances[i, j]
    return out


def kernel_velocity(distances: np.ndarray, steps: Sequence[int], dt: int) -> np.ndarray:
    """Kernel velocity :math:`v(t) = S(\\theta_t, \\theta_{t+dt}) / dt` (Zhou et al. 2025, eq. 5), per step."""
    return adjacent_distance(distances, steps, dt) / float(dt)


def distance_to_reference(distances: np.ndarray, steps: Sequence[int], ref_steps: Sequence[int]) -> np.ndarray:
    """:math:`S(\\theta_t, \\theta_\\tau)` for every snapshot ``t`` (rows) and reference ``tau`` (columns).

    Raises:
        ValueError: if a reference step is not a snapshot step.
    """
    idx = _index(steps)
    missing = [int(r) for r in ref_steps if int(r) not in idx]
    if missing:
        raise ValueError(f"ref_steps {missing} are not snapshot steps; snapshots are at {list(map(int, steps))}")
    return np.stack([distances[:, idx[int(r)]] for r in ref_steps], axis=1)


def cone_embedding(distances: np.ndarray, *, method: str = "classical", seed: int = 0) -> np.ndarray:
    """2-D coordinates of a trajectory of kernels, with the first kernel (H(0)) at the origin.

    The embedded dissimilarity is the chord distance :math:`\\sqrt{2S}` between normalised kernels,
    which is exactly Euclidean (the normalised kernels are points on a unit sphere), so:

    * ``"classical"`` (default): classical (Torgerson) MDS — the top two principal axes of the
      normalised kernels, from the double-centred squared distances. Deterministic and exact up to
      the discarded dimensions; the fraction of variance it keeps says how faithful the picture is.
    * ``"smacof"``: metric MDS by :class:`sklearn.manifold.MDS` (stress majorisation), started
      from the classical solution.

    The picture is translated so that the first point is at the origin and oriented so that the
    last point has non-negative coordinates (the axes' signs are otherwise arbitrary).
    """
    if method not in EMBEDDINGS:
        raise ValueError(f"method={method!r} is not supported; choose one of {EMBEDDINGS}")
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (T, T) matrix, got shape {d.shape}")
    t = d.shape[0]
    chord = np.sqrt(2.0 * np.clip(d, 0.0, None))
    if t == 1:
        return np.zeros((1, 2))
    j = np.eye(t) - 1.0 / t
    w, v = np.linalg.eigh(-0.5 * j @ (chord**2) @ j)
    order = np.argsort(w)[::-1][:2]
    coords = v[:, order] * np.sqrt(np.clip(w[order], 0.0, None))
    if method == "smacof":
        import inspect

        from sklearn.manifold import MDS

        kw: dict = {"n_components": 2, "random_state": seed, "n_init": 1, "max_iter": 1000, "eps": 1e-9}
        # scikit-learn >= 1.8 names the precomputed-dissimilarity switch `metric`, older ones `dissimilarity`
        if "metric_mds" in inspect.signature(MDS).parameters:
            # the explicit start passed to fit_transform below overrides `init`
            kw.update(metric="precomputed", metric_mds=True, init="random")
        else:
            kw.update(dissimilarity="precomputed")
        # start stress majorisation from the classical solution: deterministic, never worse than it
        coords = MDS(**kw).fit_transform(chord, init=coords)
    coords = coords - coords[0]
    signs = np.where(coords[-1] < 0, -1.0, 1.0)
    return coords * signs


def embedding_fidelity(distances: np.ndarray) -> float:
    """Fraction of the trajectory's variance kept by the 2-D classical embedding (1 = exact)."""
    d = np.asarray(distances, dtype=np.float64)
    t = d.shape[0]
    j = np.eye(t) - 1.0 / t
    w = np.linalg.eigvalsh(-0.5 * j @ (2.0 * np.clip(d, 0.0, None)) @ j)
    w = np.clip(w, 0.0, None)
    total = w.sum()
    return float(np.sort(w)[::-1][:2].sum() / total) if total > 0 else 1.0
