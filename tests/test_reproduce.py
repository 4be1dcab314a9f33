"""`conelib reproduce` on a tiny profile: a faithful stored result passes (on the same machine a
recomputation is bitwise identical), a deliberately perturbed one is caught, a missing one is named."""

from __future__ import annotations

import pytest
import yaml

from conelib.experiments import kernel_dynamics, kernel_dynamics_configs, switching, switching_configs
from conelib.reproduce import reproduce
from conelib.results import load_result, result_path, save_result

TINY = {"model": "lenet_300_100", "dataset": "digits", "steps": 40, "batch_size": 32, "lr": 0.05, "seed": 0,
        "device": "cpu"}


@pytest.fixture()
def tiny_profile(tmp_path, monkeypatch):
    """A profile of one tiny run per experiment, its results computed into a stored results root."""
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({
        "kernel_dynamics": {**TINY, "steps": 80, "snapshot_every": 5, "dts": [10, 20], "taus": [10, 30],
                            "probe_size": 20},
        "switching": {**TINY, "switch_steps": [20], "eval_every": 20, "workers": 1},
    }))
    stored = tmp_path / "stored"
    monkeypatch.setenv("CONELIB_RESULTS", str(stored))
    for cfg in kernel_dynamics_configs(str(profile)):
        kernel_dynamics(cfg, progress=False)
    for cfg in switching_configs(str(profile)):
        switching(cfg, progress=False)
    return profile, stored


def _failed(report):
    return {(r["experiment"], r["measure"]) for r in report.rows if not r["passed"]}


@pytest.mark.timeout(300)
def test_a_faithful_result_passes_and_a_perturbed_one_is_caught(tiny_profile, tmp_path):
    profile, stored = tiny_profile
    report = reproduce(scratch=tmp_path / "a", profile=str(profile), only=["kernel_dynamics", "switching"],
                       write_page=False)
    assert report.ok, report.frame()
    assert {r["experiment"] for r in report.rows} == {"kernel_dynamics", "switching"}
    assert (tmp_path / "a" / "reproduce.json").exists()

    # perturb the stored results as a silent corruption would (re-saved, so the checksum is valid)
    kd_cfg = kernel_dynamics_configs(str(profile))[0]
    path = result_path("kernel_dynamics", kd_cfg.identity(), stored)
    ds = load_result(path).load()
    ds["test_acc"][-1] = float(ds["test_acc"][-1]) - 0.3  # far beyond 3 standard errors on 360 test images
    save_result(ds, path)
    sw_cfg = switching_configs(str(profile))[0]
    path = result_path("switching", sw_cfg.identity(), stored)
    sw = load_result(path).load()
    sw["final_test_acc"][:] = sw["final_test_acc"].values - 0.3
    save_result(sw, path)

    report = reproduce(scratch=tmp_path / "b", profile=str(profile), only=["kernel_dynamics", "switching"],
                       write_page=False)
    assert not report.ok
    assert _failed(report) == {("kernel_dynamics", "final_test_acc"), ("switching", "final_test_acc")}
    assert "**FAIL**" in report.markdown() and "FAIL" in str(report)


def test_tolerances_follow_the_intervals_of_the_two_runs():
    """A measure whose bootstrap interval is wide gets a wide tolerance; a verdict that its own
    bootstrap draws do not support is reported as unstable, not failed."""
    import math

    from conelib.measures import assess, synthetic
    from conelib.reproduce import accuracy_tolerance, compare_assessed

    a = assess(synthetic.trajectory("steady drift", seed=0), n_boot=30, sensitivity=False)
    b = assess(synthetic.trajectory("steady drift", seed=1), n_boot=30, sensitivity=False)
    rows = {r["measure"]: r for r in compare_assessed("kd", "x", a, b)}
    want = math.sqrt(a.half_width("growth_exponent") ** 2 + b.half_width("growth_exponent") ** 2)
    assert rows["growth_exponent"]["tolerance"] == max(0.02, want)
    assert rows["growth_exponent"]["passed"] == (abs(a.point.growth_exponent - b.point.growth_exponent)
                                                 <= rows["growth_exponent"]["tolerance"] + 1e-12)
    assert rows["verdict"]["passed"] and rows["verdict"]["stored"] == "two phases, drifting"
    assert accuracy_tolerance(0.98, 10000) == pytest.approx(max(0.001, 3 * math.sqrt(2 * 0.98 * 0.02 / 10000)))


@pytest.mark.timeout(120)
def test_a_missing_stored_result_is_named_and_fails(tiny_profile, tmp_path):
    profile, stored = tiny_profile
    for p in (stored / "switching").glob("*.nc"):
        p.unlink()
    report = reproduce(scratch=tmp_path / "c", profile=str(profile), only=["switching"], write_page=False)
    assert not report.ok and report.missing == ["switching lenet_300_100"]
    with pytest.raises(ValueError, match="unknown experiment"):
        reproduce(scratch=tmp_path / "d", profile=str(profile), only=["figure9"], write_page=False)
