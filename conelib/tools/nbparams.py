"""The parameters of the experiment notebooks: one name for each, checked before anything runs.

Each notebook (``notebooks/<name>.md``) has a cell tagged ``parameters``. Its first cell after
that one calls :func:`resolve`, which collects every name assigned in the parameters cell and
in papermill's injected cell (or by a user who added a line to the parameters cell in
JupyterLab), and builds the configurations from them. A notebook's parameters are

* every parameter of its experiment's configuration (:mod:`conelib.config`: ``lr``,
  ``weight_decay``, ``steps``, ...; ``conelib params kernel_dynamics`` lists them), and
* the notebook's own options (:class:`ChapterOptions`: ``profile``, ``models``, ``seeds``,
  ``results_root``, ``recompute``).

``None`` means "the profile's value". An unknown or mistyped name, or a value of the wrong type,
raises :class:`conelib.config.ParameterError` naming the parameter and listing the valid ones,
so the notebook stops before anything is trained or written -- through papermill as well as
through ``conelib run`` (which calls :func:`check` before it starts papermill at all).
"""

from __future__ import annotations

import ast
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conelib.analysis.atlas import grid_path
from conelib.config import Config, ParameterError, absolute_path, param, unknown_names_error
from conelib.config import absolute_paths as absolute
from conelib.experiments import KernelDynamicsConfig, SpawningConfig, SwitchingConfig
from conelib.experiments.common import preflight as run_preflight
from conelib.experiments.common import profile_runs
from conelib.models import MODELS
from conelib.results import result_path, result_status
from conelib.sweep import load_grid, pending

__all__ = ["NOTEBOOKS", "SPECS", "AtlasOptions", "ChapterOptions", "ConeOptions", "SweepChapterOptions", "MeasuresOptions", "Resolved", "resolve", "check", "preflight",
           "absolute_paths", "notebook_parameters", "MARKER"]

#: the first line of every notebook's parameters cell (how :func:`resolve` finds it in the history)
MARKER = "# Parameters of this notebook"


@dataclass(frozen=True, init=False)
class ProfileOption(Config):
    """A notebook that reads a profile's runs."""

    LABEL = "the notebook"

    profile: str = param("mnist", "parameter set: conelib/profiles/<profile>.yaml (mnist, quick, paper) or a path")


@dataclass(frozen=True, init=False)
class ChapterOptions(ProfileOption):
    """What every experiment notebook takes besides its experiment's parameters."""

    LABEL = "the notebook"

    models: tuple[str, ...] = param((), "the models to run and show, one run each; empty: the profile's list "
                                    "(setting model runs that one)", check=lambda v: all(m in MODELS for m in v),
                                    allowed=f"a list of {list(MODELS)}")
    seeds: tuple[int, ...] = param((), "the seeds to run; empty: the profile's list (setting seed runs that one)",
                                   unique=True, check=lambda v: all(s >= 0 for s in v),
                                   allowed="a list of integers >= 0")
    results_root: str | None = param(None, "where results are stored; None: the repository's results/", runtime=True,
                                     is_path=True)
    recompute: bool = param(False, "train again even when a result for the configuration is stored", runtime=True)


@dataclass(frozen=True, init=False)
class SweepChapterOptions(Config):
    """The parameters of a chapter drawn from sweep summaries (the atlas, the controls)."""

    LABEL = "the notebook"

    results_root: str | None = param(None, "where the runs and their summaries are stored; None: the repository's "
                                     "results/", runtime=True, is_path=True)
    compute: bool = param(False, "run the grid points that are not stored (conelib sweep does the same); False: "
                                 "only read what is stored", runtime=True)
    workers: int = param(2, "Dask workers when computing", check=lambda v: v >= 1, allowed="an integer >= 1",
                         runtime=True)


@dataclass(frozen=True, init=False)
class AtlasOptions(SweepChapterOptions):
    """The parameters of the atlas chapter ("When does the cone appear?")."""

    LABEL = "the atlas notebook"

    grid: str = param("atlas", "the sweep's grid: a name in sweeps/ (atlas) or the path of a grid file")


@dataclass(frozen=True)
class NotebookSpec:
    """A notebook: the profile section it reads, the configuration class of its runs, its options."""

    name: str
    section: str
    config: type[Config] | None
    options: type[Config] = ChapterOptions


