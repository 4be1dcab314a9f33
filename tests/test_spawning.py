"""The spawning experiment (parent-child spawning and linear mode connectivity), its analysis, report,
chart, notebook and reproduce hook.

Oracles: closed forms of the barrier (a linear softmax model, whose loss along a straight line is
convex, and a ReLU pair related by a permutation of its hidden units, whose line has a known bump);
an independent re-run of the standard training up to each spawn step (bitwise) and the data order
of :class:`conelib.train.BatchOrder` for the children's first batch; eNTKs computed directly with
another method and compared with :func:`conelib.kernels.kernel_distance`; the kernel-dynamics run of
the same training for the parent; scipy's t quantiles and hand-made Datasets for the statistics."""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from conelib import data as data_mod
from conelib.config import ParameterError
from conelib.experiments import KernelDynamicsConfig, SpawningConfig, kernel_dynamics, spawning
from conelib.experiments.common import build_model, load_data
from conelib.experiments.spawning import (
    child_data_seed,
    interpolate_state,
    interpolation_curves,
    line_barrier,
    refuse_batchnorm,
)
from conelib.kernels import kernel_distance
from conelib.ntk import empirical_ntk
from conelib.train import BatchOrder, train

SP = sys.modules["conelib.experiments.spawning"]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import browser  # noqa: E402  (tests/browser.py, a helper module)

#: a tiny run (seconds): momentum, so that the children also inherit non-trivial optimizer state
TINY = dict(model="lenet_300_100", dataset="digits", steps=24, spawn_steps=(0, 8, 16), batch_size=32, lr=0.05,
            momentum=0.9, probe_size=20, train_eval_size=256, device="cpu")


# ------------------------------------------------------------------------------------------
# the barrier against closed forms
# ------------------------------------------------------------------------------------------


def _separable(n: int = 60, d: int = 5, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Points near the vertices of a simplex (well separated), labels, and a separating matrix."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * np.eye(c, d)
    y = np.arange(n) % c
    x = centres[y] + 0.3 * rng.standard_normal((n, d))
    return torch.tensor(x, dtype=torch.float64), torch.tensor(y), centres


def _ce_numpy(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    z = x @ w.T + b
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), 100.0 * float((z.argmax(axis=1) != y).mean())


def test_a_convex_line_has_no_error_barrier_and_half_the_loss_gap() -> None:
    """Softmax regression: the logits are linear in the weights and the cross-entropy convex in the
    logits, so the loss along the line is convex and its maximum is at an end: B_L = |L(0) - L(1)| / 2.
    Both ends separate the data, and the weights that classify every point correctly form a convex
    set, so every point of the line does too: B_E = 0."""
    x, y, centres = _separable()
    model = nn.Linear(5, 3).double()
    wa, ba = 1.0 * centres, np.zeros(3)
    wb, bb = 3.0 * centres + 0.2 * np.random.default_rng(1).standard_normal((3, 5)), np.array([0.1, -0.2, 0.05])
    sa = {"weight": torch.tensor(wa), "bias": torch.tensor(ba)}
    sb = {"weight": torch.tensor(wb), "bias": torch.tensor(bb)}
    alphas = np.linspace(0, 1, 11)
    got = interpolation_curves(model, sa, sb, alphas, {"set": (x, y)})
    oracle = [_ce_numpy((1 - a) * wa + a * wb, (1 - a) * ba + a * bb, x.numpy(), y.numpy()) for a in alphas]
    np.testing.assert_allclose(got["set_loss"], [o[0] for o in oracle], rtol=1e-10)
    assert np.all(np.diff(got["set_loss"], 2) >= -1e-12)  # convex
    assert oracle[0][1] == oracle[-1][1] == 0.0
    assert line_barrier(got["set_error"]) == 0.0
    l0, l1 = oracle[0][0], oracle[-1][0]
    assert line_barrier(got["set_loss"]) == pytest.approx(abs(l0 - l1) / 2, rel=1e-10)


def test_a_permuted_pair_has_the_closed_form_bump() -> None:
    """f(x) = W2 relu(W1 x) with hidden units relu(x), relu(-x) and its copy with the two units
    swapped compute the same function. On x = +1 (class 0) and x = -1 (class 1) the margin along the
    line is k (1 - 2 alpha)^2, so L(alpha) = log(1 + exp(-k (1 - 2 alpha)^2)); at alpha = 1/2 both
    logits are 0, the tie goes to class 0 and one of the two points is wrong (50% error)."""
    k = 3.0
    model = nn.Sequential(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False)).double()
    sa = {"0.weight": torch.tensor([[1.0], [-1.0]]), "2.weight": torch.tensor([[k, 0.0], [0.0, k]])}
    sb = {"0.weight": torch.tensor([[-1.0], [1.0]]), "2.weight": torch.tensor([[0.0, k], [k, 0.0]])}
    x, y = torch.tensor([[1.0], [-1.0]], dtype=torch.float64), torch.tensor([0, 1])
    alphas = np.linspace(0, 1, 11)
    got = interpolation_curves(model, {n: v.double() for n, v in sa.items()}, {n: v.double() for n, v in sb.items()},
                               alphas, {"set": (x, y)})
    np.testing.assert_allclose(got["set_loss"], np.log1p(np.exp(-k * (1 - 2 * alphas) ** 2)), rtol=1e-12)
    want_err = np.where(np.isclose(alphas, 0.5), 50.0, 0.0)
    np.testing.assert_array_equal(got["set_error"], want_err)
    assert line_barrier(got["set_loss"]) == pytest.approx(math.log(2) - math.log1p(math.exp(-k)), rel=1e-12)
    assert line_barrier(got["set_error"]) == 50.0


