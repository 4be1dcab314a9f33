"""Nothing silent: one test per failure mode (the "Failure modes" table of the reproduce page).

Each probe is a tiny configuration on scikit-learn's digits; the oracle is what a careful user
expects to see and to find on disk afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from conelib import atomic
from conelib.tools import cli, nbrun
from conelib.config import ParameterError, parse_text
from conelib.experiments import KernelDynamicsConfig, SwitchingConfig, kernel_dynamics
from conelib.results import load_or_compute, load_result, result_path, save_result, stored_results

TINY = dict(model="lenet_300_100", dataset="digits", steps=20, snapshot_every=10, dts=(10,), taus=(10,),
            probe_size=16, batch_size=32, lr=0.05, device="cpu")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    cfg = KernelDynamicsConfig(**TINY)
    ds = kernel_dynamics(cfg, results_root=root, progress=False)
    return cfg, ds, root


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# 1 ------------------------------------------------------------------------------------------
def test_a_changed_value_in_a_stored_result_is_detected_and_recomputed(stored, tmp_path):
    cfg, ds, root = stored
    copy = tmp_path / "kernel_dynamics"
    copy.mkdir()
    path = result_path("kernel_dynamics", cfg.identity(), root)
    target = copy / path.name
    target.write_bytes(path.read_bytes())
    with netCDF4.Dataset(target, "a") as nc:  # an edit with the netCDF library itself
        nc["test_acc"][0] = 0.999
    with pytest.raises(ValueError, match="changed after it was written"):
        load_result(target)
    with pytest.warns(RuntimeWarning, match="changed after it was written"):
        again = kernel_dynamics(cfg, results_root=tmp_path, progress=False)
    assert float(again.test_acc[0]) == float(ds.test_acc[0]) != 0.999


# 3 ------------------------------------------------------------------------------------------
def test_an_unreadable_stored_file_counts_as_missing_for_the_notebooks(stored, tmp_path):
    from conelib.analysis.switching import matching_kernel_dynamics

    cfg, ds, root = stored
    folder = tmp_path / "kernel_dynamics"
    folder.mkdir()
    path = result_path("kernel_dynamics", cfg.identity(), root)
    (folder / path.name).write_bytes(path.read_bytes())
    (folder / "0123456789abcdef.nc").write_bytes(b"not netcdf")
    with pytest.warns(RuntimeWarning, match="skipping stored result"):
        found = stored_results("kernel_dynamics", tmp_path)
    assert [d.attrs["config_hash"] for d in found] == [ds.attrs["config_hash"]]
    sw = SwitchingConfig(**{k: v for k, v in TINY.items() if k not in ("snapshot_every", "dts", "taus", "probe_size")},
                         switch_steps=(10,))
    with pytest.warns(RuntimeWarning):
        assert matching_kernel_dynamics(sw, results_root=tmp_path) is not None


# 4 ------------------------------------------------------------------------------------------
def test_a_failed_chapter_keeps_the_previous_run_marked_stale(tmp_path, monkeypatch):
    import nbformat

    out = tmp_path / "book" / "generated" / "kernel_dynamics.ipynb"
    out.parent.mkdir(parents=True)
    old = nbformat.v4.new_notebook()
    old.cells = [nbformat.v4.new_markdown_cell("# Old chapter"), nbformat.v4.new_markdown_cell("old numbers")]
    nbformat.write(old, out)
    monkeypatch.setattr(nbrun, "_is_chapter", lambda output: True)
    # cifar10 is a valid value, but there is no CIFAR-10 here: the notebook fails while running
    params = {**{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}, "profile": "quick",
              "dataset": "cifar10", "data_root": str(tmp_path / "no-cifar"), "results_root": str(tmp_path / "r")}
    with pytest.raises(nbrun.NotebookFailed, match="FileNotFoundError"):
        nbrun.run_notebook("kernel_dynamics", params, output=out, quiet=True)
    marker = json.loads(nbrun.failure_marker(out).read_text())
    assert "FileNotFoundError" in marker["error"] and marker["parameters"]["dataset"] == "cifar10"
    nb = nbformat.read(out, as_version=4)
    assert [c.source for c in nb.cells if nbrun.STALE_TAG not in c.metadata.get("tags", [])] == \
        ["# Old chapter", "old numbers"]
    assert nbrun.STALE_TAG in nb.cells[1].metadata["tags"] and "out of date" in nb.cells[1].source
    assert not list(out.parent.glob(f"*{atomic.TMP_MARK}*"))  # no half-executed notebook left
    # the book reports it; with no earlier chapter, the placeholder page says that the run failed
    from conelib.tools import book

    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/generated/kernel_dynamics\n")
    assert book.stale_chapters(tmp_path) == ["kernel_dynamics"]
    out.unlink()
    book.write_placeholders(tmp_path)
    page = (out.parent / "kernel_dynamics.md").read_text()
    assert "(failed)" in page and "FileNotFoundError" in page


def test_conelib_all_runs_every_notebook_builds_the_book_and_exits_1_on_a_failure(monkeypatch, capsys):
    ran, built = [], []

    def fake_run(name, params, *, output, quiet):
        ran.append(name)
        if name == "switching":
            raise nbrun.NotebookFailed("notebook switching failed: RuntimeError: boom")
        return output

    monkeypatch.setattr(cli, "run_notebook", fake_run)

    monkeypatch.setattr(cli, "build_book", lambda strict=False: built.append(1) or Path("/x/index.html"))
    monkeypatch.setattr(cli, "stale_chapters", lambda: ["switching"])
    assert cli.main(["all"]) == 1
    assert ran == list(nbrun.NOTEBOOKS) and built == [1]
    err = capsys.readouterr().err
    assert "switching: FAILED" in err and "the last run of ['switching'] failed" in err
    # `make main` passes --profile: it reaches the notebooks that read a profile, not the atlas chapter
    ran.clear()
    got = {}
    monkeypatch.setattr(cli, "run_notebook", lambda name, params, *, output, quiet: got.update({name: params}))
    monkeypatch.setattr(cli, "stale_chapters", lambda: [])
    assert cli.main(["all", "--profile", "mnist"]) == 0
    assert got == {"kernel_dynamics": {"profile": "mnist"}, "measures": {}, "switching": {"profile": "mnist"},
                   "atlas": {}, "cone": {"profile": "mnist"}, "spawning": {"profile": "mnist"}}
    assert cli.main(["run", "atlas", "--profile", "mnist"]) == 2  # alone: an unknown parameter


# 5 ------------------------------------------------------------------------------------------
def test_an_unwritable_or_full_results_folder_fails_before_the_work(tmp_path, monkeypatch):
    calls = []
    blocked = tmp_path / "a-file"
    blocked.write_text("x")  # a results root below a file cannot be created, even by root
    with pytest.raises(PermissionError, match="cannot write results"):
        load_or_compute("exp", {"a": 1}, lambda: calls.append(1), root=blocked / "sub")
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(OSError, match="not enough free space"):
        load_or_compute("exp", {"a": 1}, lambda: calls.append(1), root=tmp_path / "ok")
    assert calls == []


# 6 ------------------------------------------------------------------------------------------
def test_results_and_checkpoints_get_the_umask_permissions(tmp_path, monkeypatch):
    import torch

    from conelib.train import TrainConfig, save_checkpoint

    atomic.umask.cache_clear()
    old = os.umask(0o022)
    try:
        p = save_result(xr.Dataset({"v": ("x", np.arange(3.0))}), tmp_path / "r.nc")
        c = save_checkpoint(tmp_path / "c.pt", torch.nn.Linear(2, 2), None, 0, TrainConfig(steps=1))
    finally:
        os.umask(old)
        atomic.umask.cache_clear()
    assert stat.S_IMODE(p.stat().st_mode) == 0o644 and stat.S_IMODE(c.stat().st_mode) == 0o644


# 7 ------------------------------------------------------------------------------------------
def test_leftovers_of_killed_writers_are_swept_up(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f"x.nc.tmp.{dead}.abc"
    stale.write_text("partial")
    live = tmp_path / f"x.nc.tmp.{os.getpid()}.def"  # a writer still running: left alone
    live.write_text("in progress")
    save_result(xr.Dataset({"v": ("x", [1.0])}), tmp_path / "x.nc")
    assert not stale.exists() and live.exists()
    ckpts = Path(tempfile.gettempdir()) / f"conelib-switching{atomic.TMP_MARK}{dead}.zz"
    (ckpts / "seed0").mkdir(parents=True)
    (ckpts / "seed0" / "step_0000000.pt").write_bytes(b"x")
    removed = atomic.sweep_stale(tempfile.gettempdir(), f"conelib-switching{atomic.TMP_MARK}*")
    assert ckpts in removed and not ckpts.exists()


def test_sigterm_unwinds_so_temporary_folders_are_removed(tmp_path):
    code = f"""
