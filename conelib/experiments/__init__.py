"""The paper's experiments, each a function of a typed config that returns an ``xarray.Dataset``."""

from conelib.experiments.common import RunConfig, profile_runs, resolve_device, same_trajectory
from conelib.experiments.kernel_dynamics import (
    KernelDynamicsConfig,
    kernel_dynamics,
    kernel_dynamics_config,
    kernel_dynamics_configs,
)
from conelib.experiments.spawning import SpawningConfig, spawning, spawning_config, spawning_configs
from conelib.experiments.switching import (
    SwitchingConfig,
    continue_linearized,
    continue_small_lr,
    switching,
    switching_config,
    switching_configs,
)

__all__ = [
    "RunConfig", "profile_runs", "resolve_device", "same_trajectory",
    "KernelDynamicsConfig", "kernel_dynamics", "kernel_dynamics_config", "kernel_dynamics_configs",
    "SpawningConfig", "spawning", "spawning_config", "spawning_configs",
    "SwitchingConfig", "continue_linearized", "continue_small_lr", "switching", "switching_config", "switching_configs",
]
