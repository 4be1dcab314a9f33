"""Checks before any kernel starts, relative paths, one reading of booleans, honest checksum claims.

Issue 21's items 1, 2, 4 and 5 (item 3, interrupts, is ``tests/test_interrupts.py``). Tiny
configurations on scikit-learn's digits. Oracles: the sizes of the loaded datasets, the layer
sizes of the architecture, the caller's working directory, what papermill's own command line
passes to a notebook.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conelib.tools import cli, nbparams, nbrun
from conelib.config import ParameterError, parse_text
from conelib.experiments import KernelDynamicsConfig, SwitchingConfig, kernel_dynamics
from conelib.experiments import common
from conelib.results import config_hash, content_digest, load_result, result_path

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(model="lenet_300_100", dataset="digits", steps=20, snapshot_every=10, dts=(10,), taus=(10,),
            probe_size=16, batch_size=32, lr=0.05, device="cpu")
#: the same as notebook parameters (lists, the quick profile)
TINY_PARAMS = {"profile": "quick", **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}}
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if papermill is asked to start a kernel."""
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook kernel was started"))


# 1 -- checks before any kernel starts ---------------------------------------------------------
@pytest.mark.parametrize("name,fraction", [("digits", 0.2), ("digits", 0.5), ("mnist5k", 0.2), ("mnist5k", 0.1)])
def test_split_sizes_known_before_loading_are_the_loaded_ones(name, fraction):
    from conelib.data import input_shape, load_dataset, split_sizes

    data = load_dataset(name, test_fraction=fraction)
    assert split_sizes(name, fraction) == (len(data.y_train), len(data.y_test))
    assert input_shape(name) == data.input_shape


def test_sizes_larger_than_the_data_are_refused_when_the_configuration_is_built():
    cases = [(KernelDynamicsConfig, {"probe_size": 5000}, "parameter 'probe_size' (5000) is larger than the training "
                                                          "split of 'digits' (1437 images)"),
             (KernelDynamicsConfig, {"n_train": 100000}, "parameter 'n_train' (100000) is larger than the training "
                                                         "split of 'digits' (1437 images)"),
             (KernelDynamicsConfig, {"n_train": 100, "probe_size": 128}, "parameter 'probe_size' (128) is larger "
                                                                         "than n_train (100 images)"),
             (SwitchingConfig, {"n_train": 2000}, "parameter 'n_train' (2000)")]
    for cls, change, message in cases:
        base = {k: v for k, v in TINY.items() if cls is KernelDynamicsConfig or k in ("model", "dataset", "steps")}
        with pytest.raises(ParameterError) as err:
            cls(**{**base, **change})
        assert str(err.value) == message or str(err.value).startswith(message), str(err.value)
    KernelDynamicsConfig(**{**TINY, "probe_size": 1437})  # the whole split is allowed
    from conelib.sweep import Grid

    with pytest.raises(ParameterError, match=r"grid point \{'probe_size': 5000\}"):
        Grid.from_mapping({"base": TINY, "grid": {"probe_size": [16, 5000]}})


