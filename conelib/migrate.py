"""Re-key stored results written before the identity rule of :mod:`conelib.config`.

Up to conelib 0.1.0 a result's name was the hash of *every* field of its configuration; now it is
the hash of the fields that are not at their default (open_lth's rule), so that adding a
parameter keeps every stored name. :func:`migrate_results` reads each result's stored
configuration (``config_json``), rebuilds the configuration with today's classes, and rewrites
the file under its new name with the new ``config_json`` / ``config_hash`` and a content
checksum. Values are not touched. Files already under their right name are left alone.

    conelib migrate-results            # the repository's results/
    conelib migrate-results /shared/results --dry-run
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from conelib.results import _config_json, config_hash, load_result, resolve_root, save_result

__all__ = ["migrate_results", "Migration"]


@dataclass(frozen=True)
class Migration:
    """One file: its old and new path (equal when nothing changed) and why it was skipped, if so."""

    old: Path
    new: Path
    skipped: str = ""


def _kd_identity(d: dict[str, Any]) -> dict[str, Any]:
    from conelib.experiments.kernel_dynamics import KernelDynamicsConfig

    names = KernelDynamicsConfig.parameters()
    return KernelDynamicsConfig.from_mapping({k: v for k, v in d.items() if k in names}).identity()


def _sw_identity(d: dict[str, Any]) -> dict[str, Any]:
    from conelib.experiments.switching import SwitchingConfig

    names = SwitchingConfig.parameters()
    return SwitchingConfig.from_mapping({k: v for k, v in d.items() if k in names}).identity()


def _sweep_identity(ds: xr.Dataset) -> dict[str, Any]:
    from conelib.sweep import Grid

    grid = json.loads(ds.attrs["grid_json"])
    return Grid.from_mapping({"base": grid["base"], "grid": grid["grid"]}).identity()


def _rekey_sweep_points(ds: xr.Dataset, identity: dict[str, Any]) -> None:
    """A sweep summary names each grid point's run by its hash: re-key those too."""
    import numpy as np

    from conelib.sweep import Grid, expand_grid

    grid = json.loads(ds.attrs["grid_json"])
    g = Grid.from_mapping({"base": grid["base"], "grid": grid["grid"]})
    hashes = [config_hash(p.config.identity()) for p in expand_grid(g)]
    if "config_hash" in ds:
        ds["config_hash"] = (ds["config_hash"].dims, np.asarray(hashes, dtype=object).reshape(ds["config_hash"].shape),
                             ds["config_hash"].attrs)
    ds.attrs["grid_json"] = json.dumps(identity)


_REKEY: dict[str, Callable[[xr.Dataset], dict[str, Any]]] = {
    "kernel_dynamics": lambda ds: _kd_identity(json.loads(ds.attrs["config_json"])),
    "switching": lambda ds: _sw_identity(json.loads(ds.attrs["config_json"])),
    "sweeps": _sweep_identity,
}


def migrate_results(root: str | os.PathLike | None = None, *, dry_run: bool = False) -> list[Migration]:
    """Re-key every stored result under ``root`` (see the module docstring).

    Returns:
        What was (or, with ``dry_run``, would be) done, file by file.
    """
    root = resolve_root(root)
    done: list[Migration] = []
    for experiment, identity_of in _REKEY.items():
        for path in sorted((root / experiment).glob("*.nc")):
            if path.name.endswith(".kernels.nc"):
                continue
            try:
                ds = load_result(path, verify=False)
                identity = identity_of(ds)
            except (OSError, ValueError, KeyError) as err:
                done.append(Migration(path, path, f"{type(err).__name__}: {err}"))
                continue
            new = path.with_name(f"{config_hash(identity)}.nc")
            same = new == path and ds.attrs.get("config_json") == _config_json(identity) and "content_sha256" in ds.attrs
            if same:
                continue
            done.append(Migration(path, new))
            if dry_run:
                continue
            ds.attrs.update({"config_json": _config_json(identity), "config_hash": config_hash(identity),
                             "migrated_from": path.stem})
            if experiment == "sweeps":
                _rekey_sweep_points(ds, identity)
            save_result(ds, new)
            if new != path:
                path.unlink()
    return done
