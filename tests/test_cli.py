"""`conelib` on the command line (conelib.tools.cli): what each subcommand passes on, without
running the experiments (those are tested in their own files)."""

from __future__ import annotations

import sys

import pytest

from conelib.tools import cli, lab


def test_lab_passes_every_argument_to_jupyterlab(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "run_lab", lambda extra: seen.setdefault("extra", list(extra)) and 0)
    assert cli.main(["lab", "--port", "8899", "--no-browser"]) == 0
    assert seen["extra"] == ["--port", "8899", "--no-browser"]
    seen.clear()
    assert cli.main(["lab", "--", "--ServerApp.token=x"]) == 0
    assert seen["extra"] == ["--", "--ServerApp.token=x"]


def test_lab_command_adds_allow_root_only_for_root():
    as_root = lab.lab_command(["--port", "8899"], is_root=True)
    assert as_root[:4] == [sys.executable, "-m", "jupyter", "lab"] and as_root[-3:] == ["--port", "8899", "--allow-root"]
    assert "--allow-root" not in lab.lab_command(["--port", "8899"], is_root=False)
    assert lab.lab_command(["--", "--allow-root"], is_root=True).count("--allow-root") == 1  # a leading -- is dropped


def test_params_lists_every_parameter_with_its_type(capsys):
    assert cli.main(["params", "kernel_dynamics"]) == 0
    out = capsys.readouterr().out
    for name in ("lr", "snapshot_every", "probe_size", "results_root"):
        assert f"  {name}:" in out


def test_unknown_subcommand_and_notebook_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])
    assert cli.main(["run", "figure9"]) == 2
    assert "figure9" in capsys.readouterr().err


def test_manifest_check_fails_on_a_folder_whose_manifest_is_missing(tmp_path, capsys):
    (tmp_path / "kernel_dynamics").mkdir()
    assert cli.main(["manifest", str(tmp_path), "--check"]) == 1
    assert "MANIFEST.json" in capsys.readouterr().err
    assert cli.main(["manifest", str(tmp_path)]) == 0
    assert cli.main(["manifest", str(tmp_path), "--check"]) == 0
