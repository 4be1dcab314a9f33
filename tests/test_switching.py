"""The switching experiment (Figure 2): its config, Dataset, continuations, summary, chart and
notebook. Oracles: the standard run itself (switching at T, and every continuation at its own
switching step), an independently built linear model (switching at 0), a brute-force Jacobian,
hand-made Datasets for the summary, and the Dataset's own numbers for the chart."""

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
from conelib.experiments import SwitchingConfig, continue_linearized, switching, switching_config
from conelib.experiments.switching import (
    POLICIES,
    SWITCHING_VERDICTS,
    matching_phase_one_end,
    summarize,
)
from conelib.results import config_hash, save_result, stored_results
from conelib.train import make_optimizer, save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402  (tests/browser.py, a helper module)

ROOT = Path(__file__).resolve().parent.parent
#: the module (the package's attribute of that name is the re-exported function)
SW = sys.modules["conelib.experiments.switching"]

TINY = dict(model="lenet_300_100", dataset="digits", steps=8, switch_steps=(4,), eval_every=4, batch_size=32,
            lr=0.05, momentum=0.9, device="cpu")

needs_chromium = pytest.mark.skipif(not browser.chromium_available(),
                                    reason=f"needs {browser.CHROMIUM} and the playwright package")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[SwitchingConfig, xr.Dataset, Path]:
    root = tmp_path_factory.mktemp("results")
    cfg = SwitchingConfig(**TINY, seeds=(0, 1))
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
    from conelib.experiments.switching import same_trajectory

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
    assert ds["step"].values.tolist() == [0, 4, 8]
    for name in ("final_test_acc", "final_test_loss", "final_train_loss", "final_train_acc"):
        assert ds[name].dims == ("switch_step", "seed")
    for name in ("test_acc_curve", "test_loss_curve", "train_loss_curve"):
        assert ds[name].dims == ("switch_step", "seed", "step")
    assert ds["standard_test_acc"].dims == ("seed", "step")
    for name in ("final_test_acc", "final_train_acc", "standard_test_acc", "test_acc_curve"):
        v = ds[name].values
        v = v[np.isfinite(v)]
        assert v.size and np.all((v >= 0) & (v <= 1)), name
    for name in ("final_test_loss", "final_train_loss", "standard_test_loss"):
        assert np.all(np.isfinite(ds[name].values) & (ds[name].values > 0)), name
    assert np.isnan(ds["diverged_step"].values).all()
    for name in ds.variables:
        assert "long_name" in ds[name].attrs and "units" in ds[name].attrs, name
    for key in ("config_json", "config_hash", "git_commit", "torch_version", "device", "created", "optimizer_policy",
                "norm_mode", "wall_seconds", "curve_before_switch"):
        assert key in ds.attrs, key
    assert ds.attrs["optimizer_policy"] == "carried" and ds.attrs["experiment"] == "switching"
    # each curve is NaN before its switching step and finite from it on
    for t in ds["switch_step"].values:
        curve = ds["test_acc_curve"].sel(switch_step=t)
        before = curve.where(curve["step"] < t, drop=True)
        after = curve.where(curve["step"] >= t, drop=True)
        assert np.isnan(before.values).all() and np.isfinite(after.values).all()
    # the displacement of the t = T continuation is zero; the others moved
    assert (ds["lin_displacement"].sel(switch_step=8).values == 0).all()
    assert (ds["lin_displacement"].sel(switch_step=0).values > 0).all()


def test_every_continuation_starts_at_the_standard_run_and_t_equal_T_is_it(tiny) -> None:
    """Oracle: the standard run. f_lin = f at the expansion point, so each continuation's metrics
    at its own switching step equal the standard run's there, exactly; switching at T is the
    standard run."""
    _, ds, _ = tiny
    for t in ds["switch_step"].values:
        for cont, std in (("test_acc_curve", "standard_test_acc"), ("test_loss_curve", "standard_test_loss"),
                          ("train_loss_curve", "standard_train_loss")):
            np.testing.assert_array_equal(ds[cont].sel(switch_step=t, step=t).values, ds[std].sel(step=t).values)
    T = int(ds["step"].max())
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
# summary and Phase I lookup
# ------------------------------------------------------------------------------------------


def _fake(acc: np.ndarray, steps=(0, 10, 20, 40), std: float | None = None) -> xr.Dataset:
    acc = np.atleast_2d(np.asarray(acc, float))
    acc = acc.T if acc.shape[0] == 1 else acc  # (switch_step, seed)
    std = float(np.mean(acc[-1])) if std is None else std
    return xr.Dataset({
        "final_test_acc": (("switch_step", "seed"), acc),
        "final_test_loss": (("switch_step", "seed"), 1 - acc),
        "standard_final_test_acc": (("seed",), np.full(acc.shape[1], std)),
        "standard_final_test_loss": (("seed",), np.full(acc.shape[1], 1 - std)),
    }, coords={"switch_step": list(steps), "seed": list(range(acc.shape[1]))})


