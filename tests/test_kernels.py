"""Kernel metrics against a direct numpy evaluation of the paper's equations and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conelib.kernels import (
    KernelTrajectory,
    adjacent_distance,
    cone_embedding,
    distance_to_reference,
    embedding_fidelity,
    kernel_distance,
    kernel_velocity,
    pairwise_distances,
)

rng = np.random.default_rng(0)


def random_psd(n: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((n, rank or n))
    return a @ a.T


def eq4(h1: np.ndarray, h2: np.ndarray) -> float:
    """Zhou et al. (2025), eq. (4), written with traces exactly as printed."""
    h1, h2 = np.asarray(h1, float), np.asarray(h2, float)
    return 1 - np.trace(h1 @ h2.T) / (np.sqrt(np.trace(h1 @ h1.T)) * np.sqrt(np.trace(h2 @ h2.T)))


def test_equals_equation_4() -> None:
    for _ in range(20):
        a, b = random_psd(7), random_psd(7)
        assert kernel_distance(a, b) == pytest.approx(eq4(a, b), abs=1e-14)
    # non-symmetric inputs too (the equation uses H H'^T)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    assert kernel_distance(a, b) == pytest.approx(max(0.0, eq4(a, b)), abs=1e-14)


def test_scale_invariance_symmetry_and_range() -> None:
    for _ in range(20):
        a, b = random_psd(6), random_psd(6, rank=2)
        c = float(rng.uniform(0.01, 100))
        assert kernel_distance(a, c * a) == pytest.approx(0.0, abs=1e-14)
        assert kernel_distance(a, b) == pytest.approx(kernel_distance(b, a), abs=1e-15)
        assert kernel_distance(a, c * b) == pytest.approx(kernel_distance(a, b), abs=1e-14)
        assert 0.0 <= kernel_distance(a, b) <= 1.0


def test_orthogonal_supports_give_one() -> None:
    a, b = np.zeros((6, 6)), np.zeros((6, 6))
    a[:3, :3] = random_psd(3)
    b[3:, 3:] = random_psd(3)
    assert kernel_distance(a, b) == pytest.approx(1.0, abs=1e-15)


def test_full_layout_and_torch_inputs() -> None:
    # a (n, n, c, c) kernel is the (nc, nc) matrix read in another order: same distance
    n, c = 4, 3
    m1, m2 = random_psd(n * c), random_psd(n * c)
    f1 = torch.from_numpy(m1.reshape(n, c, n, c).transpose(0, 2, 1, 3).copy())
    f2 = torch.from_numpy(m2.reshape(n, c, n, c).transpose(0, 2, 1, 3).copy())
    assert kernel_distance(f1, f2) == pytest.approx(eq4(m1, m2), abs=1e-14)
    assert kernel_distance(f1.float(), f2.float()) == pytest.approx(eq4(m1, m2), abs=1e-6)


def test_errors() -> None:
    with pytest.raises(ValueError, match="same layout"):
        kernel_distance(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="zero"):
        kernel_distance(np.zeros((3, 3)), np.eye(3))


def test_pairwise_matches_pairs_and_velocity() -> None:
    ks = [random_psd(5) for _ in range(6)]
    d = pairwise_distances(ks)
    for i in range(6):
        for j in range(6):
            assert d[i, j] == pytest.approx(kernel_distance(ks[i], ks[j]), abs=1e-13)
    assert np.all(np.diag(d) == 0) and np.array_equal(d, d.T)
    steps = [0, 10, 20, 30, 40, 50]
    adj = adjacent_distance(d, steps, 20)
    assert adj[0] == pytest.approx(kernel_distance(ks[0], ks[2]), abs=1e-13)
    assert np.isnan(adj[-1]) and np.isnan(adj[-2])
    np.testing.assert_allclose(kernel_velocity(d, steps, 20), adj / 20)
    ref = distance_to_reference(d, steps, [20, 40])
    np.testing.assert_allclose(ref[:, 1], d[:, 4])
    with pytest.raises(ValueError, match="ref_steps"):
        distance_to_reference(d, steps, [25])
    with pytest.raises(ValueError, match="dt"):
        adjacent_distance(d, steps, 0)


def test_trajectory_accumulator() -> None:
    ks = [random_psd(4) for _ in range(4)]
    traj = KernelTrajectory()
    for s, k in zip([0, 5, 9, 12], ks):
        traj.add(s, torch.from_numpy(k))
    np.testing.assert_allclose(traj.distances(), pairwise_distances(ks), atol=1e-15)
    np.testing.assert_allclose(traj.norms, [np.linalg.norm(k) for k in ks])
    with pytest.raises(ValueError, match="step"):
        traj.add(12, ks[0])


def test_embedding_is_exact_for_planar_kernels() -> None:
    # kernels H_t = cos(a_t) A + sin(a_t) B with A ⟂ B unit: all normalised kernels lie on a circle in
    # one plane, so the 2-D embedding must reproduce every chord distance exactly.
    a = np.zeros((4, 4)); a[:2, :2] = np.eye(2) / np.sqrt(2)
    b = np.zeros((4, 4)); b[2:, 2:] = np.eye(2) / np.sqrt(2)
    angles = np.linspace(0, 1.2, 7)
    ks = [np.cos(t) * a + np.sin(t) * b for t in angles]
    d = pairwise_distances(ks)
    for method in ("classical", "smacof"):
        xy = cone_embedding(d, method=method)
        assert xy.shape == (7, 2)
        np.testing.assert_allclose(xy[0], 0.0, atol=1e-12)
        emb = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        tol = 1e-9 if method == "classical" else 1e-3
        np.testing.assert_allclose(emb, np.sqrt(2 * d), atol=tol)
        assert np.all(xy[-1] >= 0)
    assert embedding_fidelity(d) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="method"):
        cone_embedding(d, method="tsne")