@pytest.mark.parametrize("param,value,name", [
    ("probe_size", "5000", "probe_size"),
    ("n_train", "100000", "n_train"),
    ("batch_size", "1e9", "batch_size"),
    pytest.param("device", "cuda", "device", marks=pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")),
])
def test_conelib_run_refuses_what_cannot_run_before_a_kernel_starts(param, value, name, tmp_path, no_kernel, capsys):
    res, out = tmp_path / "res", tmp_path / "o.ipynb"
    args = ["run", "kernel_dynamics", "-o", str(out), "-p", "results_root", str(res)]
    for k, v in {**TINY_PARAMS, param: value}.items():
        args += ["-p", k, str(v)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: parameter '{name}'"), err
    assert not res.exists() and not out.exists()  # nothing written, not even an empty folder


def test_the_memory_estimate_counts_the_layers_and_grows_with_the_batch():
    values, n_params = common.activations_per_example("lenet_300_100", "digits", 1.0, None)
    assert values == 300 + 100 + 10  # the outputs of its three linear layers (ReLU is functional)
    assert n_params == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    est = [common.training_memory_estimate(KernelDynamicsConfig(**{**TINY, "batch_size": b})) for b in (100, 200, 300)]
    per_example = 4 * (common.ACTIVATION_COPIES * values + 2 * 64)
    assert est[1] - est[0] == est[2] - est[1] == 100 * per_example


def test_a_batch_that_cannot_fit_is_refused_and_a_normal_one_is_not(monkeypatch):
    cfg = KernelDynamicsConfig(**TINY)
    common.preflight(cfg)
    for profile in ("quick", "mnist", "paper"):  # no false alarm on the shipped configurations
        for c in nbparams.check("kernel_dynamics", {"profile": profile, "device": "cpu"}).configs:
            common.preflight(c)
        for c in nbparams.check("switching", {"profile": profile, "device": "cpu"}).configs:
            common.preflight(c)
    with pytest.raises(ParameterError, match=r"parameter 'batch_size' \(1000000000\) does not fit in memory"):
        common.preflight(cfg.replace(batch_size=10**9))
    monkeypatch.setattr(common, "available_memory", lambda device: common.training_memory_estimate(cfg) - 1)
    with pytest.raises(ParameterError, match="parameter 'batch_size' \\(32\\)"):
        common.preflight(cfg)


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
def test_a_missing_device_is_refused_for_a_new_result_only(tmp_path):
    cfg = nbparams.check("kernel_dynamics", TINY_PARAMS).config
    stored = kernel_dynamics(cfg, results_root=tmp_path / "r", progress=False)
    opts = {**TINY_PARAMS, "device": "cuda"}
    nbparams.preflight(nbparams.check("kernel_dynamics", {**opts, "results_root": str(tmp_path / "r")}))  # stored
    with pytest.raises(ParameterError, match="parameter 'device'"):
        nbparams.preflight(nbparams.check("kernel_dynamics", {**opts, "results_root": str(tmp_path / "r"),
                                                              "recompute": True}))
    with pytest.raises(ParameterError, match="parameter 'device'"):  # the Python API: before anything is created
        kernel_dynamics(KernelDynamicsConfig(**{**TINY, "device": "cuda", "seed": 1}), results_root=tmp_path / "new",
                        progress=False)
    assert not (tmp_path / "new").exists()
    assert stored.attrs["device"] == "cpu"


def test_a_sweep_checks_its_points_before_starting_a_cluster(tmp_path, monkeypatch):
    import dask.distributed

    from conelib.sweep import Grid, run_sweep

    monkeypatch.setattr(dask.distributed, "LocalCluster", lambda *a, **k: pytest.fail("a cluster was started"))
    grid = Grid.from_mapping({"base": TINY, "grid": {"batch_size": [32, 10**9]}})
    with pytest.raises(ParameterError, match="parameter 'batch_size' \\(1000000000\\)"):
        run_sweep(grid, results_root=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


# 2 -- relative paths are the caller's ----------------------------------------------------------
def test_relative_paths_are_made_absolute_where_they_enter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given = {"results_root": "rel", "data_root": "~/d", "profile": "quick"}
    got = nbparams.absolute_paths("kernel_dynamics", given)
    assert got == {"results_root": str(tmp_path / "rel"), "data_root": str(Path.home() / "d"), "profile": "quick"}
    # papermill's injected cell, read by resolve() in the kernel: the kernel's working directory
    run = nbparams.resolve("kernel_dynamics", {**TINY_PARAMS, "results_root": "rel", "data_root": "data"})
    assert run.options.results_root == str(tmp_path / "rel") and run.config.data_root == str(tmp_path / "data")
    from conelib.sweep import Grid, grid_results_root

    grid = Grid.from_mapping({"base": TINY, "grid": {"seed": [0]}})
    assert grid_results_root(grid, "rel") == tmp_path / "rel"  # conelib sweep --results-root


def test_paths_in_a_profile_or_grid_file_are_taken_from_that_file(tmp_path, monkeypatch):
    from conelib.sweep import load_grid

    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "conf" / "p.yaml").write_text("kernel_dynamics:\n  model: lenet_300_100\n  dataset: digits\n"
                                              "  probe_size: 16\n  data_root: data\n")
    (tmp_path / "conf" / "g.yaml").write_text("base:\n  profile: p.yaml\n  steps: 20\n  snapshot_every: 10\n"
                                              "  dts: [10]\n  taus: [10]\ngrid:\n  seed: [0]\n")
    (tmp_path / "conf" / "g2.yaml").write_text("base:\n  model: lenet_300_100\n  dataset: digits\n  probe_size: 16\n"
                                               "  data_root: ../cache\ngrid:\n  seed: [0]\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = nbparams.check("kernel_dynamics", {"profile": "../conf/p.yaml"}).config
    assert Path(cfg.data_root).resolve() == tmp_path / "conf" / "data"
    assert Path(load_grid("../conf/g.yaml").base["data_root"]).resolve() == tmp_path / "conf" / "data"
    assert Path(load_grid("../conf/g2.yaml").base["data_root"]).resolve() == tmp_path / "cache"


def test_run_notebook_and_conelib_all_hand_the_kernel_absolute_paths(tmp_path, monkeypatch):
    import papermill

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("kernel_dynamics:\n" + "".join(f"  {k}: {v}\n" for k, v in TINY_PARAMS.items()
                                                                       if k != "profile"))
    got = {}

    def fake_execute(nb, out, *, parameters, **kw):
        got.update(parameters)
        Path(out).write_text(_empty_notebook())

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    nbrun.run_notebook("kernel_dynamics", {"profile": "mine.yaml", "results_root": "rel"}, output="o.ipynb")
    assert got == {"profile": str(tmp_path / "mine.yaml"), "results_root": str(tmp_path / "rel")}
    assert (tmp_path / "o.ipynb").is_file()
    seen = {}
    monkeypatch.setattr(cli, "run_notebook", lambda name, params, *, output, quiet: seen.update({name: params}))

    monkeypatch.setattr(cli, "build_book", lambda strict=False: Path("/x/index.html"))
    monkeypatch.setattr(cli, "stale_chapters", lambda: [])
    assert cli.main(["all", "-p", "results_root", "rel"]) == 0
    assert {n: p["results_root"] for n, p in seen.items()} == {n: str(tmp_path / "rel") for n in nbrun.NOTEBOOKS}


def _empty_notebook() -> str:
    import nbformat

    return nbformat.writes(nbformat.v4.new_notebook())


def test_reproduce_takes_a_relative_scratch_folder_from_the_current_directory(tmp_path, monkeypatch):
    from conelib.tools import reproduce

    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(reproduce, "_recompute", lambda report, runs, scratch, **kw: None)  # no training here
    monkeypatch.setattr(reproduce, "_kernel_dynamics", lambda report, profile, scratch, runs: seen.append(scratch))
    report = reproduce.reproduce(scratch="scratch", only=["kernel_dynamics"], write_page=False)
    assert seen == [tmp_path / "scratch"] and report.scratch == tmp_path / "scratch"
    assert (tmp_path / "scratch" / "reproduce.json").is_file()


@pytest.mark.slow
def test_conelib_run_from_another_folder_writes_where_it_was_asked(tmp_path):
    # 5 snapshots: the chapter's measures need at least 4
    params = {**TINY_PARAMS, "steps": 40}
    (tmp_path / "tiny.yaml").write_text("kernel_dynamics:\n" + "".join(
        f"  {k}: {v}\n" for k, v in params.items() if k != "profile"))
    proc = subprocess.run([sys.executable, "-m", "conelib", "run", "kernel_dynamics", "--quiet", "-o", "out.ipynb",
                           "-p", "profile", "tiny.yaml", "-p", "results_root", "relres"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = config_hash(KernelDynamicsConfig(**{**TINY, "steps": 40}).identity())
    assert [p.stem for p in (tmp_path / "relres" / "kernel_dynamics").glob("*.nc")] == [expected]
    assert not (ROOT / "notebooks" / "relres").exists() and (tmp_path / "out.ipynb").is_file()


# 4 -- what the checksum can and cannot tell ----------------------------------------------------
def test_the_checksum_catches_an_accident_not_a_restamped_edit_which_a_recomputation_catches(tmp_path):
    import netCDF4

    from conelib.tools.reproduce import compare

    cfg = KernelDynamicsConfig(**TINY)
    kernel_dynamics(cfg, results_root=tmp_path / "stored", progress=False)
    path = result_path("kernel_dynamics", cfg.identity(), tmp_path / "stored")
    true_acc = float(load_result(path).test_acc[-1])
    with netCDF4.Dataset(path, "a") as nc:  # an edit ...
        nc["test_acc"][-1] = 0.999
    with pytest.raises(ValueError, match="changed after it was written"):  # ... is caught
        load_result(path)
    ds = load_result(path, verify=False)
    ds.attrs["content_sha256"] = content_digest(ds)  # ... unless it is stamped again with the public function
    with netCDF4.Dataset(path, "a") as nc:
        nc.setncattr("content_sha256", ds.attrs["content_sha256"])
    assert float(load_result(path).test_acc[-1]) == 0.999  # the checksum cannot tell: anyone can recompute it
    fresh = kernel_dynamics(cfg, results_root=tmp_path / "scratch", progress=False)  # the defence: recompute
    floors = {"final_test_acc": 0.001}
    edited = compare("kernel_dynamics", "tiny", {"final_test_acc": 0.999},
                     {"final_test_acc": float(fresh.test_acc[-1])}, {}, floors)
    faithful = compare("kernel_dynamics", "tiny", {"final_test_acc": true_acc},
                       {"final_test_acc": float(fresh.test_acc[-1])}, {}, floors)
    assert [r["passed"] for r in edited] == [False] and [r["passed"] for r in faithful] == [True]


def test_the_reproduce_page_says_what_the_checksum_and_the_thread_count_do():
    page = (ROOT / "book" / "reproduce.md").read_text()
    section = page.split("## Stored results and their checksum", 1)[1].split("\n## ", 1)[0]
    assert "**accidents**" in section and "does **not** detect deliberate" in section
    assert "`conelib reproduce`" in section
    assert "sign" in section  # and says whether results are signed, and why
    assert "1e-8" not in (ROOT / "conelib" / "results.py").read_text()
    assert "thread" in page.split("## Failure modes", 1)[0].split("## Where results are stored", 1)[1]


# 5 -- one reading of booleans; messages ------------------------------------------------------
@pytest.mark.parametrize("word,expected", [("no", False), ("NO", False), ("false", False), ("off", False),
                                           ("0", False), ("False", False), ("yes", True), ("True", True),
                                           ("on", True), ("1", True), ("TRUE", True)])
def test_a_boolean_reads_the_same_at_every_entry_point(word, expected, tmp_path):
    from papermill.cli import _resolve_type

    from conelib.experiments import kernel_dynamics_config

    ns = lambda v: {"In": [f"{nbparams.MARKER}\nkeep_kernels = None", "", ""], "keep_kernels": v}  # noqa: E731
    readings = {
        "python": KernelDynamicsConfig(**TINY, keep_kernels=word).keep_kernels,
        "conelib -p": nbparams.check("kernel_dynamics", {**TINY_PARAMS, "keep_kernels": parse_text(word)})
        .config.keep_kernels,
        "papermill -p": nbparams.resolve("kernel_dynamics", {**TINY_PARAMS, **ns(_resolve_type(word))})
        .config.keep_kernels,
        "papermill -y / profile": _from_profile(tmp_path, word, kernel_dynamics_config),
    }
    assert readings == dict.fromkeys(readings, expected)


def _from_profile(tmp_path: Path, word: str, build) -> bool:
    (tmp_path / "p.yaml").write_text(f"kernel_dynamics:\n  dataset: digits\n  probe_size: 16\n  keep_kernels: {word}\n")
    return build(str(tmp_path / "p.yaml")).keep_kernels


def test_a_word_that_is_not_a_boolean_is_refused_the_same_way_everywhere():
    from papermill.cli import _resolve_type

    message = "parameter 'keep_kernels' must be True or False (also true/false, yes/no, on/off, 1/0); got "
    for value in ("maybe", parse_text("maybe"), _resolve_type("maybe"), 2, "2"):
        with pytest.raises(ParameterError) as err:
            KernelDynamicsConfig(**TINY, keep_kernels=value)
        assert str(err.value).startswith(message), str(err.value)


def test_messages_say_what_is_wrong():
    from papermill.cli import _resolve_type

    with pytest.raises(ParameterError) as err:
        KernelDynamicsConfig(**{**TINY, "dts": "[10, x]"})
    assert "must be a list of integers; got [10, 'x']" in str(err.value)
    for nan in ("nan", parse_text("nan"), parse_text(".nan"), _resolve_type("nan"), float("nan"), "inf",
                math.inf, np.float32("nan")):
        with pytest.raises(ParameterError, match=r"^parameter 'lr' must be a finite number; got "):
            KernelDynamicsConfig(**{**TINY, "lr": nan})
    with pytest.raises(ParameterError, match=r"^parameter 'lr' must be a number; got 'abc'"):
        KernelDynamicsConfig(**{**TINY, "lr": "abc"})