@dataclass(frozen=True, init=False)
class MeasuresOptions(Config):
    """The parameters of the "Measuring the phases" chapter (its validation panel is a stored result)."""

    LABEL = "the measures notebook"

    results_root: str | None = param(None, "where the validation panel is stored; None: the repository's results/",
                                     runtime=True, is_path=True)
    recompute: bool = param(False, "compute the validation panel again even when it is stored", runtime=True)


@dataclass(frozen=True, init=False)
class ConeOptions(SweepChapterOptions, ProfileOption):
    """The parameters of the chapter "Is it a cone?" (the controls: ``sweeps/controls.yaml``,
    ``sweeps/long.yaml``, and the atlas; the profile's stored switching runs for Figure 2's
    confounds)."""

    LABEL = "the cone notebook"


#: the notebooks, in the order the book tells them: name -> what it reads
SPECS: dict[str, NotebookSpec] = {
    "kernel_dynamics": NotebookSpec("kernel_dynamics", "kernel_dynamics", KernelDynamicsConfig),
    "measures": NotebookSpec("measures", "measures", None, MeasuresOptions),
    "switching": NotebookSpec("switching", "switching", SwitchingConfig),
    "atlas": NotebookSpec("atlas", "atlas", None, AtlasOptions),
    "cone": NotebookSpec("cone", "cone", None, ConeOptions),
    "spawning": NotebookSpec("spawning", "spawning", SpawningConfig),
}
#: the notebooks' names, in the book's order
NOTEBOOKS: tuple[str, ...] = tuple(SPECS)


def notebook_parameters(name: str) -> dict[str, Any]:
    """Every parameter of notebook ``name``: name -> :class:`conelib.config.Param`."""
    spec = _spec(name)
    out = dict(spec.options.parameters())
    if spec.config is not None:
        own = spec.config.parameters()
        out = {k: v for k, v in out.items() if not (k == "seeds" and "seeds" in own)}
        out.update(own)
    return out


def _spec(name: str) -> NotebookSpec:
    specs = SPECS
    if name not in specs:
        raise ParameterError("notebook", f"unknown notebook {name!r}; the notebooks are {list(specs)}")
    return specs[name]


@dataclass(frozen=True, repr=False)
class Resolved:
    """What :func:`resolve` found: the options, the runs' configurations, and each parameter's source.

    Its text (``print``) and HTML (a notebook cell) are a table of every parameter that is not at
    its default, with where its value came from.
    """

    notebook: str
    options: Config
    configs: tuple[Config, ...]
    given: Mapping[str, Any]

    @property
    def config(self) -> Config:
        """The first run's configuration."""
        return self.configs[0]

    def rows(self) -> list[tuple[str, str, str]]:
        if not self.configs:
            params = self.options.parameters()
            return [(k, repr(v), "given" if k in self.given else "default") for k, v in self.options.flat().items()
                    if k in self.given or v != params[k].default]
        flat = self.configs[0].flat()
        params = self.configs[0].parameters()
        rows = []
        for k, v in flat.items():
            src = "given" if k in self.given else ("profile" if v != params[k].default else "default")
            if src != "default":
                rows.append((k, repr(v), src))
        for k in ("models", "seeds"):
            vals = sorted({getattr(c, k[:-1]) for c in self.configs}, key=str)
            if len(vals) > 1:
                rows.append((k, repr(vals), "given" if k in self.given else "profile"))
        return rows

    def __str__(self) -> str:
        profile = getattr(self.options, "profile", None)
        head = (f"{self.notebook}: " + (f"profile {profile!r}, {len(self.configs)} run(s); " if profile else "")
                + "parameters not at their default:")
        return "\n".join([head, *(f"  {k} = {v}  ({src})" for k, v, src in self.rows())])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        body = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(v)}</code></td>"
                       f"<td>{src}</td></tr>" for k, v, src in self.rows())
        profile = getattr(self.options, "profile", None)
        what = f"profile <code>{html.escape(profile)}</code>, {len(self.configs)} run(s). " if profile else ""
        return (f"<p>{html.escape(self.notebook)}: {what}Parameters not at their default:</p>"
                f"<table><tr><th>parameter</th><th>value</th><th>from</th></tr>{body}</table>")


#: parameters that name a file or a name (a profile, a grid): a value ending in one of these is a file
_FILE_OR_NAME = {"profile": (".yaml", ".yml"), "grid": (".yaml", ".yml")}


