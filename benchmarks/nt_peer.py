"""The neural-tangents (JAX) side of the eNTK benchmark: one kernel, one implementation, one process.

Runs in its own environment (neural-tangents 0.6.5 runs all three of its implementations only
with ``jax==0.4.23 jaxlib==0.4.23 "numpy<2"``, Python 3.11; ``ntk_bench.py --setup-nt`` creates
it). It never imports torch or conelib: it receives the PyTorch model's weights (``.npz``, keyed
by the torch parameter names) and the inputs (``.npy``, NCHW), rebuilds the same architecture in
``neural_tangents.stax`` (standard parameterization, so that the parameters are exactly the torch
ones and the kernels are comparable), and writes back the kernel (``kernel.npy``), the logits
(to check that both sides compute the same function) and its timings (``result.json``).

Architectures (``conelib.models``; Zhou et al. 2025 after Frankle et al. 2020):

* ``lenet_300_100``: Dense 300 - ReLU - Dense 100 - ReLU - Dense c, on the flattened image.
* ``lenet5``: Conv 5x5 (pad 2) - ReLU - MaxPool 2 - Conv 5x5 - ReLU - MaxPool 2 - Flatten -
  Dense 120 - ReLU - Dense 84 - ReLU - Dense c, in NHWC (JAX's native layout; the torch weights
  are transposed, and the first Dense's rows permuted from torch's (C, H, W) flattening order).
* ``resnet20`` with ``norm="none"``: He et al.'s CIFAR ResNet-20 with biases, option-B 1x1
  shortcuts, global average pooling.

stax has no max-pooling layer and no explicit padding (its ``SAME`` pads a stride-2 3x3
convolution by (0, 1), PyTorch by (1, 1)), so those two are added as apply-only layers whose
infinite-width ``kernel_fn`` raises: the empirical NTK needs only ``apply_fn``.

Kernels: ``empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=i)`` for the
full ``(n, n, c, c)`` kernel and ``trace_axes=(-1,)`` for the trace, which neural-tangents
returns as the *mean* over logits: it is multiplied by ``c`` here. ``x2=None`` (the symmetric
case), ``jax.jit``; the first call (compilation included) is timed separately.

Usage::

    python nt_peer.py --model lenet5 --weights w.npz --inputs x.npy --kind full \\
        --implementation 3 --repeats 5 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.example_libraries import stax as ostax

import neural_tangents as nt
from neural_tangents import stax
from peak_rss import watch  # benchmarks/peak_rss.py (this folder): this process's peak, not the parent's

MODELS = ("lenet_300_100", "lenet5", "resnet20")
IMPLEMENTATIONS = {1: "jacobian_contraction", 2: "ntk_vector_products", 3: "structured_derivatives"}
KINDS = ("full", "trace")


def _apply_only(name: str, init_fn, apply_fn):  # type: ignore[no-untyped-def]
    """A stax layer from an (init_fn, apply_fn) pair, without an infinite-width kernel."""

    @stax.layer
    def layer():  # type: ignore[no-untyped-def]
        @stax.requires()
        def kernel_fn(k, **kwargs):  # type: ignore[no-untyped-def]
            raise NotImplementedError(f"{name} has no infinite-width kernel; only apply_fn is used")

        return init_fn, apply_fn, kernel_fn

    layer.__name__ = name
    return layer()


def MaxPool2(name: str = "MaxPool2"):  # type: ignore[no-untyped-def]
    """2x2 max-pooling, stride 2, NHWC (``jax.example_libraries.stax.MaxPool``)."""
    init_fn, apply_fn = ostax.MaxPool((2, 2), strides=(2, 2), padding="VALID")
    return _apply_only(name, init_fn, lambda params, x, **kw: apply_fn(params, x))


def ZeroPad(p: int):  # type: ignore[no-untyped-def]
    """Zero-pad both spatial sides of an NHWC batch by ``p`` (PyTorch's ``padding=p``)."""

    def init_fn(rng, shape):  # type: ignore[no-untyped-def]
        n, h, w, c = shape
        return (n, h + 2 * p, w + 2 * p, c), ()

    def apply_fn(params, x, **kw):  # type: ignore[no-untyped-def]
        return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))

    return _apply_only(f"ZeroPad{p}", init_fn, apply_fn)


