"""SGD training with the paper's schedules, snapshots and exact-resume checkpoints.

The paper (Zhou et al. 2025, "On the Cone Effect in the Learning Dynamics", Sec. 3) trains its
networks with the open_lth recipes of Frankle et al. (2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis", Table 1): SGD with momentum, step-wise learning-rate drops and, for
some runs, a linear warm-up.  This module runs that loop on any ``nn.Module`` -- a standard
network or a linearized one (``f(x; theta_s) + J (theta - theta_s)``) -- and calls back at
*snapshot* steps so that the eNTK ``H(theta_t)`` can be measured along the way.

Conventions
-----------
* Step ``t`` is the state after ``t`` optimizer updates (``t = 0`` is the initialisation).  The
  update ``theta_t -> theta_{t+1}`` uses the learning rate :meth:`TrainConfig.lr_at` ``(t)``.
* The SGD update is PyTorch's (``torch.optim.SGD``)::

      g_t   = grad L_B(theta_t) + wd * theta_t
      b_t   = mu * b_{t-1} + g_t          (b_0 = g_0)
      theta_{t+1} = theta_t - lr_t * b_t  (Nesterov: theta_t - lr_t * (g_t + mu * b_t))

* The data order, the augmentation randomness and the global RNG seen by the model (dropout)
  are pure functions of ``(config.seed, t)``, so a run restarted from a checkpoint at step ``t``
  continues *bit-identically* (on CPU) to the uninterrupted run.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn
from tqdm import tqdm

from conelib.atomic import atomic_write
from conelib.data import augment_batch as augment_batch_fn
from conelib.config import Config, ParameterError, param

__all__ = [
    "TrainConfig",
    "BatchOrder",
    "TrainingDivergedError",
    "TrainHistory",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "make_optimizer",
    "evaluate",
    "eval_subset",
]

#: Version tag written into every checkpoint.
CHECKPOINT_FORMAT = "conelib.train/1"

#: On an accelerator the divergence check syncs with the host once every this many steps
#: (the check itself runs on the device every step; the error names the first bad step).
_ACCEL_CHECK_EVERY = 25

# Stream tags so that the data order, augmentation and model RNG never share a seed.
_TAG_ORDER, _TAG_AUGMENT, _TAG_MODEL = 0, 1, 2


def _derive_seed(*words: int) -> int:
    """A 63-bit seed that is a stable function of ``words`` (non-negative ints).

    Uses numpy's ``SeedSequence`` hashing rather than Python's ``hash()``: the latter is not
    guaranteed stable across Python versions and can be negative.
    """
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & ((1 << 63) - 1)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(lo: float | None = None, lo_open: bool = False) -> Callable[[float], bool]:
    def ok(v: float) -> bool:
        if not math.isfinite(v):
            return False
        if lo is None:
            return True
        return v > lo if lo_open else v >= lo

    return ok


def _increasing(ms: tuple[int, ...]) -> bool:
    return all(m >= 1 for m in ms) and all(b > a for a, b in zip(ms, ms[1:]))


@dataclass(frozen=True, init=False)
class TrainConfig(Config):
    """Hyperparameters of one SGD run (open_lth style, Frankle et al. 2020).

    The learning rate at step ``t`` (the rate of the update ``theta_t -> theta_{t+1}``) is::

        lr_t = lr * min(1, t / warmup_steps) * gamma ** #{m in milestones : m <= t}

    i.e. a linear warm-up from 0 (open_lth's ``LambdaLR(lambda it: min(1, it / warmup))``) times
    a ``MultiStepLR`` decay.  With ``warmup_steps = 0`` the warm-up factor is 1.

    The defaults are open_lth's MNIST recipe (``mnist_lenet_300_100``: plain SGD, lr 0.1, batch
    128, no momentum, no weight decay); the CIFAR-10 recipe (momentum 0.9, weight decay 1e-4,
    lr / 10 at 80 and 120 epochs) is the ``paper`` profile. Every field is a parameter
    (:mod:`conelib.config`): set it by name from any entry point.
    """

    LABEL = "the training (TrainConfig)"

    steps: int = param(1000, "total number of SGD steps T", check=lambda v: v >= 0, allowed="an integer >= 0")
    batch_size: int = param(128, "examples per SGD step", check=lambda v: v >= 1, allowed="an integer >= 1")
    lr: float = param(0.1, "peak learning rate", check=_finite(0.0, lo_open=True), allowed="a finite number > 0")
    momentum: float = param(0.0, "heavy-ball momentum mu", check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)")
    weight_decay: float = param(0.0, "L2 coefficient added to the gradient (torch.optim.SGD's weight_decay)",
                                check=_finite(0.0), allowed="a finite number >= 0")
    nesterov: bool = param(False, "Nesterov momentum (needs momentum > 0)")
    warmup_steps: int = param(0, "length of the linear learning-rate warm-up", check=lambda v: v >= 0,
                              allowed="an integer >= 0")
    milestones: tuple[int, ...] = param((), "steps at which lr *= gamma", check=_increasing,
                                        allowed="a list of strictly increasing integers >= 1")
    gamma: float = param(0.1, "learning-rate decay factor at each milestone", check=_finite(0.0, lo_open=True),
                         allowed="a finite number > 0")
    augment: bool | None = param(None, "data augmentation (random crop 4 + flip); None: the dataset's default "
                                       "(on for cifar10 only)")
    seed: int = param(0, "seed of the initialisation, the data split, the probe set and the data order",
                      check=lambda v: v >= 0, allowed="an integer >= 0")

    def __post_init__(self) -> None:
        if self.nesterov and self.momentum == 0:
            raise ParameterError("nesterov", "parameter 'nesterov' = True requires momentum > 0 (as torch.optim.SGD "
                                 f"does); got momentum={self.momentum!r}")

    def to_dict(self) -> dict:
        """The configuration as a JSON-able dict (``milestones`` as a list)."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        return cls.from_mapping(d)

    def lr_at(self, step: int) -> float:
        """Learning rate of the update ``theta_step -> theta_{step+1}`` (closed form above)."""
        if not _is_int(step) or step < 0:
            raise ValueError(f"step must be an integer >= 0; got {step!r}")
        factor = 1.0
        if self.warmup_steps > 0:
            factor = min(1.0, step / self.warmup_steps)
        return self.lr * factor * self.gamma ** bisect.bisect_right(self.milestones, step)


