"""Named parameter sets ("profiles") for the experiments, shipped with the package.

A profile is a YAML file in this folder (package data, so a plain ``pip install`` has them)
with one mapping per experiment notebook, whose keys are parameter names
(:mod:`conelib.config`), e.g. ``conelib/profiles/mnist.yaml``::

    training:                # shared by every experiment of the profile (the training recipe)
      steps: 10000
      lr: 0.1
    kernel_dynamics:         # the experiment's own parameters (they override the shared ones)
      snapshot_every: 50
    switching:
      ...

* ``mnist``: the paper's time scale on full MNIST (T = 10^4, the open_lth MNIST recipe); CPU,
  minutes per run. The book's default.
* ``quick``: small and fast (tests and exploration).
* ``paper``: ResNet-20 on CIFAR-10 at T = 10^4; needs a GPU and your copy of CIFAR-10.

``$CONELIB_PROFILES`` names an extra folder searched first; a path to a ``.yaml`` file works
wherever a profile name does. The same code runs every profile: a profile only sets parameters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conelib.config import ParameterError
from conelib.paths import profiles_dirs
from conelib.yamlio import load_file

__all__ = ["SHARED", "available_profiles", "profile_path", "load_profile", "merge"]

#: the section whose parameters every experiment of a profile shares (its own section overrides them)
SHARED = "training"


def available_profiles() -> list[str]:
    """Names of the profiles found (see :func:`conelib.paths.profiles_dirs`)."""
    return sorted({p.stem for d in profiles_dirs() for p in d.glob("*.yaml")})


def profile_path(profile: str | os.PathLike) -> Path:
    """The YAML file of a profile given by name (``"mnist"``) or by path."""
    p = Path(profile).expanduser()
    if p.suffix in (".yaml", ".yml"):
        if p.is_file():
            return p
        raise ParameterError("profile", f"parameter 'profile': no file {str(p)!r}")
    for d in profiles_dirs():
        cand = d / f"{profile}.yaml"
        if cand.is_file():
            return cand
    raise ParameterError("profile", f"parameter 'profile' = {str(profile)!r} is not a profile; available: "
                         f"{available_profiles()} (or give the path of a .yaml file)")


def load_profile(profile: str | os.PathLike, experiment: str) -> dict[str, Any]:
    """The parameters of ``experiment`` in ``profile`` (a mapping of parameter names to values)."""
    path = profile_path(profile)
    data = load_file(path) or {}
    if not isinstance(data, Mapping):
        raise ParameterError("profile", f"profile {path} must be a mapping of experiment names to parameters")
    if experiment not in data:
        raise ParameterError("profile", f"profile {str(profile)!r} ({path}) has no section {experiment!r}; "
                             f"it has {sorted(k for k in data if k != SHARED)}")
    out: dict[str, Any] = {}
    for name in (SHARED, experiment):
        section = data.get(name) or {}
        if not isinstance(section, Mapping):
            raise ParameterError("profile", f"section {name!r} of profile {path} must be a mapping of parameters")
        out.update(section)
    return out


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with the overrides that are not ``None`` (``None``: "the profile's value")."""
    out = dict(base)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out