def _dense(out: int):  # type: ignore[no-untyped-def]
    return stax.Dense(out, b_std=1.0, parameterization="standard")  # b_std=None would drop the bias


def _conv(out: int, k: int, stride: int = 1, padding: str = "VALID"):  # type: ignore[no-untyped-def]
    return stax.Conv(out, (k, k), strides=(stride, stride), padding=padding, b_std=1.0, parameterization="standard")


def _block(f_in: int, f_out: int, stride: int):  # type: ignore[no-untyped-def]
    """He et al.'s basic block, biases on, no norm (conelib BasicBlock with norm='none')."""
    if stride == 1:
        conv1 = _conv(f_out, 3, 1, "SAME")
    else:
        conv1 = stax.serial(ZeroPad(1), _conv(f_out, 3, stride, "VALID"))
    main = stax.serial(conv1, stax.Relu(), _conv(f_out, 3, 1, "SAME"))
    shortcut = _conv(f_out, 1, stride, "VALID") if (stride != 1 or f_in != f_out) else stax.Identity()
    return stax.serial(stax.FanOut(2), stax.parallel(main, shortcut), stax.FanInSum(), stax.Relu())


def architecture(model: str, num_classes: int, widths: dict[str, int]):  # type: ignore[no-untyped-def]
    """The stax (init_fn, apply_fn) of ``model`` with the torch model's layer sizes."""
    if model == "lenet_300_100":
        layers = [_dense(widths["fc1"]), stax.Relu(), _dense(widths["fc2"]), stax.Relu(), _dense(num_classes)]
    elif model == "lenet5":
        layers = [
            _conv(widths["conv1"], 5, 1, "SAME"), stax.Relu(), MaxPool2("pool1"),
            _conv(widths["conv2"], 5, 1, "VALID"), stax.Relu(), MaxPool2("pool2"),
            stax.Flatten(),
            _dense(widths["fc1"]), stax.Relu(), _dense(widths["fc2"]), stax.Relu(), _dense(num_classes),
        ]
    elif model == "resnet20":
        plan = [widths["stage1"], widths["stage2"], widths["stage3"]]
        layers = [_conv(plan[0], 3, 1, "SAME"), stax.Relu()]
        f_in = plan[0]
        for stage, f_out in enumerate(plan):
            for index in range(3):
                layers.append(_block(f_in, f_out, 2 if stage > 0 and index == 0 else 1))
                f_in = f_out
        layers += [stax.GlobalAvgPool(), _dense(num_classes)]
    else:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    init_fn, apply_fn, _ = stax.serial(*layers)
    return init_fn, apply_fn