def absolute_paths(name: str, given: Mapping[str, Any], base: str | os.PathLike | None = None) -> dict[str, Any]:
    """``given`` with its relative paths made absolute against ``base`` (default: the current
    working directory): ``results_root``, ``data_root``, and a ``profile`` or ``grid`` given as
    a ``.yaml`` file. :func:`check` does it first, :func:`conelib.tools.nbrun.run_notebook` passes the
    result to papermill, so a relative path means the folder it was typed in, not ``notebooks/``
    where the notebook's kernel runs."""

    out = absolute(given, notebook_parameters(name), base)
    for key, suffixes in _FILE_OR_NAME.items():
        value = out.get(key)
        if isinstance(value, (str, os.PathLike)) and str(value).endswith(suffixes):
            out[key] = absolute_path(value, base)
    return out


def check(name: str, given: Mapping[str, Any]) -> Resolved:
    """Validate ``given`` parameters of notebook ``name`` and build its runs' configurations.

    Relative paths are made absolute against the current working directory first
    (:func:`absolute_paths`).

    Raises:
        conelib.config.ParameterError: an unknown name (with the closest valid one and the list of
            all) or a bad value, naming the parameter.
    """

    spec = _spec(name)
    valid = notebook_parameters(name)
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise unknown_names_error(unknown, valid, f"notebook {name!r}")
    given = absolute_paths(name, {k: v for k, v in given.items() if v is not None})
    opt_names = set(spec.options.parameters())
    own = spec.config.parameters() if spec.config is not None else {}
    options = spec.options(**{k: v for k, v in given.items() if k in opt_names and k not in own})
    if spec.config is None:
        return Resolved(name, options, (), given)
    overrides = {k: v for k, v in given.items() if k in own}
    if options.models:
        overrides["models"] = list(options.models)
    if options.seeds and "seeds" not in own:
        overrides["seeds"] = list(options.seeds)
    configs = profile_runs(spec.config, options.profile, spec.section, **overrides)
    return Resolved(name, options, tuple(configs), given)


def preflight(resolved: Resolved) -> None:
    """The checks that need this machine, made before a notebook's kernel starts (by ``conelib
    run``) and again in the kernel (:func:`resolve`): every run whose result is not stored (or all,
    with ``recompute``; for the atlas chapter with ``compute``, every grid point not stored) has
    its device here and fits in memory (:func:`conelib.experiments.common.preflight`).

    Raises:
        conelib.config.ParameterError: naming ``device`` or ``batch_size``.
    """

    opts = resolved.options
    if not resolved.configs:
        if getattr(opts, "compute", False):

            for point in pending(load_grid(grid_path(opts.grid)), opts.results_root):
                run_preflight(point.config)
        return
    section = _spec(resolved.notebook).section
    for cfg in resolved.configs:
        if opts.recompute or result_status(result_path(section, cfg.identity(), opts.results_root)) != "ok":
            run_preflight(cfg)


# --------------------------------------------------------------------------------------------
# reading the parameters out of a running notebook
# --------------------------------------------------------------------------------------------

_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _assigned_names(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name) and not n.id.startswith("_") and n.id not in names:
                    names.append(n.id)
    return names


def _names_from_history(namespace: Mapping[str, Any]) -> list[str] | None:
    """Names assigned since the last run of a parameters cell, from IPython's input history."""
    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 2:
        return None
    entries = history[:-1]  # the last entry is the cell running now
    start = None
    for i in range(len(entries) - 1, -1, -1):
        if str(entries[i]).lstrip().startswith(MARKER):
            start = i
            break
    if start is None:
        return None
    names: list[str] = []
    for code in entries[start:]:
        names += [n for n in _assigned_names(str(code)) if n not in names]
    return names


def _parameter_like(value: Any) -> bool:
    return not isinstance(value, (types.ModuleType, types.FunctionType, type, types.BuiltinFunctionType))


def resolve(name: str, namespace: Mapping[str, Any]) -> Resolved:
    """The notebook's parameters, read from its namespace (``globals()``), checked (:func:`check`).

    Which names are parameters: those assigned in the last executed parameters cell (its first
    line is :data:`MARKER`) and in every cell after it until now, i.e. papermill's injected cell;
    outside IPython, every public name of the namespace that is not a module, function or class.
    """
    names = _names_from_history(namespace)
    if names is None:
        names = [k for k, v in namespace.items()
                 if not k.startswith("_") and k not in _IPYTHON_NAMES and _parameter_like(v)]
    given = {k: namespace[k] for k in names if k in namespace}
    resolved = check(name, given)
    preflight(resolved)
    return resolved
