"""What every experiment shares: the training setup as a typed config, building it, and
:class:`Experiment`, the one way an experiment is configured from a profile, run and stored."""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
import xarray as xr

from conelib import data as data_mod
from conelib import models
from conelib.config import Config, ParameterError, absolute_paths, param, values_equal
from conelib.models.scaling import OutputScaled
from conelib.profiles import load_profile, merge, profile_path
from conelib.results import load_or_compute
from conelib.ntk import KINDS, METHODS
from conelib.train import EVAL_TRAIN_MAX, TrainConfig

R = TypeVar("R", bound="RunConfig")
S = TypeVar("S", bound="SeedsConfig")


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/``None`` → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def device_name(device: str | None) -> str:
    """A readable name of the device a run uses, for the provenance attrs ("cpu" or the GPU's name)."""
    dev = resolve_device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


@dataclass(frozen=True, init=False)
class RunConfig(Config):
    """One training run: model, data, and its training (the :class:`~conelib.train.TrainConfig`
    section ``train``; its parameters are set and read by their flat names, ``cfg.lr``).

    Runtime parameters (``device``, ``data_root``) say *where* and *how* to run, not *what* is
    computed, so they are left out of the result's identity (:meth:`identity`, hashed by
    :func:`conelib.results.config_hash`), as are parameters at their default.
    """

    model: str = param("lenet5", "network architecture", choices=models.MODELS)
    dataset: str = param("mnist", "dataset", choices=data_mod.DATASETS)
    width: float = param(1.0, "width multiplier of the network (channels / hidden units)",
                         check=lambda v: math.isfinite(v) and v > 0, allowed="a number > 0")
    norm: str | None = param(None, "normalisation layers (resnet20, vgg16); None: the model's default",
                             choices=(None, *models.NORMS))
    test_fraction: float = param(0.2, "share of mnist5k/digits held out for test (the torchvision datasets "
                                      "keep their standard split)", check=lambda v: 0 < v < 1,
                                 allowed="a number in (0, 1)")
    n_train: int | None = param(None, "train on a class-balanced subset of this many training images (seeded); "
                                      "None: all", check=lambda v: v >= 10, allowed="an integer >= 10")
    label_noise: float = param(0.0, "share of training labels replaced by a random other class (seeded, fixed "
                               "for the run; test labels untouched)", check=lambda v: 0 <= v < 1,
                               allowed="a number in [0, 1)")
    output_scale: float | None = param(None, "Chizat et al. (2019) lazy-training scale alpha: train "
                                       "alpha * (f - f_init) on loss / alpha^2; None: the plain network",
                                       check=lambda v: math.isfinite(v) and v > 0, allowed="a number > 0")
    train: TrainConfig = param(help="the SGD run", default_factory=TrainConfig)
    device: str = param("auto", "where to run: auto (a GPU when there is one), cpu, cuda or cuda:N",
                        check=lambda v: re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", v) is not None,
                        allowed="auto, cpu, cuda or cuda:N", runtime=True)
    data_root: str | None = param(None, "folder of a torchvision dataset (cifar10, fashion_mnist; mnist "
                                        "optionally); None: $CONELIB_DATA or ~/.cache/conelib/data", runtime=True,
                                  is_path=True)

    def __post_init__(self) -> None:
        n_available = self.train_split_size(subset=False)
        if self.n_train is not None and self.n_train > n_available:
            raise ParameterError("n_train", f"parameter 'n_train' ({self.n_train}) is larger than the training "
                                 f"split of {self.dataset!r} ({n_available} images)")

    def train_split_size(self, *, subset: bool = True) -> int:
        """Training images of the run: ``n_train`` (``subset``) or the dataset's training split,
        known without loading the data (:func:`conelib.data.split_sizes`)."""
        if subset and self.n_train is not None:
            return int(self.n_train)
        return data_mod.split_sizes(self.dataset, self.test_fraction)[0]

    @classmethod
    def from_profile(cls: type[R], profile: str | os.PathLike, experiment: str, **overrides: Any) -> R:
        """The first run of :func:`profile_runs` (the profile's first model and seed)."""
        return profile_runs(cls, profile, experiment, **overrides)[0]

    def train_config(self, steps: int | None = None) -> TrainConfig:
        """The training section, optionally with another number of steps."""
        return self.train if steps is None else self.train.replace(steps=steps)


