"""Cells of notebooks/kernel_dynamics.ipynb (the paper's Figure 1)."""

from nbcells import code, md

NAME = "kernel_dynamics"

CELLS = [
    md(r"""
# Kernel dynamics: two phases and the cone

This chapter re-runs the experiment behind the paper's Figure 1. We train one network with SGD and,
every few steps, compute its empirical NTK $H(\theta_t)$ on a fixed, class-balanced probe set of
training images. Three views of that trajectory of kernels follow:

* **(a)** the distance $S(\theta_t, \theta_\tau)$ from the current kernel to the kernel at a few
  reference steps $\tau$. If, after Phase I, these curves climb a little and then flatten, the kernel
  keeps moving but stays within a bounded distance of where it was: the *cone*.
* **(b)** the distance between kernels a gap $dt$ apart, $S(\theta_t, \theta_{t+dt})$. A large value
  early on that falls to a small but non-zero floor is the two-phase picture; in the paper the floor
  is about the same for every $dt$.
* **(c)** all kernels at once, placed in the plane so that their pairwise distances are kept as well
  as two dimensions allow, with $H(0)$ at the origin.

The numbers in the text below are computed from the stored result when the notebook runs; nothing is
typed by hand.
"""),
    code(r"""
# Parameters (papermill injects overrides after this cell). `None` means "take the profile's value".
profile = "quick"        # named parameter set in profiles/<profile>.yaml: quick (CPU, minutes) or paper (GPU)
model = None             # lenet5 | lenet_300_100 | resnet20 | vgg16
dataset = None           # mnist5k | digits | mnist | fashion_mnist | cifar10
width = None             # channel/width multiplier of the model
norm = None              # batchnorm | layernorm | none (resnet20, vgg16)
steps = None             # total SGD steps T
snapshot_every = None    # an eNTK snapshot every this many steps
dts = None               # list of gaps dt for the adjacent distance (multiples of snapshot_every)
taus = None              # list of reference steps tau (snapshot steps)
probe_size = None        # number of probe examples n on which the eNTK is computed
kernel_kind = None       # trace | full | logit_sum
lr = None                # SGD learning rate
batch_size = None        # SGD batch size
seed = None              # seed of initialisation, data split, probe set and data order
device = None            # auto | cpu | cuda
data_root = None         # folder with torchvision datasets (cifar10, mnist, fashion_mnist)
results_root = None      # where results are stored (default: the repository's results/)
recompute = False        # True: train again even if a result for this configuration is stored
""", "parameters"),
    code(r"""
from myst_nb import glue

from conelib.charts import enable_renderer
from conelib.experiments import kernel_dynamics, kernel_dynamics_config

enable_renderer()  # charts draw in JupyterLab and in the offline book
cfg = kernel_dynamics_config(
    profile, model=model, dataset=dataset, width=width, norm=norm, steps=steps, snapshot_every=snapshot_every,
    dts=dts, taus=taus, probe_size=probe_size, kernel_kind=kernel_kind, lr=lr, batch_size=batch_size, seed=seed,
    device=device, data_root=data_root,
)
ds = kernel_dynamics(cfg, results_root=results_root, recompute=recompute)
print(f"config hash {ds.attrs['config_hash']}: {cfg.model} on {cfg.dataset}, T = {cfg.steps}, "
      f"n = {ds.attrs['probe_size']} probe examples, {ds.sizes['step']} snapshots, {ds.attrs['kernel_kind']} kernel")
"""),
    code(r"""
from conelib.measures import cone_width, phase_one_end, verdict

v = verdict(ds)
t_end = v.phase_one_end
T = int(ds.step.max())
final_acc = float(ds.test_acc.isel(step=-1))
glue("model", cfg.model, display=False)
glue("dataset", cfg.dataset, display=False)
glue("T", T, display=False)
glue("n_probe", int(ds.attrs["probe_size"]), display=False)
glue("final_test_acc", f"{100 * final_acc:.1f}%", display=False)
glue("verdict", v.verdict, display=False)
glue("phase_end", "none found" if t_end is None else f"step {t_end}", display=False)
glue("phase_end_frac", "—" if t_end is None else f"{100 * t_end / T:.0f}%", display=False)
dt0 = int(ds.dt.min())
early = float(ds.adjacent_distance.sel(dt=dt0).isel(step=slice(0, 3)).max())
late = float(ds.adjacent_distance.sel(dt=dt0).where(ds.step >= T // 2).median())
glue("dt0", dt0, display=False)
glue("adj_early", f"{early:.3g}", display=False)
glue("adj_late", f"{late:.2g}", display=False)
glue("adj_ratio", f"{early / late:.0f}" if late > 0 else "∞", display=False)
glue("S_final_init", f"{float(ds.dist_to_init.isel(step=-1)):.3f}", display=False)
if t_end is not None:
    cw = cone_width(ds, t_end)
    glue("cone_final", f"{cw.final:.3g}", display=False)
    glue("cone_share", f"{100 * cw.late_growth_share:.0f}%", display=False)
else:
    glue("cone_final", "—", display=False)
    glue("cone_share", "—", display=False)
glue("fidelity", f"{100 * float(ds.attrs['embedding_fidelity']):.0f}%", display=False)
print(v)
""", "remove-input", "remove-output"),
    md(r"""
## What this run shows

We trained **{glue:text}`model`** on **{glue:text}`dataset`** for $T =$ {glue:text}`T` steps and
computed the eNTK on {glue:text}`n_probe` probe images; the final test accuracy is
{glue:text}`final_test_acc`.

* Over the first snapshots, kernels {glue:text}`dt0` steps apart differ by up to
  $S =$ {glue:text}`adj_early`; in the second half of training the typical (median) adjacent distance
  is {glue:text}`adj_late`, about {glue:text}`adj_ratio` times smaller.
* With the definition in {doc}`../phases` (the velocity, smoothed by a running median over 5
  snapshots, stays below 10% of its peak from then on),
  Phase I ends at **{glue:text}`phase_end`** ({glue:text}`phase_end_frac` of the run).
* Seen from the end of Phase I, the kernel moves a further $S =$ {glue:text}`cone_final` by the end
  of training, and {glue:text}`cone_share` of that distance is covered in the second half of the
  remaining time (near 0% means a plateau, near 50% a steady drift).
* Verdict of our measures: **{glue:text}`verdict`**. Overall the final kernel is at
  $S(\theta_T, \theta_0) =$ {glue:text}`S_final_init` from the initial one.

The three panels (brush over panel (b) to highlight a range of steps in (a) and (c); click a legend
entry to isolate one $\tau$ or $dt$, shift-click for several):
"""),
    code(r"""
from conelib.charts import kernel_dynamics_chart

kernel_dynamics_chart(ds)
"""),
    md(r"""
Panel (c) places each kernel by classical multidimensional scaling of the chord distances
$\sqrt{2S}$ between normalised kernels; the plane keeps {glue:text}`fidelity` of the trajectory's
variance, so distances in it are a faithful summary only when that share is high.

The kernel velocity on a log scale makes the drop between the phases easier to see; the red rule
marks the measured end of Phase I.
"""),
    code(r"""
from conelib.charts import kernel_velocity_chart, training_curves_chart

kernel_velocity_chart(ds, t_end)
"""),
    code(r"""
training_curves_chart(ds)
"""),
    md(r"""
## The paper-scale run

When a GPU run of the `paper` profile (ResNet-20 on CIFAR-10, $T = 10^4$) has been stored under
`results/paper/`, it is drawn here next to the quick one.
"""),
    code(r"""
from conelib.results import stored_results

paper = stored_results("kernel_dynamics", root="paper")
if paper:
    dsp = paper[0]
    print(f"paper-scale result {dsp.attrs['config_hash']}: {dsp.attrs['title']}, device {dsp.attrs.get('device')}")
    display(kernel_dynamics_chart(dsp))
    print(verdict(dsp))
else:
    print("No paper-scale result is stored in results/paper/ yet: it needs a GPU and CIFAR-10 (see Reproduce).")
"""),
]

