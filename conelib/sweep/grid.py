"""Sweep grids: a base configuration of the kernel-dynamics experiment and the values of the swept
parameters, read from YAML and expanded into runs (see :mod:`conelib.sweep` for the file format).

The grid hash (:meth:`Grid.identity`) covers the resolved base configuration, the axes and the
blocks, not the profile's name or the file's path.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from conelib.config import ParameterError, absolute_path, absolute_paths, coerce, unknown_names_error
from conelib.experiments.kernel_dynamics import EXPERIMENT, KernelDynamicsConfig
from conelib.profiles import load_profile, merge, profile_path
from conelib.results import config_hash, resolve_root, result_path, result_status
from conelib.yamlio import load_file

__all__ = ["GRID_KEYS", "SUMMARY_EXPERIMENT", "EXPERIMENT", "Grid", "GridPoint", "expand_grid", "failure_path",
           "grid_results_root", "load_grid", "pending"]

#: top-level keys of a grid file
GRID_KEYS: tuple[str, ...] = ("base", "grid", "blocks", "results_root")
#: summaries are stored as ``<results_root>/<SUMMARY_EXPERIMENT>/<grid hash>.nc``
SUMMARY_EXPERIMENT = "sweeps"


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


def _axes(raw: Any, where: str) -> dict[str, tuple[Any, ...]]:
    """Validated axes: parameter -> its values, coerced like any parameter."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping: parameter -> list of values")
    params = KernelDynamicsConfig.parameters()
    unknown = [n for n in raw if n not in params]
    if unknown:
        raise unknown_names_error(unknown, params, where)
    axes: dict[str, tuple[Any, ...]] = {}
    for name, values in raw.items():
        if params[name].runtime:
            raise ParameterError(name, f"grid parameter {name!r} says where/how to run, not what is computed "
                                 f"(a runtime parameter): set it under 'base', do not sweep it")
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ParameterError(name, f"grid parameter {name!r} must list at least one value, got {values!r}")
        vals = tuple(coerce(params[name], v) for v in values)
        if len(set(map(repr, vals))) != len(vals):
            raise ParameterError(name, f"grid parameter {name!r} lists a value twice: {list(values)}")
        axes[name] = vals
    return axes


