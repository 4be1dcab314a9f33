"""conelib: the reproducible companion to *On the Cone Effect in the Learning Dynamics*
(Zhou, Yang, Ren, Sugiyama, Yan; ICLR 2025 workshop, arXiv:2503.16316).

The public API, re-exported here:

* eNTK: :func:`empirical_ntk`, :func:`ntk_fn` (torch.func; CPU or CUDA; kinds full/trace/logit_sum)
* kernel metrics: :func:`kernel_distance` (eq. 4), :func:`kernel_velocity` (eq. 5),
  :func:`distance_to_reference`, :func:`pairwise_distances`, :func:`cone_embedding`
* models and data: :func:`build_model`, :func:`load_dataset`, :func:`probe_subset`
* training: :class:`TrainConfig`, :func:`train`
* results: :func:`load_or_compute`, :func:`save_result`, :func:`load_result`, :func:`config_hash`
* measures (version 3: denoised, with intervals): :func:`verdict`, :func:`measure`, :func:`assess`
  (bootstrap intervals and the verdict's robustness); versions 1 and 2 in :mod:`conelib.measures`
* experiments: :mod:`conelib.experiments`; charts: :mod:`conelib.charts`
"""

from conelib.data import DATASETS, TensorData, load_dataset, probe_subset
from conelib.kernels import (
    KernelTrajectory,
    adjacent_distance,
    cone_embedding,
    distance_to_reference,
    kernel_distance,
    kernel_velocity,
    pairwise_distances,
)
from conelib.measures import assess, measure, verdict
from conelib.trajectory import trajectory_dataset
from conelib.models import MODELS, NORMS
from conelib.models import build as build_model
from conelib.ntk import empirical_ntk, ntk_fn
from conelib.results import config_hash, load_or_compute, load_result, save_result, stored_results
from conelib.train import TrainConfig, TrainingDivergedError, train

__version__ = "0.1.0"

__all__ = [
    "DATASETS", "MODELS", "NORMS",
    "TensorData", "load_dataset", "probe_subset", "build_model",
    "empirical_ntk", "ntk_fn",
    "KernelTrajectory", "adjacent_distance", "cone_embedding", "distance_to_reference", "kernel_distance",
    "kernel_velocity", "pairwise_distances",
    "assess", "measure", "trajectory_dataset", "verdict",
    "config_hash", "load_or_compute", "load_result", "save_result", "stored_results",
    "TrainConfig", "TrainingDivergedError", "train",
]
