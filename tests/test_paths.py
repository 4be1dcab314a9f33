"""`conelib.paths`: the one module that knows where things are."""

from __future__ import annotations

from pathlib import Path

from conelib import paths

ROOT = Path(__file__).resolve().parent.parent


def test_the_checkout_and_its_folders():
    assert paths.repo_root() == ROOT
    assert paths.notebooks_dir() == ROOT / "notebooks"
    assert paths.generated_dir() == ROOT / paths.GENERATED == ROOT / "book" / "generated"
    assert paths.sweeps_dir() == ROOT / "sweeps"


def test_results_root_from_the_environment_the_checkout_or_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.RESULTS_ENV, raising=False)
    assert paths.default_results_root() == ROOT / "results"
    monkeypatch.setenv(paths.RESULTS_ENV, str(tmp_path / "r"))
    assert paths.default_results_root() == tmp_path / "r"
    monkeypatch.chdir(tmp_path)
    assert paths.resolve_results_root("rel") == tmp_path / "rel"  # relative: from the caller's folder
    assert paths.resolve_results_root(None) == tmp_path / "r"


def test_cache_and_data_folders_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    assert paths.cache_dir() == tmp_path / "cache" / "conelib"
    assert paths.data_dir() == tmp_path / "cache" / "conelib" / "data"
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "d"))
    assert paths.data_dir() == tmp_path / "d"


def test_profiles_folder_from_the_environment_comes_first(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.PROFILES_ENV, str(tmp_path))
    dirs = paths.profiles_dirs()
    assert dirs[0] == tmp_path and any((d / "mnist.yaml").is_file() for d in dirs)
