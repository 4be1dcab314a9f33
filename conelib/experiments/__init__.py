"""The paper's experiments, each a function of a typed config that returns an ``xarray.Dataset``."""

from conelib.experiments.common import RunConfig, resolve_device
from conelib.experiments.kernel_dynamics import KernelDynamicsConfig, kernel_dynamics, kernel_dynamics_config

__all__ = ["RunConfig", "resolve_device", "KernelDynamicsConfig", "kernel_dynamics", "kernel_dynamics_config"]
from conelib.experiments.switching import SwitchingConfig, continue_linearized, switching, switching_config

__all__ += ["SwitchingConfig", "continue_linearized", "switching", "switching_config"]
