"""Result storage: one ``xarray.Dataset`` per run, keyed by a hash of its configuration.

A run's identity is the hash of its sorted, canonical configuration (as in open_lth, where a
run's directory name is a hash of its hyperparameters; experiments pass
:meth:`conelib.config.Config.identity`, which leaves out runtime fields and fields at their
default), so results never need hand-made names: ``<root>/<experiment>/<config_hash>.nc``.
Files are written atomically (temporary file in the same directory + ``os.replace``) so an
interrupted run never leaves a partial result behind, carry a content checksum that is verified
on every load (a value changed by accident -- a truncated copy, a bit flip, an edit with a netCDF
tool -- is detected, warned about and recomputed), and carry provenance
attributes (config, git commit, package versions, device, thread count, time) after ArviZ's
``make_attrs``.  netCDF attributes take no ``dict``, ``None`` or ``bool``: those are
sanitised on a copy when saving (``bool -> int``, ``None -> "none"``, ``dict/list -> JSON``).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import xarray as xr

from conelib import paths
from conelib.atomic import atomic_write, check_writable

__all__ = [
    "canonical_config",
    "config_hash",
    "default_results_root",
    "result_path",
    "provenance_attrs",
    "save_result",
    "load_result",
    "load_or_compute",
    "content_digest",
    "result_status",
    "stored_results",
    "CorruptResultError",
    "StaleResultError",
    "check_full_config",
    "stored_full_config",
]

logger = logging.getLogger(__name__)

#: Environment variable that overrides the results root.
RESULTS_ENV = paths.RESULTS_ENV

_EXPERIMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------
# Canonical configuration and its hash
# --------------------------------------------------------------------------------------------


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON types; ``TypeError`` naming ``where`` otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):  # numpy scalars -> Python scalars
        return _canonical(value.item(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, enum.Enum):
        return _canonical(value.value, where)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"config key {key!r} at {where or '<top>'} must be a str "
                    f"(JSON object keys are strings); got {type(key).__name__}"
                )
            out[key] = _canonical(item, f"{where}.{key}" if where else key)
        return out
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"config value at {where or '<top>'!s} is not JSON-able: {type(value).__name__} "
        f"{value!r}; allowed: None, bool, int, float, str, Path, enum, numpy scalar/array, "
        "list/tuple, mapping with str keys, dataclass"
    )


def canonical_config(config: Mapping[str, Any]) -> dict:
    """``config`` with plain JSON types only (recursively).

    Tuples and numpy arrays become lists, numpy scalars Python scalars, ``Path`` a string,
    enums their value, dataclasses (also nested) dicts of their fields.  Anything else raises
    ``TypeError`` naming the offending key (dotted path, e.g. ``train.milestones[1]``).

    Example:
        >>> canonical_config({"milestones": (2, 3), "lr": np.float32(0.5)})
        {'milestones': [2, 3], 'lr': 0.5}
    """
    if not isinstance(config, Mapping) and not (
        dataclasses.is_dataclass(config) and not isinstance(config, type)
    ):
        raise TypeError(f"config must be a mapping or a dataclass; got {type(config).__name__}")
    return _canonical(config, "")


def _config_json(config: Mapping[str, Any]) -> str:
    return json.dumps(canonical_config(config), sort_keys=True, separators=(",", ":"))


def config_hash(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of ``config``.

    The JSON is ``json.dumps(canonical_config(config), sort_keys=True, separators=(",", ":"))``.

    Insensitive to key order, tuple vs. list and numpy vs. Python scalars; any changed value
    changes the hash.  (``1`` and ``1.0`` are different values here.)
    """
    return hashlib.sha256(_config_json(config).encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def default_results_root() -> Path:
    """See :func:`conelib.paths.default_results_root`."""
    return paths.default_results_root()


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``None`` -> :func:`default_results_root`; a relative path is taken from the current working
    directory (:func:`conelib.paths.resolve_results_root`)."""
    return paths.resolve_results_root(root)


def stored_results(experiment: str, root: str | Path | None = None) -> list[xr.Dataset]:
    """Every readable, verified stored result of ``experiment`` under ``root``, oldest first.

    A file that cannot be read or fails its checksum is skipped with a warning (it counts as not
    stored; the run that made it can recompute it).
    """
    folder = resolve_root(root) / experiment
    found = []
    for p in sorted(folder.glob("*.nc")):
        if p.name.endswith(".kernels.nc"):
            continue
        try:
            found.append(load_result(p))
        except (OSError, ValueError) as err:
            warnings.warn(f"skipping stored result {p}: {err}", RuntimeWarning, stacklevel=2)
    return sorted(found, key=lambda ds: str(ds.attrs.get("created", "")))


def result_path(experiment: str, config: Mapping[str, Any], root: str | Path | None = None) -> Path:
    """``root / experiment / f"{config_hash(config)}.nc"`` (root: :func:`default_results_root`)."""
    if not isinstance(experiment, str) or not _EXPERIMENT_RE.match(experiment):
        raise ValueError(
            f"experiment must be a name of letters, digits, '_', '.' or '-' (not starting with "
            f"'.', '_' or '-'); got {experiment!r}"
        )
    root = resolve_root(root)
    return root / experiment / f"{config_hash(config)}.nc"


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _git_state() -> tuple[str, int]:
    """(commit of HEAD, 1 if the ``conelib`` source tree has uncommitted changes else 0).

    ``("unknown", ...)`` when the package is not in a git work tree or HEAD has no commit yet;
    ``git_dirty`` is 0 outside a work tree (an installed package is identified by its version).
    """
    src = Path(__file__).resolve().parent
    inside = _git(["rev-parse", "--is-inside-work-tree"], src)
    if inside != "true":
        return "unknown", 0
    commit = _git(["rev-parse", "HEAD"], src) or "unknown"
    status = _git(["status", "--porcelain", "--", "."], src)
    dirty = 1 if status is None or status != "" or commit == "unknown" else 0
    return commit, dirty


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return str(getattr(mod, "__version__", "unknown"))


class StaleResultError(ValueError):
    """A stored result's full configuration differs from the one asked for under the same identity
    (a default changed since it was computed)."""


def provenance_attrs(config: Mapping[str, Any], *, device: str | None = None,
                     full: Mapping[str, Any] | None = None) -> dict:
    """Provenance attributes for a result Dataset (after ArviZ's ``make_attrs``).

    Keys: ``config_json`` (canonical, sorted JSON of the identity: what the hash is taken over),
    ``config_full_json`` (every parameter, defaults included, when ``full`` is given: the file says
    what it is on its own), ``config_hash``, ``git_commit`` (``git
    rev-parse HEAD`` of the conelib source tree, ``"unknown"`` outside a repository),
    ``git_dirty`` (int 0/1), ``conelib_version``, ``torch_version``, ``python_version``,
    ``numpy_version``, ``xarray_version``, ``device`` (``"unknown"`` if not given),
    ``torch_num_threads`` (``torch.get_num_threads()``: see :func:`_torch_threads` for how much the
    thread count changes a result) and ``created`` (ISO-8601, UTC).  All values are netCDF-safe
    (str or int).
    """
    commit, dirty = _git_state()
    extra = {} if full is None else {"config_full_json": _config_json(full)}
    return {
        "config_json": _config_json(config),
        **extra,
        "config_hash": config_hash(config),
        "git_commit": commit,
        "git_dirty": int(dirty),
        "conelib_version": _conelib_version(),
        "torch_version": _version("torch"),
        "python_version": sys.version.split()[0],
        "numpy_version": np.__version__,
        "xarray_version": xr.__version__,
        "device": "unknown" if device is None else str(device),
        "torch_num_threads": _torch_threads(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _conelib_version() -> str:
    """The installed package's version (from its metadata: this module does not import the package root)."""
    try:
        return importlib.metadata.version("conelib")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _torch_threads() -> int:
    """The intra-op thread count; 0 without torch.

    A rerun at the same thread count is bitwise identical. Between thread counts the float sums
    are taken in another order, and how far that carries depends on the run (measured with
    ``torch.set_num_threads`` 1 vs 2, torch 2.13 CPU, 2-core machine, 200 SGD steps unless said):

    * on ``digits`` (8x8 images; lenet_300_100, lenet5, the quick profile's recipe; 20 to 2000
      steps): largest relative difference 4e-7 in ``dist_to_init``, 9e-6 in ``adjacent_distance``
      (its smallest values included), none in accuracy;
    * lenet5 on ``mnist5k`` (28x28, convolutions): the trajectories separate within ~30 steps;
      after 200 steps ``dist_to_init`` differs by up to 19%, ``adjacent_distance`` by up to 57%,
      test accuracy by up to 9% (relative).

    So results computed at different thread counts are different samples, not the same numbers
    (compare them as :mod:`conelib.tools.reproduce` does, within the spread over seeds).
    """
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 0


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------


def _sanitize_attr(value: Any, where: str) -> Any:
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (Mapping, list, tuple)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        return json.dumps(_canonical(value, where), sort_keys=isinstance(value, Mapping))
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.generic):
        return value.item() if not isinstance(value, np.bool_) else int(value)
    if isinstance(value, (str, int, float, np.ndarray)):
        if isinstance(value, float) and not math.isfinite(value):
            return value  # netCDF stores NaN/inf floats
        if isinstance(value, np.ndarray) and value.dtype == bool:
            return value.astype(np.int8)
        return value
    raise TypeError(
        f"attribute {where} has a type netCDF cannot store: {type(value).__name__}; allowed: "
        "str, int, float, bool, None, numpy scalar/array, list/tuple/dict of JSON-able values"
    )


def _sanitized_copy(ds: xr.Dataset) -> xr.Dataset:
    out = ds.copy(deep=False)
    out.attrs = {k: _sanitize_attr(v, f"ds.attrs[{k!r}]") for k, v in ds.attrs.items()}
    for name in out.variables:
        var = out.variables[name]
        original = ds.variables[name].attrs
        var.attrs = {k: _sanitize_attr(v, f"{name}.attrs[{k!r}]") for k, v in original.items()}
    return out


#: the attribute holding the content checksum of a stored result
CHECKSUM_ATTR = "content_sha256"


class CorruptResultError(ValueError):
    """A stored result's content does not match its checksum (or it has none)."""


def _norm_attr(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def content_digest(ds: xr.Dataset) -> str:
    """SHA-256 of a Dataset's content: every variable's name, dims, dtype and values, every
    attribute (of the Dataset and of each variable) except :data:`CHECKSUM_ATTR`.

    Stable through a netCDF round trip, so that :func:`load_result` can verify what
    :func:`save_result` wrote: any changed value, attribute or variable changes it.

    What it detects: accidents (a truncated or corrupted copy, an edit made without restamping).
    What it does not: a deliberate change -- anyone can recompute this digest and stamp it
    (there is no secret in it). Against that, recompute the result and compare
    (``conelib reproduce``); see the "Stored results and their checksum" section of the
    reproduce page.
    """
    h = hashlib.sha256()

    def feed(*parts: Any) -> None:
        for part in parts:
            b = part if isinstance(part, bytes) else str(part).encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)

    attrs = {k: _norm_attr(v) for k, v in ds.attrs.items() if k != CHECKSUM_ATTR}
    feed("attrs", json.dumps(attrs, sort_keys=True, default=str))
    for name in sorted(map(str, ds.variables)):
        var = ds.variables[name]
        values = np.asarray(var.values)
        if values.dtype.kind in "OUS":
            payload = "\x00".join(str(v) for v in values.ravel()).encode("utf-8")
            dtype = "str"
        else:
            payload = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
            dtype = values.dtype.newbyteorder("<").str
        vattrs = {k: _norm_attr(v) for k, v in var.attrs.items()}
        feed("var", name, ",".join(var.dims), dtype, values.shape, payload,
             json.dumps(vattrs, sort_keys=True, default=str))
    return h.hexdigest()


def save_result(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to ``path`` (netCDF4) atomically, with a content checksum; returns ``path``.

    The Dataset (attributes sanitised on a copy) gets :data:`CHECKSUM_ATTR` =
    :func:`content_digest`, is written to a temporary file in the target directory, then moved
    over ``path`` with ``os.replace``: readers see the old file or the new one, never a partial
    file, and a failed write leaves no temporary file behind. The file gets the umask's
    permissions.
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset; got {type(ds).__name__}")
    clean = _sanitized_copy(ds)
    clean.attrs[CHECKSUM_ATTR] = content_digest(clean)
    # lossless zlib compression of the larger numeric variables (pairwise distances, curves)
    encoding = {name: {"zlib": True, "complevel": 4} for name, var in clean.data_vars.items()
                if var.size >= 4096 and var.dtype.kind in "fiu"}
    return atomic_write(path, lambda tmp: clean.to_netcdf(tmp, engine="netcdf4", encoding=encoding))


def load_result(path: str | Path, *, verify: bool = True) -> xr.Dataset:
    """Load a stored result fully into memory (the file is closed, so it can be overwritten).

    Raises:
        FileNotFoundError: no such file.
        OSError: the file is not readable netCDF (truncated, garbage).
        CorruptResultError: with ``verify``, its content does not match its checksum, or it has none.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"result file not found: {path}")
    ds = xr.load_dataset(path, engine="netcdf4")
    if verify:
        stored = ds.attrs.get(CHECKSUM_ATTR)
        if stored is None:
            raise CorruptResultError(f"{path} has no content checksum ({CHECKSUM_ATTR}); it was not written by "
                                     "conelib.results.save_result, or was edited")
        actual = content_digest(ds)
        if actual != stored:
            raise CorruptResultError(f"{path} was changed after it was written: its content checksum is {actual}, "
                                     f"the stored one {stored}")
    return ds


def result_status(path: str | Path) -> str:
    """``"ok"`` (readable and verified), ``"missing"``, or ``"unreadable: <why>"``."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        load_result(path)
    except (OSError, ValueError) as err:
        return f"unreadable: {type(err).__name__}: {err}"
    return "ok"


#: free space asked for before a computation starts (results are small; this is a margin)
MIN_FREE_BYTES = 64 * 2**20


def load_or_compute(
    experiment: str,
    config: Mapping[str, Any],
    compute: Callable[[], xr.Dataset],
    *,
    root: str | Path | None = None,
    recompute: bool = False,
    device: str | Callable[[], str] | None = None,
    full: Mapping[str, Any] | None = None,
    precheck: Callable[[], None] | None = None,
) -> xr.Dataset:
    """The stored result of ``(experiment, config)``, computing and storing it if needed.

    ``config`` is the identity (the parameters that differ from their defaults: the file name's
    hash); ``full`` the whole configuration, defaults included. It is stored beside the identity,
    and a stored result whose full configuration differs from ``full`` (a default changed since
    it was computed) is refused with :class:`StaleResultError` naming the parameters, never
    returned as if it were the result asked for (``recompute=True`` or ``conelib migrate-results``
    deal with it). A stored result without its full configuration (written before it was
    recorded) is returned with a warning.

    If ``result_path(experiment, config, root)`` exists and ``recompute`` is false, the file is
    loaded and verified (logged as ``loaded stored result <path>``). Otherwise -- or if the stored
    file is unreadable, fails its checksum or belongs to another configuration (a warning says
    which) -- the results folder is checked first (writable, enough free space: a full or
    read-only folder fails *before* the work), ``compute()`` is called, :func:`provenance_attrs`
    and ``experiment`` are added to its attributes, and the Dataset is saved with
    :func:`save_result` and returned as read back from disk (so a computed and a loaded result
    look the same). ``device`` may be a callable, evaluated only when computing (so a stored
    result loads on a machine without the device it was computed on). ``precheck``, when given,
    is called before anything is created when the result must be computed (the checks that
    need this machine: its device, its memory); an error there leaves nothing behind.
    """
    path = result_path(experiment, config, root)
    expected = config_hash(config)
    if path.exists() and not recompute:
        try:
            ds = load_result(path)
        except (OSError, ValueError) as err:  # unreadable or changed: recompute
            warnings.warn(
                f"stored result {path} could not be used ({type(err).__name__}: {err}); recomputing it",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            stored = ds.attrs.get("config_hash")
            if stored is None or stored == expected:
                check_full_config(ds, full, path)
                logger.info("loaded stored result %s", path)
                return ds
            warnings.warn(
                f"stored result {path} has config_hash {stored!r}, expected {expected!r}; "
                "recomputing it",
                RuntimeWarning,
                stacklevel=2,
            )
    if precheck is not None:
        precheck()
    device_label = device() if callable(device) else device
    check_writable(path.parent, need_bytes=MIN_FREE_BYTES)
    ds = compute()
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"compute() must return an xarray.Dataset; got {type(ds).__name__}")
    ds = ds.copy(deep=False)
    ds.attrs = {**ds.attrs, "experiment": experiment, **provenance_attrs(config, device=device_label, full=full)}
    try:
        save_result(ds, path)
    except OSError as err:
        raise OSError(f"could not write the result to {path}: {err}") from err
    logger.info("computed and stored result %s", path)
    return load_result(path)


def stored_full_config(ds: xr.Dataset) -> dict[str, Any] | None:
    """The full configuration a stored result records (``None`` for a file written before it was
    recorded)."""
    text = ds.attrs.get("config_full_json")
    return None if text in (None, "", "none") else json.loads(text)


def check_full_config(ds: xr.Dataset, full: Mapping[str, Any] | None, path: str | Path = "") -> None:
    """Refuse (:class:`StaleResultError`) a stored result whose full configuration differs from
    ``full``; warn when the file does not record one."""
    if full is None:
        return
    stored = stored_full_config(ds)
    if stored is None:
        warnings.warn(f"stored result {path} does not record its full configuration (it was written by an "
                      "older conelib); `conelib migrate-results` adds it", RuntimeWarning, stacklevel=3)
        return
    want = canonical_config(full)
    # a parameter added after the file was written is absent from it: under the same identity it is
    # at its default, which (open_lth's rule) reproduces what the code did before it existed
    added = sorted(set(want) - set(stored))
    if added:
        warnings.warn(f"stored result {path} predates the parameter(s) {added}; read at their defaults "
                      f"({', '.join(f'{k}={want[k]!r}' for k in added)}); `conelib migrate-results` records them",
                      RuntimeWarning, stacklevel=3)
    diff = {k: (stored.get(k, "<absent>"), want.get(k, "<absent>")) for k in sorted(set(stored) | set(want))
            if k not in added and stored.get(k, "<absent>") != want.get(k, "<absent>")}
    if diff:
        what = ", ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise StaleResultError(
            f"stored result {path} has the same identity but a different full configuration ({what}): a default "
            "changed since it was computed. Recompute it (recompute=True / -p recompute true) or run "
            "`conelib migrate-results` to re-key stored results to the new defaults")
