"""Window-averaged (centroid) kernels, computed exactly from the pairwise kernel distances.

Single eNTK snapshots carry SGD jitter: two kernels 50 steps apart differ by about as much as the
kernel moves in thousands of steps of Phase II. Averaging the *normalised* kernels over a window
of snapshots separates the two: the average (the centroid) moves with the drift, and the spread
around it is the jitter. Both can be computed from the stored distances alone, without the kernels.

Let :math:`u_k = H(\\theta_{t_k}) / \\lVert H(\\theta_{t_k}) \\rVert_F` and :math:`G_{kl} = \\langle u_k,
u_l \\rangle = 1 - S(\\theta_{t_k}, \\theta_{t_l})` (eq. 4 of Zhou et al. 2025 is one minus this cosine).
Write :math:`u_k = \\mu_k + \\varepsilon_k`: a mean kernel direction plus jitter whose correlation
between snapshots dies out beyond a few snapshots (at the paper's MNIST scale the single-kernel
distance at a lag of one snapshot, 50 steps, is 73-83% of its value at lags of three and more).

**Far pairs.** For windows :math:`W_a, W_b` of snapshots with weights :math:`w_k` (all 1, or bootstrap
weights), the mean cosine over the pairs that are more than ``band`` snapshots apart,

.. math::

    \\tilde M_{ab} = \\frac{\\sum_{k \\in W_a, l \\in W_b, |k - l| > b} w_k w_l G_{kl}}
                     {\\sum_{k \\in W_a, l \\in W_b, |k - l| > b} w_k w_l},

has expectation :math:`\\langle \\bar\\mu_a, \\bar\\mu_b \\rangle` (up to the variation of :math:`\\mu` inside
a window): the jitter of two snapshots that far apart is uncorrelated, so it averages out of every
cosine. Leaving out the near-diagonal pairs is the same device as the unbiased U-statistic
estimators that leave out self-pairs.

**Drift, denoised**: :math:`\\hat D^2_{ab} = \\tilde M_{aa} + \\tilde M_{bb} - 2 \\tilde M_{ab}` estimates the
squared chord :math:`\\lVert \\bar\\mu_a - \\bar\\mu_b \\rVert^2` between the *mean* kernels without bias,
whatever the jitter's size. It can be negative when the drift is below the noise; averages of
:math:`\\hat D^2` stay unbiased, so the measures average before taking square roots.

**Jitter**: :math:`r_a^2 = 1 - \\tilde M_{aa}` is the mean of :math:`S` over the window's far pairs
(:math:`\\approx \\sigma^2`, the squared radius of the noise ball around the local mean kernel, plus
the drift inside the window); :math:`r_a` is the *jitter radius* (a chord, like :math:`\\sqrt{2S}`).

Windows: snapshot :math:`t_i` gets the window :math:`|t - t_i| \\le h_i` with :math:`h_i = \\min(h, t_i / 4)`:
``half_width`` :math:`h` in steps late in training, and narrower early, where the kernel moves fast
and averaging would blur Phase I. A window with no far pairs (early on) takes the jitter radius of
the nearest later window that has them, :math:`\\tilde M_{aa} = 1 - r^2`. The initial kernel is its own
window with no jitter (:math:`\\tilde M_{00} = 1`): it is a fixed function of the initial weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Centroids", "centroids", "window_bounds"]

#: early windows are at most this fraction of the step they are centred on (see the module docstring)
EARLY_FRACTION = 0.25


def window_bounds(steps: np.ndarray, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds ``[lo_i, hi_i)`` of the window of every snapshot: :math:`|t - t_i| \\le
    \\min(h, t_i / 4)` (measured from the first snapshot)."""
    steps = np.asarray(steps, dtype=float)
    if half_width < 0:
        raise ValueError(f"half_width must be >= 0 steps, got {half_width}")
    h = np.minimum(float(half_width), EARLY_FRACTION * (steps - steps[0]))
    lo = np.searchsorted(steps, steps - h - 1e-9, side="left")
    hi = np.searchsorted(steps, steps + h + 1e-9, side="right")
    return lo.astype(int), hi.astype(int)