def test_line_barrier_and_interpolation_basics() -> None:
    assert line_barrier([1.0, 1.5, 3.0]) == pytest.approx(1.0)  # the far end is the max: 3 - 2
    assert line_barrier([2.0, 1.0, 2.0]) == 0.0  # a dip is not a barrier
    with pytest.raises(ValueError, match="at least 2"):
        line_barrier([1.0])
    a, b = {"w": torch.randn(3, 4), "n": torch.tensor(5)}, {"w": torch.randn(3, 4), "n": torch.tensor(5)}
    assert torch.equal(interpolate_state(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state(a, b, 1.0)["w"], b["w"])
    torch.testing.assert_close(interpolate_state(a, b, 0.25)["w"], 0.75 * a["w"] + 0.25 * b["w"])
    with pytest.raises(ValueError, match="'n' is not floating"):
        interpolate_state(a, {**b, "n": torch.tensor(6)}, 0.5)
    with pytest.raises(ValueError, match="BatchNorm"):
        refuse_batchnorm(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))


# ------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------


def test_config_names_the_bad_parameter_before_any_work(monkeypatch, tmp_path) -> None:
    cfg = SpawningConfig(**TINY, seeds=[2, 1, 2])
    assert cfg.seeds == (1, 2) and cfg.seed == 1 and cfg.spawn_steps == (0, 8, 16) and cfg.pairs == [(0, 1)]
    assert SpawningConfig().steps == 10_000 and SpawningConfig.parameters()["steps"].default == 10_000
    assert KernelDynamicsConfig.parameters()["steps"].default == 1000  # other experiments keep theirs
    assert "steps" not in SpawningConfig().identity()
    for bad, name in (({"spawn_steps": [0, 24]}, "spawn_steps"), ({"spawn_steps": []}, "spawn_steps"),
                      ({"children": 1}, "children"), ({"barrier_points": 5}, "barrier_points"),
                      ({"model": "resnet20", "dataset": "digits"}, "norm"),
                      ({"kernel_kind": "diag"}, "kernel_kind")):
        with pytest.raises(ParameterError, match=f"parameter '{name}'") as err:
            SpawningConfig(**{**TINY, **bad})
        assert err.value.name == name
    assert SpawningConfig(**{**TINY, "model": "resnet20", "norm": "layernorm"}).norm == "layernorm"
    monkeypatch.setattr(SP, "train", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(ParameterError, match="parameter 'probe_size'"):
        spawning(SpawningConfig(**{**TINY, "probe_size": 100_000}), results_root=tmp_path, progress=False)


def test_profiles_give_the_kernel_dynamics_training_and_the_notebook_resolves_them() -> None:
    """Each profile's spawning runs follow its shared training recipe (the parent is the
    kernel-dynamics run), and the notebook's parameters resolve to those runs without training."""
    from conelib.experiments import kernel_dynamics_configs
    from conelib.experiments.common import same_trajectory
    from conelib.tools.nbparams import NOTEBOOKS, check
    from conelib.tools.reproduce import default_experiments

    assert "spawning" in NOTEBOOKS
    for profile in ("mnist", "quick"):
        runs = SP.spawning_configs(profile)
        kd = {(c.model, c.seed): c for c in kernel_dynamics_configs(profile)}
        for cfg in runs:
            for s in cfg.seeds:
                assert same_trajectory(kd[(cfg.model, s)], cfg.for_seed(s)), (profile, cfg.model, s)
        resolved = check("spawning", {"profile": profile})
        assert [c.identity() for c in resolved.configs] == [c.identity() for c in runs]
    (mnist,) = SP.spawning_configs("mnist")
    assert (mnist.model, mnist.dataset, mnist.steps, mnist.lr, mnist.momentum, mnist.seeds) == (
        "lenet_300_100", "mnist", 10_000, 0.1, 0.0, (0, 1, 2))
    (quick,) = SP.spawning_configs("quick")
    assert (quick.model, quick.dataset, quick.steps, quick.lr, quick.momentum, quick.weight_decay) == (
        "lenet5", "mnist5k", 1000, 0.05, 0.9, 5e-4)
    assert "spawning" in default_experiments("mnist")


def test_child_data_seeds_are_stable_and_distinct() -> None:
    seeds = {child_data_seed(s, c) for s in range(5) for c in range(3)}
    assert len(seeds) == 15 and all(v > 10**6 for v in seeds)
    assert child_data_seed(1, 0) == child_data_seed(1, 0)


# ------------------------------------------------------------------------------------------
# the run: children differ only in their data order; kernels and barriers from the stored numbers
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The tiny experiment with every call of ``train`` recorded: its arguments, the state it
    started from, the first training batch it saw and the state it ended in."""
    calls = []
    real = SP.train

    def spy(model, data, config, **kw):
        rec = {"start": kw.get("start_step", 0), "data_seed": kw.get("data_seed"),
               "entry": {k: v.detach().clone() for k, v in model.state_dict().items()},
               "optimizer_state": copy.deepcopy(kw.get("optimizer_state")), "batches": []}

        def hook(module, inputs):
            if module.training and len(rec["batches"]) < 1:
                rec["batches"].append(inputs[0].detach().clone())

        handle = model.register_forward_pre_hook(hook)
        try:
            out = real(model, data, config, **kw)
        finally:
            handle.remove()
        rec["exit"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        calls.append(rec)
        return out

    root = tmp_path_factory.mktemp("results")
    mp = pytest.MonkeyPatch()
    mp.setattr(SP, "train", spy)
    try:
        cfg = SpawningConfig(**TINY, seeds=(0, 1))
        ds = spawning(cfg, results_root=root, progress=False)
    finally:
        mp.undo()
    return cfg, ds, calls, root


def _calls_of(calls: list, cfg: SpawningConfig, k: int) -> tuple[dict, dict[int, list[dict]]]:
    """The parent call and the children's calls (by spawn step) of the k-th seed."""
    per_seed = 1 + len(cfg.spawn_steps) * cfg.children
    mine = calls[k * per_seed:(k + 1) * per_seed]
    kids: dict[int, list[dict]] = {}
    for c in mine[1:]:
        kids.setdefault(c["start"], []).append(c)
    return mine[0], kids


def test_the_dataset_has_the_documented_layout(recorded) -> None:
    cfg, ds, _, _ = recorded
    assert dict(ds.sizes) == {"spawn_step": 3, "seed": 2, "child": 2, "pair": 1, "alpha": 11}
    assert ds["spawn_step"].values.tolist() == [0, 8, 16] and ds["alpha"].values[[0, 5, -1]].tolist() == [0, 0.5, 1]
    for name in ("error_barrier", "loss_barrier", "sibling_kernel_distance", "child_test_acc", "child_test_loss",
                 "child_train_loss", "child_parent_kernel_distance", "parent_test_acc", "parent_train_loss"):
        assert np.all(np.isfinite(ds[name].values)), name
    assert ds["error_barrier"].attrs["units"] == "percentage points" and ds["loss_barrier"].attrs["units"] == "nats"
    assert np.all(ds["error_barrier"].values >= 0) and np.all(ds["loss_barrier"].values >= 0)
    assert float(ds.attrs["cpu_seconds"]) > 0 and float(ds.attrs["wall_seconds"]) > 0
    assert ds.attrs["experiment"] == "spawning" and json.loads(ds.attrs["config_full_json"])["children"] == 2
    assert ds["child_data_seed"].values.tolist() == [[child_data_seed(s, c) for c in range(2)] for s in (0, 1)]


def test_children_share_the_spawn_state_bitwise_and_differ_only_in_data_order(recorded) -> None:
    cfg, ds, calls, _ = recorded
    assert len(calls) == 2 * (1 + 3 * 2)
    for k, seed in enumerate(cfg.seeds):
        rc = cfg.for_seed(seed)
        data = load_data(rc, torch.device("cpu"))
        parent, kids = _calls_of(calls, cfg, k)
        assert parent["start"] == 0 and parent["data_seed"] is None
        for t in cfg.spawn_steps:
            a, b = kids[t]
            # oracle: the standard run trained afresh up to t (CPU training is deterministic)
            ref = build_model(rc, data, torch.device("cpu"))
            if t:
                train(ref, data, rc.train.replace(steps=t), progress=False)
            for name, value in ref.state_dict().items():
                assert torch.equal(a["entry"][name], value) and torch.equal(b["entry"][name], value), (t, name)
            # the same optimizer state (momentum buffers from step 1 on)
            sa, sb = a["optimizer_state"]["state"], b["optimizer_state"]["state"]
            assert sa.keys() == sb.keys() and (len(sa) > 0) == (t > 0)
            for i in sa:
                assert torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"])
            # their own data orders: the batch of step t is the one BatchOrder gives for the child's seed
            assert (a["data_seed"], b["data_seed"]) == (child_data_seed(seed, 0), child_data_seed(seed, 1))
            for c, call in enumerate((a, b)):
                idx = BatchOrder(len(data.y_train), rc.batch_size, child_data_seed(seed, c)).indices(t)
                assert torch.equal(call["batches"][0], data.x_train[idx])
            assert not torch.equal(a["batches"][0], b["batches"][0])
            parent_idx = BatchOrder(len(data.y_train), rc.batch_size, seed).indices(t)
            assert not torch.equal(a["batches"][0], data.x_train[parent_idx])
            assert any(not torch.equal(a["exit"][n], b["exit"][n]) for n in a["exit"])  # they did part


def test_kernel_distances_and_barrier_ends_from_direct_computations(recorded) -> None:
    cfg, ds, calls, _ = recorded
    for k, seed in enumerate(cfg.seeds):
        rc = cfg.for_seed(seed)
        data = load_data(rc, torch.device("cpu"))
        x_probe, _ = data_mod.probe_subset(data, cfg.probe_size, seed=seed)
        net = build_model(rc, data, torch.device("cpu"))

        def kernel(state):
            net.load_state_dict(state)
            return empirical_ntk(net, x_probe, kind="trace", method="jacobian")

        parent, kids = _calls_of(calls, cfg, k)
        hp = kernel(parent["exit"])
        for i, t in enumerate(cfg.spawn_steps):
            a, b = kids[t]
            ha, hb = kernel(a["exit"]), kernel(b["exit"])
            sel = dict(spawn_step=t, seed=seed)
            assert float(ds["sibling_kernel_distance"].sel(**sel, pair=0)) == pytest.approx(kernel_distance(ha, hb),
                                                                                            rel=1e-4, abs=1e-7)
            for c, h in enumerate((ha, hb)):
                assert float(ds["child_parent_kernel_distance"].sel(**sel, child=c)) == pytest.approx(
                    kernel_distance(h, hp), rel=1e-4, abs=1e-7)
            # the line's ends are the children themselves; its middle is their average
            err = ds["barrier_error_curve"].sel(**sel, pair=0).values
            loss = ds["barrier_loss_curve"].sel(**sel, pair=0).values
            acc = ds["child_test_acc"].sel(**sel).values
            np.testing.assert_allclose([err[0], err[-1]], 100 * (1 - acc), atol=1e-9)
            np.testing.assert_allclose([loss[0], loss[-1]], ds["child_test_loss"].sel(**sel).values, rtol=1e-6)
            net.load_state_dict({n: (a["exit"][n] + b["exit"][n]) / 2 for n in a["exit"]})
            with torch.no_grad():
                mid = torch.nn.functional.cross_entropy(net.eval()(data.x_test), data.y_test).item()
            assert loss[5] == pytest.approx(mid, rel=1e-5)
            assert float(ds["error_barrier"].sel(**sel, pair=0)) == pytest.approx(err.max() - (err[0] + err[-1]) / 2)
            assert float(ds["loss_barrier"].sel(**sel, pair=0)) == pytest.approx(loss.max() - (loss[0] + loss[-1]) / 2)


def test_the_parent_is_the_standard_run_of_kernel_dynamics(recorded, tmp_path) -> None:
    cfg, ds, _, _ = recorded
    kd = kernel_dynamics(KernelDynamicsConfig(**{k: v for k, v in TINY.items() if k not in ("spawn_steps",
                                                                                            "train_eval_size")},
                                              snapshot_every=8, dts=[8], taus=[8], seed=1),
                         results_root=tmp_path, progress=False)
    assert float(ds["parent_test_acc"].sel(seed=1)) == float(kd["test_acc"].sel(step=cfg.steps))
    assert float(ds["parent_test_acc_at_spawn"].sel(seed=1, spawn_step=8)) == float(kd["test_acc"].sel(step=8))


def test_a_stored_result_is_loaded_not_recomputed(recorded, monkeypatch) -> None:
    cfg, ds, _, root = recorded
    monkeypatch.setattr(SP, "_run", lambda *a, **k: pytest.fail("recomputed"))
    again = spawning(cfg, results_root=root, progress=False)
    xr.testing.assert_identical(again, ds)


# ------------------------------------------------------------------------------------------
# statistics (hand-made Datasets) and the report's answers
# ------------------------------------------------------------------------------------------


def _fake(barriers, steps=(0, 100, 1000), seeds=(0, 1, 2), acc=0.98, n_test=10_000, sib=None) -> xr.Dataset:
    b = np.asarray(barriers, dtype=float)[:, :, None]
    S, K = b.shape[:2]
    sib = np.full((S, K, 1), 0.01) if sib is None else np.asarray(sib, dtype=float)[:, :, None]
    return xr.Dataset(
        {"error_barrier": (("spawn_step", "seed", "pair"), b),
         "loss_barrier": (("spawn_step", "seed", "pair"), b / 100),
         "sibling_kernel_distance": (("spawn_step", "seed", "pair"), sib),
         "child_parent_kernel_distance": (("spawn_step", "seed", "child"), np.repeat(sib, 2, axis=2)),
         "child_test_acc": (("spawn_step", "seed", "child"), np.full((S, K, 2), acc))},
        coords={"spawn_step": list(steps), "seed": list(seeds), "pair": [0], "child": [0, 1]},
        attrs={"n_test": n_test})


def test_barrier_summary_is_the_student_t_interval_over_seeds() -> None:
    from scipy import stats

    from conelib.analysis.spawning import barrier_summary

    b = np.array([[3.0, 5.0, 4.5], [0.2, 0.1, 0.6], [0.0, 0.1, 0.0]])
    table = barrier_summary(_fake(b))
    for i, row in table.iterrows():
        lo, hi = stats.t.interval(0.95, df=2, loc=b[i].mean(), scale=stats.sem(b[i]))
        assert row["mean"] == pytest.approx(b[i].mean()) and row["low"] == pytest.approx(lo)
        assert row["high"] == pytest.approx(hi) and row["n"] == 3
        assert [row[f"seed_{s}"] for s in range(3)] == b[i].tolist()
    one = barrier_summary(_fake(b[:, :1], seeds=(7,)))
    assert np.isnan(one["low"]).all() and one["seed_7"].tolist() == b[:, 0].tolist()


def test_the_onset_needs_every_seed_at_every_later_step() -> None:
    from conelib.analysis.spawning import default_tolerance, error_tolerance, lmc_onset, seed_onsets

    steps = (0, 100, 250, 1000, 4000)
    b = np.array([[5.0, 6.0, 4.0], [0.3, 2.5, 0.2], [0.1, 0.2, 0.9], [0.2, 0.1, 0.3], [0.1, 0.0, 0.2]])
    ds = _fake(b, steps=steps)
    assert lmc_onset(ds, 0.5) == 1000  # seed 2 is above 0.5 at step 250
    assert lmc_onset(ds, 1.0) == 250 and lmc_onset(ds, 3.0) == 100 and lmc_onset(ds, 0.05) is None
    assert seed_onsets(ds, 0.5) == {0: 100, 1: 250, 2: 1000}
    assert default_tolerance(ds) == pytest.approx(100 * 3 * math.sqrt(0.02 * 0.98 / 10_000))
    assert error_tolerance(2.0, 10_000) == pytest.approx(0.42, abs=0.001)
    with pytest.raises(ValueError, match="percentage"):
        error_tolerance(150, 100)
    b[3, 1] = np.nan  # a missing value counts as not connected
    assert lmc_onset(_fake(b, steps=steps), 1.0) == 4000


def test_relation_and_answers_follow_the_seeds() -> None:
    from conelib.analysis.spawning import SeedPhase, relation
    from conelib.analysis.text import Facts
    from conelib.report.spawning import ANSWERS, SpawningReport

    def phase(s, end, lo, hi, J=0.02):
        return SeedPhase(s, "h", True, end, lo, hi, J, J, J, "two phases, cone")

    assert relation(100, phase(0, 2000, 1800, 2200)) == "before"
    assert relation(2000, phase(0, 1950, 1800, 2200)) == "within"
    assert relation(4000, phase(0, 1950, 1800, 2200)) == "after"
    assert relation(None, phase(0, 1950, 1800, 2200)) == "not reached"
    assert relation(100, SeedPhase(0, "h", True, None, np.nan, np.nan, np.nan, np.nan, np.nan, "no two phases")) \
        == "no Phase I end"
    assert relation(2000, phase(0, 2000, np.nan, np.nan)) == "within"  # no interval: the point

    steps = (0, 100, 1000, 4000)
    early = _fake([[5, 5, 5], [0.1, 0.2, 0.1], [0, 0, 0], [0, 0, 0]], steps=steps)
    phases = {s: phase(s, 2000, 1800, 2300) for s in range(3)}
    rep = SpawningReport({"m": early}, {"m": phases}, {"m": 0.42}, Facts())
    assert rep.answer("m") == ANSWERS["before"]
    late = _fake([[5, 5, 5], [5, 5, 5], [5, 5, 5], [0, 0, 0]], steps=steps)
    rep = SpawningReport({"m": late}, {"m": phases}, {"m": 0.42}, Facts())
    assert rep.answer("m") == ANSWERS["after"]
    mixed = _fake([[5, 5, 5], [0, 5, 5], [0, 0, 0], [0, 0, 0]], steps=(0, 100, 2000, 4000))
    rep = SpawningReport({"m": mixed}, {"m": phases}, {"m": 0.42}, Facts())
    assert rep.answer("m").startswith(ANSWERS["mixed"]) and "2 × within" in rep.answer("m")
    table = rep.phase_table("m")
    assert table["end of Phase I t* [95%]"].tolist() == ["2,000 [1,800, 2,300]"] * 3
    assert table["onset (barrier ≤ 0.42 points)"].tolist() == ["100", "2,000", "2,000"]


def test_sibling_chord_against_the_jitter_radius() -> None:
    from conelib.analysis.spawning import SeedPhase, sibling_vs_jitter

    sib = np.array([[0.02, 0.0008], [0.0008, 0.0002]])
    ds = _fake(np.zeros((2, 2)), steps=(0, 1000), seeds=(0, 1), sib=sib)
    ph = {0: SeedPhase(0, "h", True, 500, 400, 600, 0.02, 0.019, 0.021, "x"),
          1: SeedPhase(1, "h", False, 500, 400, 600, 0.02, 0.019, 0.021, "x")}
    t = sibling_vs_jitter(ds, ph).set_index(["spawn_step", "seed"])
    assert t.loc[(0, 0), "chord"] == pytest.approx(math.sqrt(0.04))
    assert t.loc[(0, 0), "ratio"] == pytest.approx(math.sqrt(0.02) / 0.02)
    assert t.loc[(1000, 0), "ratio"] == pytest.approx(math.sqrt(0.0008) / 0.02)
    assert t.loc[(1000, 0), "jitter_chord"] == pytest.approx(math.sqrt(2) * 0.02)
    assert np.isnan(t.loc[(0, 1), "ratio"])  # another probe set or kernel: not compared


def test_the_matching_kernel_dynamics_run_is_the_parents_training(recorded, tmp_path) -> None:
    from conelib.analysis.spawning import matching_kernel_dynamics, phase_one_of_seeds
    from conelib.measures import assess

    cfg, ds, _, _ = recorded
    kd_args = {k: v for k, v in TINY.items() if k not in ("spawn_steps", "train_eval_size")}
    common = dict(snapshot_every=2, dts=[2, 4], taus=[4, 8])
    runs = {
        "other lr": kernel_dynamics(KernelDynamicsConfig(**{**kd_args, "lr": 0.02}, **common, seed=0),
                                    results_root=tmp_path, progress=False),
        "other probe": kernel_dynamics(KernelDynamicsConfig(**{**kd_args, "probe_size": 30}, **common, seed=1),
                                       results_root=tmp_path, progress=False),
        "same": kernel_dynamics(KernelDynamicsConfig(**kd_args, **common, seed=0), results_root=tmp_path,
                                progress=False),
        "short": kernel_dynamics(KernelDynamicsConfig(**{**kd_args, "steps": 12}, **common, seed=1),
                                 results_root=tmp_path, progress=False),
    }
    got, same = matching_kernel_dynamics(cfg, 0, results_root=tmp_path)
    assert got.attrs["config_hash"] == runs["same"].attrs["config_hash"] and same
    got, same = matching_kernel_dynamics(cfg, 1, results_root=tmp_path)
    assert got.attrs["config_hash"] == runs["other probe"].attrs["config_hash"] and not same
    phases = phase_one_of_seeds(ds, results_root=tmp_path, n_boot=20)
    point = assess(runs["same"], n_boot=20, sensitivity=False).point
    assert phases[0].config_hash == runs["same"].attrs["config_hash"] and phases[0].same_kernel
    assert phases[0].phase_one_end == point.phase_one_end and phases[0].verdict == point.verdict
    assert not phases[1].same_kernel
    empty = phase_one_of_seeds(ds, results_root=tmp_path / "nothing", n_boot=20)
    assert not empty[0].found and empty[0].verdict == "not measured"


# ------------------------------------------------------------------------------------------
# report, charts, notebook and reproduce
# ------------------------------------------------------------------------------------------


def test_report_and_charts_quote_the_stored_numbers(recorded) -> None:
    from conelib.analysis.spawning import lmc_onset
    from conelib.charts import barrier_chart, barrier_curves_chart, sibling_kernel_chart
    from conelib.report.spawning import spawning_report

    cfg, ds, _, root = recorded
    rep = spawning_report([ds], results_root=root / "no-kd", n_boot=20)
    m = "lenet_300_100"
    f = rep.facts[m]
    assert f.onset == (lambda v: "not reached" if v is None else f"{v:,}")(lmc_onset(ds, rep.tolerance[m]))
    assert rep.facts.spawn_steps == "0, 8, 16" and rep.facts.seeds == "0, 1"
    table = rep.barrier_table(m)
    assert table["error barrier (points), seed 1"].tolist() == [f"{v:.2f}" for v in
                                                                ds["error_barrier"].sel(seed=1, pair=0).values]
    assert "not measured" in rep.findings(m) and rep.answer(m).startswith("cannot be told")
    spec = barrier_chart(ds, {0: (8, 6, 10)}, 0.5).to_dict()
    values = [r for d in spec["datasets"].values() for r in d if "error" in r]
    want = ds["error_barrier"].mean("pair")
    assert {(r["spawn_step"], int(r["seed"]), round(r["error"], 9)) for r in values} == {
        (int(t), int(s), round(float(want.sel(spawn_step=t, seed=s)), 9)) for t in ds.spawn_step.values
        for s in ds.seed.values}
    spec = sibling_kernel_chart(ds, {0: 0.01}).to_dict()
    chords = sorted(round(r["chord"], 9) for d in spec["datasets"].values() for r in d
                    if r.get("what") == "child – child")
    assert chords == sorted(round(math.sqrt(2 * v), 9) for v in ds["sibling_kernel_distance"].values.ravel())
    assert barrier_curves_chart(ds).to_dict()["params"][0]["name"] == "pick_seed"
    with pytest.raises(ValueError, match="spawning Dataset"):
        barrier_chart(xr.Dataset())


@pytest.mark.slow
def test_notebook_runs_with_papermill_and_its_page_draws_offline(tmp_path) -> None:
    from conelib.tools import book
    from conelib.tools.nbrun import run_notebook
    from conelib.results import config_hash, stored_results

    params = dict(profile="quick", model="lenet_300_100", dataset="digits", steps=12, spawn_steps=[0, 6],
                  batch_size=32, lr=0.05, momentum=0.0, weight_decay=0.0, probe_size=16, device="cpu",
                  results_root=str(tmp_path / "results"))
    root = tmp_path / "book_root"
    out = run_notebook("spawning", params, output=root / "book" / "generated" / "spawning.ipynb", quiet=True)
    nb = json.loads(out.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    glued = {o["metadata"]["scrapbook"]["name"]: o["data"].get("application/papermill.record/text/plain")
             for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
             if "scrapbook" in o.get("metadata", {})}
    assert glued and all(v for v in glued.values())
    (ds,) = stored_results("spawning", tmp_path / "results")
    want = SpawningConfig.from_profile("quick", "spawning", **{k: v for k, v in params.items()
                                                               if k not in ("profile", "results_root")})
    assert ds.attrs["config_hash"] == config_hash(want.identity())
    assert dict(ds.sizes) == {"spawn_step": 2, "seed": 1, "child": 2, "pair": 1, "alpha": 11}

    if not browser.chromium_available():
        pytest.skip("headless Chromium (Debian package chromium) and playwright are needed for the page check")
    shutil.copy2(ROOT / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/generated/spawning\n")
    shutil.copy2(ROOT / "book" / "references.bib", root / "book" / "references.bib")
    shutil.copytree(ROOT / "book" / "_static", root / "book" / "_static", ignore=shutil.ignore_patterns("vendor"))
    index = book.build_book(root)
    page = index.parent / "book" / "generated" / "spawning.html"
    report = browser.check_page(page, screenshot=tmp_path / "spawning.png")
    assert report.n_vega_embeds >= 3 and report.n_vega_svg_or_canvas >= 3, report  # barriers, kernels, lines
    assert report.page_errors == [] and report.console_errors == [], report
    assert report.failed_requests == [] and [r for r in report.blocked_requests if "favicon" not in r] == []
    assert report.math_typeset and report.math_errors == []
    assert ds.attrs["config_hash"] in page.read_text(encoding="utf-8")


@pytest.mark.timeout(600)
def test_reproduce_passes_a_faithful_result_and_catches_a_changed_barrier(tmp_path, monkeypatch) -> None:
    import yaml

    from conelib.tools.reproduce import reproduce
    from conelib.results import load_result, result_path, save_result

    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({"spawning": {k: (list(v) if isinstance(v, tuple) else v)
                                                    for k, v in {**TINY, "steps": 12, "spawn_steps": (0, 6)}.items()}}))
    stored = tmp_path / "stored"
    monkeypatch.setenv("CONELIB_RESULTS", str(stored))
    report = reproduce(scratch=tmp_path / "a", profile=str(profile), only=["spawning"], write_page=False,
                       workers=1, progress=False)
    assert not report.ok and report.missing == ["spawning lenet_300_100"]
    (cfg,) = SP.spawning_configs(str(profile))
    spawning(cfg, progress=False)
    report = reproduce(scratch=tmp_path / "b", profile=str(profile), only=["spawning"], write_page=False,
                       workers=1, progress=False)
    assert report.ok, report.frame()
    assert {r["measure"] for r in report.rows} == {"error_barrier", "loss_barrier", "child_test_acc"}
    assert len(report.rows) == 3 * 2  # three measures for each of two spawn steps and one seed
    path = result_path("spawning", cfg.identity(), stored)
    ds = load_result(path).load()
    tol = next(r["tolerance"] for r in report.rows if r["measure"] == "error_barrier" and "t=6" in r["run"])
    assert tol == pytest.approx(100 * 3 * math.sqrt(float(ds["child_test_acc"][1].mean()) *
                                                    (1 - float(ds["child_test_acc"][1].mean())) / 360))
    ds["error_barrier"][1] = ds["error_barrier"][1] + 1.5 * tol  # beyond 3 standard errors on 360 test images
    save_result(ds, path)
    # the same scratch: the recomputed run is resumed, not trained again
    report = reproduce(scratch=tmp_path / "b", profile=str(profile), only=["spawning"], write_page=False,
                       workers=1, progress=False)
    assert [j["status"] for j in report.jobs] == ["resumed"]
    failed = [(r["run"], r["measure"]) for r in report.rows if not r["passed"]]
    assert failed == [("lenet_300_100 t=6 seed 0", "error_barrier")]
