"""Tests of conelib.results: canonical hashing, atomic netCDF storage, load-or-compute caching."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conelib.results import (
    canonical_config,
    config_hash,
    default_results_root,
    load_or_compute,
    load_result,
    provenance_attrs,
    resolve_root,
    result_path,
    save_result,
    stored_results,
)

PROVENANCE_KEYS = {
    "config_json",
    "config_hash",
    "git_commit",
    "git_dirty",
    "conelib_version",
    "torch_version",
    "python_version",
    "numpy_version",
    "xarray_version",
    "device",
    "created", "torch_num_threads"}


def make_ds(scale: float = 1.0) -> xr.Dataset:
    ds = xr.Dataset(
        {
            "loss": (
                ("step",),
                scale * np.array([2.0, 1.5, 0.5]),
                {"units": "nats", "flag": False},
            ),
            "kernel": (("step", "sample"), scale * np.arange(6.0).reshape(3, 2)),
        },
        coords={"step": ("step", np.array([0, 10, 20]), {"long_name": "optimizer step"})},
    )
    ds.attrs = {
        "flag": True,
        "nothing": None,
        "cfg": {"b": 2, "a": [1, 2]},
        "lst": [1, 2],
        "name": "x",
        "num": 3.5,
    }
    return ds


# ------------------------------------------------------------------------------- hashing


def test_canonical_config_converts_types():
    @dataclasses.dataclass
    class Inner:
        lr: float
        milestones: tuple

    cfg = {
        "a": (1, 2),
        "b": np.float32(0.5),
        "c": np.int64(3),
        "d": Path("/x/y"),
        "e": Inner(0.1, (3, 4)),
        "f": np.array([1, 2]),
        "g": np.bool_(True),
    }
    out = canonical_config(cfg)
    assert out == {
        "a": [1, 2],
        "b": 0.5,
        "c": 3,
        "d": "/x/y",
        "e": {"lr": 0.1, "milestones": [3, 4]},
        "f": [1, 2],
        "g": True,
    }
    assert type(out["c"]) is int and type(out["b"]) is float and type(out["g"]) is bool
    json.dumps(out)


@pytest.mark.parametrize(
    "bad,key",
    [
        ({"a": {"b": object()}}, "a.b"),
        ({"s": {1, 2}}, "s"),
        ({"l": [1, {"z": 1j}]}, "l[1].z"),
        ({1: 2}, "1"),
    ],
)
def test_canonical_config_type_error_names_key(bad, key):
    with pytest.raises(
        TypeError, match=key.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
    ):
        canonical_config(bad)


def test_config_hash_oracle_and_invariances():
    cfg = {"model": "resnet20", "train": {"lr": 0.1, "milestones": [32, 48]}, "seed": 0}
    text = '{"model":"resnet20","seed":0,"train":{"lr":0.1,"milestones":[32,48]}}'
    assert config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()[:16]
    reordered = {
        "seed": np.int64(0),
        "train": {"milestones": (32, 48), "lr": np.float64(0.1)},
        "model": "resnet20",
    }
    assert config_hash(reordered) == config_hash(cfg)
    assert result_path("cone", reordered, "/r") == result_path("cone", cfg, "/r")
    for changed in (
        {**cfg, "seed": 1},
        {**cfg, "train": {"lr": 0.1, "milestones": [32, 49]}},
        {**cfg, "extra": None},
    ):
        assert config_hash(changed) != config_hash(cfg)
    # the hash is the first 16 hex digits of the SHA-256 of the canonical, key-sorted JSON
    canonical = json.dumps(canonical_config(cfg), sort_keys=True, separators=(",", ":"))
    assert config_hash(cfg) == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_config_hash_of_dataclass_equals_its_dict():
    from conelib.train import TrainConfig

    tc = TrainConfig(steps=5, milestones=(2,))
    assert config_hash({"train": tc}) == config_hash({"train": tc.to_dict()})


# ------------------------------------------------------------------------------- paths


def test_default_results_root(monkeypatch, tmp_path):
    from conelib import paths

    monkeypatch.setenv("CONELIB_RESULTS", str(tmp_path / "store"))
    assert default_results_root() == tmp_path / "store"
    monkeypatch.delenv("CONELIB_RESULTS")
    # inside a source checkout: its results/ folder, wherever the cwd is
    checkout = tmp_path / "checkout"
    monkeypatch.setattr(paths, "repo_root", lambda: checkout)
    monkeypatch.chdir(tmp_path)
    assert default_results_root() == checkout / "results"
    # an installed package (no checkout): ./results of the current directory
    monkeypatch.setattr(paths, "repo_root", lambda: None)
    assert default_results_root().resolve() == (tmp_path / "results").resolve()


def test_resolve_root_is_relative_to_the_working_directory_and_stored_results(monkeypatch, tmp_path):
    monkeypatch.setenv("CONELIB_RESULTS", str(tmp_path / "store"))
    assert resolve_root(None) == tmp_path / "store"
    monkeypatch.chdir(tmp_path)
    assert resolve_root("mine") == tmp_path / "mine"  # not inside the default root
    assert resolve_root(tmp_path / "elsewhere") == tmp_path / "elsewhere"
    assert stored_results("exp", root="mine") == []
    for i in range(2):
        ds = xr.Dataset({"v": ("x", np.arange(3.0) + i)})
        load_or_compute("exp", {"i": i}, lambda ds=ds: ds, root="mine")
    found = stored_results("exp", root="mine")
    assert sorted(float(d.v[0]) for d in found) == [0.0, 1.0]
    assert result_path("exp", {"i": 0}, root="mine").parent == tmp_path / "mine" / "exp"


def test_result_path_layout_and_bad_experiment(tmp_path):
    cfg = {"x": 1}
    assert result_path("cone", cfg, tmp_path) == tmp_path / "cone" / f"{config_hash(cfg)}.nc"
    for bad in ("", "../up", "a/b", ".hidden", 3):
        with pytest.raises(ValueError, match="experiment"):
            result_path(bad, cfg, tmp_path)


# ------------------------------------------------------------------------------- save / load


def test_round_trip_sanitises_attrs_on_a_copy(tmp_path):
    ds = make_ds()
    path = save_result(ds, tmp_path / "sub" / "r.nc")
    assert path == tmp_path / "sub" / "r.nc"
    back = load_result(path)
    xr.testing.assert_allclose(back, ds)  # values and coords; attrs compared below
    assert back.attrs["flag"] == 1 and back.attrs["nothing"] == "none"
    assert json.loads(back.attrs["cfg"]) == {"a": [1, 2], "b": 2}
    assert json.loads(back.attrs["lst"]) == [1, 2]
    assert back.attrs["name"] == "x" and back.attrs["num"] == 3.5
    assert back["loss"].attrs == {"units": "nats", "flag": 0}
    assert back["step"].attrs["long_name"] == "optimizer step"
    # the caller's Dataset is untouched
    assert (
        ds.attrs["flag"] is True
        and ds.attrs["nothing"] is None
        and ds["loss"].attrs["flag"] is False
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.nc"]


def test_unstorable_attr_raises_type_error(tmp_path):
    ds = make_ds()
    ds.attrs["when"] = object()
    with pytest.raises(TypeError, match="when"):
        save_result(ds, tmp_path / "r.nc")
    assert list(tmp_path.iterdir()) == []


def _half_write_then_fail(monkeypatch):
    def broken(self, path=None, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # half a file...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    _half_write_then_fail(monkeypatch)
    target = tmp_path / "r.nc"
    with pytest.raises(OSError, match="disk full"):
        save_result(make_ds(), target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no stray temporary file


def test_interrupted_overwrite_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "r.nc"
    save_result(make_ds(), target)
    good = target.read_bytes()
    _half_write_then_fail(monkeypatch)
    with pytest.raises(OSError):
        save_result(make_ds(scale=2.0), target)
    assert target.read_bytes() == good
    monkeypatch.undo()
    xr.testing.assert_allclose(load_result(target), make_ds())
    assert [p.name for p in tmp_path.iterdir()] == ["r.nc"]


def test_load_result_closes_file_so_it_can_be_overwritten(tmp_path):
    target = tmp_path / "r.nc"
    save_result(make_ds(), target)
    first = load_result(target)
    save_result(make_ds(scale=3.0), target)
    np.testing.assert_allclose(load_result(target)["loss"].values, 3.0 * first["loss"].values)
    np.testing.assert_allclose(first["loss"].values, make_ds()["loss"].values)  # still in memory
    with pytest.raises(FileNotFoundError, match="nope.nc"):
        load_result(tmp_path / "nope.nc")


# ------------------------------------------------------------------------------- provenance


def test_provenance_attrs():
    cfg = {"b": (1, 2), "a": "x"}
    attrs = provenance_attrs(cfg, device="cuda:0")
    assert set(attrs) == PROVENANCE_KEYS
    assert attrs["config_hash"] == config_hash(cfg)
    assert json.loads(attrs["config_json"]) == canonical_config(cfg)
    assert attrs["git_dirty"] in (0, 1) and type(attrs["git_dirty"]) is int
    assert isinstance(attrs["git_commit"], str) and attrs["git_commit"]
    assert attrs["device"] == "cuda:0"
    created = datetime.fromisoformat(attrs["created"])
    assert created.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 3600
    import torch

    import conelib

    assert attrs["conelib_version"] == conelib.__version__
    assert attrs["torch_version"] == torch.__version__
    assert attrs["numpy_version"] == np.__version__ and attrs["xarray_version"] == xr.__version__
    assert attrs["torch_num_threads"] == torch.get_num_threads()
    assert all(isinstance(v, (str, int)) for v in attrs.values())


# ------------------------------------------------------------------------------- load_or_compute


def test_load_or_compute_computes_once_then_loads(tmp_path, caplog):
    calls = []

    def compute():
        calls.append(1)
        return make_ds()

    cfg = {"lr": 0.1, "steps": (1, 2)}
    first = load_or_compute("exp", cfg, compute, root=tmp_path, device="cpu")
    assert len(calls) == 1
    path = result_path("exp", cfg, tmp_path)
    assert path.is_file()
    assert PROVENANCE_KEYS <= set(first.attrs) and first.attrs["experiment"] == "exp"
    assert first.attrs["config_hash"] == config_hash(cfg) and first.attrs["device"] == "cpu"

    with caplog.at_level(logging.INFO, logger="conelib.results"):
        second = load_or_compute("exp", {"steps": [1, 2], "lr": 0.1}, compute, root=tmp_path)
    assert len(calls) == 1
    assert f"loaded stored result {path}" in caplog.text
    xr.testing.assert_identical(first, second)

    load_or_compute("exp", cfg, compute, root=tmp_path, recompute=True)
    assert len(calls) == 2
    load_or_compute("exp", {**cfg, "lr": 0.2}, compute, root=tmp_path)
    assert len(calls) == 3
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == sorted(
        [path.name, f"{config_hash({**cfg, 'lr': 0.2})}.nc"]
    )


def test_load_or_compute_recomputes_corrupt_file(tmp_path):
    cfg = {"a": 1}
    path = result_path("exp", cfg, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a netcdf file")
    calls = []
    with pytest.warns(RuntimeWarning, match="could not be used"):
        ds = load_or_compute("exp", cfg, lambda: calls.append(1) or make_ds(), root=tmp_path)
    assert calls == [1]
    np.testing.assert_allclose(ds["loss"].values, make_ds()["loss"].values)
    xr.testing.assert_identical(load_result(path), ds)


def test_load_or_compute_rejects_non_dataset(tmp_path):
    with pytest.raises(TypeError, match="Dataset"):
        load_or_compute("exp", {"a": 1}, lambda: {"not": "a dataset"}, root=tmp_path)
    assert not result_path("exp", {"a": 1}, tmp_path).exists()


def test_load_or_compute_uses_env_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CONELIB_RESULTS", str(tmp_path))
    load_or_compute("exp", {"a": 2}, make_ds)
    assert result_path("exp", {"a": 2}, tmp_path).is_file()