import os, signal, tempfile, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from conelib.tools import cli
signal.signal(signal.SIGTERM, cli._terminate)
with tempfile.TemporaryDirectory(prefix="probe.", dir={str(tmp_path)!r}) as d:
    open(os.path.join(d, "ckpt.pt"), "w").write("x")
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert list(tmp_path.iterdir()) == []


# 8 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change,message", [
    ({"steps": "abc"}, "parameter 'steps' must be an integer; got 'abc'"),
    ({"snapshot_every": 2.5}, "parameter 'snapshot_every' must be an integer"),
    ({"keep_kernels": "maybe"}, "parameter 'keep_kernels' must be True or False"),
    ({"steps": 0}, "parameter 'steps'"),
    ({"dts": "[10, x]"}, "parameter 'dts'"),
])
def test_bad_values_name_the_parameter_before_any_work(change, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KernelDynamicsConfig(**{**TINY, **change})


def test_values_as_typed_by_people_are_read_as_meant():
    from conelib.results import config_hash

    base = KernelDynamicsConfig(**TINY)
    for change in ({"lr": "5e-2"}, {"snapshot_every": 10.0}, {"dts": (10.0,)}, {"dts": (10, 10)}, {"dts": "[10]"}):
        cfg = KernelDynamicsConfig(**{**TINY, **change})
        assert config_hash(cfg.identity()) == config_hash(base.identity()), change
    assert parse_text("1e-3") == 0.001  # YAML 1.1 would read a string


def test_a_probe_set_larger_than_the_data_is_refused_before_training(tmp_path, monkeypatch):
    kd = sys.modules["conelib.experiments.kernel_dynamics"]

    monkeypatch.setattr(kd, "train", lambda *a, **k: pytest.fail("trained before checking probe_size"))
    with pytest.raises(ParameterError, match="parameter 'probe_size' \\(5000\\) is larger than the training split"):
        kernel_dynamics(KernelDynamicsConfig(**{**TINY, "probe_size": 5000}), results_root=tmp_path, progress=False)
    assert not (tmp_path / "kernel_dynamics").exists() or not list((tmp_path / "kernel_dynamics").glob("*.nc"))


def test_a_bad_cli_parameter_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "conelib", "run", "kernel_dynamics", "-p", "steps", "abc",
                           "-o", str(tmp_path / "o.ipynb")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: parameter 'steps' must be an integer; got 'abc'"]
    debug = subprocess.run([sys.executable, "-m", "conelib", "--debug", "run", "kernel_dynamics", "-p", "steps", "abc",
                            "-o", str(tmp_path / "o.ipynb")], capture_output=True, text=True, cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


# 10 -----------------------------------------------------------------------------------------
def test_a_stored_result_loads_on_a_machine_without_the_device(stored, monkeypatch):
    kd = sys.modules["conelib.experiments.kernel_dynamics"]

    cfg, ds, root = stored
    monkeypatch.setattr(kd, "_run", lambda *a, **k: pytest.fail("recomputed a stored result"))
    again = kernel_dynamics(cfg.replace(device="cuda"), results_root=root, progress=False)
    assert again.attrs["config_hash"] == ds.attrs["config_hash"]


def test_the_thread_count_is_in_the_provenance(stored):
    import torch

    _, ds, _ = stored
    assert int(ds.attrs["torch_num_threads"]) == torch.get_num_threads()