@dataclass(frozen=True, init=False)
class SeedsConfig(RunConfig):
    """A run over several seeds stored as one Dataset with a ``seed`` dimension (switching,
    spawning).

    Attributes:
        seeds: the seeds to run (each: initialisation, data split and data order); empty means
            ``(seed,)``. Stored sorted without duplicates, and ``seed`` is set to ``seeds[0]`` (so
            ``seeds`` wins over ``seed`` when both are given).
    """

    seeds: tuple[int, ...] = param((), "seeds to run, one Dataset over them (intervals over seeds); empty: just seed",
                                   unique=True, check=lambda v: all(s >= 0 for s in v),
                                   allowed="a list of integers >= 0")

    def __post_init__(self) -> None:
        super().__post_init__()
        seeds = self.seeds or (int(self.seed),)
        object.__setattr__(self, "seeds", seeds)
        if self.train.seed != seeds[0]:
            object.__setattr__(self, "train", self.train.replace(seed=seeds[0]))

    def for_seed(self: S, seed: int) -> S:
        """The same configuration with the single seed ``seed``."""
        return self.replace(seed=int(seed), seeds=(int(seed),))


@dataclass(frozen=True, init=False)
class ProbeConfig(RunConfig):
    """A run that computes the eNTK on a probe set (kernel dynamics, spawning) and measures the
    train loss on a fixed subset of the training set.

    Attributes:
        probe_size: class-balanced probe examples :math:`n` of the eNTK (the same set for the same
            seed in every experiment).
        kernel_kind: the eNTK of several outputs (:data:`conelib.ntk.KINDS`).
        train_eval_size: the train loss and accuracy are measured on a fixed class-balanced subset
            of this many training images.
        ntk_method: how the eNTK is computed (runtime).
    """

    probe_size: int = param(128, "number of probe examples n on which the eNTK is computed (class-balanced; the "
                            "same set for the same seed in every experiment)", check=lambda v: v >= 2,
                            allowed="an integer >= 2")
    kernel_kind: str = param("trace", "eNTK kind: trace (over the logits), full or logit_sum", choices=KINDS)
    train_eval_size: int = param(EVAL_TRAIN_MAX, "train loss and accuracy are measured on a fixed class-balanced "
                                 "subset of this many training images", check=lambda v: v >= 1,
                                 allowed="an integer >= 1")
    ntk_method: str = param("auto", "how the eNTK is computed", choices=METHODS, runtime=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.train_split_size()
        if self.probe_size > n:
            what = "n_train" if self.n_train is not None else f"the training split of {self.dataset!r}"
            raise ParameterError("probe_size", f"parameter 'probe_size' ({self.probe_size}) is larger than {what} "
                                 f"({n} images)")


#: the metrics :func:`conelib.train.train` records at a snapshot: name -> (what it is, units); the
#: train ones on the fixed class-balanced training subset
METRICS: dict[str, tuple[str, str]] = {"test_acc": ("test accuracy", "1"), "test_loss": ("test cross-entropy", "nats"),
                                       "train_loss": ("train cross-entropy", "nats"),
                                       "train_acc": ("train accuracy", "1")}


def metric_variables(name: str, dims: tuple[str, ...], values: Any, of: str,
                     metrics: tuple[str, ...] = tuple(METRICS)) -> dict[str, tuple]:
    """Dataset variables of recorded metrics: ``name.format(metric)`` ->
    ``(dims, values[metric], {"long_name": "<metric> <of>", "units": ...})`` for each of
    ``metrics`` (:data:`METRICS`), e.g. ``metric_variables("final_{}", dims, values, "of the run at T")``."""
    return {name.format(m): (dims, values[m], {"long_name": f"{METRICS[m][0]} {of}", "units": METRICS[m][1]})
            for m in metrics}


def trajectory_params() -> tuple[str, ...]:
    """The parameters that fix a run's SGD trajectory up to a given step: every non-runtime
    parameter of :class:`RunConfig` but its length ``steps``."""
    return tuple(k for k, p in RunConfig.parameters().items() if not p.runtime and k != "steps")


def same_trajectory(a: RunConfig, b: RunConfig) -> bool:
    """Whether two runs (of any experiment) follow the same SGD trajectory up to the shorter one's
    last step: every parameter of :func:`trajectory_params` is equal (data order and schedule are
    pure functions of ``(seed, step)``)."""
    fa, fb = a.flat(), b.flat()
    return all(values_equal(fa[k], fb[k]) for k in trajectory_params())


#: profile keys (and notebook parameters) that list several runs of one experiment: one run per
#: model, and (for experiments whose Dataset is one run) one per seed
RUN_SET_KEYS: dict[str, str] = {"models": "model", "seeds": "seed"}

#: a section key that sets parameters for some models of its ``models`` list only:
#: ``{model: {parameter: value}}`` (a value may be ``null``: the parameter's ``None``)
BY_MODEL = "by_model"


def _by_model(section: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Pop and check the section's :data:`BY_MODEL` mapping."""
    per_model = section.pop(BY_MODEL, None) or {}
    if not isinstance(per_model, dict) or not all(isinstance(v, dict) for v in per_model.values()):
        raise ParameterError(BY_MODEL, f"{BY_MODEL!r} must map model names to mappings of parameters (in {where})")
    for model, values in per_model.items():
        if model not in models.MODELS:
            raise ParameterError(BY_MODEL, f"{BY_MODEL!r} names {model!r}, not a model; the models are "
                                 f"{list(models.MODELS)} (in {where})")
        fixed = [k for k in values if k in ("model", *RUN_SET_KEYS) and k != "seeds"]
        if fixed:
            raise ParameterError(BY_MODEL, f"{BY_MODEL!r} for {model!r} sets {fixed}: a model's entry cannot change "
                                 f"the model or the list of runs (in {where})")
    return per_model


def profile_runs(cls: type[R], profile: str | os.PathLike, experiment: str, **overrides: Any) -> list[R]:
    """The runs a profile's section describes, with the given (non-``None``) overrides.

    A section (and the overrides) may list ``models`` and, when ``seeds`` is not a parameter of
    ``cls``, ``seeds``: one configuration per model and seed, in that order. Setting ``model`` (or
    ``seed``) overrides the list with that one value. A section's :data:`BY_MODEL` mapping sets
    parameters for one model only; an override given here wins over both.
    """
    # a relative path in a profile is taken from the profile's own folder (it means the same wherever it is run)
    section = absolute_paths(load_profile(profile, experiment), cls.parameters(), base=profile_path(profile).parent)
    where = f"profile {profile!r} ({profile_path(profile)}), section {experiment!r}"
    per_model = _by_model(section, where)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    own = cls.parameters()
    lists: dict[str, list[Any]] = {}
    for key, single in RUN_SET_KEYS.items():
        if key in own:
            continue
        values = overrides.pop(key, None)
        if values is None:
            values = section.pop(key, None)
        else:
            section.pop(key, None)
        if single in overrides:
            values = [overrides[single]]
        if values is not None:
            if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
                raise ParameterError(key, f"parameter {key!r} must be a non-empty list; got {values!r}")
            lists[single] = list(values)
    # a bad value in the profile is named with the profile; a bad override without it
    bad_in_profile = None
    try:
        cls.from_mapping(section, where=where)
    except ParameterError as err:
        bad_in_profile = err
    try:
        base = cls.from_mapping(merge(section, overrides))
    except ParameterError as err:
        if bad_in_profile is not None and err.name not in overrides:
            raise bad_in_profile from None
        raise
    if "model" not in lists and per_model:
        lists["model"] = [base.model]

    def one(run: R, single: str, value: Any) -> R:
        changes = {single: value}
        if single == "model":
            changes.update({k: v for k, v in per_model.get(value, {}).items() if k not in overrides})
        if len(changes) == 1:
            return run.replace(**changes)
        try:
            return run.replace(**changes)
        except ParameterError as err:
            raise ParameterError(err.name, f"{err} (in {where}, {BY_MODEL} {value!r})") from None

    runs = [base]
    for single, values in lists.items():
        runs = [one(r, single, v) for r in runs for v in values]
    return runs


# --------------------------------------------------------------------------------------------
# checks before a run is computed (nothing is created before they pass)
# --------------------------------------------------------------------------------------------

#: bytes of one float32 value
_FLOAT_BYTES = 4
#: copies of each layer output that one SGD step holds at its peak: the output itself (kept for
#: the backward pass), its gradient, and about one more for temporaries (masks, workspaces)
ACTIVATION_COPIES = 3
#: copies of the parameters: the parameters, their gradients, the momentum buffers, one spare
PARAMETER_COPIES = 4


@functools.lru_cache(maxsize=64)
def activations_per_example(model: str, dataset: str, width: float, norm: str | None) -> tuple[int, int]:
    """``(values, parameters)``: how many values the layers of ``model`` output for one example
    of ``dataset`` (every leaf module's output, counted in one forward pass of one example on
    the CPU), and how many parameters it has."""
    net = models.build(model, input_shape=data_mod.input_shape(dataset), num_classes=10, width=width, norm=norm,
                       seed=0)
    net.eval()
    counted = [0]

    def count(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                counted[0] += t.numel()

    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net(torch.zeros(1, *data_mod.input_shape(dataset)))
    finally:
        for h in hooks:
            h.remove()
    return counted[0], int(sum(p.numel() for p in net.parameters()))


def training_memory_estimate(cfg: RunConfig) -> int:
    """A rough estimate, in bytes, of the memory one SGD step of ``cfg`` needs on its device.

    ``batch_size x (ACTIVATION_COPIES x layer outputs per example + 2 x input values per
    example) x 4 bytes + PARAMETER_COPIES x parameters x 4 bytes``: the layer outputs are counted
    in one forward pass of one example (:func:`activations_per_example`); the input batch is
    gathered and, for augmented data, copied once. Not counted: the dataset itself, the eNTK and
    the framework's own overhead. It is meant to catch a batch that cannot fit by orders of
    magnitude (``batch_size 1e9``), not to predict the peak to a few percent.
    """
    values, n_params = activations_per_example(cfg.model, cfg.dataset, float(cfg.width), cfg.norm)
    inputs = math.prod(data_mod.input_shape(cfg.dataset))
    per_example = ACTIVATION_COPIES * values + 2 * inputs
    return _FLOAT_BYTES * (int(cfg.batch_size) * per_example + PARAMETER_COPIES * n_params)


def available_memory(device: torch.device) -> int | None:
    """Bytes of memory available now on ``device`` (CUDA: the free memory of that GPU; CPU:
    ``MemAvailable``, through psutil or ``/proc/meminfo``); ``None`` when it cannot be read."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / 2**40:.1f} TiB" if n >= 2**40 else f"{n / 2**30:.1f} GiB"


def preflight(cfg: RunConfig) -> None:
    """The checks a run that must be computed passes before anything is trained or created: its
    device is present here, and one SGD step fits in the memory available on it
    (:func:`training_memory_estimate`). A stored result is loaded without them (it needs no device).

    Raises:
        ParameterError: naming ``device`` or ``batch_size``.
    """
    try:
        device = resolve_device(cfg.device)
    except ValueError as err:
        raise ParameterError("device", f"parameter 'device': {err}") from None
    need = training_memory_estimate(cfg)
    have = available_memory(device)
    if have is not None and need > have:
        values, _ = activations_per_example(cfg.model, cfg.dataset, float(cfg.width), cfg.norm)
        raise ParameterError("batch_size", f"parameter 'batch_size' ({cfg.batch_size}) does not fit in memory: one "
                             f"SGD step of {cfg.model} on {cfg.dataset} needs about {_gib(need)} (a rough estimate: "
                             f"{values} layer outputs per example, {ACTIVATION_COPIES} copies each) and {_gib(have)} "
                             f"is available on {device}; use a smaller batch_size")


def load_data(cfg: RunConfig, device: torch.device) -> "data_mod.TensorData":
    """The run's data: the dataset, its training subset (``n_train``) and label noise (``label_noise``)."""
    data = data_mod.load_dataset(cfg.dataset, root=cfg.data_root, seed=cfg.seed, test_fraction=cfg.test_fraction,
                                 device=device)
    if cfg.n_train is not None:
        if cfg.n_train > len(data.y_train):
            raise ParameterError("n_train", f"parameter 'n_train' ({cfg.n_train}) is larger than the training split "
                                 f"of {cfg.dataset!r} ({len(data.y_train)} images)")
        data = data.subset(n_train=cfg.n_train, seed=cfg.seed)
    if cfg.label_noise > 0:
        data = data_mod.with_label_noise(data, cfg.label_noise, seed=cfg.seed)
    return data


def build_model(cfg: RunConfig, data: "data_mod.TensorData", device: torch.device) -> torch.nn.Module:
    """The run's freshly initialised model (wrapped by :class:`conelib.models.scaling.OutputScaled`
    when ``output_scale`` is set)."""
    model = models.build(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes, width=cfg.width,
                         norm=cfg.norm, seed=cfg.seed)
    if cfg.output_scale is not None:
        model = OutputScaled(model, cfg.output_scale)
    return model.to(device)


def setup(cfg: RunConfig) -> tuple[torch.device, "data_mod.TensorData", torch.nn.Module]:
    """Device, data (on the device) and freshly initialised model for a run."""
    device = resolve_device(cfg.device)
    data = load_data(cfg, device)
    return device, data, build_model(cfg, data, device)


#: how an experiment computes one configuration: ``compute(config, progress, results_root)``
Compute = Callable[[R, bool, "str | Path | None"], xr.Dataset]


@dataclass(frozen=True)
class Experiment(Generic[R]):
    """One experiment of the book: its name (the profile section and the results folder), its
    configuration class and how one configuration is computed. Calling it runs the experiment, or
    loads the stored result of the same configuration.

    Each experiment module makes one (``kernel_dynamics = Experiment(...)``) and exports its
    methods under the experiment's name (``kernel_dynamics_config = kernel_dynamics.config``, ...),
    so every experiment is configured, stored, found again and described the same way.
    """

    name: str
    config_class: type[R]
    compute: Compute
    progress_bars: str = "a text progress bar"

    def __call__(self, config: R | None = None, *, results_root: str | Path | None = None, recompute: bool = False,
                 progress: bool = True, **overrides: Any) -> xr.Dataset:
        """Run (or load, if stored) the experiment and return its Dataset.

        Args:
            config: the configuration; ``None`` → the defaults. Keyword ``overrides`` (those not
                ``None``) replace fields.
            results_root: folder of stored results (default ``$CONELIB_RESULTS`` or ``./results``).
            recompute: run even when a result for this configuration is stored.
            progress: show :attr:`progress_bars`.

        Returns:
            The Dataset its module describes, with the provenance attributes of
            :func:`conelib.results.load_or_compute`.
        """
        cfg = config or self.config_class()
        if overrides:
            cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
        return self.stored_or_computed(cfg, lambda: self.compute(cfg, progress, results_root),
                                       results_root=results_root, recompute=recompute)

    def stored_or_computed(self, cfg: R, compute: Callable[[], xr.Dataset], *, results_root: str | Path | None = None,
                           recompute: bool = False) -> xr.Dataset:
        """The stored result of ``cfg`` or, when there is none (or ``recompute``), ``compute()``
        after the preflight checks, stored with its full configuration and provenance."""
        return load_or_compute(self.name, cfg.identity(), compute, root=results_root, recompute=recompute,
                               device=lambda: device_name(cfg.device), precheck=lambda: preflight(cfg),
                               full=cfg.full())

    def config(self, profile: str = "mnist", **overrides: Any) -> R:
        """The profile's parameters of this experiment with the given (non-``None``) overrides (its
        first model and seed when it lists several; :meth:`configs` gives all)."""
        return self.config_class.from_profile(profile, self.name, **overrides)

    def configs(self, profile: str = "mnist", **overrides: Any) -> list[R]:
        """Every run of the profile's section of this experiment (:func:`profile_runs`)."""
        return profile_runs(self.config_class, profile, self.name, **overrides)

    def config_of(self, ds: xr.Dataset) -> R:
        """The configuration a stored result records (:meth:`conelib.config.Config.from_result`)."""
        return self.config_class.from_result(ds)
