"""A plain (non-editable) install works without the source checkout: the profiles are package
data, paths do not assume a repository, and a tiny experiment runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_non_editable_install_runs_a_tiny_experiment(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("conelib-*.whl")
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                          capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = """
import conelib, conelib.paths as paths
from conelib.profiles import available_profiles
from conelib.experiments import kernel_dynamics, kernel_dynamics_config
assert conelib.__file__.startswith(%r), conelib.__file__
assert paths.repo_root() is None
assert {"mnist", "quick", "paper"} <= set(available_profiles())
cfg = kernel_dynamics_config("quick", model="lenet_300_100", dataset="digits", steps=20, snapshot_every=10,
                             dts=[10], taus=[10], probe_size=16, batch_size=32, device="cpu")
ds = kernel_dynamics(cfg, progress=False)
print(ds.attrs["config_hash"], paths.default_results_root())
""" % str(site)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CONELIB_DATA": str(tmp_path / "d")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    h, root = run.stdout.split()
    assert Path(root) == work / "results" and (work / "results" / "kernel_dynamics" / f"{h}.nc").is_file()
    # the command needs the checkout for notebooks, and says so
    cmd = subprocess.run([sys.executable, "-m", "conelib", "run", "kernel_dynamics", "-p", "seed", "1"],
                         capture_output=True, text=True, cwd=work, env=env)
    assert cmd.returncode == 2 and "source checkout" in cmd.stderr
