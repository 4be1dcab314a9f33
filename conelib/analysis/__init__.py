"""Statistics of stored results: what the runs show, as numbers (per run, over seeds, over the atlas).

* :mod:`conelib.analysis.kernel_dynamics`: one row per kernel-dynamics run (the version-3 measures
  with intervals), the mean over seeds, seeds stacked for charts;
* :mod:`conelib.analysis.spawning`: barriers over seeds, the onset of linear mode connectivity, the
  end of Phase I and the Phase II jitter of the same training;
* :mod:`conelib.analysis.switching`: paired comparisons of switching runs (McNemar per seed, a
  bootstrap over seeds and test images, matched train loss), the end of Phase I beside them;
* :mod:`conelib.analysis.atlas_summary`: the atlas summary Dataset built from the stored runs;
* :mod:`conelib.analysis.atlas`: reading it (cells, regions, the loss clock, the noise ball);
* :mod:`conelib.analysis.controls`: the controls of "Is it a cone?" (learning-rate decay against the
  noise-ball prediction, long runs, momentum at matched effective step, verdicts beside the loss);
* :mod:`conelib.analysis.text`: numbers as text for the prose.
"""
