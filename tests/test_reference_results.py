"""The committed reference results are the ones the book's notebooks ask for (so `make main` on a
fresh clone loads them instead of training for hours), they verify, and they stay small."""

from __future__ import annotations

import subprocess
from pathlib import Path


from conelib.experiments import kernel_dynamics_configs, spawning_configs, switching_configs
from conelib.paths import repo_root, sweeps_dir
from conelib.results import config_hash, load_result, result_path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def _committed() -> list[Path]:
    """The committed result files (an error, not an empty list, when git cannot tell: a test of
    committed files must not pass because it found none)."""
    out = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"git ls-files failed: {out.stderr}"
    files = [ROOT / p for p in out.stdout.split() if p.endswith(".nc")]
    assert files, "git lists no committed results under results/"
    return files


def test_every_run_of_the_book_is_committed_and_verifies():
    assert repo_root() == ROOT
    wanted = [("kernel_dynamics", c) for c in kernel_dynamics_configs("mnist")]
    wanted += [("switching", c) for c in switching_configs("mnist")]
    wanted += [("spawning", c) for c in spawning_configs("mnist")]
    committed = set(_committed())
    for experiment, cfg in wanted:
        path = result_path(experiment, cfg.identity(), RESULTS)
        assert path in committed, f"{experiment} {cfg.model} seed {cfg.seed}: {path.name} is not committed"
        ds = load_result(path)  # checksum verified
        assert ds.attrs["config_hash"] == config_hash(cfg.identity())
        assert "git_commit" in ds.attrs and "torch_num_threads" in ds.attrs


def test_the_atlas_summary_is_committed_with_every_run_of_its_grid():
    from conelib.analysis.atlas_summary import summary_path
    from conelib.sweep import expand_grid, load_grid

    grid = load_grid(sweeps_dir() / "atlas.yaml")
    path = summary_path(grid, RESULTS)
    assert path in set(_committed()), f"the atlas summary {path.name} is not committed"
    summary = load_result(path)
    assert int(summary.attrs["n_runs"]) == len(expand_grid(grid))
    assert list(summary.config_hash.values) == [config_hash(p.config.identity()) for p in expand_grid(grid)]


def test_committed_results_stay_small():
    sizes = {p: p.stat().st_size for p in _committed()}
    assert sum(sizes.values()) < 20 * 2**20, "committed results exceed 20 MiB"
    assert max(sizes.values()) < 12 * 2**20
    for p in sizes:
        assert not p.name.endswith(".kernels.nc"), f"kernels are not committed: {p}"


def test_the_manifest_is_generated_from_the_committed_files():
    """results/MANIFEST.json and the README's table say what the committed files say of themselves."""
    from conelib.tools.manifest import check_manifest

    assert check_manifest(RESULTS, _committed()) == []


def test_committed_results_record_their_full_configuration():
    for p in _committed():
        ds = load_result(p)
        assert "config_full_json" in ds.attrs, f"{p.name}: run `conelib migrate-results`"


def test_the_validation_panel_of_the_measures_is_committed():
    from conelib.report.measures import EXPERIMENT, PANEL_CONFIG

    path = result_path(EXPERIMENT, PANEL_CONFIG, RESULTS)
    assert path in set(_committed()), f"the validation panel {path.name} is not committed"
    panel = load_result(path)
    assert int(panel.attrs["n_draws"]) == PANEL_CONFIG["n_draws"] and panel.sizes["process"] >= 8


def test_the_textbook_lazy_regime_is_lazy_in_the_committed_atlas():
    """Chizat et al.'s lazy knob: at the atlas' largest output scale the kernel hardly moves. The
    verdict, recomputed here from the pairwise distances stored in the summary, must say lazy for
    every seed, with a total movement below the lazy threshold."""
    import numpy as np

    from conelib.analysis.atlas_summary import run_from_summary, summary_path
    from conelib.measures import THRESHOLDS, verdict
    from conelib.sweep import load_grid

    summary = load_result(summary_path(load_grid(sweeps_dir() / "atlas.yaml"), RESULTS))
    scales = np.array([np.nan if v is None else float(v) for v in summary["output_scale"].values.tolist()])
    runs = summary["run"].values[scales == np.nanmax(scales)]
    assert len(runs) >= 2 and np.nanmax(scales) >= 16
    for run in runs:
        v = verdict(run_from_summary(summary, int(run)))
        assert v.verdict == "two phases, lazy", (int(run), v.verdict)
        assert v.total_movement < THRESHOLDS["lazy_movement"]
        assert str(summary["verdict"].sel(run=run).values) == v.verdict  # the stored verdict is the same
