"""The jobs of the switching experiment: continuing a standard run from one of its checkpoints.

Two kinds of continuation start from the standard run's checkpoint at a switching step :math:`t`
(parameters and optimizer state), with the same data order and learning-rate schedule:

* :func:`continue_linearized`: the network's first-order Taylor model at :math:`\\theta(t)`
  (:class:`conelib.linearize.LinearizedModel`) is trained (the paper's
  :math:`\\theta_{\\mathrm{std}\\to\\mathrm{lin}}(T; t)`; Zhou et al. 2025, Figure 2);
* :func:`continue_small_lr`: the *network itself* keeps training, with every learning rate
  multiplied by a factor :math:`c < 1` from :math:`t` on: the baseline of Fort et al. (2020,
  Section 5), which optimises slowly like the linear model but lets the kernel move. Since
  :meth:`~conelib.train.TrainConfig.lr_at` is linear in ``lr``, this is the same schedule with
  ``lr`` replaced by :math:`c \\cdot` ``lr``.

Matched train loss (:class:`MatchRule`): a linearized continuation may train past :math:`T` until
its train loss (on the run's fixed training subset) reaches a level :math:`L` (the standard run's
train loss at :math:`T`), checked at every snapshot, up to a horizon :math:`H`. It stops early when
even a loss falling as :math:`1/(s - t)` (the rate of gradient descent on a separable
cross-entropy problem; slower in practice) could not reach :math:`L` by :math:`H`:

.. math::

    \\ell(s) > L \\quad\\text{and}\\quad t + (s - t)\\,\\frac{\\ell(s)}{L} > H .

:func:`linearized_job` and :func:`small_lr_job` wrap the continuations as picklable jobs (inline or
in a worker process) that return plain numbers and the per-image correctness
(:func:`test_correct`) of the final models; :func:`run_jobs` runs them in processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from conelib import data as data_mod
from conelib.experiments.common import RunConfig, build_model, load_data, resolve_device
from conelib.linearize import LinearizedModel, linearize
from conelib.models.scaling import loss_scale
from conelib.train import EVAL_TRAIN_MAX, TrainHistory, TrainingDivergedError, load_checkpoint, train

__all__ = ["POLICIES", "DECAY_TARGETS", "EVAL_TRAIN_MAX", "MatchRule", "continue_linearized", "continue_small_lr",
           "test_correct", "linearized_job", "small_lr_job", "run_jobs", "process_count"]

#: optimizer-state policies at the switch (see :mod:`conelib.experiments.switching`); the first is the default
POLICIES: tuple[str, ...] = ("carried", "reset")

#: where weight decay pulls the linearized model's parameters; the first is the default
DECAY_TARGETS: tuple[str, ...] = ("zero", "switch_point")

#: the metrics of a continuation's curves (as in :class:`conelib.train.TrainHistory`)
CURVES: tuple[str, ...] = ("test_acc", "test_loss", "train_loss", "train_acc")


@torch.no_grad()
def test_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Per-example correctness :math:`[\\arg\\max_c f_c(x_i) = y_i]` as an ``int8`` array (1 correct, 0
    wrong), computed in eval mode as :func:`conelib.train.evaluate` does (its mean is that accuracy)."""
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(p.device)
            if xb.is_floating_point():
                xb = xb.to(p.dtype)
            yb = y[i : i + batch_size].to(device=p.device, dtype=torch.long)
            out.append((model(xb).argmax(dim=1) == yb).to(torch.int8).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


@dataclass(frozen=True)
class MatchRule:
    """When a linearized continuation that trains past :math:`T` stops (see the module docstring).

    Attributes:
        level: the train loss to reach, :math:`L`.
        horizon: the last step it may train to, :math:`H \\ge T`.
    """

    level: float
    horizon: int

    def reached(self, loss: float) -> bool:
        return bool(loss <= self.level)

    def hopeless(self, step: int, switch_step: int, loss: float) -> bool:
        """Whether a loss falling as :math:`1/(s - t)` from ``loss`` at ``step`` would still be above
        the level at the horizon."""
        if self.reached(loss):
            return False
        return switch_step + (step - switch_step) * loss / self.level > self.horizon


def _restore(cfg: RunConfig, checkpoint: str | Path, optimizer_policy: str,
             data: data_mod.TensorData | None) -> tuple[data_mod.TensorData, nn.Module, dict, int]:
    """The network of ``cfg`` loaded from a checkpoint of its standard run: ``(data, model,
    checkpoint, t)``. Refuses an unknown ``optimizer_policy`` and a checkpoint written by another
    training (its data order or schedule would differ)."""
    if optimizer_policy not in POLICIES:
        raise ValueError(f"optimizer_policy={optimizer_policy!r} is not known; choose one of {POLICIES}")
    device = resolve_device(cfg.device)
    data = load_data(cfg, device) if data is None else data
    model = build_model(cfg, data, device)
    ckpt = load_checkpoint(checkpoint, model)
    if ckpt["config"] != cfg.train.to_dict():
        raise ValueError(f"checkpoint {checkpoint} was written by a run with config {ckpt['config']}, not "
                         f"{cfg.train.to_dict()}: its data order or schedule would differ")
    return data, model, ckpt, int(ckpt["step"])


def continue_linearized(
    cfg: RunConfig,
    checkpoint: str | Path,
    *,
    optimizer_policy: str = POLICIES[0],
    decay_to: str = DECAY_TARGETS[0],
    data: data_mod.TensorData | None = None,
    eval_steps: Sequence[int] | None = None,
    progress: bool = False,
    last_step: int | None = None,
    stop_when: Callable[[int, nn.Module, TrainHistory], bool] | None = None,
) -> tuple[TrainHistory, LinearizedModel]:
    """One continuation: linearize at a checkpoint of the standard run and train to ``cfg.steps``.

    The checkpoint (written by :func:`conelib.train.train` for ``cfg.train``) holds
    :math:`\\theta(t)` and the optimizer state at step :math:`t`. The network is rebuilt, loaded,
    linearized there (:func:`conelib.linearize.linearize`) and its Taylor model trained with
    :func:`conelib.train.train` from ``start_step = t``: same data order, learning-rate schedule
    and, with ``optimizer_policy="carried"``, the same momentum buffers.

    Args:
        cfg: the run's configuration (one seed).
        checkpoint: the checkpoint file of the standard run at the switching step.
        optimizer_policy: ``"carried"`` or ``"reset"`` (see :mod:`conelib.experiments.switching`).
        decay_to: ``"zero"`` or ``"switch_point"``: where weight decay pulls :math:`\\theta`.
        data: the dataset, if already loaded (else loaded from ``cfg``).
        eval_steps: steps at which to record the metrics (those in ``[t, last_step]`` are used;
            ``t`` and ``last_step`` always are).
        progress: show the training bar.
        last_step: train to this step instead of ``cfg.steps`` (past :math:`T` for a matched
            train loss; the data order and schedule simply go on).
        stop_when: passed to :func:`conelib.train.train` (ends the training at a snapshot).

    Returns:
        The continuation's :class:`~conelib.train.TrainHistory` and the trained
        :class:`~conelib.linearize.LinearizedModel`.

    Raises:
        ValueError: unknown policy or decay target, a ``last_step`` before the checkpoint, or a
            checkpoint written with another schedule / data order.
        FileNotFoundError: the checkpoint does not exist.
        conelib.train.TrainingDivergedError: the linearized run diverged.
    """
    if decay_to not in DECAY_TARGETS:
        raise ValueError(f"decay_to={decay_to!r} is not known; choose one of {DECAY_TARGETS}")
    data, model, ckpt, t = _restore(cfg, checkpoint, optimizer_policy, data)
    last = cfg.steps if last_step is None else int(last_step)
    if last < t:
        raise ValueError(f"last_step={last} is before the checkpoint's step {t}")
    tc = cfg.train if last == cfg.steps else cfg.train.replace(steps=last)
    lin = linearize(model)
    del model
    wanted = [s for s in (eval_steps or ()) if t <= s <= last]
    center = list(lin.theta_s().values()) if decay_to == "switch_point" else None
    history = train(lin, data, tc, start_step=t, snapshot_steps=sorted({t, *wanted, last}),
                    optimizer_state=ckpt["optimizer"] if optimizer_policy == "carried" else None,
                    eval_train_max=EVAL_TRAIN_MAX, progress=progress, desc=f"linearized from step {t}",
                    decay_center=center, loss_scale=loss_scale(getattr(cfg, "output_scale", None)),
                    stop_when=stop_when)
    return history, lin


def continue_small_lr(
    cfg: RunConfig,
    checkpoint: str | Path,
    factor: float,
    *,
    optimizer_policy: str = POLICIES[0],
    data: data_mod.TensorData | None = None,
    eval_steps: Sequence[int] | None = None,
    progress: bool = False,
) -> tuple[TrainHistory, nn.Module]:
    """The baseline of Fort et al. (2020): from the checkpoint at step :math:`t`, the network itself
    keeps training to ``cfg.steps`` with every learning rate multiplied by ``factor``.

    Same data order, schedule shape, weight decay (the network's own) and, with ``"carried"``,
    momentum buffers as the standard run; only the step size changes at :math:`t`.

    Raises:
        ValueError: a ``factor`` that is not a finite number > 0, an unknown policy, or a foreign checkpoint.
        FileNotFoundError: the checkpoint does not exist.
        conelib.train.TrainingDivergedError: the run diverged.
    """
    if not (isinstance(factor, (int, float)) and np.isfinite(factor) and factor > 0):
        raise ValueError(f"factor={factor!r} must be a finite number > 0")
    data, model, ckpt, t = _restore(cfg, checkpoint, optimizer_policy, data)
    wanted = [s for s in (eval_steps or ()) if t <= s <= cfg.steps]
    history = train(model, data, cfg.train.replace(lr=cfg.train.lr * float(factor)), start_step=t,
                    snapshot_steps=sorted({t, *wanted, cfg.steps}),
                    optimizer_state=ckpt["optimizer"] if optimizer_policy == "carried" else None,
                    eval_train_max=EVAL_TRAIN_MAX, progress=progress, desc=f"lr x {factor:g} from step {t}",
                    loss_scale=loss_scale(getattr(cfg, "output_scale", None)))
    return history, model


def flat_params(params: dict[str, torch.Tensor] | nn.Module) -> torch.Tensor:
    """The trainable parameters as one float64 vector (in ``named_parameters`` order)."""
    if isinstance(params, nn.Module):
        params = {n: p for n, p in params.named_parameters() if p.requires_grad}
    return torch.cat([p.detach().reshape(-1).double() for p in params.values()])


def _curves(hist: TrainHistory) -> dict[str, Any]:
    return {"steps": list(hist.steps), **{name: list(getattr(hist, name)) for name in CURVES}}


def linearized_job(cfg: RunConfig, checkpoint: str, final_params: torch.Tensor, policy: str, decay_to: str,
                   eval_steps: list[int], threads: int | None, match: MatchRule | None) -> dict[str, Any]:
    """One linearized continuation as a picklable job: its curves (to the step it stopped at), the
    per-image correctness at :math:`T` (``correct``) and, with a ``match`` rule, at the first snapshot
    whose train loss reaches the level (``matched_step``, ``matched_correct``; ``None`` if none
    did), the parameter displacements, its wall time, or the step at which it diverged."""
    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    T = cfg.steps
    device = resolve_device(cfg.device)
    data = load_data(cfg, device)
    out: dict[str, Any] = {"diverged": None, "matched_step": None, "matched_correct": None, "correct": None}
    seen: dict[str, Any] = {}

    def stop_when(step: int, model: nn.Module, hist: TrainHistory) -> bool:
        seen["history"] = hist
        seen.setdefault("switch_step", step)  # the first snapshot is the switching step itself
        if step < T:
            return False
        if step == T:
            out["correct"] = test_correct(model, data.x_test, data.y_test)
            out["lin_disp"] = float((flat_params(model.theta()).cpu() - flat_params(model.theta_s()).cpu()).norm())
        if match is None:
            return True
        loss = hist.train_loss[-1]
        if match.reached(loss):
            out["matched_step"] = step
            out["matched_correct"] = out["correct"] if step == T else test_correct(model, data.x_test, data.y_test)
            return True
        return match.hopeless(step, seen["switch_step"], loss)

    try:
        hist, lin = continue_linearized(cfg, checkpoint, optimizer_policy=policy, decay_to=decay_to, data=data,
                                        eval_steps=eval_steps, last_step=T if match is None else match.horizon,
                                        stop_when=stop_when)
    except TrainingDivergedError as err:
        out["diverged"] = err.step
        if "history" in seen:  # the snapshots before the divergence
            out.update(_curves(seen["history"]))
    else:
        out.update(_curves(hist))
        theta_t = flat_params(lin.theta_s()).cpu()
        out["std_disp"] = float((final_params - theta_t).norm())
    out["last_step"] = out["steps"][-1] if "steps" in out else None
    out["seconds"] = time.perf_counter() - t0
    return out


def small_lr_job(cfg: RunConfig, checkpoint: str, factor: float, policy: str, eval_steps: list[int],
                 threads: int | None) -> dict[str, Any]:
    """One small-learning-rate continuation as a picklable job: its curves, the per-image
    correctness at :math:`T`, how far its parameters moved after :math:`t`, its wall time, or the
    step at which it diverged."""
    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    data = load_data(cfg, device)
    out: dict[str, Any] = {"diverged": None, "correct": None}
    start = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    try:
        hist, model = continue_small_lr(cfg, checkpoint, factor, optimizer_policy=policy, data=data,
                                        eval_steps=eval_steps)
    except TrainingDivergedError as err:
        out["diverged"] = err.step
    else:
        out.update(_curves(hist))
        out["correct"] = test_correct(model, data.x_test, data.y_test)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        theta_t = torch.cat([start[n].reshape(-1).double() for n in names])
        out["disp"] = float((flat_params(model).cpu() - theta_t).norm())
    out["seconds"] = time.perf_counter() - t0
    return out


def process_count(n: int) -> int:
    """``0`` -> the CPU cores this process may use; otherwise ``n``."""
    if n:
        return int(n)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(jobs: Sequence[tuple[Any, Callable[..., dict[str, Any]], tuple]],
             store: Callable[[Any, dict[str, Any]], None], processes: int, bar: tqdm) -> None:
    """Run ``(key, function, args)`` jobs, inline (``processes == 1``) or in that many spawned
    processes, calling ``store(key, result)`` as each finishes; on any error or interrupt, cancel
    what is queued and stop the processes (so nothing keeps running or writing after a failure)."""
    if processes == 1:
        for key, fn, args in jobs:
            bar.set_postfix_str(str(key), refresh=True)
            store(key, fn(*args))
            bar.update(1)
        return
    pool = cf.ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("spawn"))
    try:
        futures = {pool.submit(fn, *args): key for key, fn, args in jobs}
        for fut in cf.as_completed(futures):
            try:
                out = fut.result()
            except cf.process.BrokenProcessPool as err:
                raise RuntimeError(
                    "a continuation's process died before it could run. Processes are started with 'spawn', "
                    "which imports the main script again: a script that runs the switching experiment must "
                    "guard its code with `if __name__ == \"__main__\":` (or use processes=1)"
                ) from err
            store(futures[fut], out)
            bar.update(1)
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