def _dense_params(w: dict[str, np.ndarray], name: str, perm: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    W = w[f"{name}.weight"].T  # torch (out, in) -> stax (in, out)
    if perm is not None:
        W = W[perm]
    return (jnp.asarray(W), jnp.asarray(w[f"{name}.bias"])[None, :])


def _conv_params(w: dict[str, np.ndarray], name: str):  # type: ignore[no-untyped-def]
    W = np.transpose(w[f"{name}.weight"], (2, 3, 1, 0))  # OIHW -> HWIO
    return (jnp.asarray(W), jnp.asarray(w[f"{name}.bias"])[None, None, None, :])


def params_from_torch(model: str, w: dict[str, np.ndarray], input_shape: tuple[int, int, int]):  # type: ignore[no-untyped-def]
    """The stax parameter tree of :func:`architecture`, filled with the torch weights."""
    if model == "lenet_300_100":
        return [_dense_params(w, "fc1"), (), _dense_params(w, "fc2"), (), _dense_params(w, "fc")]
    if model == "lenet5":
        c2 = w["conv2.weight"].shape[0]
        side = int(round((w["fc1.weight"].shape[1] / c2) ** 0.5))
        # torch flattens (C, H, W); stax flattens NHWC as (H, W, C): row (h, w, c) of the stax
        # matrix is row c*side*side + h*side + w of the torch one
        hh, ww, cc = np.meshgrid(np.arange(side), np.arange(side), np.arange(c2), indexing="ij")
        perm = (cc * side * side + hh * side + ww).reshape(-1)
        return [
            _conv_params(w, "conv1"), (), (), _conv_params(w, "conv2"), (), (), (),
            _dense_params(w, "fc1", perm), (), _dense_params(w, "fc2"), (), _dense_params(w, "fc"),
        ]
    params: list = [_conv_params(w, "conv"), ()]
    for i in range(9):
        p = f"blocks.{i}"
        stride2 = i in (3, 6)
        conv1 = [(), _conv_params(w, f"{p}.conv1")] if stride2 else _conv_params(w, f"{p}.conv1")
        main = [conv1, (), _conv_params(w, f"{p}.conv2")]
        shortcut = _conv_params(w, f"{p}.shortcut.0") if f"{p}.shortcut.0.weight" in w else ()
        params.append([(), (main, shortcut), (), ()])
    params += [(), _dense_params(w, "fc")]
    return params


def to_layout(model: str, x: np.ndarray) -> jnp.ndarray:
    """NCHW torch inputs -> what the stax model takes (flat vectors, or NHWC images)."""
    if model == "lenet_300_100":
        return jnp.asarray(x.reshape(x.shape[0], -1))
    return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--weights", required=True, type=Path)
    ap.add_argument("--inputs", required=True, type=Path)
    ap.add_argument("--kind", required=True, choices=KINDS)
    ap.add_argument("--implementation", required=True, type=int, choices=sorted(IMPLEMENTATIONS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="stop repeating once a run took this long")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)

    w = dict(np.load(args.weights))
    x_np = np.load(args.inputs).astype(np.float32)
    num_classes = w["fc.weight"].shape[0]
    if args.model == "lenet_300_100":
        widths = {"fc1": w["fc1.weight"].shape[0], "fc2": w["fc2.weight"].shape[0]}
    elif args.model == "lenet5":
        widths = {k: w[f"{k}.weight"].shape[0] for k in ("conv1", "conv2", "fc1", "fc2")}
    else:
        widths = {"stage1": w["conv.weight"].shape[0], "stage2": w["blocks.3.conv1.weight"].shape[0],
                  "stage3": w["blocks.6.conv1.weight"].shape[0]}
    init_fn, apply_fn = architecture(args.model, num_classes, widths)
    x = to_layout(args.model, x_np)
    _, ref_params = init_fn(jax.random.PRNGKey(0), x.shape)
    params = params_from_torch(args.model, w, x_np.shape[1:])
    # same tree structure and shapes as stax's own initialisation
    ref_leaves, ref_tree = jax.tree_util.tree_flatten(ref_params)
    leaves, tree = jax.tree_util.tree_flatten(params)
    if ref_tree != tree or [a.shape for a in ref_leaves] != [a.shape for a in leaves]:
        raise SystemExit(f"parameter tree mismatch:\n{ref_tree}\n{tree}")
    logits = np.asarray(jax.jit(apply_fn)(params, x))

    trace_axes = () if args.kind == "full" else (-1,)
    kfn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=trace_axes, vmap_axes=0, implementation=args.implementation))
    with watch() as mem:  # the kernel calls, compilation included
        t0 = time.perf_counter()
        k = kfn(x, None, params).block_until_ready()
        first = time.perf_counter() - t0
        times: list[float] = []
        for _ in range(max(0, args.repeats)):
            if first > args.max_seconds or (times and sum(times) > args.max_seconds):
                break
            t0 = time.perf_counter()
            k = kfn(x, None, params).block_until_ready()
            times.append(time.perf_counter() - t0)
    k = np.asarray(k, dtype=np.float32)
    if args.kind == "trace":
        k = k * num_classes  # neural-tangents returns the mean over the traced logit axis
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "kernel.npy", k)
    np.save(args.out / "logits.npy", logits)
    result = {
        "implementation": IMPLEMENTATIONS[args.implementation],
        "first_s": first,
        "times_s": times or [first],
        "median_s": statistics.median(times or [first]),
        "max_rss_bytes": mem.peak_bytes,
        "extra_rss_bytes": mem.extra_bytes,
        "versions": {"neural_tangents": nt.__version__ if hasattr(nt, "__version__") else "?",
                     "jax": jax.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "devices": [str(d) for d in jax.devices()],
        "pid": os.getpid(),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
