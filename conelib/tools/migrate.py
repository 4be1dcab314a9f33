"""Bring stored results up to date with today's configuration classes: names and full configurations.

A result's file name is the hash of its *identity* (the parameters that differ from their
defaults: open_lth's rule, so adding a parameter keeps every stored name), and every result also
records its *full* configuration (``config_full_json``: every parameter, defaults included). Two
things can make a stored file disagree with today's code:

* **a default changed**: the full configuration it records now differs from its identity read
  with today's defaults. Its identity is recomputed from the full configuration (the parameters
  that now differ from the new defaults), so it moves to its new name, and a request for the new
  defaults no longer finds it (the loader refuses it until then: :class:`conelib.results.StaleResultError`);
* **an older file** without ``config_full_json``: the full configuration is reconstructed from its
  identity and today's defaults, and the file says so (``config_full_source``).
* **a parameter added since** the file was written: it is absent from its full configuration (the
  loader reads it at its default, with a warning); the full configuration is completed with it.

:func:`migrate_results` rewrites such files under their right name with a fresh checksum; values
are never touched. Files that are already right are left alone. Sweep summaries are re-keyed
through their grid (base, axes and blocks) and the hashes of their runs.

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

import numpy as np
import xarray as xr

from conelib.config import Config
from conelib.experiments.kernel_dynamics import KernelDynamicsConfig
from conelib.experiments.spawning import SpawningConfig
from conelib.experiments.switching import SwitchingConfig
from conelib.results import _config_json, _git_state, config_hash, load_result, resolve_root, save_result
from conelib.sweep import SUMMARY_EXPERIMENT, Grid, expand_grid

__all__ = ["migrate_results", "Migration", "CONFIGS"]

#: experiment folder -> the configuration class of its results
CONFIGS: dict[str, type[Config]] = {"kernel_dynamics": KernelDynamicsConfig, "switching": SwitchingConfig,
                                     "spawning": SpawningConfig}


@dataclass(frozen=True)
class Migration:
    """One file: its old and new path (equal when only its attributes changed), what was done, and
    why it was skipped, if so."""

    old: Path
    new: Path
    what: str = ""
    skipped: str = ""


def _run_attrs(ds: xr.Dataset, cls: type[Config]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(identity, full configuration, what changed) of a stored run under today's defaults."""
    cfg = cls.from_result(ds)
    identity, full = cfg.identity(), cfg.full()
    what = []
    if "config_full_json" not in ds.attrs:
        what.append("full configuration reconstructed from the identity and today's defaults")
    else:
        added = sorted(set(json.loads(json.dumps(full, default=str))) - set(json.loads(ds.attrs["config_full_json"])))
        if added:
            what.append(f"full configuration completed with the parameters added since, at their defaults: {added}")
    if ds.attrs.get("config_json") != _config_json(identity):
        what.append("identity recomputed (a default changed, or an older naming rule)")
    return identity, full, "; ".join(what)


def _summary_attrs(ds: xr.Dataset) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(identity, full, what changed) of a sweep summary: its grid's identity, blocks included."""
    g = json.loads(ds.attrs["grid_json"])
    grid = Grid.from_mapping({k: g[k] for k in ("base", "grid", "blocks") if k in g})
    identity = grid.identity()
    what = "" if ds.attrs.get("config_json") == _config_json(identity) and "config_full_json" in ds.attrs else \
        "grid identity recomputed"
    hashes = [config_hash(p.config.identity()) for p in expand_grid(grid)]
    if "config_hash" in ds and list(ds["config_hash"].values) != hashes:
        ds["config_hash"] = (ds["config_hash"].dims, np.asarray(hashes, dtype=object), ds["config_hash"].attrs)
        what = (what + "; " if what else "") + "run hashes recomputed"
    ds.attrs["grid_json"] = json.dumps(identity)
    return identity, identity, what


def _plan(experiment: str) -> Callable[[xr.Dataset], tuple[dict[str, Any], dict[str, Any], str]] | None:
    if experiment in CONFIGS:
        return lambda ds: _run_attrs(ds, CONFIGS[experiment])
    if experiment == SUMMARY_EXPERIMENT:
        return _summary_attrs
    return None


def migrate_results(root: str | os.PathLike | None = None, *, dry_run: bool = False) -> list[Migration]:
    """Bring every stored result under ``root`` up to date (see the module docstring).

    Returns:
        What was (or, with ``dry_run``, would be) done, file by file; files already right are not listed.
    """
    root = resolve_root(root)
    commit, dirty = _git_state()
    done: list[Migration] = []
    for experiment in (*CONFIGS, SUMMARY_EXPERIMENT):
        plan = _plan(experiment)
        for path in sorted((root / experiment).glob("*.nc")):
            if path.name.endswith(".kernels.nc"):
                continue
            try:
                ds = load_result(path, verify=False).load()
                identity, full, what = plan(ds)
            except (OSError, ValueError, KeyError) as err:
                done.append(Migration(path, path, skipped=f"{type(err).__name__}: {err}"))
                continue
            new = path.with_name(f"{config_hash(identity)}.nc")
            if new == path and not what and "content_sha256" in ds.attrs:
                continue
            done.append(Migration(path, new, what or "checksum added"))
            if dry_run:
                continue
            if "config_full_json" not in ds.attrs:
                ds.attrs["config_full_source"] = (f"reconstructed by conelib migrate-results from the identity and the "
                                                  f"defaults of commit {commit}{' (dirty)' if dirty else ''}")
            ds.attrs.update({"config_json": _config_json(identity), "config_full_json": _config_json(full),
                             "config_hash": config_hash(identity)})
            if new != path:
                ds.attrs["migrated_from"] = path.stem
            save_result(ds, new)
            if new != path:
                path.unlink()
    return done
