"""The book's chapters, one module each: from the stored results to the facts, tables and
sentences a chapter glues (the notebooks only load, call these, draw and glue).

* :mod:`conelib.report.measures`: "Measuring the phases" (the validation panel);
* :mod:`conelib.report.kernel_dynamics`: Figure 1;
* :mod:`conelib.report.switching`: Figure 2 and its controls (the claims, yes / no / cannot tell);
* :mod:`conelib.report.atlas`: "When does the cone appear?";
* :mod:`conelib.report.controls`: the controls of "Is it a cone?" (noise ball, long runs, counterexample);
* :mod:`conelib.report.spawning`: linear mode connectivity of spawned children.
"""
