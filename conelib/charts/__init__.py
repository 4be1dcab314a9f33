"""Altair chart builders. Each takes a stored ``xarray.Dataset`` and returns an interactive chart.

Charts are always redrawn from a Dataset, never by retraining. Interactions: hover tooltips, a
legend click isolates one series (shift-click for several), and brushes link panels.
"""

import warnings

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
from conelib.charts.atlas import atlas_chart, side_by_side_chart, measures_chart

__all__ += ["atlas_chart", "side_by_side_chart", "measures_chart"]
from conelib.charts.controls import jitter_schedule_chart, long_run_chart, verdict_loss_chart

__all__ += ["jitter_schedule_chart", "long_run_chart", "verdict_loss_chart"]
from conelib.charts.spawning import barrier_chart, barrier_curves_chart, sibling_kernel_chart

__all__ += ["barrier_chart", "barrier_curves_chart", "sibling_kernel_chart"]

# The atlas shares one selection between its panels on purpose (a click in any panel picks the run
# everywhere); Altair then merges the copies and says so, which would print in the book's pages.
warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter", category=UserWarning)
