"""The kernel-dynamics experiment: the paper's Figure 1.

Train one network and, at every snapshot step :math:`t`, compute the eNTK :math:`H(\\theta_t)` on a
fixed probe subset. From the trajectory of kernels we store, over the training ``step``:

* train/test loss and accuracy, the kernel's Frobenius norm, and :math:`S(\\theta_t, \\theta_0)`;
* the adjacent distance :math:`S(\\theta_t, \\theta_{t+dt})` and velocity :math:`v(t)` for several
  ``dt`` (Figure 1b);
* the distance to reference steps :math:`S(\\theta_t, \\theta_\\tau)` for several ``tau`` (Figure 1a);
* the pairwise distance matrix of all snapshots and the 2-D cone embedding (Figure 1c).

Zhou et al. (2025), Section 4; Fort et al. (2020), Section 4.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from conelib import data as data_mod
from conelib.config import ParameterError, param
from conelib.experiments.common import Experiment, ProbeConfig, setup
from conelib.kernels import KernelTrajectory
from conelib.trajectory import distances_dataset
from conelib.ntk import ntk_fn
from conelib.results import result_path, save_result
from conelib.models.scaling import loss_scale
from conelib.train import train

EXPERIMENT = "kernel_dynamics"


def _positive(v: int) -> bool:
    return v >= 1


@dataclass(frozen=True, init=False)
class KernelDynamicsConfig(ProbeConfig):
    """A :class:`~conelib.experiments.common.ProbeConfig` (a run with an eNTK probe set) plus the
    kernel snapshots.

    Snapshots are taken every ``snapshot_every`` steps (and at 0 and ``steps``); every ``dt`` must
    be a multiple of ``snapshot_every`` and every ``tau`` a snapshot step.
    """

    LABEL = "the kernel_dynamics experiment (KernelDynamicsConfig)"

    snapshot_every: int = param(20, "an eNTK snapshot every this many steps", check=_positive,
                                allowed="an integer >= 1")
    dts: tuple[int, ...] = param((20, 40, 80), "gaps dt of the adjacent distance S(t, t+dt) (multiples of "
                                 "snapshot_every)", unique=True)
    taus: tuple[int, ...] = param((200, 400, 600, 800), "reference steps tau of S(t, tau) (snapshot steps)",
                                  unique=True)
    keep_kernels: bool = param(False, "also store the kernels themselves (a separate, large file)", runtime=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps % self.snapshot_every or self.steps < 2 * self.snapshot_every:
            raise ParameterError("steps", f"parameter 'steps' ({self.steps}) must be a multiple of snapshot_every "
                                 f"({self.snapshot_every}) with at least two snapshots after step 0")
        if not self.dts:
            raise ParameterError("dts", "parameter 'dts' must list at least one gap")
        bad_dt = [d for d in self.dts if d <= 0 or d % self.snapshot_every or d > self.steps]
        if bad_dt:
            raise ParameterError("dts", f"parameter 'dts' must hold positive multiples of snapshot_every="
                                 f"{self.snapshot_every} up to steps={self.steps}; got {list(self.dts)}")
        bad_tau = [t for t in self.taus if t < 0 or t > self.steps or t % self.snapshot_every]
        if bad_tau:
            raise ParameterError("taus", f"parameter 'taus': {bad_tau} are not snapshot steps (multiples of "
                                 f"snapshot_every={self.snapshot_every} in [0, steps={self.steps}])")

    @property
    def snapshot_steps(self) -> list[int]:
        return list(range(0, self.steps + 1, self.snapshot_every))


def _compute(cfg: KernelDynamicsConfig, progress: bool, results_root: str | Path | None) -> xr.Dataset:
    ds, kernels = _run(cfg, progress=progress)
    if cfg.keep_kernels:
        save_result(kernels, kernels_path(cfg, results_root))
    return ds


#: the kernel-dynamics experiment (:class:`~conelib.experiments.common.Experiment`): ``kernel_dynamics(config, **overrides)``
kernel_dynamics: Experiment[KernelDynamicsConfig] = Experiment(
    EXPERIMENT, KernelDynamicsConfig, lambda cfg, progress, root: _compute(cfg, progress, root))
kernel_dynamics_config, kernel_dynamics_configs = kernel_dynamics.config, kernel_dynamics.configs
config_of = kernel_dynamics.config_of


def kernels_path(cfg: KernelDynamicsConfig, results_root: str | Path | None = None) -> Path:
    """Where the kernels themselves are stored when ``keep_kernels`` is set (a separate netCDF file)."""
    p = result_path(EXPERIMENT, cfg.identity(), root=results_root)
    return p.with_name(p.stem + ".kernels.nc")


def _run(cfg: KernelDynamicsConfig, *, progress: bool) -> tuple[xr.Dataset, xr.Dataset]:
    device, data, model = setup(cfg)
    if cfg.probe_size > len(data.y_train):
        raise ParameterError("probe_size", f"parameter 'probe_size' ({cfg.probe_size}) is larger than the training "
                             f"split of {cfg.dataset!r} ({len(data.y_train)} images)")
    x_probe, y_probe = data_mod.probe_subset(data, cfg.probe_size, seed=cfg.seed)
    kernel = ntk_fn(model, kind=cfg.kernel_kind, method=cfg.ntk_method)
    traj = KernelTrajectory()
    kept: list[np.ndarray] = []
    ntk_seconds: list[float] = []

    def on_snapshot(step: int, net: torch.nn.Module) -> dict[str, float]:
        t0 = time.perf_counter()
        h = kernel(x_probe)
        if h.is_cuda:
            torch.cuda.synchronize()
        ntk_seconds.append(time.perf_counter() - t0)
        if not torch.isfinite(h).all():
            raise FloatingPointError(f"the eNTK at step {step} has non-finite entries")
        traj.add(step, h)
        if cfg.keep_kernels:
            kept.append(h.detach().float().cpu().numpy())
        return {}

    t_start = time.perf_counter()
    hist = train(model, data, cfg.train, snapshot_steps=cfg.snapshot_steps, on_snapshot=on_snapshot,
                 eval_train_max=cfg.train_eval_size, progress=progress, loss_scale=loss_scale(cfg.output_scale),
                 desc=f"{EXPERIMENT} {cfg.model}/{cfg.dataset} seed {cfg.seed}")
    wall = time.perf_counter() - t_start

    steps = np.asarray(traj.steps)
    ds = distances_dataset(steps, traj.distances(), traj.norms, dts=cfg.dts, taus=cfg.taus)
    ds = xr.merge([hist.to_dataset().sel(step=steps), ds], combine_attrs="drop_conflicts")
    ds["ntk_seconds"] = ("step", np.asarray(ntk_seconds), {"long_name": "wall time of one eNTK evaluation", "units": "s"})
    ds.attrs.update({
        "experiment": EXPERIMENT,
        "title": f"eNTK dynamics of {cfg.model} on {cfg.dataset}",
        "kernel_kind": cfg.kernel_kind,
        "probe_size": int(x_probe.shape[0]),
        "n_train": int(len(data.y_train)),
        "n_test": int(len(data.y_test)),
        "probe_classes": str(np.bincount(y_probe.cpu().numpy(), minlength=data.num_classes).tolist()),
        "norm_mode": "eNTK computed in eval mode (BatchNorm uses running statistics)",
        "wall_seconds": wall,
        "n_params": int(sum(p.numel() for p in model.parameters())),
    })
    kernels = xr.Dataset()
    if cfg.keep_kernels:
        dims = ("step", "i", "j") if cfg.kernel_kind != "full" else ("step", "i", "j", "a", "b")
        kernels = xr.Dataset({"kernel": (dims, np.stack(kept), {"long_name": f"eNTK ({cfg.kernel_kind})"})},
                             coords={"step": steps}, attrs={"config_hash_of": EXPERIMENT})
    return ds, kernels
