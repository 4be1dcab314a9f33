"""The notebooks' one source, and their parameters through every entry point.

Oracle for "a parameter reaches the run": the config hash of what was stored, against the hash
of the configuration built directly with that parameter (and against the run without it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conelib.tools import nbparams, nbrun
from conelib.config import ParameterError
from conelib.experiments import KernelDynamicsConfig
from conelib.results import config_hash

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

#: a tiny kernel-dynamics run (seconds)
TINY = dict(profile="quick", model="lenet_300_100", dataset="digits", steps=40, snapshot_every=10, dts=[10, 20],
            taus=[10, 30], probe_size=20, batch_size=32, seeds=[0])


def _tiny_cfg(**changes) -> KernelDynamicsConfig:
    params = {k: v for k, v in {**TINY, **changes}.items() if k not in ("profile", "seeds")}
    return KernelDynamicsConfig.from_profile("quick", "kernel_dynamics", **params)


def _stored_hashes(root: Path) -> set[str]:
    return {p.stem for p in (root / "kernel_dynamics").glob("*.nc")}


# ------------------------------------------------------------------------------------------
# the sources
# ------------------------------------------------------------------------------------------


def test_each_notebook_has_one_source_with_a_valid_parameters_cell():
    assert not list(NOTEBOOKS.glob("*.ipynb")), "notebooks are MyST markdown; .ipynb files are outputs"
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.md")) == sorted(nbparams.NOTEBOOKS)
    for name in nbparams.NOTEBOOKS:
        nb = nbrun.read_source(NOTEBOOKS / f"{name}.md")
        tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        cell = nb.cells[tagged[0]]
        assert cell.source.startswith(nbparams.MARKER), name
        names = nbparams._assigned_names(cell.source)
        valid = nbparams.notebook_parameters(name)
        assert names and set(names) <= set(valid), (name, set(names) - set(valid))
        after = next(c for c in nb.cells[tagged[0] + 1:] if c.cell_type == "code")
        assert f'resolve("{name}", globals())' in after.source, name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_inline_expressions_become_glue_evaluated_in_place():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_markdown_cell("x is {eval}`x` and again {eval}`x`, y is {eval}`f'{x + 1}'`."),
                nbformat.v4.new_code_cell("x = 5"),
                nbformat.v4.new_markdown_cell("now {eval}`x`")]
    out = nbrun.inline_to_glue(nb)
    kinds = [c.cell_type for c in out.cells]
    assert kinds == ["code", "code", "markdown", "code", "code", "markdown"]
    glue1, md1, glue2, md2 = out.cells[1], out.cells[2], out.cells[4], out.cells[5]
    assert md1.source == "x is {glue:text}`_eval_0` and again {glue:text}`_eval_0`, y is {glue:text}`_eval_1`."
    assert md2.source == "now {glue:text}`_eval_2`"
    assert "remove-cell" in glue1.metadata["tags"] and "(x)" in glue1.source and "(f'{x + 1}')" in glue1.source
    assert "remove-cell" in glue2.metadata["tags"] and "(x)" in glue2.source
    # executing the cells in order glues the values each markdown cell would have shown
    from unittest import mock

    glued = {}
    with mock.patch("myst_nb.glue", lambda k, v, display=True: glued.__setitem__(k, v)):
        ns: dict = {}
        for c in out.cells:
            if c.cell_type == "code":
                exec(c.source, ns)  # noqa: S102 - test cells
    assert glued == {"_eval_0": 1, "_eval_1": "2", "_eval_2": 5}


# ------------------------------------------------------------------------------------------
# reading parameters in a kernel
# ------------------------------------------------------------------------------------------


def test_parameters_come_from_the_last_parameters_cell_and_the_injected_one():
    ns = {"In": ["", "import x", f"{nbparams.MARKER}\nprofile = 'quick'\nseed = None",
                 "# Parameters\nweight_decay = 0.001\n", "run = resolve(...)"],
          "profile": "quick", "seed": None, "weight_decay": 0.001, "leftover": 3}
    assert nbparams._names_from_history(ns) == ["profile", "seed", "weight_decay"]
    # a re-run of the parameters cell in the same kernel: earlier cells' names do not count
    ns["In"] += ["ds = 1", f"{nbparams.MARKER}\nprofile = 'quick'\nlr = 0.01", "run = resolve(...)"]
    assert nbparams._names_from_history(ns) == ["profile", "lr"]
    got = nbparams.resolve("kernel_dynamics", {**ns, "lr": 0.01})
    assert got.config.lr == 0.01 and got.options.profile == "quick"


def test_a_parameter_added_in_the_cell_changes_the_hash_and_a_typo_is_named():
    base = nbparams.resolve("kernel_dynamics", {"In": [f"{nbparams.MARKER}\nprofile='quick'", ""],
                                                "profile": "quick"}).config
    edited = nbparams.resolve("kernel_dynamics", {"In": [f"{nbparams.MARKER}\nprofile='quick'\nweight_decay=0.0", ""],
                                                  "profile": "quick", "weight_decay": 0.0}).config
    assert base.weight_decay == 5e-4 and edited.weight_decay == 0.0
    assert config_hash(edited.identity()) != config_hash(base.identity())
    with pytest.raises(ParameterError, match=r"'weight_dacay' \(did you mean 'weight_decay'\?\).*valid: \["):
        nbparams.resolve("kernel_dynamics", {"In": [f"{nbparams.MARKER}\nweight_dacay=0", ""], "weight_dacay": 0})
    with pytest.raises(ParameterError, match="parameter 'steps' must be an integer; got 'abc'"):
        nbparams.check("kernel_dynamics", {"steps": "abc"})
    with pytest.raises(ParameterError, match="parameter 'probe_size'"):
        nbparams.check("kernel_dynamics", {"probe_size": 1})


def test_notebook_options_are_checked_too():
    with pytest.raises(ParameterError, match="'models'"):
        nbparams.check("kernel_dynamics", {"models": ["lenet7"]})
    with pytest.raises(ParameterError, match="'profile'.*available"):
        nbparams.check("switching", {"profile": "nope"})
    runs = nbparams.check("kernel_dynamics", {"profile": "mnist"}).configs
    assert sorted({(c.model, c.seed) for c in runs}) == [(m, s) for m in ("lenet5", "lenet_300_100") for s in (0, 1, 2)]
    assert [c.seed for c in nbparams.check("kernel_dynamics", {"profile": "mnist", "seed": 2}).configs] == [2, 2]


# ------------------------------------------------------------------------------------------
# the entry points (slow: each runs a kernel)
# ------------------------------------------------------------------------------------------


def _papermill(tmp_path: Path, params: dict) -> None:
    import papermill as pm

    nb = nbrun.read_source(NOTEBOOKS / "kernel_dynamics.md")
    pm.execute_notebook(nb, str(tmp_path / "out.ipynb"), parameters=params, cwd=str(NOTEBOOKS),
                        kernel_name="python3", progress_bar=False)


@pytest.mark.slow
def test_plain_papermill_reaches_the_run_and_refuses_a_typo(tmp_path):
    import papermill as pm

    res = tmp_path / "res"
    _papermill(tmp_path, {**TINY, "weight_decay": 0.0, "dts": "[10, 20]", "results_root": str(res)})
    assert _stored_hashes(res) == {config_hash(_tiny_cfg(weight_decay=0.0).identity())}
    assert config_hash(_tiny_cfg().identity()) not in _stored_hashes(res)
    for bad, message in (({"weight_dacay": 0.0}, "weight_dacay"), ({"steps": "abc"}, "parameter 'steps'")):
        with pytest.raises(pm.PapermillExecutionError, match=message):
            _papermill(tmp_path, {**TINY, **bad, "results_root": str(tmp_path / "bad")})
        assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_conelib_run_reaches_the_run_and_refuses_bad_parameters_before_a_kernel(tmp_path):
    res = tmp_path / "res"
    args = [sys.executable, "-m", "conelib", "run", "kernel_dynamics", "--quiet", "-o", str(tmp_path / "kd.ipynb")]
    for k, v in {**TINY, "weight_decay": 0.0, "results_root": str(res)}.items():
        args += ["-p", k, str(v)]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _stored_hashes(res) == {config_hash(_tiny_cfg(weight_decay=0.0).identity())}
    assert (tmp_path / "kd.ipynb").is_file() and not (ROOT / "runs").exists()
    for bad, message in ((["-p", "weight_dacay", "0"], "did you mean 'weight_decay'"),
                         (["-p", "lr", "abc"], "parameter 'lr' must be a number"),
                         (["-p", "probe_size", "1"], "parameter 'probe_size'")):
        proc = subprocess.run([*args[:6], "-o", str(tmp_path / "bad.ipynb"), "-p", "results_root",
                               str(tmp_path / "bad"), *bad], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.ipynb").exists()


def test_a_profile_and_a_sweep_grid_reach_the_run(tmp_path):
    from conelib.sweep import Grid, expand_grid

    profile = tmp_path / "mine.yaml"
    profile.write_text("kernel_dynamics:\n  model: lenet_300_100\n  dataset: digits\n  weight_decay: 1e-3\n")
    cfg = nbparams.check("kernel_dynamics", {"profile": str(profile)}).config
    assert cfg.weight_decay == 1e-3  # YAML 1.2's float, not the string YAML 1.1 reads
    assert config_hash(cfg.identity()) != config_hash(cfg.replace(weight_decay=0.0).identity())
    grid = Grid.from_mapping({"base": {"profile": str(profile), "steps": 40, "snapshot_every": 10, "dts": [10],
                                       "taus": [], "probe_size": 16},
                              "grid": {"weight_decay": ["1e-3", 0]}})
    points = expand_grid(grid)
    assert [p.config.weight_decay for p in points] == [1e-3, 0.0]
    assert len({config_hash(p.config.identity()) for p in points}) == 2


@pytest.mark.slow
def test_cone_chapter_says_what_is_not_stored_on_an_empty_results_root(tmp_path):
    import papermill as pm

    nb = nbrun.read_source(NOTEBOOKS / "cone.md")
    out = tmp_path / "cone.ipynb"
    pm.execute_notebook(nb, str(out), parameters={"results_root": str(tmp_path / "empty")}, cwd=str(NOTEBOOKS),
                        kernel_name="python3", progress_bar=False)
    text = out.read_text()
    assert "No decayed run is stored." in text and "No momentum control is stored." in text
    assert "are **not stored**" in text  # the long runs
    with pytest.raises(pm.PapermillExecutionError, match="workers"):
        pm.execute_notebook(nb, str(tmp_path / "bad.ipynb"), parameters={"workers": 0}, cwd=str(NOTEBOOKS),
                            kernel_name="python3", progress_bar=False)
