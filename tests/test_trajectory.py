"""`conelib.trajectory`: the kernel-dynamics Dataset from kernels, against a brute-force loop of
`conelib.kernels.kernel_distance` in float64; and its checks of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conelib.kernels import kernel_distance
from conelib.trajectory import distances_dataset, trajectory_dataset




def test_trajectory_dataset_matches_a_brute_force_loop():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 201, 20)
    a = [rng.standard_normal((5, 7)) for _ in steps]
    kernels = [torch.tensor(x @ x.T, dtype=torch.float32) for x in a]  # torch input, float32
    ds = trajectory_dataset(steps, kernels, dts=[20, 60], taus=[0, 100])
    exact = [x @ x.T for x in a]  # float64 oracle
    n = len(steps)
    for i in range(n):
        for j in range(n):
            assert ds.pairwise_distance.values[i, j] == pytest.approx(kernel_distance(exact[i], exact[j]), abs=1e-6)
    for dt in (20, 60):
        for i, t in enumerate(steps):
            got = float(ds.adjacent_distance.sel(step=t, dt=dt))
            vel = float(ds.velocity.sel(step=t, dt=dt))
            if t + dt > steps[-1]:
                assert np.isnan(got) and np.isnan(vel)
            else:
                want = kernel_distance(exact[i], exact[list(steps).index(t + dt)])
                assert got == pytest.approx(want, abs=1e-6)
                assert vel == pytest.approx(want / dt, abs=1e-7)
    for tau in (0, 100):
        k = list(steps).index(tau)
        want = [kernel_distance(exact[i], exact[k]) for i in range(n)]
        np.testing.assert_allclose(ds.dist_to_ref.sel(ref_step=tau).values, want, atol=1e-6)
    np.testing.assert_allclose(ds.dist_to_init.values, ds.pairwise_distance.values[:, 0])
    np.testing.assert_allclose(ds.kernel_norm.values, [np.linalg.norm(h) for h in exact], rtol=1e-6)
    assert list(ds.step.values) == list(steps) and list(ds.other_step.values) == list(steps)
    assert list(ds.dt.values) == [20, 60] and list(ds.ref_step.values) == [0, 100]
    assert ds.cone_x.values[0] == 0 and ds.cone_y.values[0] == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": [0, 20], "kernels": [np.eye(2)], "dts": [20]}, "same length"),
        ({"steps": [20, 0], "kernels": [np.eye(2)] * 2, "dts": [20]}, "increasing"),
        ({"steps": [0, 20], "kernels": [np.eye(2)] * 2, "dts": [0]}, "dts"),
        ({"steps": [0, 20], "kernels": [np.eye(2)] * 2, "dts": [20], "taus": [10]}, "ref_steps"),
    ],
)
def test_trajectory_dataset_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        trajectory_dataset(**kwargs)




def test_distances_dataset_equals_trajectory_dataset_from_the_same_kernels():
    rng = np.random.default_rng(1)
    steps = np.arange(0, 101, 10)
    kernels = [(lambda x: x @ x.T)(rng.standard_normal((4, 6))) for _ in steps]
    a = trajectory_dataset(steps, kernels, dts=[10], taus=[50])
    S = np.array([[kernel_distance(p, q) for q in kernels] for p in kernels])
    b = distances_dataset(steps, S, [np.linalg.norm(k) for k in kernels], dts=[10], taus=[50])
    for name in ("pairwise_distance", "adjacent_distance", "dist_to_ref", "dist_to_init"):
        np.testing.assert_allclose(a[name].values, b[name].values, atol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="distances must be"):
        distances_dataset(steps, S[:3, :3], [1.0] * len(steps), dts=[10])
