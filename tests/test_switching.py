"""The switching experiment (Figure 2): its config, Dataset, continuations (linearized and
small-learning-rate), matched train loss, per-image correctness, chart and notebook. Oracles: the
standard run itself (switching at T, and every continuation at its own switching step), an
independently built linear model (switching at 0), a brute-force Jacobian, a from-scratch run at
the small learning rate (the small-lr arm at 0), the same configuration without the matched-loss
extension, and the Dataset's own numbers for the per-image data and the chart. The statistics
are tested in test_analysis_switching.py."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from conelib import data as data_mod
from conelib import models
from conelib.experiments import SwitchingConfig, continue_linearized, switching, switching_config, switching_configs
from conelib.experiments.continuations import MatchRule
from conelib.experiments.switching import POLICIES, combine_seeds, switching_by_seed
from conelib.results import config_hash, load_result, result_path, stored_results
from conelib.train import make_optimizer, save_checkpoint, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402  (tests/browser.py, a helper module)

ROOT = Path(__file__).resolve().parent.parent
#: the module (the package's attribute of that name is the re-exported function)
SW = sys.modules["conelib.experiments.switching"]

TINY = dict(model="lenet_300_100", dataset="digits", steps=8, switch_steps=(4,), eval_every=4, batch_size=32,
            lr=0.05, momentum=0.9, device="cpu")
#: the tiny run with both controls: the small-lr arm and a matched train loss up to step 40
CONTROLS = dict(small_lr_factor=0.5, match_horizon=40)

needs_chromium = pytest.mark.skipif(not browser.chromium_available(),
                                    reason=f"needs {browser.CHROMIUM} and the playwright package")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[SwitchingConfig, xr.Dataset, Path]:
    root = tmp_path_factory.mktemp("results")
    cfg = SwitchingConfig(**TINY, **CONTROLS, seeds=(0, 1))
    ds = switching(cfg, results_root=root, progress=False)
    return cfg, ds, root


# ------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------


def test_config_normalises_the_grid_and_the_seeds() -> None:
    cfg = SwitchingConfig(**{**TINY, "switch_steps": [8, 4, 4]}, seeds=[2, 1, 2])
    assert cfg.switch_steps == (0, 4, 8)
    assert cfg.seeds == (1, 2) and cfg.seed == 1
    assert SwitchingConfig(**TINY, seed=3).seeds == (3,)
    assert cfg.curve_steps == [0, 4, 8]
    assert SwitchingConfig(**{**TINY, "eval_every": 3}).curve_steps == [0, 3, 4, 6, 8]
    grid = SwitchingConfig(**{**TINY, "steps": 10, "switch_steps": (3, 7)})
    assert grid.linearized_steps == sum(10 - t for t in (0, 3, 7, 10))
    # equivalent spellings share one identity (and one stored result); runtime fields do not count
    same = SwitchingConfig(**{**TINY, "switch_steps": (0, 4, 8), "device": "auto"}, seeds=(2, 1), data_root="/x")
    assert config_hash(same.identity()) == config_hash(cfg.identity())
    assert "device" not in cfg.identity() and "data_root" not in cfg.identity()
    assert cfg.for_seed(2).seeds == (2,) and cfg.for_seed(2).seed == 2
    # the controls: the matched-loss horizon extends the curves; compare_from and processes are runtime
    ctl = SwitchingConfig(**TINY, **CONTROLS, compare_from=4, processes=0)
    assert ctl.horizon == 40 and ctl.curve_steps == list(range(0, 41, 4))
    assert ctl.identity()["small_lr_factor"] == 0.5 and ctl.identity()["match_horizon"] == 40
    assert "compare_from" not in ctl.identity() and "processes" not in ctl.identity()
    assert config_hash(ctl.identity()) == config_hash(ctl.replace(compare_from=None, processes=1).identity())


@pytest.mark.parametrize(("field", "value", "match"), [
    ("switch_steps", (9,), "switch_steps"),
    ("switch_steps", (-1,), "switch_steps"),
    ("switch_steps", (2.5,), "switch_steps"),
    ("switch_steps", (True,), "switch_steps"),
    ("switch_steps", "four", "switch_steps"),
    ("seeds", (-1,), "seeds"),
    ("seeds", "[0, x]", "seeds"),
    ("eval_every", 0, "eval_every"),
    ("optimizer_policy", "keep", "carried"),
    ("model", "mlp", "model"),
    ("small_lr_factor", 0.0, "small_lr_factor"),
    ("small_lr_factor", 1.5, "small_lr_factor"),
    ("match_horizon", 6, "match_horizon"),
    ("compare_from", 3, "compare_from"),
    ("compare_from", 8, "compare_from"),
    ("processes", -1, "processes"),
    ("workers", 2, "processes"),  # the old name is refused, and the new one suggested
])
def test_config_rejects_bad_values(field: str, value, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SwitchingConfig(**{**TINY, field: value})


def test_list_parameters_take_text_and_single_values() -> None:
    """papermill's -p passes text or a single number; both become the list parameter's tuple."""
    assert SwitchingConfig(**{**TINY, "switch_steps": "4"}).switch_steps == (0, 4, 8)
    assert SwitchingConfig(**TINY, seeds="[2, 1]").seeds == (1, 2)
    assert SwitchingConfig(**TINY, seeds=3).seeds == (3,)


def test_profiles_match_the_kernel_dynamics_training() -> None:
    """The switching sections train exactly as the kernel-dynamics sections of the same profile."""
    from conelib.experiments import kernel_dynamics_config
    from conelib.experiments import same_trajectory

    for profile in ("quick", "mnist", "paper"):
        cfg = switching_config(profile, device="cpu")
        assert same_trajectory(cfg, kernel_dynamics_config(profile, device="cpu")), profile
        assert cfg.switch_steps[0] == 0 and cfg.switch_steps[-1] == cfg.steps
    assert switching_config("paper", device="cpu").steps == 10_000
    with pytest.raises(ValueError, match="optimizer_policy"):
        switching_config("quick", optimizer_policy="fresh")


# ------------------------------------------------------------------------------------------
# the Dataset
# ------------------------------------------------------------------------------------------


def test_dataset_layout_and_ranges(tiny) -> None:
    cfg, ds, _ = tiny
    assert ds["switch_step"].values.tolist() == [0, 4, 8]
    assert ds["seed"].values.tolist() == [0, 1]
    assert ds["step"].values.tolist() == cfg.curve_steps == list(range(0, 41, 4))
    assert ds.attrs["T"] == 8 and ds.sizes["image"] == ds.attrs["n_test"]
    for name in ("final_test_acc", "final_test_loss", "final_train_loss", "final_train_acc", "matched_step",
                 "small_lr_final_test_acc", "small_lr_final_train_loss"):
        assert ds[name].dims == ("switch_step", "seed"), name
    for name in ("test_acc_curve", "test_loss_curve", "train_loss_curve", "small_lr_test_acc_curve"):
        assert ds[name].dims == ("switch_step", "seed", "step"), name
    for name in ("final_test_correct", "matched_test_correct", "small_lr_test_correct"):
        assert ds[name].dims == ("switch_step", "seed", "image") and ds[name].dtype == np.int8, name
    assert ds["standard_test_correct"].dims == ("seed", "step", "image")
    assert ds["standard_test_acc"].dims == ("seed", "step")
    for name in ("final_test_acc", "final_train_acc", "standard_test_acc", "test_acc_curve", "small_lr_final_test_acc"):
        v = ds[name].values
        v = v[np.isfinite(v)]
        assert v.size and np.all((v >= 0) & (v <= 1)), name
    for name in ("final_test_loss", "final_train_loss", "standard_final_test_loss", "small_lr_final_test_loss"):
        assert np.all(np.isfinite(ds[name].values) & (ds[name].values > 0)), name
    assert np.isnan(ds["diverged_step"].values).all() and np.isnan(ds["small_lr_diverged_step"].values).all()
    for name in ds.variables:
        assert "long_name" in ds[name].attrs and "units" in ds[name].attrs, name
    for key in ("config_json", "config_hash", "git_commit", "torch_version", "device", "created", "optimizer_policy",
                "norm_mode", "wall_seconds", "curve_before_switch", "matched_loss", "small_lr"):
        assert key in ds.attrs, key
    assert ds.attrs["optimizer_policy"] == "carried" and ds.attrs["experiment"] == "switching"
    # each curve is NaN before its switching step, finite from it to where it stopped, NaN after
    for t in ds["switch_step"].values:
        for k in range(2):
            last = int(ds["last_step"].sel(switch_step=t).values[k])
            curve = ds["test_acc_curve"].sel(switch_step=t).isel(seed=k)
            assert np.isnan(curve.where(curve["step"] < t, drop=True).values).all()
            assert np.isfinite(curve.where((curve["step"] >= t) & (curve["step"] <= last), drop=True).values).all()
            assert np.isnan(curve.where(curve["step"] > last, drop=True).values).all()
            small = ds["small_lr_test_acc_curve"].sel(switch_step=t).isel(seed=k)
            assert np.isnan(small.where(small["step"] > 8, drop=True).values).all()
    # the standard run is recorded to T only
    assert (ds["standard_test_correct"].sel(step=ds.step[ds.step > 8]) == -1).all()
    assert np.isnan(ds["standard_test_acc"].sel(step=ds.step[ds.step > 8]).values).all()
    # the displacement of the t = T continuation is zero; the others moved
    for name in ("lin_displacement", "small_lr_displacement"):
        assert (ds[name].sel(switch_step=8).values == 0).all()
        assert (ds[name].sel(switch_step=0).values > 0).all()


def test_per_image_correctness_is_the_stored_accuracy(tiny) -> None:
    """Oracle: the stored accuracies (computed by conelib.train.evaluate). The share of images a
    model gets right is its test accuracy, for every model whose images are stored."""
    _, ds, _ = tiny
    for correct, acc in (("final_test_correct", "final_test_acc"), ("small_lr_test_correct", "small_lr_final_test_acc"),
                         ("matched_test_correct", "matched_test_acc")):
        c = ds[correct].values
        recorded = (c >= 0).all(axis=-1)
        np.testing.assert_allclose(c.mean(-1)[recorded], ds[acc].values[recorded], atol=1e-12, err_msg=correct)
        assert (np.isfinite(ds[acc].values) == recorded).all(), correct
    std = ds["standard_test_correct"].sel(step=ds.step[ds.step <= 8]).values
    np.testing.assert_allclose(std.mean(-1), ds["standard_test_acc"].sel(step=ds.step[ds.step <= 8]).values, atol=1e-12)
    # switching at T is the standard run, image by image
    np.testing.assert_array_equal(ds["final_test_correct"].sel(switch_step=8).values,
                                  ds["standard_test_correct"].sel(step=8).values)


def test_the_matched_step_is_where_the_train_loss_first_reaches_the_standard_runs(tiny) -> None:
    """Oracle: the stored curves. matched_step is the first curve step from T on at which the
    continuation's train loss is at or below the standard run's at T; where none is, the
    continuation stopped at the horizon or where a loss falling as 1/(s - t) could not reach it."""
    cfg, ds, _ = tiny
    rule_level = ds["standard_final_train_loss"]
    for t in ds["switch_step"].values:
        for k in range(ds.sizes["seed"]):
            curve = ds["train_loss_curve"].sel(switch_step=t).isel(seed=k)
            level = float(rule_level.isel(seed=k))
            after = curve.where((curve.step >= 8) & np.isfinite(curve), drop=True)
            hits = after.step.values[after.values <= level]
            got = float(ds["matched_step"].sel(switch_step=t).values[k])
            last = int(ds["last_step"].sel(switch_step=t).values[k])
            if hits.size:
                assert got == hits[0] == last
                assert float(ds["matched_train_loss"].sel(switch_step=t).values[k]) <= level
                assert float(ds["matched_test_acc"].sel(switch_step=t).values[k]) == float(
                    ds["test_acc_curve"].sel(switch_step=t, step=int(got)).values[k])
            else:
                assert np.isnan(got)
                rule = MatchRule(level, cfg.horizon)
                assert last == cfg.horizon or rule.hopeless(last, int(t), float(curve.sel(step=last)))
    assert (ds["matched_step"].sel(switch_step=8).values == 8).all()  # the standard run is at its own level


def test_the_matched_loss_extension_leaves_everything_up_to_T_unchanged(tiny, tmp_path) -> None:
    """Oracle: the same configuration without the controls: every number at T is identical."""
    cfg, ds, _ = tiny
    plain = switching(cfg.replace(small_lr_factor=None, match_horizon=None, seeds=(1,)), results_root=tmp_path,
                      progress=False)
    assert plain["step"].values.tolist() == [0, 4, 8] and "small_lr_final_test_acc" not in plain
    for name in ("final_test_acc", "final_test_loss", "final_train_loss", "final_test_correct", "lin_displacement"):
        np.testing.assert_array_equal(plain[name].values, ds[name].sel(seed=[1]).values, err_msg=name)
    np.testing.assert_array_equal(plain["test_loss_curve"].values,
                                  ds["test_loss_curve"].sel(seed=[1], step=[0, 4, 8]).values)


def test_match_rule() -> None:
    rule = MatchRule(level=0.01, horizon=300)
    assert rule.reached(0.01) and not rule.reached(0.011)
    # from t = 100 at s = 200, loss 0.02: at 1/(s - t) it reaches 0.01 at s = 300, just in time
    assert not rule.hopeless(200, 100, 0.02)
    assert rule.hopeless(200, 100, 0.0201)
    assert not rule.hopeless(200, 100, 0.005)  # already there


def test_the_small_lr_arm_at_zero_is_a_run_at_the_small_rate_from_the_start(tiny) -> None:
    """Oracle: a network built from the same seed and trained from scratch with lr x factor by
    conelib.train.train gives the small-lr arm's numbers at t = 0 exactly; at t = T it is the
    standard run."""
    cfg, ds, _ = tiny
    rc = cfg.for_seed(0)
    data = data_mod.load_dataset(rc.dataset, seed=0, test_fraction=rc.test_fraction)
    net = models.build(rc.model, input_shape=data.input_shape, num_classes=10, seed=0)
    hist = train(net, data, rc.train.replace(lr=rc.lr * cfg.small_lr_factor), progress=False)
    assert hist.test_loss[-1] == float(ds["small_lr_final_test_loss"].sel(switch_step=0, seed=0))
    assert hist.train_loss[-1] == float(ds["small_lr_final_train_loss"].sel(switch_step=0, seed=0))
    for arm, std in (("small_lr_final_test_acc", "standard_final_test_acc"),
                     ("small_lr_final_test_loss", "standard_final_test_loss")):
        np.testing.assert_array_equal(ds[arm].sel(switch_step=8).values, ds[std].values)


def test_every_continuation_starts_at_the_standard_run_and_t_equal_T_is_it(tiny) -> None:
    """Oracle: the standard run. f_lin = f at the expansion point, so each continuation's metrics
    at its own switching step equal the standard run's there, exactly; switching at T is the
    standard run."""
    _, ds, _ = tiny
    for t in ds["switch_step"].values:
        for cont, std in (("test_acc_curve", "standard_test_acc"), ("test_loss_curve", "standard_test_loss"),
                          ("train_loss_curve", "standard_train_loss")):
            np.testing.assert_array_equal(ds[cont].sel(switch_step=t, step=t).values, ds[std].sel(step=t).values)
    T = int(ds.attrs["T"])
    for final, std in (("final_test_acc", "standard_final_test_acc"), ("final_test_loss", "standard_final_test_loss"),
                       ("final_train_loss", "standard_final_train_loss")):
        np.testing.assert_array_equal(ds[final].sel(switch_step=T).values, ds[std].values)
    # ... and linearizing earlier changes the outcome
    assert not np.array_equal(ds["final_test_loss"].sel(switch_step=0).values, ds["standard_final_test_loss"].values)


def test_switching_at_zero_is_a_pure_linear_model(tiny) -> None:
    """Oracle: an independently built model at initialisation, linearized and trained by
    continue_linearized, gives the Dataset's t = 0 numbers, and its outputs are
    f(x; θ0) + J(θ0) (θ_T − θ0) with J a brute-force Jacobian."""
    cfg, ds, root = tiny
    rc = cfg.for_seed(0)
    data = data_mod.load_dataset(rc.dataset, seed=0, test_fraction=rc.test_fraction)
    net = models.build(rc.model, input_shape=data.input_shape, num_classes=10, seed=0)
    tc = rc.train_config()
    path = save_checkpoint(root / "init.pt", net, make_optimizer(net.parameters(), tc), 0, tc)
    hist, lin = continue_linearized(rc, path, data=data, eval_steps=rc.curve_steps)
    assert hist.steps == [0, 4, 8]
    assert hist.test_acc[-1] == float(ds["final_test_acc"].sel(switch_step=0, seed=0))
    assert hist.test_loss[-1] == float(ds["final_test_loss"].sel(switch_step=0, seed=0))

    x = data.x_test[:4]
    params = [p for p in net.parameters()]
    net.eval()
    jac = []
    for i in range(x.shape[0]):
        out = net(x[i : i + 1]).reshape(-1)
        jac.append(torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[a], params,
                                                                                      retain_graph=True)])
                                for a in range(out.shape[0])]))
    jac = torch.stack(jac).double()  # (4, 10, P) at θ0
    delta = torch.cat([(lin.theta()[n] - lin.theta_s()[n]).detach().reshape(-1) for n in lin.param_names]).double()
    expected = net(x).detach().double() + torch.einsum("icp,p->ic", jac, delta)
    got = lin(x).detach().double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # the network at the same parameters is a different (non-linear) function
    assert (lin.network_output(x).detach().double() - got).abs().max() > 1e-3


def test_optimizer_policy_reset_differs_only_where_momentum_exists(tiny) -> None:
    """At t = 0 no momentum has built up and at t = T no step is left: both policies agree
    exactly there; in between the reset changes the outcome."""
    cfg, ds, root = tiny
    reset = switching(cfg.replace(optimizer_policy="reset", seeds=(0,)), results_root=root, progress=False)
    assert reset.attrs["optimizer_policy"] == "reset"
    carried = ds.sel(seed=[0])
    for t in (0, 8):
        np.testing.assert_array_equal(reset["final_test_loss"].sel(switch_step=t).values,
                                      carried["final_test_loss"].sel(switch_step=t).values)
    assert reset["final_test_loss"].sel(switch_step=4).item() != carried["final_test_loss"].sel(switch_step=4).item()


def test_an_identical_configuration_loads_instead_of_recomputing(tiny, monkeypatch) -> None:
    cfg, ds, root = tiny

    def boom(*_a, **_k):
        raise AssertionError("recomputed a stored result")

    monkeypatch.setattr(SW, "_run", boom)
    again = switching(cfg.replace(seeds=(1, 0), device="auto"), results_root=root, progress=False)
    assert again.attrs["created"] == ds.attrs["created"]
    xr.testing.assert_identical(again, ds)
    with pytest.raises(AssertionError, match="recomputed"):
        switching(cfg, results_root=root, recompute=True, progress=False)


def test_continue_linearized_rejects_a_foreign_checkpoint(tmp_path) -> None:
    cfg = SwitchingConfig(**TINY)
    net = models.build(cfg.model, input_shape=(1, 8, 8), num_classes=10, seed=0)
    other = cfg.replace(lr=0.1).train_config()
    path = save_checkpoint(tmp_path / "c.pt", net, make_optimizer(net.parameters(), other), 0, other)
    with pytest.raises(ValueError, match="data order or schedule"):
        continue_linearized(cfg, path)
    with pytest.raises(ValueError, match="optimizer_policy"):
        continue_linearized(cfg, path, optimizer_policy="fresh")
    with pytest.raises(FileNotFoundError):
        continue_linearized(cfg, tmp_path / "missing.pt")


@pytest.mark.parametrize("decay_to", ["zero", "switch_point"])
def test_continuation_step_with_weight_decay_matches_the_closed_form(tmp_path, decay_to) -> None:
    """One linearized SGD step from a checkpoint at step t with momentum buffer b:
    theta' = theta_t - lr (mu b + g + wd (theta_t - c)), g the *network's* gradient at theta_t
    (the Taylor model's gradient there), c = 0 ("zero") or theta_t ("switch_point")."""
    from conelib.train import BatchOrder, train

    cfg = SwitchingConfig(**{**TINY, "steps": 3, "switch_steps": (2,), "weight_decay": 0.05}).for_seed(0)
    data = data_mod.load_dataset(cfg.dataset, seed=0)
    net = models.build(cfg.model, input_shape=data.input_shape, num_classes=10, seed=0)
    hist = train(net, data, cfg.train, checkpoint_steps=[2], checkpoint_dir=tmp_path, progress=False)
    ckpt = torch.load(hist.checkpoints[2], weights_only=True)
    net.load_state_dict(ckpt["model"])  # theta_t at t = 2 (train ran on to step 3)
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    buf = [ckpt["optimizer"]["state"][i]["momentum_buffer"] for i in range(len(theta))]
    idx = BatchOrder(len(data.x_train), cfg.batch_size, 0).indices(2)
    net.eval()
    loss = torch.nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
    grads = torch.autograd.grad(loss, list(net.parameters()))
    _, lin = continue_linearized(cfg, hist.checkpoints[2], decay_to=decay_to, data=data)
    for (name, p_t), b, g in zip(theta.items(), buf, grads):
        decay = 0.0 if decay_to == "switch_point" else 0.05 * p_t
        want = p_t - cfg.lr * (cfg.momentum * b + g + decay)
        torch.testing.assert_close(lin.theta()[name].detach(), want, rtol=1e-5, atol=1e-6)
        other = 0.05 * p_t if decay_to == "switch_point" else 0.0  # the other target is told apart
        alternative = p_t - cfg.lr * (cfg.momentum * b + g + other)
        assert not torch.allclose(lin.theta()[name].detach(), alternative, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# profiles, stored results, runs one seed at a time
# ------------------------------------------------------------------------------------------


def test_a_profile_sets_parameters_for_one_model_only() -> None:
    """mnist: the MLP run with its controls and ten seeds; LeNet-5 keeps the run that is stored."""
    mlp, lenet5 = switching_configs("mnist")
    assert (mlp.model, lenet5.model) == ("lenet_300_100", "lenet5")
    assert mlp.seeds == tuple(range(10)) and lenet5.seeds == (0, 1, 2)
    assert mlp.small_lr_factor == 0.1 and lenet5.small_lr_factor is None
    assert mlp.match_horizon == 3 * mlp.steps and lenet5.match_horizon is None
    assert mlp.compare_from == lenet5.compare_from == 2000 and 2000 in lenet5.switch_steps
    # a value given by the caller wins over the model's entry
    assert [c.seeds for c in switching_configs("mnist", seeds=[4, 5])] == [(4, 5), (4, 5)]
    assert [c.model for c in switching_configs("mnist", models=["lenet5"])] == ["lenet5"]
    assert switching_configs("mnist", model="lenet5")[0].seeds == (0, 1, 2)


def test_a_bad_model_entry_is_named(tmp_path) -> None:
    import yaml

    base = {"model": "lenet_300_100", "dataset": "digits", "steps": 8, "switch_steps": [4]}
    for entry, match in (({"mlp": {"seeds": [1]}}, "by_model.*'mlp'"),
                         ({"lenet5": {"model": "lenet5"}}, "by_model.*cannot change"),
                         ({"lenet5": {"eval_every": 0}}, "eval_every"),
                         ([1, 2], "by_model")):
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump({"switching": {**base, "models": ["lenet_300_100", "lenet5"],
                                                      "by_model": entry}}))
        with pytest.raises(ValueError, match=match):
            switching_configs(str(path))


def test_the_stored_lenet5_run_loads_without_recomputing(monkeypatch) -> None:
    """A result stored before the controls existed (no per-image data, no small-lr arm) is still
    the profile's LeNet-5 run: it loads, and nothing is computed."""
    def boom(*_a, **_k):
        raise AssertionError("recomputed a stored result")

    monkeypatch.setattr(SW, "_run", boom)
    lenet5 = switching_configs("mnist", model="lenet5")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # it predates the full configuration: a warning
        ds = switching(lenet5, results_root=ROOT / "results", progress=False)
    assert ds.attrs["config_hash"] == config_hash(lenet5.identity()) and "final_test_correct" not in ds


def test_a_run_one_seed_at_a_time_is_the_run_of_all_seeds(tiny, tmp_path) -> None:
    """Oracle: the fixture's two-seed run. Each seed stored on its own, then combined, gives the
    same numbers; a second call loads the combined result."""
    cfg, ds, _ = tiny
    seeds_root = tmp_path / "seeds"
    both = switching_by_seed(cfg, seeds_root=seeds_root, results_root=tmp_path / "all", progress=False)
    for name in ds.data_vars:
        if not name.endswith("seconds"):
            np.testing.assert_array_equal(both[name].values, ds[name].values, err_msg=name)
    assert both.attrs["config_hash"] == ds.attrs["config_hash"]
    parts = json.loads(both.attrs["seed_parts"])
    assert [p["seed"] for p in parts] == [0, 1] and all(p["git_commit"] for p in parts)
    assert len(stored_results("switching", seeds_root)) == 2
    one = [load_result(result_path("switching", cfg.for_seed(s).identity(), seeds_root)) for s in (1, 0)]
    combined = combine_seeds(one)
    assert combined["seed"].values.tolist() == [0, 1]
    with pytest.raises(ValueError, match="single-seed"):
        combine_seeds([ds])
    with pytest.raises(ValueError, match="twice"):
        combine_seeds([one[0], one[0]])
    with pytest.raises(ValueError, match="no results"):
        combine_seeds([])


# ------------------------------------------------------------------------------------------
# chart
# ------------------------------------------------------------------------------------------


def test_chart_spec_and_points(tiny) -> None:
    from conelib.charts import error_vs_train_loss_chart, switching_chart, switching_gain_chart, switching_points

    _, ds, _ = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = switching_chart(ds).to_dict()
        switching_gain_chart(ds, 4, n_boot=200).to_dict()
        error_vs_train_loss_chart(ds).to_dict()
    assert [p["name"] for p in spec["params"]] == ["pick_switch"]
    assert len(spec["vconcat"]) == 2 and all(len(row["hconcat"]) == 2 for row in spec["vconcat"])
    table = switching_points(ds)
    assert set(table.arm) == {"linearized", "small_lr"}
    for label, var, error in (("test error", "final_test_acc", True), ("test loss", "final_test_loss", False),
                              ("test error", "small_lr_final_test_acc", True)):
        part = table[(table["metric"] == label) & (table["arm"] == ("small_lr" if "small" in var else "linearized"))]
        v = 1 - ds[var].values if error else ds[var].values
        np.testing.assert_allclose(part["mean"], v.mean(axis=1))
        np.testing.assert_allclose(part["lo"], v.min(axis=1))
        np.testing.assert_allclose(part["hi"], v.max(axis=1))
    with pytest.raises(ValueError, match="switching Dataset"):
        switching_chart(xr.Dataset())


_JS_LINES = """(root) => [...root.querySelectorAll("g.mark-line path")].map(p => p.getAttribute("d")).filter(d => d)"""


@pytest.mark.slow
@needs_chromium
def test_chart_draws_offline_and_a_click_selects_a_continuation(tiny, tmp_path) -> None:
    from conelib.charts import switching_chart

    _, ds, _ = tiny
    html = tmp_path / "chart.html"
    switching_chart(ds).save(str(html), inline=True, embed_options={"renderer": "svg"})
    report = browser.check_page(html)
    assert report.n_vega_svg_or_canvas == report.n_vega_embeds == 1
    assert not report.console_errors and not report.page_errors and not report.blocked_requests
    with browser._OfflinePage(html, 30) as op:
        page = op.page
        page.goto(html.resolve().as_uri(), wait_until="load")
        op.wait_until_rendered()
        chart = page.locator(".vega-embed svg.marks").first
        all_lines = chart.evaluate(_JS_LINES)
        points = chart.locator("g.mark-symbol path")
        n = ds.sizes["switch_step"]
        views = []
        for i in (0, n, n - 1):  # t = 0 in the accuracy panel, t = 0 in the loss panel, t = T
            points.nth(i).click(force=True)
            page.wait_for_timeout(300)
            views.append(chart.evaluate(_JS_LINES))
        assert not op.page_errors
    assert len(views[0]) < len(all_lines)  # the other continuations are filtered out
    assert views[0] == views[1]  # both top panels select the same continuation
    assert views[2] != views[0]


# ------------------------------------------------------------------------------------------
# notebook
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_notebook_runs_with_papermill_and_stores_the_dataset(tmp_path) -> None:
    from conelib.tools.nbrun import run_notebook

    params = dict(profile="quick", model="lenet_300_100", dataset="digits", steps=8, switch_steps=[4], compare_from=4,
                  eval_every=4,
                  batch_size=32, lr=0.05, device="cpu", results_root=str(tmp_path / "results"))
    out = run_notebook("switching", params, output=tmp_path / "switching.ipynb", quiet=True)
    nb = json.loads(out.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    glued = {o["metadata"]["scrapbook"]["name"]: o["data"].get("application/papermill.record/text/plain") for c in nb["cells"]
             if c["cell_type"] == "code" for o in c.get("outputs", []) if "scrapbook" in o.get("metadata", {})}
    assert glued and all(v for v in glued.values())  # every {eval} role of the prose got a value
    (ds,) = stored_results("switching", tmp_path / "results")
    assert dict(ds.sizes) == {"switch_step": 3, "seed": 1, "step": 3, "image": ds.attrs["n_test"]}
    assert ds["switch_step"].values.tolist() == [0, 4, 8]
    acc = ds["final_test_acc"].values
    assert np.all((acc > 0) & (acc <= 1))
    assert np.all(np.isfinite(ds["final_test_loss"].values))
    assert json.loads(ds.attrs["config_json"])["model"] == "lenet_300_100"
    assert ds.attrs["optimizer_policy"] in POLICIES
