"""What every experiment shares: the training setup as a typed config, and building it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import torch

from conelib import data as data_mod
from conelib import models
from conelib.profiles import load_profile, merge
from conelib.train import TrainConfig

C = TypeVar("C", bound="RunConfig")


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


@dataclass(frozen=True)
class RunConfig:
    """One training run: model, data, optimiser and schedule (open_lth-style SGD).

    Fields listed in ``RUNTIME_FIELDS`` say *where* and *how* to run, not *what* is computed, so
    they are left out of the result's identity (:meth:`identity`, hashed by
    :func:`conelib.results.config_hash`).
    """

    model: str = "lenet5"
    dataset: str = "mnist5k"
    width: int = 1
    norm: str | None = None
    steps: int = 1000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    augment: bool | None = None
    test_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None

    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ("device", "data_root")

    def __post_init__(self) -> None:
        if self.model not in models.MODELS:
            raise ValueError(f"model={self.model!r} is not known; choose one of {models.MODELS}")
        if self.dataset not in data_mod.DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is not known; choose one of {data_mod.DATASETS}")
        for name in ("steps", "batch_size", "width"):
            if int(getattr(self, name)) < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        # tuples, not lists, and floats for float fields (`-p weight_decay 0` arrives as the int 0),
        # so that configs hash and compare by value
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
            elif f.type in ("float", float) and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))
        self.train_config()  # validates the optimiser fields

    @classmethod
    def from_mapping(cls: type[C], mapping: Mapping[str, Any]) -> C:
        """Build from a mapping, rejecting unknown keys with the list of allowed ones."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - allowed)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for {cls.__name__}; allowed: {sorted(allowed)}")
        return cls(**mapping)

    @classmethod
    def from_profile(cls: type[C], profile: str, experiment: str, **overrides: Any) -> C:
        """The profile's section for ``experiment``, with the overrides that are not ``None``."""
        return cls.from_mapping(merge(load_profile(profile, experiment), overrides))

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """The fields that determine the result (everything but :attr:`RUNTIME_FIELDS`)."""
        d = dataclasses.asdict(self)
        for k in self.RUNTIME_FIELDS:
            d.pop(k, None)
        return d

    def train_config(self, steps: int | None = None) -> TrainConfig:
        return TrainConfig(
            steps=self.steps if steps is None else steps,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            milestones=tuple(self.milestones),
            gamma=self.gamma,
            augment=self.augment,
            seed=self.seed,
        )


def setup(cfg: RunConfig) -> tuple[torch.device, "data_mod.TensorData", torch.nn.Module]:
    """Device, dataset (on the device) and freshly initialised model for a run."""
    device = resolve_device(cfg.device)
    data = data_mod.load_dataset(cfg.dataset, root=cfg.data_root, seed=cfg.seed, test_fraction=cfg.test_fraction,
                                 device=device)
    model = models.build(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes, width=cfg.width,
                         norm=cfg.norm, seed=cfg.seed).to(device)
    return device, data, model