def _box_sums(prefix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``out[a, b] = sum of the matrix over rows [lo_a, hi_a) and columns [lo_b, hi_b)`` from its 2-D prefix sums."""
    return (prefix[hi[:, None], hi[None, :]] - prefix[lo[:, None], hi[None, :]]
            - prefix[hi[:, None], lo[None, :]] + prefix[lo[:, None], lo[None, :]])


def _prefix2(a: np.ndarray) -> np.ndarray:
    p = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    p[1:, 1:] = a.cumsum(0).cumsum(1)
    return p


@dataclass(frozen=True)
class Centroids:
    """Centroid algebra of one trajectory (see the module docstring).

    Attributes:
        steps: snapshot steps :math:`t_i`.
        lo, hi: window of snapshot :math:`i`: indices ``[lo_i, hi_i)``.
        weight: total weight in window :math:`i` (0: an empty window, undefined centroid).
        gram: :math:`\\tilde M`, the far-pair mean cosines between windows (NaN where undefined).
        var: :math:`r_i^2`, the squared jitter radius of each window.
        weights: the snapshot weights used.
        band: pairs at most this many snapshots apart are left out.
    """

    steps: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    weight: np.ndarray
    gram: np.ndarray
    var: np.ndarray
    weights: np.ndarray
    band: int

    @property
    def n(self) -> int:
        return len(self.steps)

    @property
    def jitter(self) -> np.ndarray:
        """:math:`r_i`, the jitter radius (chord) around each window's mean kernel."""
        return np.sqrt(np.clip(self.var, 0.0, None))

    def drift2(self, i: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
        """:math:`\\hat D^2_{ij}`: the unbiased squared chord between the mean kernels of windows
        ``i`` and ``j`` (may be negative; NaN where a window is empty)."""
        i, j = np.asarray(i), np.asarray(j)
        return self.gram[i, i] + self.gram[j, j] - 2.0 * self.gram[i, j]

    def drift(self, i: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
        """:math:`\\sqrt{\\max(\\hat D^2, 0)}`: the denoised chord between mean kernels."""
        return np.sqrt(np.clip(self.drift2(i, j), 0.0, None))


def centroids(distances: np.ndarray, steps: np.ndarray, half_width: float,
              weights: np.ndarray | None = None, band: int = 2) -> Centroids:
    """The :class:`Centroids` of a trajectory from its pairwise kernel distances :math:`S`.

    Args:
        distances: ``(n, n)`` matrix :math:`S(\\theta_{t_i}, \\theta_{t_j})` (eq. 4).
        steps: the ``n`` increasing snapshot steps.
        half_width: :math:`h`, the windows' half-width in steps (0: every snapshot alone).
        weights: a positive weight per snapshot (bootstrap weights); ``None``: all 1.
        band: pairs of snapshots at most this many apart are left out (their jitter is correlated).
    """
    S = np.asarray(distances, dtype=np.float64)
    steps = np.asarray(steps)
    n = len(steps)
    if S.shape != (n, n):
        raise ValueError(f"distances must be ({n}, {n}) for {n} steps, got {S.shape}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be {n} finite non-negative numbers")
    if int(band) < 0:
        raise ValueError(f"band must be >= 0 snapshots, got {band}")
    k = np.arange(n)
    far = np.abs(k[:, None] - k[None, :]) > int(band)
    ww = w[:, None] * w[None, :] * far
    lo, hi = window_bounds(steps, half_width)
    cw = np.concatenate([[0.0], np.cumsum(w)])
    weight = cw[hi] - cw[lo]
    num = _box_sums(_prefix2(ww * (1.0 - S)), lo, hi)
    den = _box_sums(_prefix2(ww), lo, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        gram = np.where(den > 1e-12, num / den, np.nan)
    var = 1.0 - np.diag(gram).copy()
    var = _borrow_variance(var, weight)
    diag = np.where(np.isfinite(np.diag(gram)), np.diag(gram), 1.0 - var)
    gram[k, k] = diag
    empty = weight <= 0
    gram[empty, :] = np.nan
    gram[:, empty] = np.nan
    return Centroids(steps, lo, hi, weight, gram, var, w, int(band))


def _borrow_variance(var: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Windows with no far pairs (early in training) take the squared jitter radius of the nearest
    later window that has them (or the nearest earlier one); the initial kernel has none."""
    out = var.copy()
    good = np.nonzero(np.isfinite(var) & (weight > 0))[0]
    if good.size:
        for i in np.nonzero(~np.isfinite(var))[0]:
            later = good[good > i]
            out[i] = var[later[0]] if later.size else var[good[np.argmin(np.abs(good - i))]]
    out[0] = 0.0
    return out
