"""YAML reading for profiles, grids and ``-p`` values, with YAML 1.2's numbers.

PyYAML implements YAML 1.1, whose float pattern needs a dot: ``1e-3`` and ``5e-4`` are read as
*strings* there (and ``lr: 1e-3`` in a profile would be refused as "not a number"). The loader
here adds YAML 1.2's pattern for floats, so ``1e-3``, ``-2E+5`` and ``.5`` are numbers wherever
the project reads YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Loader", "safe_load", "load_file"]


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats such as ``1e-3``."""


_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader


def load_file(path: str | Path) -> Any:
    """The YAML document in ``path`` (see :func:`safe_load`)."""
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=Loader)  # noqa: S506
