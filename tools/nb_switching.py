"""Cells of notebooks/switching.ipynb (the paper's Figure 2)."""

from nbcells import code, md

NAME = "switching"

CELLS = [
    md(r"""
# Switching to linearized training: what the cone is worth

The kernel-dynamics chapter showed the eNTK moving fast in Phase I and then slowly, inside a cone,
in Phase II. Is that slow movement worth anything? If Phase II were *lazy*, as the two-phase
hypothesis of {cite:t}`fort2020deep` has it, we could freeze the kernel at the end of Phase I and lose
nothing. This chapter re-runs the experiment of the paper's Figure 2 {cite:p}`zhou2025cone`, which puts
that to the test.

## The lazy regime and linearized training

Around a parameter point $\theta_s$, a network has a first-order Taylor model

$$
f_{\mathrm{lin}}(x;\theta) = f(x;\theta_s) + J(x;\theta_s)\,(\theta-\theta_s),
\qquad J(x;\theta_s) = \frac{\partial f(x;\theta)}{\partial\theta}\Big|_{\theta=\theta_s} .
$$

It is linear in the parameters $\theta$ (not in the input $x$): its features are the per-example
gradients at $\theta_s$, and they never change. *Linearized training* trains $\theta$ in this model,
with the same loss, optimizer, data order and learning-rate schedule as the network. Because the
model is linear in $\theta$, its tangent kernel is $J J^\top = H(\theta_s)$ wherever $\theta$ is, so
under gradient flow its outputs on the training set move as

$$
\frac{d f_{\mathrm{lin}}}{dt} = -\,H(\theta_s)\,\nabla_f L ,
$$

kernel gradient descent with the eNTK *frozen* at $\theta_s$; for the squared loss this ends at
kernel regression with $H(\theta_s)$. That is the lazy regime made exact. Very wide networks behave
this way on their own: their kernel barely moves from its initial value {cite:p}`jacot2018ntk` and
they stay close to their linearization throughout training {cite:p}`lee2019wide`, while real networks
of ordinary width learn features and do better than their lazy counterparts
{cite:p}`chizat2019lazy`.

## The switching experiment

For a switching step $t$ we train the network normally up to $t$, then replace it by its Taylor model
at $\theta(t)$ and train that up to the end $T$. The result is written
$\theta_{\mathrm{std}\to\mathrm{lin}}(T;t)$. At $t = 0$ the whole run is lazy: kernel training with
the eNTK at initialisation. At $t = T$ it is the ordinary network. In between, everything after $t$
is lazy. If the kernel's movement in Phase II did not matter, the test accuracy would stop improving
once $t$ passes the end of Phase I; the paper finds that it keeps improving.

Our runs keep everything else fixed at the switch: the mini-batches (a pure function of the seed and
the step), the learning-rate schedule, and (by default, `optimizer_policy="carried"`) SGD's
momentum buffers, which live in the same parameter space and are handed to the linearized model's
optimizer. Resetting them instead would add a warm-restart transient (the first updates after a reset
are up to ten times smaller with momentum 0.9) that is unrelated to linearizing. The network inside
the Taylor model is evaluated in eval mode, as for the eNTK, so a BatchNorm layer would use the
running statistics frozen at $\theta(t)$; the models of both profiles have none (LeNet-5, and ResNet-20
with LayerNorm).
"""),
    code(r"""
# Parameters (papermill injects overrides after this cell). `None` means "take the profile's value".
profile = "quick"         # named parameter set in profiles/<profile>.yaml: quick (CPU, minutes) or paper (GPU)
model = None              # lenet5 | lenet_300_100 | resnet20 | vgg16
dataset = None            # mnist5k | digits | mnist | fashion_mnist | cifar10
width = None              # channel/width multiplier of the model
norm = None               # batchnorm | layernorm | none (resnet20, vgg16)
steps = None              # total SGD steps T
switch_steps = None       # list of switching steps t (0 and T are always added)
eval_every = None         # the test curves are recorded every this many steps
optimizer_policy = None   # carried | reset: the momentum buffers at the switch
lr = None                 # SGD learning rate
batch_size = None         # SGD batch size
seed = None               # seed of initialisation, data split and data order
seeds = None              # list of seeds to run (bands over seeds); None: just `seed`
device = None             # auto | cpu | cuda
data_root = None          # folder with torchvision datasets (cifar10, mnist, fashion_mnist)
results_root = None       # where results are stored (default: the repository's results/)
recompute = False         # True: train again even if a result for this configuration is stored
""", "parameters"),
    code(r"""
from myst_nb import glue

from conelib.charts import enable_renderer
from conelib.experiments import switching, switching_config

enable_renderer()  # charts draw in JupyterLab and in the offline book
cfg = switching_config(
    profile, model=model, dataset=dataset, width=width, norm=norm, steps=steps, switch_steps=switch_steps,
    eval_every=eval_every, optimizer_policy=optimizer_policy, lr=lr, batch_size=batch_size, seed=seed,
    seeds=seeds, device=device, data_root=data_root,
)
ds = switching(cfg, results_root=results_root, recompute=recompute)
print(f"config hash {ds.attrs['config_hash']}: {cfg.model} on {cfg.dataset}, T = {cfg.steps}, "
      f"switching steps {list(cfg.switch_steps)}, seeds {list(cfg.seeds)}, optimizer state {cfg.optimizer_policy}; "
      f"computed in {float(ds.attrs['wall_seconds']) / 60:.1f} min on {ds.attrs['device']}")
"""),
    code(r"""
from conelib.experiments.switching import matching_phase_one_end, summarize

phase_end, kd_hash = matching_phase_one_end(cfg, results_root=results_root)
s = summarize(ds, phase_end)
T = int(ds.step.max())


def pct(a):
    return "—" if a is None else f"{100 * a:.1f}%"


glue("model", cfg.model, display=False)
glue("dataset", cfg.dataset, display=False)
glue("T", T, display=False)
glue("n_switch", int(ds.sizes["switch_step"]), display=False)
glue("n_seeds", int(ds.sizes["seed"]), display=False)
glue("policy", cfg.optimizer_policy, display=False)
glue("acc_lin0", pct(s.acc_at_zero), display=False)
glue("acc_std", pct(s.acc_standard), display=False)
glue("loss_lin0", f"{s.loss_at_zero:.3f}", display=False)
glue("loss_std", f"{s.loss_standard:.3f}", display=False)
glue("gain_pp", f"{100 * s.gain:+.1f}", display=False)
glue("rho", "—" if s.rank_correlation != s.rank_correlation else f"{s.rank_correlation:.2f}", display=False)
glue("seed_note", "" if ds.sizes["seed"] == 1 else
     f" (the accuracy varies by up to {100 * s.seed_range:.1f} points between seeds)", display=False)
if phase_end is None:
    glue("phase_end", "not measured here (no stored kernel-dynamics run of this training was found"
         + ("" if kd_hash is None else ", or it shows no two phases") + ")", display=False)
    glue("phase_step", "—", display=False)
    glue("acc_phase", "—", display=False)
    glue("loss_phase", "—", display=False)
    for name in ("after_pp", "after_images", "after_loss"):
        glue(name, "—", display=False)
else:
    glue("phase_end", f"step {phase_end} (kernel-dynamics result {kd_hash})", display=False)
    glue("phase_step", s.phase_switch_step, display=False)
    glue("acc_phase", pct(s.acc_at_phase_end), display=False)
    glue("loss_phase", f"{s.loss_at_phase_end:.3f}", display=False)
    g = s.gain_after_phase_end
    glue("after_pp", f"{100 * g:+.1f}", display=False)
    glue("after_images", f"{round(g * int(ds.attrs['n_test'])):+d}", display=False)
    glue("after_loss", f"{(s.loss_standard - s.loss_at_phase_end) / s.loss_at_phase_end:+.0%}", display=False)
glue("n_test", int(ds.attrs["n_test"]), display=False)
answer = {
    "later switching helps": "Yes: the later the switch, the better the test accuracy",
    "no clear effect": "Not clearly: the test accuracy does not change consistently with the switching step",
    "later switching hurts": "No: here switching later gives a worse test accuracy",
}[s.verdict]
glue("answer", answer, display=False)
lin_move = float(ds.lin_displacement.sel(switch_step=0).mean())
std_move = float(ds.std_displacement.sel(switch_step=0).mean())
glue("lin_move", f"{lin_move:.1f}", display=False)
glue("std_move", f"{std_move:.1f}", display=False)
print(s)
""", "remove-input", "remove-output"),
    md(r"""
## What this run shows

We trained **{glue:text}`model`** on **{glue:text}`dataset`** for $T =$ {glue:text}`T` steps and
switched to linearized training at {glue:text}`n_switch` steps $t$ ({glue:text}`n_seeds` seed(s);
optimizer state at the switch: {glue:text}`policy`).

* Linearizing from the start ($t = 0$, kernel training with the initial eNTK) reaches a test
  accuracy of **{glue:text}`acc_lin0`** (test loss {glue:text}`loss_lin0`).
* Phase I of this training ends at {glue:text}`phase_end`. Linearizing at the nearest switching
  step, $t =$ {glue:text}`phase_step`, gives **{glue:text}`acc_phase`** (test loss
  {glue:text}`loss_phase`).
* The standard run, never linearized, ends at **{glue:text}`acc_std`** (test loss
  {glue:text}`loss_std`).

Does switching later help? **{glue:text}`answer`.** From $t = 0$ to $t = T$ the accuracy changes by
{glue:text}`gain_pp` percentage points, and the rank correlation between the switching step and the
accuracy is $\rho =$ {glue:text}`rho`{glue:text}`seed_note`. Of that change, switching later than
the end of Phase I still adds {glue:text}`after_pp` points ({glue:text}`after_images` of the
{glue:text}`n_test` test images), and changes the test loss by {glue:text}`after_loss`.

In the top row, each point is one switching step and the dashed line is the standard run. Click a
point to see that continuation's test curve in the bottom row next to the standard run's
(shift-click adds more, double-click shows all again); the dotted rule marks the switch.
"""),
    code(r"""
from conelib.charts import switching_chart

switching_chart(ds)
"""),
    md(r"""
How far do the parameters travel after the switch? From $t = 0$, linearized training moves them by
$\lVert\theta(T) - \theta(0)\rVert =$ {glue:text}`lin_move` and standard training by
{glue:text}`std_move`. The lazy model's loss is convex in $\theta$ and its kernel cannot adapt, so it
settles for the best fit that the initial features allow; the network keeps re-shaping those
features. Where the top-row curve is still rising after the end of Phase I, the slow
movement of the kernel inside the cone is still buying accuracy that a frozen kernel cannot.

## The paper-scale run

When a GPU run of the `paper` profile (ResNet-20 with LayerNorm on CIFAR-10, $T = 10^4$, switching
at 0, 500, …, 10000) has been stored under `results/paper/`, it is drawn here.
"""),
    code(r"""
from conelib.results import stored_results

paper = stored_results("switching", root="paper")
if paper:
    dsp = paper[-1]
    print(f"paper-scale result {dsp.attrs['config_hash']}: {dsp.attrs['title']}, device {dsp.attrs.get('device')}")
    print(summarize(dsp))
    display(switching_chart(dsp))
else:
    print("No paper-scale result is stored in results/paper/ yet: it needs a GPU and CIFAR-10 (see Reproduce).")
"""),
]