def make_optimizer(params: Any, config: TrainConfig, *, builtin_decay: bool = True) -> torch.optim.SGD:
    """``torch.optim.SGD`` with ``config``'s lr, momentum, weight decay and Nesterov flag
    (``builtin_decay=False``: weight decay 0, for a caller that adds its own decay term)."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay if builtin_decay else 0.0,
        nesterov=config.nesterov,
    )


# --------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------


class BatchOrder:
    """Deterministic mini-batch indices as a pure function of ``(seed, step)``.

    The training stream is the concatenation of per-epoch permutations ``pi_0, pi_1, ...`` of
    ``range(n)``, each drawn from a ``torch.Generator`` seeded by a stable hash of
    ``(seed, epoch)``.  Step ``t`` takes the stream positions ``[t*B, (t+1)*B)`` ("wrap"
    policy: nothing is dropped, a batch may straddle two epochs, every step has exactly ``B``
    indices, and every example is seen once per ``n`` consecutive positions).  Position ``p``
    lies in epoch ``p // n``; so ``epoch = step * batch_size // n`` for the batch's first index.

    Because ``indices(t)`` depends only on ``(seed, t)``, a run can restart at any step.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if not _is_int(n) or n < 1:
            raise ValueError(f"n must be an integer >= 1; got {n!r}")
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self._cache: dict[int, torch.Tensor] = {}  # memo of recent epochs' permutations

    def __repr__(self) -> str:
        return f"BatchOrder(n={self.n}, batch_size={self.batch_size}, seed={self.seed})"

    def permutation(self, epoch: int) -> torch.Tensor:
        """The permutation of ``range(n)`` used in ``epoch`` (int64, CPU)."""
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0; got {epoch!r}")
        perm = self._cache.get(epoch)
        if perm is None:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(_derive_seed(self.seed, _TAG_ORDER, epoch))
            perm = torch.randperm(self.n, generator=gen)
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[epoch] = perm
        return perm

    def indices(self, step: int) -> torch.Tensor:
        """The ``batch_size`` example indices of step ``step`` (int64, CPU)."""
        if not _is_int(step) or step < 0:
            raise ValueError(f"step must be an integer >= 0; got {step!r}")
        start, stop = step * self.batch_size, (step + 1) * self.batch_size
        parts = []
        for epoch in range(start // self.n, (stop - 1) // self.n + 1):
            lo = max(start, epoch * self.n) - epoch * self.n
            hi = min(stop, (epoch + 1) * self.n) - epoch * self.n
            parts.append(self.permutation(epoch)[lo:hi])
        return parts[0].clone() if len(parts) == 1 else torch.cat(parts)

    def generator(self, step: int) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded from ``(seed, step)``, for augmentation at ``step``."""
        if not _is_int(step) or step < 0:
            raise ValueError(f"step must be an integer >= 0; got {step!r}")
        gen = torch.Generator(device="cpu")
        gen.manual_seed(_derive_seed(self.seed, _TAG_AUGMENT, step))
        return gen


# --------------------------------------------------------------------------------------------
# History and errors
# --------------------------------------------------------------------------------------------


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite.

    Attributes:
        step: the step whose mini-batch loss was not finite.
        loss: that loss value.
        lr: the learning rate ``config.lr_at(step)``.
    """

    def __init__(self, step: int, loss: float, lr: float) -> None:
        self.step, self.loss, self.lr = int(step), float(loss), float(lr)
        super().__init__(
            f"training diverged at step {self.step}: mini-batch loss = {self.loss} with "
            f"lr = {self.lr:g}; try a smaller lr (or a longer warm-up)"
        )

    def __reduce__(self) -> tuple:
        # pickle by the constructor's arguments (the default would pass the message as `step`),
        # so the error crosses process boundaries intact (Dask workers, multiprocessing)
        return (type(self), (self.step, self.loss, self.lr))


_BUILTIN_VARS = ("train_loss", "train_acc", "test_loss", "test_acc")
_VAR_ATTRS = {
    "train_loss": {"long_name": "training cross-entropy loss", "units": "nats"},
    "train_acc": {"long_name": "training accuracy", "units": "1"},
    "test_loss": {"long_name": "test cross-entropy loss", "units": "nats"},
    "test_acc": {"long_name": "test accuracy", "units": "1"},
}


@dataclass
class TrainHistory:
    """Metrics recorded at the snapshot steps of :func:`train`.

    ``extra[key][i]`` is what ``on_snapshot`` returned under ``key`` at ``steps[i]`` (``None``
    where it returned nothing for that key); tensors are stored as CPU numpy arrays or floats.
    ``checkpoints`` maps a step to the checkpoint file written there.
    """

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    extra: dict[str, list] = field(default_factory=dict)
    checkpoints: dict[int, Path] = field(default_factory=dict)

    def to_dataset(self) -> xr.Dataset:
        """The history as an ``xarray.Dataset`` with dimension ``step``.

        Scalar extras become ``(step,)`` variables; array extras of a common shape become
        ``(step, <key>_dim_0, ...)`` variables; missing values are NaN.
        """
        steps = np.asarray(self.steps, dtype=np.int64)
        data_vars: dict[str, Any] = {}
        for name in _BUILTIN_VARS:
            values = np.asarray(getattr(self, name), dtype=np.float64)
            data_vars[name] = xr.Variable(("step",), values, attrs=dict(_VAR_ATTRS[name]))
        for key, values in self.extra.items():
            data_vars[key] = _extra_variable(key, values, len(steps))
        coords = {"step": ("step", steps, {"long_name": "optimizer step", "units": "1"})}
        return xr.Dataset(data_vars, coords=coords)


def _extra_variable(key: str, values: list, n_steps: int) -> xr.Variable:
    if len(values) != n_steps:
        raise ValueError(
            f"extra[{key!r}] has {len(values)} values but there are {n_steps} snapshot steps"
        )
    present = [np.asarray(v) for v in values if v is not None]
    shapes = {a.shape for a in present}
    if len(shapes) > 1:
        raise ValueError(f"extra[{key!r}] has values of different shapes {sorted(shapes)}")
    shape = shapes.pop() if shapes else ()
    if len(present) == len(values) and present:
        stacked = np.stack(present)
    else:
        dtype = np.result_type(np.float64, *[a.dtype for a in present]) if present else np.float64
        stacked = np.full((n_steps, *shape), np.nan, dtype=dtype)
        for i, v in enumerate(values):
            if v is not None:
                stacked[i] = np.asarray(v)
    dims = ("step", *[f"{key}_dim_{i}" for i in range(len(shape))])
    return xr.Variable(dims, stacked, attrs={"long_name": key})


def _to_record(value: Any) -> Any:
    """Detach tensors from the graph / device so the history holds no GPU memory."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.ndim == 0 else value.numpy()
    return value


# --------------------------------------------------------------------------------------------
# Evaluation and checkpoints
# --------------------------------------------------------------------------------------------


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    try:
        p = next(model.parameters())
    except StopIteration:
        raise ValueError("model has no parameters; cannot infer its device") from None
    return p.device, p.dtype


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy of ``model`` on ``(x, y)``.

    ``L = (1/N) sum_i -log softmax(f(x_i))_{y_i}``, ``acc = (1/N) #{i : argmax f(x_i) = y_i}``;
    computed in eval mode, without gradients, in batches of ``batch_size`` on the model's
    device (floating inputs are cast to the model's dtype).  The model's train/eval mode is
    restored afterwards.
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    n = len(x)
    if n == 0 or len(y) != n:
        raise ValueError(f"x and y must be non-empty with equal length; got {n} and {len(y)}")
    device, dtype = _model_device_dtype(model)
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for i in range(0, n, batch_size):
            xb = x[i : i + batch_size].to(device)
            if xb.is_floating_point():
                xb = xb.to(dtype)
            yb = y[i : i + batch_size].to(device=device, dtype=torch.long)
            out = model(xb)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return loss_sum.item() / n, correct.item() / n


def _atomic_torch_save(obj: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config: TrainConfig | Mapping[str, Any],
) -> Path:
    """Write ``{format, step, config, model, optimizer}`` to ``path`` atomically.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so ``path`` never holds a partial checkpoint.  ``optimizer`` state includes
    the momentum buffers, which an exact resume needs.
    """
    if not _is_int(step) or step < 0:
        raise ValueError(f"step must be an integer >= 0; got {step!r}")
    cfg = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    obj = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "config": cfg,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
    }
    return _atomic_torch_save(obj, Path(path))


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: Any = None,
) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; restore ``model``/``optimizer``.

    Args:
        path: the checkpoint file.
        model: if given, its state is restored in place (strict).
        optimizer: if given, its state (momentum buffers) is restored in place.
        map_location: ``torch.load``'s; defaults to ``model``'s device, else CPU.

    Returns:
        The checkpoint dict: ``step``, ``config`` (a dict; see :meth:`TrainConfig.from_dict`),
        ``model`` and ``optimizer`` state dicts, ``format``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if map_location is None:
        map_location = _model_device_dtype(model)[0] if model is not None else "cpu"
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a conelib checkpoint (format {CHECKPOINT_FORMAT!r})")
    if model is not None:
        model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        if ckpt.get("optimizer") is None:
            raise ValueError(f"checkpoint {path} holds no optimizer state to restore")
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _step_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Run a block with the global CPU (and ``device``'s CUDA) RNG seeded by ``seed``.

    Makes dropout & co. a function of ``(config.seed, step)`` and leaves the caller's RNG
    state untouched afterwards (``torch.random.fork_rng``).
    """
    cuda = device.type == "cuda"
    devices = []
    if cuda:
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def _snapshot_schedule(
    snapshot_steps: int | Sequence[int] | None, start_step: int, total: int
) -> list[int]:
    if snapshot_steps is None:
        return [total]
    if _is_int(snapshot_steps):
        k = int(snapshot_steps)
        if k < 1:
            raise ValueError(f"snapshot_steps as an int must be >= 1; got {k}")
        first = -(-start_step // k) * k
        return sorted(set(range(first, total + 1, k)) | {total})
    if isinstance(snapshot_steps, (str, bytes)) or not isinstance(snapshot_steps, Sequence):
        raise ValueError(
            "snapshot_steps must be None, an int k (every k steps plus the last) or a sequence "
            f"of steps; got {snapshot_steps!r}"
        )
    return _check_steps("snapshot_steps", snapshot_steps, start_step, total)


def _check_steps(name: str, steps: Sequence[int], start_step: int, total: int) -> list[int]:
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise ValueError(f"{name} must be a sequence of integer steps; got {steps!r}")
    out = set()
    for s in steps:
        if not _is_int(s) or not start_step <= s <= total:
            raise ValueError(
                f"{name} must hold integers in [start_step, config.steps] = "
                f"[{start_step}, {total}]; got {s!r}"
            )
        out.add(int(s))
    return sorted(out)


def eval_subset(y: torch.Tensor, max_n: int | None) -> torch.Tensor | None:
    """Indices of a fixed class-stratified subset of size ``max_n`` (first ``max_n`` if the
    classes are too small to stratify); ``None`` means the whole set."""
    n = len(y)
    if max_n is None or max_n >= n:
        return None
    from sklearn.model_selection import train_test_split

    labels = y.detach().cpu().numpy()
    try:
        idx, _ = train_test_split(np.arange(n), train_size=max_n, stratify=labels, random_state=0)
        idx = np.sort(idx)
    except ValueError:
        idx = np.arange(max_n)
    return torch.as_tensor(idx, dtype=torch.long)


def _check_data(data: Any) -> None:
    missing = [a for a in ("x_train", "y_train", "x_test", "y_test") if not hasattr(data, a)]
    if missing:
        raise ValueError(
            f"data lacks attribute(s) {missing}; it needs x_train, y_train, x_test, y_test "
            "(and optionally augment), e.g. conelib.data.TensorData"
        )
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError(f"data.x_{split} and data.y_{split} must be torch tensors")
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(
                f"data.x_{split} and data.y_{split} must be non-empty with equal length; "
                f"got {len(x)} and {len(y)}"
            )
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"data.y_{split} must hold integer class labels; got {y.dtype}")


#: training loss and accuracy are measured on a fixed class-balanced subset of at most this many
#: training images (every experiment uses this default)
EVAL_TRAIN_MAX = 2048


def train(
    model: nn.Module,
    data: Any,
    config: TrainConfig,
    *,
    snapshot_steps: int | Sequence[int] | None = None,
    on_snapshot: Callable[[int, nn.Module], Mapping[str, Any] | None] | None = None,
    checkpoint_steps: Sequence[int] = (),
    checkpoint_dir: str | Path | None = None,
    start_step: int = 0,
    optimizer_state: dict | None = None,
    eval_batch_size: int = 1024,
    eval_train_max: int | None = EVAL_TRAIN_MAX,
    progress: bool = True,
    desc: str | None = None,
    decay_center: Sequence[torch.Tensor] | None = None,
    loss_scale: float = 1.0,
    data_seed: int | None = None,
    stop_when: Callable[[int, nn.Module, TrainHistory], bool] | None = None,
) -> TrainHistory:
    """Train ``model`` in place with mini-batch SGD on cross-entropy.

    Optimises ``[p for p in model.parameters() if p.requires_grad]`` with
    :func:`make_optimizer`; the update from step ``t`` uses ``config.lr_at(t)`` and the batch
    ``BatchOrder(N, B, config.seed).indices(t)`` (``data_seed`` in place of ``config.seed`` when
    given).  The data tensors are moved once to the
    model's device (the device of its first parameter); floating inputs are cast to the model's
    dtype.  No ``DataLoader``.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to logits (also a linearized model).
            If it has a method ``forward_examples(x_train, index)`` (equal to
            ``model(x_train[index])``), the training batches go through it when there is no
            augmentation (:meth:`conelib.linearize.LinearizedModel.forward_examples` reuses the
            primal at the expansion point per example).
        data: object with ``x_train``, ``y_train``, ``x_test``, ``y_test`` tensors and an
            ``augment`` flag (``conelib.data.TensorData``).
        config: the hyperparameters; ``config.steps`` is the final step ``T``.
        snapshot_steps: ``int k`` -> every multiple of ``k`` in ``[start_step, T]`` plus ``T``;
            a sequence -> exactly those steps; ``None`` -> only ``T``.  At a snapshot step
            ``t`` (state after ``t`` updates) the train/test loss and accuracy are recorded
            and ``on_snapshot(t, model)`` is called.
        on_snapshot: callback run with the model in eval mode (gradients enabled, so it may use
            autograd, e.g. for the eNTK); its returned mapping is merged into
            ``history.extra``.
        checkpoint_steps: steps at which to save ``checkpoint_dir/step_{t:07d}.pt`` (model,
            optimizer with momentum buffers, step, config).
        checkpoint_dir: directory of the checkpoints (required with ``checkpoint_steps``).
        start_step: resume from this step: the model (and ``optimizer_state``) must hold the
            state at ``start_step``, e.g. from :func:`load_checkpoint`.  Resuming reproduces the
            uninterrupted run bit-for-bit on CPU.
        optimizer_state: optimizer ``state_dict`` to restore (a checkpoint's ``"optimizer"``).
        eval_batch_size: batch size of the evaluations.
        eval_train_max: train metrics are computed on a fixed class-stratified subset of this
            many training examples (``None``: all of them).
        progress: show a text ``tqdm`` bar with the current loss.
        desc: the bar's label.
        decay_center: where weight decay pulls the parameters, one tensor per trainable
            parameter (``None``: towards 0, ``torch.optim.SGD``'s own decay). With centres
            :math:`c`, the decay term added to the gradient is ``weight_decay * (theta - c)``
            instead of ``weight_decay * theta``; momentum and the rest of the update are unchanged.
        loss_scale: the mini-batch loss is multiplied by this (``1/alpha^2`` for an output scale
            alpha, :mod:`conelib.models.scaling`); the recorded metrics are unscaled.
        data_seed: seed of the data order and of the augmentation draws
            (``BatchOrder(N, B, data_seed)``); ``None`` (the default): ``config.seed``, so every
            existing run is unchanged. A different value gives another sample of SGD noise from
            the same state: the spawned children of :mod:`conelib.experiments.spawning` (Frankle
            et al. 2020's instability analysis) continue one parent with their own data orders.
            The model's own randomness (dropout) stays a function of ``config.seed``.
        stop_when: called as ``stop_when(t, model, history)`` after every snapshot (its metrics
            already in ``history``); when it returns true, training ends at step ``t`` (no update
            after it, so the model holds the state at ``t``; a checkpoint due at ``t`` is still
            written). ``None``: train to ``config.steps``.

    Returns:
        The :class:`TrainHistory` of the snapshots in ``[start_step, T]``.

    Raises:
        TrainingDivergedError: the mini-batch loss became NaN or infinite.
        ValueError: invalid arguments.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    total = config.steps
    if not _is_int(start_step) or not 0 <= start_step <= total:
        raise ValueError(
            f"start_step must be an integer in [0, config.steps={total}]; got {start_step!r}"
        )
    start_step = int(start_step)
    if not _is_int(eval_batch_size) or eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be an integer >= 1; got {eval_batch_size!r}")
    if eval_train_max is not None and (not _is_int(eval_train_max) or eval_train_max < 1):
        raise ValueError(f"eval_train_max must be None or an integer >= 1; got {eval_train_max!r}")
    if data_seed is not None and (not _is_int(data_seed) or data_seed < 0):
        raise ValueError(f"data_seed must be None or an integer >= 0; got {data_seed!r}")
    snaps = _snapshot_schedule(snapshot_steps, start_step, total)
    ckpts = _check_steps("checkpoint_steps", checkpoint_steps, start_step, total)
    if ckpts and checkpoint_dir is None:
        raise ValueError("checkpoint_steps given but checkpoint_dir is None; pass a directory")
    if on_snapshot is not None and not callable(on_snapshot):
        raise ValueError("on_snapshot must be callable(step, model) or None")
    if stop_when is not None and not callable(stop_when):
        raise ValueError("stop_when must be callable(step, model, history) or None")
    _check_data(data)

    device, dtype = _model_device_dtype(model)

    def to_model(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        return x.to(dtype) if x.is_floating_point() else x

    x_train, x_test = to_model(data.x_train), to_model(data.x_test)
    y_train = data.y_train.to(device=device, dtype=torch.long)
    y_test = data.y_test.to(device=device, dtype=torch.long)
    sub = eval_subset(y_train, eval_train_max)
    if sub is None:
        x_train_eval, y_train_eval = x_train, y_train
    else:
        sub = sub.to(device)
        x_train_eval, y_train_eval = x_train[sub], y_train[sub]

    augment = config.augment
    if augment is None:
        augment = bool(getattr(data, "augment", False))
    augment_batch = None
    if augment:
        augment_batch = augment_batch_fn

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    centers: list[torch.Tensor] | None = None
    if decay_center is not None:
        centers = [c.detach().to(device=p.device, dtype=p.dtype) for p, c in zip(params, decay_center)]
        if len(centers) != len(params) or any(c.shape != p.shape for p, c in zip(params, centers)):
            raise ValueError("decay_center must hold one tensor per trainable parameter, of its shape, in "
                             "model.parameters() order")
    optimizer = make_optimizer(params, config, builtin_decay=centers is None)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        if centers is not None:
            for group in optimizer.param_groups:
                group["weight_decay"] = 0.0  # the state's hyperparameters must not bring it back

    # a model that can reuse per-example work on a fixed training set (the linearized model's primal
    # cache) gets the set and the batch's indices; never with augmentation (the inputs change)
    by_example = getattr(model, "forward_examples", None) if augment_batch is None else None
    order = BatchOrder(len(x_train), config.batch_size, config.seed if data_seed is None else int(data_seed))
    history = TrainHistory()
    snap_set, ckpt_set = set(snaps), set(ckpts)
    check_every = 1 if device.type == "cpu" else _ACCEL_CHECK_EVERY
    pending: list[tuple[int, torch.Tensor]] = []  # (step, detached loss) not yet checked

    def check_pending(bar: tqdm) -> None:
        if not pending:
            return
        values = torch.stack([loss for _, loss in pending]).double().cpu()
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            step = pending[i][0]
            raise TrainingDivergedError(step, float(values[i]), config.lr_at(step))
        last_lr = config.lr_at(pending[-1][0])
        bar.set_postfix(loss=f"{float(values[-1]):.4f}", lr=f"{last_lr:.3g}", refresh=False)
        pending.clear()

    def snapshot(t: int) -> None:
        train_loss, train_acc = evaluate(model, x_train_eval, y_train_eval, eval_batch_size)
        test_loss, test_acc = evaluate(model, x_test, y_test, eval_batch_size)
        n_before = len(history.steps)
        history.steps.append(t)
        history.train_loss.append(train_loss)
        history.train_acc.append(train_acc)
        history.test_loss.append(test_loss)
        history.test_acc.append(test_acc)
        returned: Mapping[str, Any] | None = None
        if on_snapshot is not None:
            model.eval()
            try:
                returned = on_snapshot(t, model)
            finally:
                model.train()
            if returned is not None and not isinstance(returned, Mapping):
                raise ValueError(
                    f"on_snapshot must return a mapping or None; got {type(returned).__name__}"
                )
        for key in returned or {}:
            if key in _BUILTIN_VARS or key == "step":
                raise ValueError(
                    f"on_snapshot returned reserved key {key!r}; "
                    f"reserved: {['step', *_BUILTIN_VARS]}"
                )
            history.extra.setdefault(key, [None] * n_before)
        for key, values in history.extra.items():
            values.append(_to_record(returned[key]) if returned and key in returned else None)

    def at_step(t: int, bar: tqdm) -> bool:
        """Snapshot and checkpoint at step ``t``; whether ``stop_when`` ends the training there."""
        if t in snap_set or t in ckpt_set:
            check_pending(bar)  # never record or save a diverged state
        if t in snap_set:
            snapshot(t)
        if t in ckpt_set:
            path = Path(checkpoint_dir) / f"step_{t:07d}.pt"
            history.checkpoints[t] = save_checkpoint(path, model, optimizer, t, config)
        return t in snap_set and stop_when is not None and bool(stop_when(t, model, history))

    was_training = model.training
    model.train()
    bar = tqdm(total=total - start_step, desc=desc or "train", unit="step", disable=not progress)
    try:
        stop = at_step(start_step, bar)
        for t in range(start_step, total):
            if stop:
                break
            lr = config.lr_at(t)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx_cpu = order.indices(t)
            idx = idx_cpu.to(device)
            yb = y_train[idx]
            xb = None
            if by_example is None:
                xb = x_train[idx]
                if augment_batch is not None:
                    xb = augment_batch(xb, order.generator(t))
            with _step_rng(device, _derive_seed(config.seed, _TAG_MODEL, t)):
                logits = model(xb) if by_example is None else by_example(x_train, idx_cpu)
                loss = F.cross_entropy(logits, yb)
                if loss_scale != 1.0:
                    loss = loss * loss_scale
            pending.append((t, loss.detach()))
            if len(pending) >= check_every:
                check_pending(bar)  # on CPU: before the update, so the model stays finite
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if centers is not None and config.weight_decay:
                with torch.no_grad():
                    for p, c in zip(params, centers):
                        p.grad.add_(p - c, alpha=config.weight_decay)
            optimizer.step()
            bar.update(1)
            stop = at_step(t + 1, bar)
        check_pending(bar)
    finally:
        bar.close()
        model.train(was_training)
    return history
