"""Cells of notebooks/counterexample.ipynb: "When does the cone appear?" (the paper's Figure 3 and open question)."""

from nbcells import code, md

NAME = "counterexample"

CELLS = [
    md(r"""
# When does the cone appear?

The paper shows one training run in which the eNTK moves a lot and then keeps moving inside a narrow
cone (its Figure 1), and one in which "the kernel keeps evolving during training, and no clear
two-phase pattern is observed" (its Figure 3), and closes: "further efforts on uncovering the
contributing factors of the cone effect are expected". It does not say what differs between the two.

This chapter makes the question measurable and asks it of a grid of runs:

1. every run gets a **verdict** from the stated definitions of {doc}`../phases`: *two phases, cone*;
   *two phases, lazy* (the kernel freezes); *two phases, drifting* (the velocity drops but the
   kernel keeps moving away without a plateau); or *no two phases*;
2. a **sweep** runs the kernel-dynamics experiment of {doc}`kernel_dynamics` over a grid of learning
   rates, weight decays and architectures (`sweeps/when_cone.yaml`, run with `conelib sweep`);
3. the **counterexample**: two runs from that grid, one with a cone and one without, drawn with the
   same panels as Figure 1.

Every number in the text is read from the stored results when the notebook runs.
"""),
    code(r"""
# Parameters (papermill injects overrides after this cell). `None` means "take the profile's value".
profile = "quick"        # named parameter set in profiles/<profile>.yaml (its kernel_dynamics + counterexample sections)
grid_file = None         # the sweep's grid (YAML); None: sweeps/when_cone.yaml of the repository
cone = None              # overrides of the kernel_dynamics section for the run with a cone; None: the profile's counterexample.cone
counter = None           # overrides for the run without two phases; None: the profile's counterexample.counter
device = None            # auto | cpu | cuda (for the two runs, if they must be computed)
results_root = None      # where results are stored (default: the repository's results/)
recompute = False        # True: train the two runs again even if they are stored
""", "parameters"),
    code(r"""
from pathlib import Path

import numpy as np
import pandas as pd
from myst_nb import glue

from conelib.charts import enable_renderer
from conelib.cli import REPO
from conelib.measures import VERDICTS, verdict
from conelib.results import load_result
from conelib.sweep import load_grid, summarize, summary_path

enable_renderer()
grid = load_grid(Path(grid_file) if grid_file else REPO / "sweeps" / "when_cone.yaml")
# the summary the sweep stored, or one read now from the runs that are stored (whichever has more runs)
summary = summarize(grid, results_root, save=False)
stored_path = summary_path(grid, results_root)
if stored_path.exists():
    stored = load_result(stored_path)
    if stored.attrs["n_missing"] < summary.attrs["n_missing"]:
        summary = stored
n_runs, n_missing = int(summary.attrs["n_runs"]), int(summary.attrs["n_missing"])
print(f"grid {grid.hash}: {n_runs} runs over {list(grid.axes)}, {n_runs - n_missing} stored")
"""),
    code(r"""
import itertools

labels = summary.verdict.values.ravel().astype(str)
counts = {v: int((labels == v).sum()) for v in (*VERDICTS, "missing")}
base = grid.base
glue("n_runs", n_runs, display=False)
glue("n_done", n_runs - n_missing, display=False)
glue("n_missing", n_missing, display=False)
for v, key in zip(VERDICTS, ("n_cone", "n_lazy", "n_drift", "n_none")):
    glue(key, counts[v], display=False)
glue("grid_axes", "; ".join(f"{k} ∈ {{{', '.join(map(str, vals))}}}" for k, vals in grid.axes.items()), display=False)
glue("grid_base", f"{base['model']} on {base['dataset']}, T = {base['steps']} SGD steps, batch {base['batch_size']}, "
     f"momentum {base['momentum']}, constant learning rate, seed {base['seed']}; eNTK on {base['probe_size']} "
     f"probe images every {base['snapshot_every']} steps", display=False)
glue("sweep_run_minutes", f"{float(np.nansum(summary.wall_seconds.values)) / 60:.0f}", display=False)

# which swept fields decide the verdict: alone, or as a pair (each combination of values gives one verdict)
df = summary.drop_vars("config_hash").to_dataframe().reset_index()
df = df[df.verdict != "missing"]
fields = list(grid.axes)

def decides(cols):
    return len(df) > 0 and df.groupby(cols)["verdict"].nunique().max() == 1 and df.verdict.nunique() > 1

single = [d for d in fields if decides([d])]
pairs = [list(p) for p in itertools.combinations(fields, 2) if decides(list(p)) and not set(p) & set(single)]
if single:
    decider, cols = " or ".join(single) + " (alone)", [single[0]]
elif pairs:
    decider, cols = " and ".join(pairs[0]) + " together (no single field does)", pairs[0]
else:
    decider, cols = "none of the swept fields, alone or in pairs", fields
glue("deciders", decider, display=False)
drop = summary.velocity_drop.where(summary.verdict_code >= 0)
glue("drop_min", f"{float(drop.min()):.0f}" if n_runs > n_missing else "—", display=False)
glue("drop_max", f"{float(drop.max()):.0f}" if n_runs > n_missing else "—", display=False)
t_frac = summary.phase_one_end_frac.where(summary.verdict_code >= 0)
glue("t_end_max", f"{100 * float(t_frac.max()):.0f}%" if np.isfinite(t_frac).any() else "—", display=False)
share = summary.late_growth_share
for code, key in ((0, "cone"), (2, "drift")):
    sel = share.where(summary.verdict_code == code)
    ok = bool(np.isfinite(sel).any())
    glue(f"share_{key}", f"{float(sel.min()):.2f}–{float(sel.max()):.2f}" if ok else "—", display=False)
# how the counts move with the thresholds (from the stored runs)
if n_runs > n_missing:
    strict_rho = summarize(grid, results_root, save=False, fraction=0.01)
    strict_share = summarize(grid, results_root, save=False, plateau_share=0.2)
    glue("n_none_rho01", int((strict_rho.verdict_code == VERDICTS.index("no two phases")).sum()), display=False)
    glue("n_drift_share02", int((strict_share.verdict_code == VERDICTS.index("two phases, drifting")).sum()),
         display=False)
else:
    glue("n_none_rho01", "—", display=False)
    glue("n_drift_share02", "—", display=False)
# the verdict of every combination of the deciding fields
table = df.groupby(cols)["verdict"].agg(lambda v: ", ".join(sorted(set(v)))).to_frame("verdict of every run")
print("deciding fields:", decider)
""", "remove-input", "remove-output"),
    md(r"""
## The sweep

Base setting: {glue:text}`grid_base`. Swept: {glue:text}`grid_axes`. Of the {glue:text}`n_runs`
runs, {glue:text}`n_done` are stored ({glue:text}`n_missing` missing: failed or not run yet). Their
verdicts: **{glue:text}`n_cone`** two phases with a cone, **{glue:text}`n_drift`** two phases then
drifting, **{glue:text}`n_lazy`** lazy, **{glue:text}`n_none`** with no two phases. The verdict is
decided by **{glue:text}`deciders`**; the table below lists the verdicts for each combination of
their values. The runs took {glue:text}`sweep_run_minutes` minutes of training and eNTK time in all
(one CPU thread each).
"""),
    md(r"""
Left: one cell per run, coloured by its verdict (hover for the measures; click a legend entry to
isolate a verdict, shift-click for several). Right: the two continuous measures behind the verdicts,
for every run: the *velocity drop* (how many times the kernel velocity falls from its peak to its
typical value in the second half of training) and the *late-growth share* (how much of the distance
from $H(t^\ast)$ is still being gained in the second half of Phase II: near 0 is a plateau, 1/2 a
steady drift). Runs without a Phase II would sit at share 1.
"""),
    code(r"""
table
""", "remove-input"),
    code(r"""
from conelib.charts import sweep_chart

sweep_chart(summary)
"""),
    code(r"""
from conelib.experiments import kernel_dynamics, kernel_dynamics_config
from conelib.profiles import load_profile

section = load_profile(profile, "counterexample") if cone is None or counter is None else {}
overrides = {"cone": dict(cone if cone is not None else section["cone"]),
             "counter": dict(counter if counter is not None else section["counter"])}
# column titles name what differs between the two runs
differ = [k for k in {**overrides["cone"], **overrides["counter"]}
          if overrides["cone"].get(k) != overrides["counter"].get(k)]
runs, verdicts = {}, {}
for key, ov in overrides.items():
    cfg = kernel_dynamics_config(profile, **{**ov, "device": device})
    ds = kernel_dynamics(cfg, results_root=results_root, recompute=recompute)
    v = verdict(ds)
    setting = ", ".join(f"{k} = {val}" for k, val in ov.items())
    short = ", ".join(f"{k} = {getattr(cfg, k)}" for k in differ) or setting
    title = f"{'A' if key == 'cone' else 'B'}: {short} ({v.verdict.removeprefix('two phases, ')})"
    runs[title], verdicts[key] = ds, v
    T = int(ds.step.max())
    glue(f"{key}_setting", setting, display=False)
    glue(f"{key}_model", cfg.model, display=False)
    glue(f"{key}_verdict", v.verdict, display=False)
    glue(f"{key}_t_end", "none" if v.phase_one_end is None else f"step {v.phase_one_end}", display=False)
    glue(f"{key}_drop", f"{v.velocity_drop:.0f}", display=False)
    glue(f"{key}_share", "—" if v.late_growth_share is None else f"{v.late_growth_share:.2f}", display=False)
    glue(f"{key}_final", "—" if v.cone_final is None else f"{v.cone_final:.3f}", display=False)
    glue(f"{key}_acc", f"{100 * float(ds.test_acc.isel(step=-1)):.1f}%", display=False)
    glue(f"{key}_S0", f"{float(ds.dist_to_init.isel(step=-1)):.3f}", display=False)
    late = ds.adjacent_distance.sel(dt=int(ds.dt.min())).where(ds.step >= T // 2).median()
    glue(f"{key}_adj_late", f"{float(late):.2g}", display=False)
    print(f"{title}: {cfg.model}, {setting}; config hash {ds.attrs['config_hash']}")
"""),
    md(r"""
## The counterexample, beside a cone

The sweep holds no run without two phases (see the verdicts above); the closest to the paper's
Figure 3 is a kernel that keeps drifting. We show one next to a run from the same grid that differs
in one setting and has a cone.

**A** ({glue:text}`cone_model`, {glue:text}`cone_setting`): verdict *{glue:text}`cone_verdict`*.
Phase I ends at {glue:text}`cone_t_end` and the kernel velocity falls {glue:text}`cone_drop`-fold
from its peak. Seen from the end of Phase I, the kernel ends $S =$ {glue:text}`cone_final` away, and
the late-growth share is {glue:text}`cone_share`: the distance has levelled off. Test accuracy
{glue:text}`cone_acc`.

**B** ({glue:text}`counter_model`, {glue:text}`counter_setting`): verdict
*{glue:text}`counter_verdict`*. Phase I ends at {glue:text}`counter_t_end` and the velocity falls
{glue:text}`counter_drop`-fold, but the kernel keeps moving away from where Phase I left it: it ends
$S =$ {glue:text}`counter_final` away with a late-growth share of {glue:text}`counter_share`, as
for a steady drift. Test accuracy {glue:text}`counter_acc`. With the `quick` profile, B is the run of
{doc}`kernel_dynamics`.

The same panels as the paper's Figure 1, one column per run: (a) the distance to the kernel at a few
reference steps $\tau$: in A the curves flatten, in B they keep rising; (b) the distance between
kernels $dt$ steps apart; (c) the trajectory of kernels in the plane (classical MDS of the chord
distances, $H(0)$ at the diamond); (d) the velocity that the measures read, on a log scale, with its
running median, the threshold of 10% of its peak (dashed) and the measured end of Phase I (red).
Click a legend entry to isolate one $\tau$ or $dt$.
"""),
    code(r"""
from conelib.charts import counterexample_chart

counterexample_chart(runs)
"""),
    md(r"""
## What the data say

About the paper's open question, from the {glue:text}`n_done` runs of the sweep stored with this book
(`sweeps/when_cone.yaml`):

* **Every run had two phases, by our definition.** The kernel velocity fell between {glue:text}`drop_min`- and
  {glue:text}`drop_max`-fold from its early peak and stayed down: on these networks and data,
  Phase I always ended, at the latest {glue:text}`t_end_max` of the way through the run. We did not reproduce a run like the paper's Figure 3, in which the
  kernel "keeps evolving ... and no clear two-phase pattern is observed"; the closest is B, where
  Phase II is not a cone but a steady drift.
* **What separated a cone from a drift was weight decay, at the larger learning rate.** With
  learning rate 0.05, weight decay $5\cdot 10^{-4}$ turned a cone (late-growth shares
  {glue:text}`share_cone` over all cone runs) into a drift (shares {glue:text}`share_drift`), for
  LeNet-5 and for the MLP alike; at learning rate 0.005 the same weight decay changed nothing within
  the 2000 steps. The architecture did not change any verdict.
* **A reading, not tested here.** With momentum $\mu = 0.9$, weight decay $\lambda$ shrinks the
  weights by about $\eta\lambda/(1-\mu)$ per step: a time scale of 4000 steps at $\eta = 0.05$,
  comparable to the run, and of 40,000 steps at $\eta = 0.005$, far beyond it. Without weight
  decay the weights grow and each SGD step turns them less and less, so the kernel settles; with it,
  the weights' norm levels off and the steps keep turning them at a steady rate, which would keep the
  kernel drifting (the equilibrium that Li & Arora (2020) and Wan et al. (2021) describe for
  normalised networks). It predicts that runs at $\eta = 0.005$ with weight decay start to drift
  after some $10^4$ steps; a longer sweep would tell.

**Limits of what was run.** One seed per setting; two small networks (LeNet-5 and the 300-100 MLP,
no normalisation layers) on 4000 MNIST training images; 2000 SGD steps with a constant learning rate
and batch 128, no augmentation; the eNTK on 128 training images (its trace over the ten logits);
two learning rates, two weight decays. A first version of the grid also had learning rate 0.2; it
was cut to keep the sweep short on a shared 2-core machine, so large learning rates, where SGD noise
might keep the kernel moving for good, are untested. The verdicts use our thresholds
({doc}`../phases`) and move with them: asking for a hundred-fold drop that lasts
($\rho = 0.01$ instead of 0.1) gives {glue:text}`n_none_rho01` runs with no two phases, and a
stricter plateau (late-growth share below 0.2 instead of 0.3) gives {glue:text}`n_drift_share02`
drifting runs instead of {glue:text}`n_drift`: the two weight-decay runs at learning rate 0.05 stand
well apart (shares near 1/2), some of the cones less so. Finally, the paper's own runs follow recipes with weight decay (Frankle et al. 2020;
Ainsworth et al. 2023) and still show a cone at $10^4$ steps, so at that scale weight decay alone
cannot be the whole answer. The `paper` profile's `counterexample` section sets up the same contrast
for ResNet-20 on CIFAR-10, for a GPU; to extend the grid, edit `sweeps/when_cone.yaml` and run
`conelib sweep sweeps/when_cone.yaml` (runs already stored are skipped), or run it on a cluster as
described below.
"""),
    md(r"""
## Running a sweep

A grid file names a base configuration (a profile and overrides) and the values of the swept fields;
the runs are their cartesian product, one Dask task each, and every run stores its own Dataset. Runs
already stored are skipped, a failed run is reported with its configuration and its error without
stopping the others, and running the same command again resumes: it submits only what is missing.
The summary of the measures over the grid is stored in `results/sweeps/<grid hash>.nc`.

```bash
# a local Dask cluster with 2 workers (one process and one thread each)
conelib sweep sweeps/when_cone.yaml
conelib sweep sweeps/when_cone.yaml --workers 4
# a Dask scheduler that is already running
conelib sweep sweeps/when_cone.yaml --address tcp://scheduler:8786
```

From Python, and on a SLURM cluster with one GPU per worker (`pip install 'conelib[slurm]'` adds
dask-jobqueue; every worker must see the same `results_root`):

```python
from dask.distributed import Client
from dask_jobqueue import SLURMCluster
from conelib.sweep import load_grid, run_sweep

cluster = SLURMCluster(cores=8, memory="32GB", processes=1,
                       walltime="04:00:00",
                       job_extra_directives=["--gres=gpu:1"])
cluster.scale(jobs=4)  # 4 SLURM jobs = 4 workers = 4 GPUs
grid = load_grid("sweeps/when_cone.yaml")
report = run_sweep(grid, client=Client(cluster),
                   results_root="/shared/conelib-results")
print(report)  # skipped, computed, failed; the summary
```
"""),
]