@dataclass(frozen=True)
class Grid:
    """A sweep: a base :class:`KernelDynamicsConfig`, and the values of the swept parameters.

    The runs are the union over ``blocks`` of each block's cartesian product, each crossed with the
    cartesian product of ``axes`` (e.g. the seeds); without blocks, just the product of ``axes``.
    A configuration reached by several blocks (typically the base setting) is one run.

    Attributes:
        base: every parameter of the base configuration by name (a profile, if one was named,
            already merged).
        axes: swept parameter -> its values, crossed with every block.
        blocks: each a mapping swept parameter -> values (an "atlas" of factor pairs).
        results_root: where results are stored (``None``: :func:`conelib.results.default_results_root`).
        source: the grid file, if it came from one.
    """

    base: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    blocks: tuple[Mapping[str, tuple[Any, ...]], ...] = ()
    results_root: str | None = None
    source: str | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, source: str | None = None) -> Grid:
        """Build and validate a grid from the mapping a grid file holds (see the module docstring)."""
        where = f"the grid {source}" if source else "the grid"
        if not isinstance(mapping, Mapping):
            raise ValueError(f"a grid must be a mapping with keys {list(GRID_KEYS)}, got {type(mapping).__name__}")
        unknown = sorted(set(mapping) - set(GRID_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {list(GRID_KEYS)}")
        base = mapping.get("base") or {}
        if not isinstance(base, Mapping):
            raise ValueError(f"key 'base' of {where} must be a mapping of parameters (and optionally 'profile')")
        # a relative path written in a grid file is taken from the grid file's folder (as results_root)
        folder = Path(source).resolve().parent if source is not None else None
        base = absolute_paths(dict(base), KernelDynamicsConfig.parameters(), folder)
        profile = base.pop("profile", None)
        if profile is not None:
            if str(profile).endswith((".yaml", ".yml")):
                profile = absolute_path(profile, folder)
            section = absolute_paths(load_profile(profile, EXPERIMENT), KernelDynamicsConfig.parameters(),
                                     profile_path(profile).parent)
            base = merge(section, base)
            for key in ("models", "seeds"):  # a profile's lists of runs: a grid sweeps model/seed itself
                base.pop(key, None)
        base_cfg = KernelDynamicsConfig.from_mapping(base, where=f"'base' of {where}")
        raw_axes = mapping.get("grid") or {}
        raw_blocks = mapping.get("blocks") or []
        if not raw_axes and not raw_blocks:
            raise ValueError(f"key 'grid' of {where} must be a non-empty mapping: parameter -> list of values "
                             "(or give 'blocks')")
        axes = _axes(raw_axes, f"'grid' of {where}")
        if not isinstance(raw_blocks, (list, tuple)):
            raise ValueError(f"key 'blocks' of {where} must be a list of mappings: parameter -> list of values")
        blocks = tuple(_axes(b, f"block {i} of {where}") for i, b in enumerate(raw_blocks))
        for i, b in enumerate(blocks):
            both = sorted(set(b) & set(axes))
            if both or not b:
                raise ValueError(f"block {i} of {where} must be non-empty and sweep none of the 'grid' parameters "
                                 f"{list(axes)}; it has {sorted(b)}")
        root = mapping.get("results_root")
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise ValueError(f"key 'results_root' of {where} must be a path or null, got {root!r}")
        if root is not None and source is not None and not Path(root).expanduser().is_absolute():
            root = Path(source).resolve().parent / root  # relative to the grid file
        grid = cls(base_cfg.flat(), axes, blocks, None if root is None else str(root), source)
        expand_grid(grid)  # every point must be a valid configuration
        return grid

    @property
    def swept(self) -> list[str]:
        """Every swept parameter: the blocks' (in order of appearance), then the axes'."""
        names: list[str] = []
        for b in self.blocks:
            names += [n for n in b if n not in names]
        return names + [n for n in self.axes if n not in names]

    @property
    def size(self) -> int:
        return len(expand_grid(self))

    def block_label(self, i: int) -> str:
        return " × ".join(self.blocks[i]) if self.blocks else " × ".join(self.axes)

    def identity(self) -> dict[str, Any]:
        """What the grid computes: the base configuration's identity (swept parameters left out),
        the axes and the blocks."""
        base = KernelDynamicsConfig.from_mapping(self.base).identity()
        for name in self.swept:
            base.pop(name, None)
        out: dict[str, Any] = {"base": base, "grid": {k: list(v) for k, v in self.axes.items()}}
        if self.blocks:
            out["blocks"] = [{k: list(v) for k, v in b.items()} for b in self.blocks]
        return out

    @property
    def hash(self) -> str:
        return config_hash(self.identity())


def load_grid(path: str | os.PathLike) -> Grid:
    """Read a grid file (YAML; see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"grid file not found: {p}")
    mapping = load_file(p)
    return Grid.from_mapping(mapping if mapping is not None else {}, source=str(p))


class GridPoint(NamedTuple):
    """One run of a sweep: its swept values (``coords``; the base value where a block does not vary
    a parameter), the blocks it belongs to, and its full configuration."""

    coords: dict[str, Any]
    config: KernelDynamicsConfig
    blocks: tuple[int, ...] = (0,)


def expand_grid(grid: Grid) -> list[GridPoint]:
    """Every run of the grid, in order of first appearance (blocks in order, each row-major).

    Raises:
        ParameterError: naming the grid point whose configuration is invalid.
    """
    blocks = grid.blocks or ({},)
    names = grid.swept
    seen: dict[str, int] = {}
    points: list[GridPoint] = []
    for b, block in enumerate(blocks):
        dims = {**block, **grid.axes}
        for combo in itertools.product(*dims.values()):
            values = dict(zip(dims, combo))
            try:
                cfg = KernelDynamicsConfig.from_mapping({**grid.base, **values})
            except ParameterError as err:
                raise ParameterError(err.name, f"grid point {values} is not a valid configuration: {err}") from None
            h = config_hash(cfg.identity())
            if h in seen:
                i = seen[h]
                points[i] = points[i]._replace(blocks=(*points[i].blocks, b))
                continue
            coords = {n: getattr(cfg, n) for n in names}
            seen[h] = len(points)
            points.append(GridPoint(coords, cfg, (b,)))
    return points


def grid_results_root(grid: Grid, results_root: str | os.PathLike | None = None) -> Path:
    """Where a grid's runs are stored: ``results_root`` if given, else the grid's own, else the default root."""
    return resolve_root(results_root if results_root is not None else grid.results_root)


def pending(grid: Grid, results_root: str | os.PathLike | None = None) -> list[GridPoint]:
    """The grid points whose result is not stored yet (what a sweep would submit)."""
    root = grid_results_root(grid, results_root)
    return [p for p in expand_grid(grid) if result_status(result_path(EXPERIMENT, p.config.identity(), root)) != "ok"]


def failure_path(config: KernelDynamicsConfig, root: str | os.PathLike | None) -> Path:
    """``<root>/kernel_dynamics/<hash>.failed.json``: the record of a run whose last sweep job failed."""
    p = result_path(EXPERIMENT, config.identity(), root)
    return p.with_name(p.stem + ".failed.json")


