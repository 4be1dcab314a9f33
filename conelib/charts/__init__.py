"""Altair chart builders. Each takes a stored ``xarray.Dataset`` and returns an interactive chart.

Charts are always redrawn from a Dataset, never by retraining. Interactions: hover tooltips, a
legend click isolates one series (shift-click for several), and brushes link panels.
"""

from conelib.charts.common import enable_renderer
from conelib.charts.kernel_dynamics import (
    adjacent_distance_chart,
    cone_chart,
    distance_to_reference_chart,
    kernel_dynamics_chart,
    kernel_velocity_chart,
    phase_two_chart,
    training_curves_chart,
    velocity_and_fit_chart,
)

__all__ = [
    "enable_renderer",
    "adjacent_distance_chart",
    "cone_chart",
    "distance_to_reference_chart",
    "kernel_dynamics_chart",
    "kernel_velocity_chart",
    "phase_two_chart",
    "training_curves_chart",
    "velocity_and_fit_chart",
]
from conelib.charts.switching import (
    error_vs_train_loss_chart,
    switching_chart,
    switching_gain_chart,
    switching_points,
)

__all__ += ["error_vs_train_loss_chart", "switching_chart", "switching_gain_chart", "switching_points"]
from conelib.charts.sweep import atlas_chart, counterexample_chart, measures_chart

__all__ += ["atlas_chart", "counterexample_chart", "measures_chart"]
