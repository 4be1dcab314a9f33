"""The kernel-dynamics experiment, its notebook (papermill) and its page in the built book."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conelib import data as data_mod
from conelib import models
from conelib.experiments import KernelDynamicsConfig, kernel_dynamics, kernel_dynamics_config
from conelib.experiments.kernel_dynamics import kernels_path
from conelib.kernels import kernel_distance
from conelib.ntk import empirical_ntk
from conelib.results import load_result, result_path
from conelib.train import train

ROOT = Path(__file__).resolve().parent.parent

TINY = dict(model="lenet_300_100", dataset="digits", steps=40, snapshot_every=10, dts=(10, 20), taus=(10, 30),
            probe_size=20, lr=0.05, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[KernelDynamicsConfig, object, Path]:
    root = tmp_path_factory.mktemp("results")
    cfg = KernelDynamicsConfig(**TINY, keep_kernels=True)
    ds = kernel_dynamics(cfg, results_root=root, progress=False)
    return cfg, ds, root


def test_dataset_layout_and_ranges(tiny) -> None:
    cfg, ds, _ = tiny
    steps = list(range(0, 41, 10))
    assert ds["step"].values.tolist() == steps
    assert ds["dt"].values.tolist() == [10, 20] and ds["ref_step"].values.tolist() == [10, 30]
    assert ds["pairwise_distance"].dims == ("step", "other_step")
    for name in ("dist_to_init", "adjacent_distance", "dist_to_ref", "pairwise_distance"):
        v = ds[name].values
        v = v[np.isfinite(v)]
        assert np.all((v >= 0) & (v <= 1)), name
        assert "long_name" in ds[name].attrs and "units" in ds[name].attrs
    d = ds["pairwise_distance"].values
    assert np.all(np.diag(d) == 0) and np.array_equal(d, d.T)
    assert float(ds["dist_to_init"].sel(step=0)) == 0.0
    np.testing.assert_array_equal(ds["dist_to_init"].values, d[:, 0])
    for tau in (10, 30):
        assert float(ds["dist_to_ref"].sel(step=tau, ref_step=tau)) == 0.0
    # adjacent distance is NaN exactly where t + dt is past the end
    adj = ds["adjacent_distance"].sel(dt=20).values
    assert np.isnan(adj[-2:]).all() and np.isfinite(adj[:-2]).all()
    np.testing.assert_allclose(ds["velocity"].sel(dt=20).values, adj / 20)
    assert float(ds["cone_x"].sel(step=0)) == 0.0 and float(ds["cone_y"].sel(step=0)) == 0.0
    for key in ("config_json", "config_hash", "git_commit", "torch_version", "device", "created", "kernel_kind"):
        assert key in ds.attrs


def test_distances_agree_with_the_stored_kernels(tiny) -> None:
    """The distances equal eq. (4) evaluated directly on the kernels kept alongside the result."""
    cfg, ds, root = tiny
    kernels = load_result(kernels_path(cfg, root))["kernel"].values
    assert kernels.shape == (5, 20, 20)
    for i in range(5):
        for j in range(5):
            assert ds["pairwise_distance"].values[i, j] == pytest.approx(kernel_distance(kernels[i], kernels[j]), abs=1e-6)


def test_final_kernel_is_the_entk_of_the_independently_trained_model(tiny) -> None:
    """Oracle: train the same model with conelib.train directly and compute its eNTK at T."""
    cfg, ds, root = tiny
    data = data_mod.load_dataset("digits", seed=cfg.seed)
    x_probe, _ = data_mod.probe_subset(data, cfg.probe_size, seed=cfg.seed)
    model = models.build("lenet_300_100", input_shape=data.input_shape, num_classes=10, seed=cfg.seed)
    train(model, data, cfg.train_config(), progress=False)
    expected = empirical_ntk(model, x_probe, kind="trace", method="jacobian")
    stored = load_result(kernels_path(cfg, root))["kernel"].sel(step=40).values
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_identical_config_loads_instead_of_training(tiny, monkeypatch) -> None:
    cfg, ds, root = tiny
    kd = sys.modules["conelib.experiments.kernel_dynamics"]  # the package re-exports a function of that name

    def boom(*a, **k):
        raise AssertionError("trained again although the result is stored")

    monkeypatch.setattr(kd, "_run", boom)
    again = kernel_dynamics(cfg.replace(device="cpu", ntk_method="jacobian"), results_root=root, progress=False)
    assert again.attrs["config_hash"] == ds.attrs["config_hash"]
    assert result_path("kernel_dynamics", cfg.identity(), root).is_file()


@pytest.mark.parametrize(
    "change,match",
    [
        ({"dts": (15,)}, "dts"),
        ({"taus": (25,)}, "taus"),
        ({"steps": 45}, "snapshot_every"),
        ({"model": "lenet7"}, "model"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"kernel_kind": "diag"}, "kernel_kind"),
        ({"probe_size": 1}, "probe_size"),
    ],
)
def test_bad_parameters_are_named(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KernelDynamicsConfig(**{**TINY, **change})


def test_profiles_and_unknown_parameters() -> None:
    cfg = kernel_dynamics_config("quick", seed=3, lr=None)
    assert cfg.model == "lenet5" and cfg.dataset == "mnist5k" and cfg.seed == 3
    paper = kernel_dynamics_config("paper")
    assert paper.model == "resnet20" and paper.dataset == "cifar10" and paper.steps == 10_000
    with pytest.raises(ValueError, match="unknown parameter"):
        kernel_dynamics_config("quick", learning_rate=0.1)
    with pytest.raises(ValueError, match="profile"):
        kernel_dynamics_config("nonexistent")


# ------------------------------------------------------------------------------------------
# the notebook through papermill, and its page in the built book (slow)
# ------------------------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402


@pytest.mark.slow
def test_notebook_runs_with_papermill_and_its_page_draws_offline(tmp_path) -> None:
    from conelib.tools import book
    from conelib.tools.nbrun import run_notebook

    results = tmp_path / "results"
    params = {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY.items()}, "profile": "quick",
              "results_root": str(results)}
    root = tmp_path / "book_root"
    out = run_notebook("kernel_dynamics", params, output=root / "book" / "generated" / "kernel_dynamics.ipynb",
                       quiet=True)
    assert out.is_file()

    # the Dataset the notebook stored
    stored = sorted((results / "kernel_dynamics").glob("*.nc"))
    assert len(stored) == 1
    ds = load_result(stored[0])
    assert ds.sizes["step"] == 5 and ds.sizes["dt"] == 2 and ds.sizes["ref_step"] == 2
    assert float(ds["pairwise_distance"].sel(step=0, other_step=0)) == 0.0
    d = ds["pairwise_distance"].values
    assert np.all((d >= 0) & (d <= 1))

    if not browser.chromium_available():
        pytest.skip("headless Chromium (Debian package chromium) and playwright are needed for the page check")
    # a book holding that executed notebook, built with execution off, opened with the network off
    shutil.copy2(ROOT / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/generated/kernel_dynamics\n")
    shutil.copy2(ROOT / "book" / "references.bib", root / "book" / "references.bib")
    shutil.copytree(ROOT / "book" / "_static", root / "book" / "_static", ignore=shutil.ignore_patterns("vendor"))
    index = book.build_book(root)
    page = index.parent / "book" / "generated" / "kernel_dynamics.html"
    report = browser.check_page(page, screenshot=tmp_path / "kd.png")
    assert report.n_vega_embeds >= 2 and report.n_vega_svg_or_canvas >= 2, report  # Figure 1 and velocity + fit
    assert report.page_errors == [] and report.console_errors == [], report
    assert report.failed_requests == [] and [r for r in report.blocked_requests if "favicon" not in r] == []
    assert report.math_typeset and report.math_errors == []
    html = page.read_text(encoding="utf-8")
    assert f"{ds.attrs['probe_size']}" in html and "lenet_300_100" in html  # glued numbers made it into the prose


def test_numbers_are_coerced_so_equal_configs_hash_equal() -> None:
    from conelib.results import config_hash

    a = KernelDynamicsConfig(**{**TINY, "weight_decay": 0, "lr": 1})
    b = KernelDynamicsConfig(**{**TINY, "weight_decay": 0.0, "lr": 1.0, "dts": [10, 20]})
    assert isinstance(a.weight_decay, float) and isinstance(a.lr, float) and a == b
    assert config_hash(a.identity()) == config_hash(b.identity())
