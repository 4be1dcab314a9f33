"""The switching chapter's report (conelib.report.switching): its claims follow the comparisons
of conelib.analysis.switching (a claim holds exactly when its interval lies on its side of zero),
its sentences carry those numbers, and the comparison step is the configuration's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conelib.analysis.switching import compare
from conelib.experiments import SwitchingConfig
from conelib.report.switching import CLAIMS, SwitchingReport, model_findings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from switching_data import constructed  # noqa: E402  (a helper module)

CFG = SwitchingConfig(model="lenet_300_100", dataset="digits", steps=40, switch_steps=(20,), device="cpu",
                      seeds=(0, 1), small_lr_factor=0.1, match_horizon=60)


def _report(ds, compare_from=20, tmp_path=None) -> SwitchingReport:
    from conelib.analysis.text import Facts

    f = model_findings(ds, CFG.replace(compare_from=compare_from), results_root=tmp_path, n_boot=500)
    return SwitchingReport({"lenet_300_100": f}, Facts())


def test_claims_follow_their_comparisons(tmp_path) -> None:
    ds = constructed(200, small_lr=True)
    rep = _report(ds, tmp_path=tmp_path)
    claims = rep.claims("lenet_300_100")
    assert set(claims) == set(CLAIMS)
    pairs = {"later_better_at_T": (("at_T", 20), ("at_T", 40)),
             "later_better_at_matched_loss": (("matched", 20), ("matched", 40)),
             "standard_beats_linearized_at_equal_loss": (("at_T", 20), ("standard_at_loss", 20)),
             "later_better_small_lr": (("small_lr", 20), ("small_lr", 40)),
             "small_lr_beats_linearized": (("at_T", 20), ("small_lr", 20))}
    for name, (a, b) in pairs.items():
        c = compare(ds, a, b, n_boot=500)
        assert claims[name].supported == (c.boot.low > 0), name
        assert f"{100 * c.gain.mean:+.2f}" in claims[name].sentence, name
    # the small-lr arm gets half the images right at t = 20: it beats the linearized one there
    assert claims["small_lr_beats_linearized"].supported is True
    text = rep.findings("lenet_300_100")
    assert "t = 20 was fixed in the profile" in text and "not measured" in text
    assert all(c.sentence in text for c in claims.values())
    frame = rep.claims_frame()
    assert set(frame.holds) <= {"yes", "no", "cannot tell"} and len(frame) == len(CLAIMS)
    table = rep.mcnemar_table("lenet_300_100")
    assert set(table.seed) == {0, 1} and (table.p_mid <= table.p_exact).all()


def test_a_comparison_missing_for_some_seed_cannot_be_told(tmp_path) -> None:
    ds = constructed(100)
    ds["matched_test_correct"][1, 1] = -1  # seed 1 never reached the level from t = 20
    ds["matched_test_acc"][1, 1] = np.nan
    claim = _report(ds, tmp_path=tmp_path).claims("lenet_300_100")["later_better_at_matched_loss"]
    assert claim.supported is None and "1 of 2 seeds" in claim.sentence


def test_the_comparison_step_is_the_configurations(tmp_path) -> None:
    ds = constructed(100)
    rep = _report(ds, compare_from=None, tmp_path=tmp_path)
    assert rep.compare_from("lenet_300_100") is None
    assert "No comparison step was declared" in rep.findings("lenet_300_100")
    assert set(rep.claims("lenet_300_100")) == {"test_loss_rises_late"}
    with pytest.raises(ValueError, match="compare_from"):
        model_findings(ds, CFG.replace(compare_from=20, switch_steps=(10, 20)).replace(compare_from=10), n_boot=200)


def test_without_per_image_data_the_intervals_are_over_seeds_and_say_so(tmp_path) -> None:
    ds = constructed(100).drop_vars(["final_test_correct", "standard_test_correct", "matched_test_correct"])
    rep = _report(ds, tmp_path=tmp_path)
    text = rep.findings("lenet_300_100")
    assert "Student-t over seeds" in text and "no per-image data" in text
    assert rep.mcnemar_table("lenet_300_100").empty


def test_the_test_loss_caveat_quotes_the_rise(tmp_path) -> None:
    ds = constructed(100)
    # the standard test loss falls to step 20, then rises (as overconfidence does)
    ds["standard_test_loss"][:] = np.array([0.5, 0.4, 0.3, 0.35, 0.45, np.nan, np.nan]) + np.array([[0.0], [0.01]])
    claim = _report(ds, tmp_path=tmp_path).claims("lenet_300_100")["test_loss_rises_late"]
    assert claim.supported is True and "lowest at step 20" in claim.sentence and "overconfidence" in claim.sentence


def test_the_profile_report_reads_the_stored_runs_and_names_the_missing_ones(tmp_path) -> None:
    import warnings

    from conelib.report.switching import profile_report

    with pytest.raises(FileNotFoundError, match="lenet_300_100.*lenet5"):
        profile_report("mnist", results_root=tmp_path)
    assert profile_report("mnist", results_root=tmp_path, missing_ok=True) is None
    root = Path(__file__).resolve().parent.parent / "results"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # stored results that predate the full configuration
        rep = profile_report("mnist", results_root=root, n_boot=300, phase_boot=20)
    assert "lenet5" in rep.models and all(rep.compare_from(m) == 2000 for m in rep.models)
    assert set(rep.claims("lenet5")) == {"later_better_at_T", "test_loss_rises_late"}  # no controls stored for it
