"""Cost of one linearized training step relative to one standard step.

One *step* is what :func:`conelib.train.train` does per iteration: the batch gathered from the
training set, forward pass, cross-entropy, backward pass, ``torch.optim.SGD`` update (momentum 0.9,
weight decay 5e-4). The standard step trains the network :math:`f(x;\\theta)`; the linearized steps
train its first-order Taylor model :math:`f(x;\\theta_s) + J(x;\\theta_s)(\\theta-\\theta_s)`
(:class:`conelib.linearize.LinearizedModel`) in three ways:

* ``linearized``: the default ``"layerwise"`` method (:mod:`conelib.tangent`), the primal at
  :math:`\\theta_s` recomputed every step (what any training set, and augmented data, costs);
* ``cached``: the same through :meth:`~conelib.linearize.LinearizedModel.forward_examples` with
  every example of the batch in the primal cache (what :func:`conelib.train.train` does from the
  second epoch on when there is no augmentation and the cache fits its memory bound);
  ``cache_bytes_per_example`` says what the cache costs per training example;
* ``jvp``: one :func:`torch.func.jvp` of the whole network (the method before the layer-wise one).

All kinds run on the same batches, interleaved (every repetition runs each kind once, in turn), so
that a change in the machine's load affects them alike; the median and the minimum over ``--repeats``
steps after ``--warmup`` steps are reported, and the ratios of both to the standard step's.

Usage::

    python benchmarks/linearized_step.py --threads 1                 # the four models, batch 128, CPU
    python benchmarks/linearized_step.py --threads 1 --clock cpu     # CPU time: steadier on a busy machine
    python benchmarks/linearized_step.py --models resnet20 vgg16 --repeats 5 --warmup 1 --threads 1
    python benchmarks/linearized_step.py --device cuda --out bench.csv
    python benchmarks/linearized_step.py --models lenet5 --batch-size 8 --repeats 1 --warmup 0

Prints a markdown table (and the load average before and after) and, with ``--out``, writes every
row as CSV.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from conelib.linearize import linearize
from conelib.models import build

#: the input shape each model is benchmarked on (MNIST for the LeNets, CIFAR-10 for the others)
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "lenet_300_100": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "resnet20": (3, 32, 32),
    "vgg16": (3, 32, 32),
}
#: the step kinds; the first is the reference of the ratios
KINDS: tuple[str, ...] = ("standard", "linearized", "cached", "jvp")
COLUMNS = ("model", "norm", "input_shape", "batch_size", "n_params", "device", "threads", "repeats", "clock",
           "standard_ms", "standard_min_ms", "linearized_ms", "linearized_min_ms", "ratio", "ratio_min",
           "cached_ms", "cached_min_ms", "cached_ratio", "cached_ratio_min", "jvp_ms", "jvp_min_ms", "jvp_ratio",
           "jvp_ratio_min", "cache_bytes_per_example")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stepper(model: nn.Module, forward: Callable[[], torch.Tensor], y: torch.Tensor) -> Callable[[], None]:
    """One SGD step (forward, loss, backward, update) of ``model`` with logits ``forward()``."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9,
                          weight_decay=5e-4)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(forward(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _sig(x: float) -> float:
    return float(f"{x:.3g}")  # 3 significant digits: never rounded to 0


#: the clocks a step can be timed with: wall time, or the CPU time of this process (all its threads)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def bench_model(name: str, *, batch_size: int, device: torch.device, repeats: int, warmup: int,
                norm: str | None = None, seed: int = 0, kinds: Sequence[str] = KINDS,
                cache_examples: int = 1024, clock: str = "wall") -> dict:
    """Median and minimum time (ms, on ``clock``) of each kind of SGD step of model ``name``.

    ``clock="cpu"`` (the process's CPU time) is much less disturbed by other processes on a busy
    machine than wall time; with one torch thread on a CPU it is the step's compute time."""
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r} is not known; choose from {sorted(CLOCKS)}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError("clock='cpu' times the host's CPU only; use clock='wall' on an accelerator")
    now = CLOCKS[clock]
    if name not in INPUT_SHAPES:
        raise ValueError(f"model={name!r} is not benchmarked; choose from {sorted(INPUT_SHAPES)}")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, {repeats}, {warmup}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or "standard" not in kinds:
        raise ValueError(f"kinds must include 'standard' and come from {KINDS}; got {list(kinds)}")
    shape = INPUT_SHAPES[name]
    net = build(name, input_shape=shape, num_classes=10, norm=norm, seed=seed).to(device)
    gen = torch.Generator().manual_seed(seed)
    n = max(int(cache_examples), batch_size)
    x_all = torch.randn(n, *shape, generator=gen).to(device)
    y_all = torch.randint(0, 10, (n,), generator=gen).to(device)
    idx = torch.randperm(n, generator=gen)[:batch_size]
    idx_dev = idx.to(device)
    y = y_all[idx_dev]
    steps: dict[str, Callable[[], None]] = {}
    cached_model = None
    for kind in kinds:
        if kind == "standard":
            steps[kind] = _stepper(net, lambda: net(x_all[idx_dev]), y)
        elif kind == "cached":
            cached_model = linearize(net, method="layerwise", primal_cache_bytes=1 << 40)
            m = cached_model
            with torch.no_grad():  # fill the cache for every example (as the first epoch does)
                for chunk in torch.arange(n).split(batch_size):
                    m.forward_examples(x_all, chunk)
            steps[kind] = _stepper(m, lambda m=m: m.forward_examples(x_all, idx), y)
        else:
            m = linearize(net, method="layerwise" if kind == "linearized" else "jvp")
            steps[kind] = _stepper(m, lambda m=m: m(x_all[idx_dev]), y)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(warmup + repeats):
        for kind, step in steps.items():  # interleaved: load changes hit every kind alike
            _sync(device)
            t0 = now()
            step()
            _sync(device)
            if i >= warmup:
                times[kind].append(now() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    low = {k: min(v) * 1e3 for k, v in times.items()}
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    row: dict = {
        "model": name,
        "norm": net.conelib_spec["norm"],
        "input_shape": "x".join(map(str, shape)),
        "batch_size": batch_size,
        "n_params": sum(p.numel() for p in net.parameters()),
        "device": dev_name,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "clock": clock,
    }
    for kind in KINDS:
        row[f"{kind}_ms"] = round(med[kind], 3) if kind in med else float("nan")
        row[f"{kind}_min_ms"] = round(low[kind], 3) if kind in low else float("nan")
    for kind, label in (("linearized", "ratio"), ("cached", "cached_ratio"), ("jvp", "jvp_ratio")):
        row[label] = _sig(med[kind] / med["standard"]) if kind in med else float("nan")
        row[f"{label}_min"] = _sig(low[kind] / low["standard"]) if kind in low else float("nan")
    info = cached_model.primal_cache_info() if cached_model is not None else None
    row["cache_bytes_per_example"] = int(info["bytes"] // n) if info and info["enabled"] else 0
    return row


def markdown(rows: Sequence[dict]) -> str:
    """The rows as a compact markdown table: medians, with minima in parentheses."""
    head = ["model", "norm", "threads", "clock", "repeats", "standard ms", "linearized ms", "ratio", "cached ms",
            "cached ratio", "jvp ms", "jvp ratio", "cache / example"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]

    def pair(r: dict, a: str, b: str, fmt: str) -> str:
        if r[a] != r[a]:  # NaN: not measured
            return "—"
        return f"{r[a]:{fmt}} ({r[b]:{fmt}})"

    for r in rows:
        per = r["cache_bytes_per_example"]
        lines.append("| " + " | ".join([
            r["model"], r["norm"], str(r["threads"]), r["clock"], str(r["repeats"]),
            pair(r, "standard_ms", "standard_min_ms", ".1f"), pair(r, "linearized_ms", "linearized_min_ms", ".1f"),
            pair(r, "ratio", "ratio_min", ".2f"), pair(r, "cached_ms", "cached_min_ms", ".1f"),
            pair(r, "cached_ratio", "cached_ratio_min", ".2f"), pair(r, "jvp_ms", "jvp_min_ms", ".1f"),
            pair(r, "jvp_ratio", "jvp_ratio_min", ".2f"), f"{per / 1024:.1f} KiB" if per else "—",
        ]) + " |")
    return "\n".join(lines)


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(INPUT_SHAPES), choices=sorted(INPUT_SHAPES))
    p.add_argument("--norm", default=None,
                   help="norm of resnet20/vgg16: batchnorm | layernorm | none (default: the model's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20, help="timed steps of each kind (median and minimum reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each kind first")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS,
                   help="which steps to time (standard is always needed)")
    p.add_argument("--cache-examples", type=int, default=1024,
                   help="size of the training set the cached kind draws its batch from")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                   help="wall time, or the process's CPU time (steadier on a shared machine; CPU only)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--out", type=Path, default=None, help="write the rows as CSV to this file")
    args = p.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if args.clock == "cpu" and device.type != "cpu":
        p.error("--clock cpu times the host's CPU only; use --clock wall on an accelerator")
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    kinds = ["standard", *[k for k in args.kinds if k != "standard"]]
    load_before = _load()
    rows = []
    for name in args.models:
        norm = args.norm if name in ("resnet20", "vgg16") else None
        rows.append(bench_model(name, batch_size=args.batch_size, device=device, repeats=args.repeats,
                                warmup=args.warmup, norm=norm, kinds=kinds, cache_examples=args.cache_examples,
                                clock=args.clock))
        print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(markdown(rows))
    print(f"\nload average (1, 5, 15 min) before: {load_before}; after: {_load()}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.out}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