def test_summary_numbers_and_verdicts() -> None:
    s = summarize(_fake([0.80, 0.85, 0.90, 0.95]), phase_end=15)
    assert s.acc_at_zero == pytest.approx(0.80) and s.acc_standard == pytest.approx(0.95)
    assert s.phase_switch_step == 10  # 15 is as far from 10 as from 20: the earlier one
    assert s.acc_at_phase_end == pytest.approx(0.85) and s.loss_at_phase_end == pytest.approx(0.15)
    assert s.gain == pytest.approx(0.15) and s.rank_correlation == pytest.approx(1.0)
    assert s.gain_after_phase_end == pytest.approx(0.10)
    assert s.verdict == SWITCHING_VERDICTS[0] == "later switching helps"
    assert summarize(_fake([0.80, 0.85, 0.90, 0.95]), phase_end=33).phase_switch_step == 40
    no_phase = summarize(_fake([0.80, 0.85, 0.90, 0.95]))
    assert no_phase.acc_at_phase_end is None and no_phase.gain_after_phase_end is None
    assert summarize(_fake([0.95, 0.9, 0.85, 0.8])).verdict == "later switching hurts"
    assert summarize(_fake([0.900, 0.901, 0.899, 0.902])).verdict == "no clear effect"  # below tol
    assert summarize(_fake([0.80, 0.95, 0.81, 0.85])).verdict == "no clear effect"  # rho = 0.4
    # two seeds: the mean over seeds, and a gain smaller than the seed spread is no evidence
    two = np.array([[0.80, 0.90], [0.82, 0.92], [0.84, 0.94], [0.86, 0.96]])
    s2 = summarize(_fake(two))
    assert s2.acc_at_zero == pytest.approx(0.85) and s2.seed_range == pytest.approx(0.10)
    assert s2.verdict == "no clear effect"
    with pytest.raises(ValueError, match="switching Dataset"):
        summarize(xr.Dataset())
    with pytest.raises(ValueError, match="tol"):
        summarize(_fake([0.8, 0.9, 0.9, 0.9]), tol=2)


def test_phase_one_end_is_read_from_a_matching_kernel_dynamics_result(tmp_path) -> None:
    from conelib.measures import verdict
    from conelib.measures.synthetic import trajectory

    cfg = SwitchingConfig(**TINY)
    # a synthetic kernel-dynamics result with a known early turn, stored as a run of the same training
    kd = trajectory("jitter cone", seed=3)
    kd_cfg = {k: getattr(cfg, k) for k in ("model", "dataset", "width", "norm", "batch_size", "lr", "momentum",
                                           "weight_decay", "warmup_steps", "gamma", "augment", "test_fraction",
                                           "seed")}
    kd_cfg.update(milestones=[], steps=10_000, snapshot_every=50, dts=[50, 100, 200, 400, 800], taus=[])
    kd.attrs.update(config_json=json.dumps(kd_cfg), config_hash="abc", created="2025-01-01")
    save_result(kd, tmp_path / "kernel_dynamics" / "abc.nc")
    got = matching_phase_one_end(cfg, results_root=tmp_path)
    assert got == (verdict(kd).phase_one_end, "abc") and got[0] is not None
    assert matching_phase_one_end(cfg.replace(lr=0.1), results_root=tmp_path) == (None, None)
    assert matching_phase_one_end(cfg.replace(steps=20_000, switch_steps=()), results_root=tmp_path) == (None, None)
    assert matching_phase_one_end(cfg, results_root=tmp_path / "empty") == (None, None)


# ------------------------------------------------------------------------------------------
# chart
# ------------------------------------------------------------------------------------------


def test_chart_spec_and_summary_table(tiny) -> None:
    from conelib.charts import switching_chart, switching_summary

    _, ds, _ = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = switching_chart(ds).to_dict()
    assert [p["name"] for p in spec["params"]] == ["pick_switch"]
    assert len(spec["vconcat"]) == 2 and all(len(row["hconcat"]) == 2 for row in spec["vconcat"])
    table = switching_summary(ds)
    for label, var in (("test accuracy", "final_test_acc"), ("test loss", "final_test_loss")):
        part = table[table["metric"] == label]
        np.testing.assert_allclose(part["mean"], ds[var].values.mean(axis=1))
        np.testing.assert_allclose(part["lo"], ds[var].values.min(axis=1))
        np.testing.assert_allclose(part["hi"], ds[var].values.max(axis=1))
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

    params = dict(profile="quick", model="lenet_300_100", dataset="digits", steps=8, switch_steps=[4], eval_every=4,
                  batch_size=32, lr=0.05, device="cpu", results_root=str(tmp_path / "results"))
    out = run_notebook("switching", params, output=tmp_path / "switching.ipynb", quiet=True)
    nb = json.loads(out.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    glued = {o["metadata"]["scrapbook"]["name"]: o["data"].get("application/papermill.record/text/plain") for c in nb["cells"]
             if c["cell_type"] == "code" for o in c.get("outputs", []) if "scrapbook" in o.get("metadata", {})}
    assert glued and all(v for v in glued.values())  # every {eval} role of the prose got a value
    (ds,) = stored_results("switching", tmp_path / "results")
    assert dict(ds.sizes) == {"switch_step": 3, "seed": 1, "step": 3}
    assert ds["switch_step"].values.tolist() == [0, 4, 8]
    acc = ds["final_test_acc"].values
    assert np.all((acc > 0) & (acc <= 1))
    assert np.all(np.isfinite(ds["final_test_loss"].values))
    assert json.loads(ds.attrs["config_json"])["model"] == "lenet_300_100"
    assert ds.attrs["optimizer_policy"] in POLICIES
