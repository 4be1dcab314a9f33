"""Cost of one linearized training step relative to one standard step.

One *step* is what :func:`conelib.train.train` does per iteration: forward pass on a batch,
cross-entropy, backward pass, ``torch.optim.SGD`` update (momentum 0.9, weight decay 5e-4).
The standard step trains the network :math:`f(x;\\theta)`; the linearized step trains its
first-order Taylor model :math:`f(x;\\theta_s) + J(x;\\theta_s)(\\theta-\\theta_s)`
(:class:`conelib.linearize.LinearizedModel`, a :func:`torch.func.jvp` per forward pass, autograd
back through it). Both run on the same random batch; the two kinds of step are interleaved, so
that a change in the machine's load affects both alike, and the median over ``--repeats`` steps
after ``--warmup`` steps is reported.

Usage::

    python benchmarks/linearized_step.py                           # lenet5 and resnet20, batch 128, CPU
    python benchmarks/linearized_step.py --device cuda --out bench.csv
    python benchmarks/linearized_step.py --models lenet5 --batch-size 8 --repeats 1 --warmup 0

Prints a markdown table and, with ``--out``, writes the same rows as CSV.
"""

from __future__ import annotations

import argparse
import csv
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

#: the input shape each model is benchmarked on (MNIST for LeNet-5, CIFAR-10 for the others)
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "lenet5": (1, 28, 28),
    "lenet_300_100": (1, 28, 28),
    "resnet20": (3, 32, 32),
    "vgg16": (3, 32, 32),
}
COLUMNS = ("model", "norm", "input_shape", "batch_size", "n_params", "device", "threads", "repeats",
           "standard_ms", "linearized_ms", "ratio")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One SGD step (forward, loss, backward, update) of ``model`` on ``(x, y)``."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9,
                          weight_decay=5e-4)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_model(name: str, *, batch_size: int, device: torch.device, repeats: int, warmup: int,
                norm: str | None = None, seed: int = 0) -> dict:
    """Median wall time (ms) of a standard and of a linearized SGD step of model ``name``."""
    if name not in INPUT_SHAPES:
        raise ValueError(f"model={name!r} is not benchmarked; choose from {sorted(INPUT_SHAPES)}")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, {repeats}, {warmup}")
    shape = INPUT_SHAPES[name]
    net = build(name, input_shape=shape, num_classes=10, norm=norm, seed=seed).to(device)
    lin = linearize(net)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
    steps = {"standard": _stepper(net, x, y), "linearized": _stepper(lin, x, y)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(warmup + repeats):
        for kind, step in steps.items():  # interleaved: load changes hit both kinds alike
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if i >= warmup:
                times[kind].append(time.perf_counter() - t0)
    std = statistics.median(times["standard"]) * 1e3
    lin_ms = statistics.median(times["linearized"]) * 1e3
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "model": name,
        "norm": net.conelib_spec["norm"],
        "input_shape": "x".join(map(str, shape)),
        "batch_size": batch_size,
        "n_params": sum(p.numel() for p in net.parameters()),
        "device": dev_name,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "standard_ms": round(std, 3),
        "linearized_ms": round(lin_ms, 3),
        "ratio": float(f"{lin_ms / std:.3g}"),  # 3 significant digits: never rounded to 0
    }


def markdown(rows: Sequence[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet20"], choices=sorted(INPUT_SHAPES))
    p.add_argument("--norm", default=None,
                   help="norm of resnet20/vgg16: batchnorm | layernorm | none (default: the model's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20, help="timed steps of each kind (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each kind first")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--out", type=Path, default=None, help="write the rows as CSV to this file")
    args = p.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    rows = []
    for name in args.models:
        norm = args.norm if name in ("resnet20", "vgg16") else None
        rows.append(bench_model(name, batch_size=args.batch_size, device=device, repeats=args.repeats,
                                warmup=args.warmup, norm=norm))
    print(markdown(rows))
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
