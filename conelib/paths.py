"""Where things are: the one module that knows the repository's and the caches' paths.

conelib runs in two ways: from a source checkout (``pip install -e .``, or a notebook opened in
``notebooks/``), where the experiment notebooks, grid files, book and committed results live
beside the package; or from a plain (non-editable) install, where only the package and its data
(the profiles) are present. :func:`repo_root` tells which: it is the checkout's root, or ``None``.

Environment variables: ``CONELIB_RESULTS`` (the results root), ``CONELIB_DATA`` (datasets),
``XDG_CACHE_HOME`` (the cache, default ``~/.cache/conelib``), ``CONELIB_PROFILES`` (an extra folder
of profiles).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path, PurePosixPath

__all__ = [
    "PACKAGE_DIR",
    "repo_root",
    "require_repo",
    "cache_dir",
    "data_dir",
    "default_results_root",
    "resolve_results_root",
    "notebooks_dir",
    "generated_dir",
    "sweeps_dir",
    "profiles_dirs",
]

#: the installed ``conelib`` package
PACKAGE_DIR = Path(__file__).resolve().parent
#: environment variables
RESULTS_ENV, DATA_ENV, PROFILES_ENV = "CONELIB_RESULTS", "CONELIB_DATA", "CONELIB_PROFILES"


@functools.cache
def repo_root() -> Path | None:
    """The source checkout holding this package (``None`` for a plain install).

    A checkout is recognised by ``pyproject.toml`` naming the project ``conelib`` and a
    ``notebooks/`` folder beside the package.
    """
    root = PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    try:
        named = 'name = "conelib"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if named and (root / "notebooks").is_dir() else None


def require_repo(what: str) -> Path:
    """:func:`repo_root`, or a clear error saying that ``what`` needs a source checkout."""
    root = repo_root()
    if root is None:
        raise FileNotFoundError(
            f"{what} needs the project's source checkout (its notebooks/, sweeps/ and book/ folders); this "
            f"conelib is installed without one ({PACKAGE_DIR}). Clone the repository and `pip install -e .` there."
        )
    return root


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/conelib`` or ``~/.cache/conelib``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "conelib"


def data_dir() -> Path:
    """Datasets: ``$CONELIB_DATA`` or ``<cache>/data``."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else cache_dir() / "data"


def default_results_root() -> Path:
    """``$CONELIB_RESULTS``; else the checkout's ``results/`` (so notebooks opened from
    ``notebooks/`` find the committed results); else ``./results``."""
    env = os.environ.get(RESULTS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    root = repo_root()
    if root is not None:
        return root / "results"
    return Path.cwd() / "results"


def resolve_results_root(root: str | os.PathLike | None) -> Path:
    """``None`` -> :func:`default_results_root`; any path -> itself, a relative one taken from the
    current working directory (as every other path on a command line)."""
    if root is None:
        return default_results_root()
    return Path(root).expanduser().absolute()


def notebooks_dir() -> Path:
    """The experiment notebooks' sources (``notebooks/`` of the checkout)."""
    return require_repo("running a notebook") / "notebooks"


#: the book's executed notebooks, relative to the checkout (as ``_toc.yml`` names them)
GENERATED = PurePosixPath("book/generated")


def generated_dir() -> Path:
    """Where the book's executed notebooks go (:data:`GENERATED` of the checkout)."""
    return require_repo("building the book") / GENERATED


def sweeps_dir() -> Path:
    """The grid files of the sweeps (``sweeps/`` of the checkout)."""
    return require_repo("a sweep's grid file") / "sweeps"


def profiles_dirs() -> list[Path]:
    """Folders searched for profiles: ``$CONELIB_PROFILES`` (if set), then the package's own."""
    dirs = []
    env = os.environ.get(PROFILES_ENV, "").strip()
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(PACKAGE_DIR / "profiles")
    return [d for d in dirs if d.is_dir()]
