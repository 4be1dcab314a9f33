"""Benchmark: eNTK of a PyTorch model with conelib, against neural-tangents and the PyTorch recipes.

In one run, on one machine, with the same weights and inputs, it times and checks

* conelib's methods ``structured``, ``jacobian``, ``ntvp`` and ``auto`` (:mod:`conelib.ntk`),
  plus ``auto`` under a caller-given memory bound (``--memory-limit``: the time cost of the bound);
* neural-tangents' ``empirical_ntk_fn`` (JAX) with each implementation (Jacobian contraction,
  NTK-vector products, structured derivatives; Novak et al. 2022) on the same architecture
  written in its ``stax`` with the torch weights copied in (``benchmarks/nt_peer.py``, run in
  its own environment, created on first use: ``--setup-nt``);
* the recipe of PyTorch's ``torch.func`` NTK tutorial (``vmap(jacrev)`` per example, then one
  ``einsum`` per parameter tensor) and a naive loop (one ``autograd.grad`` per example and logit,
  then one matmul).

Every measurement runs in a fresh subprocess (so that its peak resident memory, ``ru_maxrss``,
is its own): a first call (neural-tangents compiles in it) and then repeated calls, whose median
is reported. Every kernel is compared with a float64 reference (conelib ``structured`` in
float64, itself checked against float64 ``jacobian`` at the smallest size), and with the
element-wise median of all float32 kernels of that cell. Methods predicted to exceed
``--max-seconds`` (from the previous size, or from FLOP counts) or ``--max-memory`` are skipped
and the table says so.

The arithmetic bounds divide FLOP counts by the float32 matmul rate measured here (a 2048^3
GEMM): ``bound_jacobian`` counts forming the per-example Jacobians (one forward and ``c``
backward passes with weight gradients, :math:`(1 + 2c) F` per example) and contracting them
(:math:`n(n+1)/2 \\cdot 2 c^2 P` full, :math:`\\cdot 2 c P` trace); ``bound_structured`` counts
conelib's structured algorithm (:func:`conelib.ntk_structured.structured_cost`).

Usage (see ``benchmarks/README.md``)::

    python benchmarks/ntk_bench.py --models lenet_300_100 lenet5 resnet20 --sizes 128 256 512 \\
        --kinds full trace --repeats 5 --out benchmarks/results/
    python benchmarks/ntk_bench.py --smoke --out /tmp/smoke     # seconds; correctness only
    python benchmarks/ntk_bench.py --chart                      # redraw the chart from the CSV
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from peak_rss import watch  # noqa: E402  (benchmarks/peak_rss.py: this process's peak, not the parent's)

DEFAULT_OUT = HERE / "results"
DEFAULT_NT_VENV = Path.home() / ".cache" / "conelib" / "venv-nt"
NT_REQUIREMENTS = ("neural-tangents==0.6.5", "jax==0.4.23", "jaxlib==0.4.23", "numpy<2")

MODELS: dict[str, dict] = {
    "lenet_300_100": {"input_shape": (1, 28, 28), "norm": None},
    "lenet5": {"input_shape": (1, 28, 28), "norm": None},
    # norm "none": both sides compute the same function (stax has no BatchNorm in eval mode)
    "resnet20": {"input_shape": (3, 32, 32), "norm": "none"},
}
KINDS = ("full", "trace")
CONELIB_METHODS = ("auto", "structured", "jacobian", "ntvp")
TORCH_METHODS = ("tutorial", "naive")
NT_METHODS = {"nt:jacobian_contraction": 1, "nt:ntk_vector_products": 2, "nt:structured_derivatives": 3}
BOUNDED = "auto@limit"
ALL_METHODS = tuple(f"conelib:{m}" for m in CONELIB_METHODS) + (f"conelib:{BOUNDED}",) + tuple(
    f"torch:{m}" for m in TORCH_METHODS
) + tuple(NT_METHODS)
#: methods given the larger time budget (the comparison the benchmark exists for)
PRIMARY = ("conelib:auto", "conelib:structured", "nt:structured_derivatives", "nt:jacobian_contraction")

FIELDS = [
    "model", "n", "kind", "method", "status", "median_s", "min_s", "repeats", "first_s",
    "ratio_to_best_nt", "peak_rss_mb", "extra_rss_mb", "rel_diff_f64", "rel_diff_consensus",
    "auto_choice", "memory_limit_mb", "bound_jacobian_s", "bound_structured_s", "note",
]


# ------------------------------------------------------------------------------------------
# the methods (torch side), in process
# ------------------------------------------------------------------------------------------


def tutorial_ntk(model, x, kind: str):  # type: ignore[no-untyped-def]
    """PyTorch's torch.func NTK tutorial, "Jacobian contraction" recipe, verbatim in substance.

    https://pytorch.org/tutorials/intermediate/neural_tangent_kernels.html
    """
    import torch
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(params, x):  # type: ignore[no-untyped-def]
        return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac2 = [j.flatten(2) for j in jac2.values()]
    expr = {"full": "Naf,Mbf->NMab", "trace": "Naf,Maf->NM"}[kind]
    return torch.stack([torch.einsum(expr, j1, j2) for j1, j2 in zip(jac1, jac2)]).sum(0)


def naive_ntk(model, x, kind: str):  # type: ignore[no-untyped-def]
    """One ``autograd.grad`` per example and logit into a Jacobian ``(n, c, P)``, then one matmul."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    n = x.shape[0]
    rows = []
    for i in range(n):
        out = model(x[i : i + 1]).reshape(-1)
        per_logit = []
        for a in range(out.shape[0]):
            grads = torch.autograd.grad(out[a], params, retain_graph=a < out.shape[0] - 1)
            per_logit.append(torch.cat([g.reshape(-1) for g in grads]))
        rows.append(torch.stack(per_logit))
    jac = torch.stack(rows)  # (n, c, P)
    c = jac.shape[1]
    if kind == "full":
        m = jac.reshape(n * c, -1)
        return (m @ m.T).reshape(n, c, n, c).permute(0, 2, 1, 3)
    m = jac.reshape(n, -1)
    return m @ m.T


def build_model(name: str, dtype=None):  # type: ignore[no-untyped-def]
    import torch

    from conelib import models

    spec = MODELS[name]
    kw = {} if spec["norm"] is None else {"norm": spec["norm"]}
    model = models.build(name, input_shape=spec["input_shape"], num_classes=10, seed=0, **kw)
    return model.to(dtype or torch.float32).eval()


def make_kernel_fn(method: str, model, kind: str, memory_limit: int | None):  # type: ignore[no-untyped-def]
    """A zero-argument-but-x callable computing the kernel with ``method`` (torch methods only)."""
    from conelib.ntk import ntk_fn

    fam, name = method.split(":")
    if fam == "conelib":
        m = "auto" if name == BOUNDED else name
        return ntk_fn(model, kind=kind, method=m, memory_limit=memory_limit)
    if name == "tutorial":
        return lambda x: tutorial_ntk(model, x, kind)
    if name == "naive":
        return lambda x: naive_ntk(model, x, kind)
    raise ValueError(f"method must be one of {ALL_METHODS} (torch side), got {method!r}")


def time_calls(fn, x, repeats: int, max_seconds: float):  # type: ignore[no-untyped-def]
    """First call, then up to ``repeats`` timed calls (fewer once ``max_seconds`` are spent)."""
    t0 = time.perf_counter()
    out = fn(x)
    first = time.perf_counter() - t0
    times: list[float] = []
    for _ in range(repeats):
        if times and sum(times) > max_seconds:
            break
        if not times and first > 3 * max_seconds:
            break  # a single (first) call is all there is time for
        t0 = time.perf_counter()
        out = fn(x)
        times.append(time.perf_counter() - t0)
    return out, first, times


# ------------------------------------------------------------------------------------------
# worker: one method, one cell, in a fresh process
# ------------------------------------------------------------------------------------------


def worker(spec: dict) -> dict:
    """Run one torch-side measurement described by ``spec``; save the kernel; return timings."""
    import torch

    dtype = torch.float64 if spec.get("dtype") == "float64" else torch.float32
    model = build_model(spec["model"], dtype)
    x = torch.from_numpy(np.load(spec["inputs"])[: spec["n"]]).to(dtype)
    fn = make_kernel_fn(spec["method"], model, spec["kind"], spec.get("memory_limit"))
    with watch() as mem:
        k, first, times = time_calls(fn, x, spec["repeats"], spec["max_seconds"])
    out = {"first_s": first, "times_s": times, "max_rss_bytes": mem.peak_bytes, "extra_rss_bytes": mem.extra_bytes}
    if spec.get("kernel_out"):
        np.save(spec["kernel_out"], k.detach().cpu().numpy())
    if spec["method"] in ("conelib:auto", f"conelib:{BOUNDED}"):
        from conelib.ntk import choose_method, profile_model

        prof = profile_model(model, x)
        out["auto_choice"] = choose_method(prof, x.shape[0], x.shape[0], spec["kind"], symmetric=True)
    return out


def gemm_rate(size: int = 2048, repeats: int = 5) -> float:
    """float32 FLOP/s of a ``size``-cubed matmul on this machine (median of ``repeats``)."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2.0 * size**3 / statistics.median(ts)


def flop_counts(name: str, n: int, kind: str) -> dict:
    """FLOPs of the Jacobian-contraction bound and of conelib's structured algorithm."""
    import torch

    from conelib.ntk import choose_method, estimate_cost, profile_model

    model = build_model(name)
    prof = profile_model(model, torch.zeros(1, *MODELS[name]["input_shape"]))
    c, F, P = prof.n_logits, prof.forward_flops, prof.n_params
    pairs = n * (n + 1) / 2
    jac = (1 + 2 * c) * F * n + pairs * 2.0 * P * (c * c if kind == "full" else c)
    return {
        "flops_jacobian": jac,
        "flops_structured": estimate_cost(prof, n, n, kind, "structured", symmetric=True),
        "flops": {m: estimate_cost(prof, n, n, kind, m, symmetric=True) for m in ("jacobian", "ntvp", "structured")},
        "auto_choice": choose_method(prof, n, n, kind, symmetric=True),
        "n_params": P,
        "n_logits": c,
    }


# ------------------------------------------------------------------------------------------
# neural-tangents environment
# ------------------------------------------------------------------------------------------


def setup_nt(venv: Path, python: str = "python3.11") -> Path:
    """Create the neural-tangents environment at ``venv`` if it is missing; return its python."""
    py = venv / "bin" / "python"
    if py.exists():
        return py
    exe = shutil.which(python)
    if exe is None:
        raise FileNotFoundError(
            f"--nt-python {python!r} not found: neural-tangents 0.6.5 with jax 0.4.23 needs Python 3.11 "
            "(or pass --no-nt)"
        )
    print(f"creating the neural-tangents environment in {venv} ...", flush=True)
    subprocess.run([exe, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", *NT_REQUIREMENTS], check=True)
    return py


def nt_env() -> dict:
    env = dict(os.environ)
    env.update({"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"})
    return env


# ------------------------------------------------------------------------------------------
# orchestration
# ------------------------------------------------------------------------------------------


@dataclass
class Options:
    models: list[str]
    sizes: list[int]
    kinds: list[str]
    methods: list[str]
    repeats: int
    out: Path
    memory_limit: int | None
    conelib_memory_limit: int
    max_seconds: float
    max_seconds_primary: float
    max_memory: float
    nt: bool
    nt_venv: Path
    nt_python: str
    in_process: bool
    omp_wait_policy: str
    keep: Path | None
    max_n: dict[str, int] = field(default_factory=dict)

    def sizes_for(self, model: str) -> list[int]:
        """The sizes measured for ``model`` (``--max-n`` caps them per model)."""
        return [n for n in self.sizes if n <= self.max_n.get(model, n)]


def _torch_env(opts: Options) -> dict:
    env = dict(os.environ)
    if opts.omp_wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = opts.omp_wait_policy
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_worker(spec: dict, opts: Options, timeout: float) -> dict:
    if opts.in_process:
        return worker(spec)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", path],
            env=_torch_env(opts), capture_output=True, text=True, timeout=timeout,
        )
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_nt(method: str, name: str, n: int, kind: str, work: Path, py: Path, opts: Options, budget: float) -> dict:
    out = work / f"nt_{name}_{n}_{kind}_{NT_METHODS[method]}"
    xs = work / f"{name}_x{n}.npy"
    if not xs.exists():
        np.save(xs, np.load(work / f"{name}_x.npy")[:n])
    cmd = [
        str(py), str(HERE / "nt_peer.py"), "--model", name, "--weights", str(work / f"{name}.npz"),
        "--inputs", str(xs), "--kind", kind, "--implementation", str(NT_METHODS[method]),
        "--repeats", str(opts.repeats), "--max-seconds", str(budget), "--out", str(out),
    ]
    proc = subprocess.run(cmd, env=nt_env(), capture_output=True, text=True, timeout=20 * budget + 120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    res = json.loads((out / "result.json").read_text())
    res["kernel_path"] = str(out / "kernel.npy")
    res["logits_path"] = str(out / "logits.npy")
    return res


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a64 - b64) / np.linalg.norm(b64))


def _predict(method: str, prev: dict[str, tuple[int, float]], n: int, flops: dict, rate: float) -> float:
    """Seconds ``method`` is expected to take at size ``n``."""
    if method in prev:
        n0, t0 = prev[method]
        return t0 * (n / n0) ** 2
    fam, name = method.split(":")
    fl = flops["flops"]
    est = {
        "auto": min(fl.values()), BOUNDED: min(fl.values()), "structured": fl["structured"],
        "jacobian": fl["jacobian"], "ntvp": fl["ntvp"] * 2, "tutorial": 2 * fl["jacobian"],
        "naive": 2 * fl["jacobian"], "jacobian_contraction": fl["jacobian"],
        "ntk_vector_products": fl["ntvp"] * 2, "structured_derivatives": fl["structured"],
    }[name]
    return est / (0.5 * rate)


def _predict_memory(method: str, name: str, n: int, kind: str, flops: dict) -> float:
    """Bytes that materialising per-example Jacobians needs (methods that do)."""
    c, P = flops["n_logits"], flops["n_params"]
    jac = 4.0 * n * c * P
    if method == "torch:tutorial":
        return 2 * jac + (4.0 * n * n * c * c * 8 if kind == "full" else 0)
    if method in ("torch:naive", "nt:jacobian_contraction"):
        return 2 * jac
    return 0.0


def run_benchmark(opts: Options) -> list[dict]:
    """Run every (model, kind, n, method) cell; return the table rows (also written to CSV/md)."""
    import torch

    opts.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ntk_bench_")) if opts.keep is None else opts.keep
    work.mkdir(parents=True, exist_ok=True)
    nt_py = setup_nt(opts.nt_venv, opts.nt_python) if opts.nt else None
    methods = [m for m in opts.methods if opts.nt or not m.startswith("nt:")]
    # a run interrupted with --keep DIR resumes where it stopped: finished cells are in
    # DIR/rows.jsonl, the references and the first run's GEMM rate and load are kept
    state_path, rows_path = work / "state.json", work / "rows.jsonl"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if "rate" not in state:
        state.update(rate=_run_gemm(opts, {"kind": "gemm"}), load0=os.getloadavg(), refcheck={})
        state_path.write_text(json.dumps(state))
    rate, load0 = state["rate"], tuple(state["load0"])
    print(f"float32 GEMM rate: {rate / 1e9:.1f} GFLOP/s", flush=True)
    done = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    if done:
        print(f"resuming: {len(done)} rows already measured in {rows_path}", flush=True)
    rows: list[dict] = []
    refcheck: dict[str, float] = state["refcheck"]
    for name in opts.models:
        n_max, n_min = max(opts.sizes_for(name)), min(opts.sizes_for(name))
        model = build_model(name)
        gen = torch.Generator().manual_seed(1234)
        x = torch.randn(n_max, *MODELS[name]["input_shape"], generator=gen)
        np.save(work / f"{name}_x.npy", x.numpy())
        np.savez(work / f"{name}.npz", **{k: v.detach().numpy() for k, v in model.named_parameters()})
        logits = model(x[: min(n_max, 64)]).detach().numpy()
        # float64 reference: structured at the largest size (inputs are prefixes, so every size is
        # a sub-block), cross-checked against float64 jacobian at the smallest size
        ref_path = work / f"{name}_ref{n_max}_full.npy"
        if not ref_path.exists():
            _run_worker({"model": name, "n": n_max, "kind": "full", "method": "conelib:structured", "dtype": "float64",
                         "inputs": str(work / f"{name}_x.npy"), "repeats": 0, "max_seconds": 1e9,
                         "memory_limit": opts.conelib_memory_limit, "kernel_out": str(ref_path)}, opts, timeout=7200)
        ref_full = np.load(ref_path)
        if name not in refcheck:
            chk = work / f"{name}_refjac.npy"
            _run_worker({"model": name, "n": n_min, "kind": "full", "method": "conelib:jacobian", "dtype": "float64",
                         "inputs": str(work / f"{name}_x.npy"), "repeats": 0, "max_seconds": 1e9,
                         "memory_limit": opts.conelib_memory_limit, "kernel_out": str(chk)}, opts, timeout=7200)
            refcheck[name] = _rel(ref_full[:n_min, :n_min], np.load(chk))
            state_path.write_text(json.dumps(state))
        print(f"{name}: float64 structured vs float64 jacobian at n={n_min}: {refcheck[name]:.1e}", flush=True)
        for kind in opts.kinds:
            prev: dict[str, tuple[int, float]] = {}
            for n in opts.sizes_for(name):
                ref = ref_full[:n, :n]
                if kind == "trace":
                    ref = np.einsum("ijaa->ij", ref)
                old = [r for r in done if (r["model"], r["kind"], r["n"]) == (name, kind, n)]
                if old:
                    rows.extend(old)
                    prev.update({r["method"]: (n, r["median_s"]) for r in old if r.get("status") == "ok"})
                    continue
                flops = flop_counts(name, n, kind)
                cell: list[dict] = []
                kernels: dict[str, np.ndarray] = {}
                for method in methods:
                    row = {"model": name, "n": n, "kind": kind, "method": method, "note": "",
                           "bound_jacobian_s": flops["flops_jacobian"] / rate,
                           "bound_structured_s": flops["flops_structured"] / rate}
                    budget = opts.max_seconds_primary if method in PRIMARY else opts.max_seconds
                    pred = _predict(method, prev, n, flops, rate)
                    mem = _predict_memory(method, name, n, kind, flops)
                    if pred > budget:
                        row.update(status="skipped", note=f"predicted {pred:.0f} s > {budget:.0f} s")
                    elif mem > opts.max_memory:
                        row.update(status="skipped", note=f"predicted {mem / 2**30:.1f} GiB > {opts.max_memory / 2**30:.1f} GiB")
                    else:
                        try:
                            if method.startswith("nt:"):
                                assert nt_py is not None
                                res = _run_nt(method, name, n, kind, work, nt_py, opts, budget)
                                kpath = res["kernel_path"]
                                nt_logits = np.load(res["logits_path"])[: logits.shape[0]]
                                lerr = _rel(nt_logits, logits)
                                if lerr > 1e-4:
                                    row["note"] = f"logits differ from torch by {lerr:.1e}"
                                res["times_s"] = res["times_s"] if res["times_s"] else [res["first_s"]]
                            else:
                                kpath = str(work / f"k_{name}_{n}_{kind}_{method.replace(':', '_')}.npy")
                                spec = {"model": name, "n": n, "kind": kind, "method": method,
                                        "inputs": str(work / f"{name}_x.npy"), "repeats": opts.repeats,
                                        "max_seconds": budget, "kernel_out": kpath}
                                if method == f"conelib:{BOUNDED}":
                                    spec["memory_limit"] = opts.memory_limit
                                    row["memory_limit_mb"] = (opts.memory_limit or 0) / 2**20
                                elif method.startswith("conelib:"):
                                    spec["memory_limit"] = opts.conelib_memory_limit
                                res = _run_worker(spec, opts, timeout=20 * budget + 120)
                                if not res["times_s"]:
                                    res["times_s"] = [res["first_s"]]
                                    row["note"] = "first call only"
                            t = res["times_s"]
                            row.update(status="ok", median_s=statistics.median(t), min_s=min(t), repeats=len(t),
                                       first_s=res["first_s"], peak_rss_mb=res["max_rss_bytes"] / 2**20,
                                       extra_rss_mb=res["extra_rss_bytes"] / 2**20,
                                       auto_choice=res.get("auto_choice", ""))
                            k = np.load(kpath)
                            kernels[method] = k
                            row["rel_diff_f64"] = _rel(k, ref)
                            prev[method] = (n, row["median_s"])
                        except subprocess.TimeoutExpired:
                            row.update(status="timeout", note="killed after the time limit")
                        except Exception as err:  # noqa: BLE001 - record and go on
                            row.update(status="failed", note=str(err)[:200])
                    print(_progress(row), flush=True)
                    cell.append(row)
                if kernels:
                    consensus = np.median(np.stack(list(kernels.values())), axis=0)
                    for row in cell:
                        if row["method"] in kernels:
                            row["rel_diff_consensus"] = _rel(kernels[row["method"]], consensus)
                    del consensus
                nt_times = [r["median_s"] for r in cell if r["method"].startswith("nt:") and r.get("status") == "ok"]
                for row in cell:
                    if nt_times and row.get("status") == "ok":
                        row["ratio_to_best_nt"] = row["median_s"] / min(nt_times)
                rows.extend(cell)
                with open(rows_path, "a") as f:
                    for r in cell:
                        f.write(json.dumps(r) + "\n")
                for f in work.glob("k_*.npy"):
                    f.unlink()
    meta = {
        "gemm_gflops": rate / 1e9,
        "reference_check": {k: f"float64 structured vs float64 jacobian at n={n_min}: {v:.2e}" for k, v in refcheck.items()},
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "omp_wait_policy": opts.omp_wait_policy,
        "repeats": opts.repeats,
        "max_seconds": opts.max_seconds,
        "max_seconds_primary": opts.max_seconds_primary,
        "memory_limit_bytes": opts.memory_limit,
        "conelib_memory_limit_bytes": opts.conelib_memory_limit,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if opts.nt:
        meta["nt"] = json.loads(subprocess.run(
            [str(nt_py), "-c", "import jax, numpy, neural_tangents as nt, json; print(json.dumps({'jax': jax.__version__, 'numpy': numpy.__version__, 'neural_tangents': getattr(nt, '__version__', '0.6.5')}))"],
            capture_output=True, text=True, env=nt_env(),
        ).stdout.strip().splitlines()[-1])
    write_results(rows, meta, opts.out)
    if opts.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _run_gemm(opts: Options, spec: dict) -> float:
    if opts.in_process:
        return gemm_rate(512 if max(opts.sizes) < 64 else 2048)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--gemm"], env=_torch_env(opts),
                          capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def _progress(row: dict) -> str:
    t = f"{row['median_s']:.3f} s" if row.get("status") == "ok" else row.get("status", "?")
    err = f" rel {row['rel_diff_f64']:.1e}" if "rel_diff_f64" in row else ""
    return f"{row['model']:>13} {row['kind']:>5} n={row['n']:<4} {row['method']:<28} {t}{err} {row.get('note', '')}"


# ------------------------------------------------------------------------------------------
# tables and chart
# ------------------------------------------------------------------------------------------


def write_results(rows: list[dict], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ntk_bench.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_csv(r.get(k, "")) for k in FIELDS})
    (out / "ntk_bench_meta.json").write_text(json.dumps(meta, indent=1))
    (out / "ntk_bench.md").write_text(markdown_tables(rows, meta))


def _fmt_csv(v: object) -> object:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("median_s", "min_s", "first_s", "ratio_to_best_nt", "peak_rss_mb", "extra_rss_mb", "rel_diff_f64",
                  "rel_diff_consensus", "memory_limit_mb", "bound_jacobian_s", "bound_structured_s"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
        r["n"] = int(r["n"])
    return rows


def _t(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def markdown_tables(rows: list[dict], meta: dict) -> str:
    """Summary (conelib auto vs the best neural-tangents implementation) and the full table."""
    lines = [
        f"Machine: {meta.get('machine', '?')}; float32 GEMM {meta.get('gemm_gflops', float('nan')):.0f} GFLOP/s; "
        f"load average {tuple(round(v, 1) for v in meta.get('loadavg_start', ()))} at the start, "
        f"{tuple(round(v, 1) for v in meta.get('loadavg_end', ()))} at the end; torch {meta.get('torch', '?')}, "
        f"neural-tangents {meta.get('nt', {}).get('neural_tangents', '–')} / jax {meta.get('nt', {}).get('jax', '–')}; "
        f"{meta.get('date', '')}. Times in seconds (median of up to {meta.get('repeats', '?')} runs after a first call), "
        "float32, symmetric kernel (x2 = x1).",
        "",
        "| model | kind | n | conelib auto (choice) | best neural-tangents | auto / best NT | Jacobian bound | auto / Jacobian bound | structured FLOPs / rate | auto / that | auto under memory bound | max rel. diff. (float64) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["kind"], r["n"]), []).append(r)
    for (model, kind, n), rs in cells.items():
        by = {r["method"]: r for r in rs}
        auto = by.get("conelib:auto", {})
        nts = [r for r in rs if r["method"].startswith("nt:") and r.get("status") == "ok"]
        best = min(nts, key=lambda r: r["median_s"]) if nts else None
        bounded = by.get(f"conelib:{BOUNDED}", {})
        diffs = [r["rel_diff_f64"] for r in rs if r.get("rel_diff_f64") is not None]
        a = auto.get("median_s")
        ratio = f"{a / best['median_s']:.2f}" if (best and a) else "–"
        bound = auto.get("bound_structured_s")
        jbound = auto.get("bound_jacobian_s")
        lim = f"{_t(bounded.get('median_s'))} ({bounded.get('memory_limit_mb') or 0:.0f} MiB)" if bounded.get("median_s") else "–"
        lines.append(
            f"| {model} | {kind} | {n} | {_t(a)} ({auto.get('auto_choice') or '?'}) | "
            f"{_t(best['median_s']) + ' (' + best['method'][3:].replace('_', ' ') + ')' if best else '–'} | {ratio} | "
            f"{_t(jbound)} | {f'{a / jbound:.2f}' if (a and jbound) else '–'} | "
            f"{_t(bound)} | {f'{a / bound:.2f}' if (a and bound) else '–'} | {lim} | "
            f"{f'{max(diffs):.1e}' if diffs else '–'} |"
        )
    lines += [
        "",
        "All measurements (peak RSS: the whole process, includes the Python runtime and the library; "
        "extra: growth during the kernel calls; rel. diff.: Frobenius norm relative to the float64 "
        "reference and to the element-wise median of all float32 kernels of the cell):",
        "",
        "| model | kind | n | method | median | runs | first call | / best NT | peak RSS MiB (extra) | rel. diff. f64 | rel. diff. consensus | note |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ok = r.get("status") == "ok"
        rss = f"{r['peak_rss_mb']:.0f} ({r['extra_rss_mb']:.0f})" if ok and r.get("peak_rss_mb") is not None else "–"
        ratio = f"{r['ratio_to_best_nt']:.2f}" if r.get("ratio_to_best_nt") is not None else "–"
        rd = f"{r['rel_diff_f64']:.1e}" if r.get("rel_diff_f64") is not None else "–"
        rc = f"{r['rel_diff_consensus']:.1e}" if r.get("rel_diff_consensus") is not None else "–"
        note = r.get("note") or ("" if ok else r.get("status", ""))
        if r["method"] == f"conelib:{BOUNDED}" and r.get("memory_limit_mb"):
            note = (note + "; " if note else "") + f"memory_limit={r['memory_limit_mb']:.0f} MiB"
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['n']} | {r['method']} | {_t(r.get('median_s')) if ok else '–'} | "
            f"{r.get('repeats') or '–'} | {_t(r.get('first_s')) if ok else '–'} | {ratio} | {rss} | {rd} | {rc} | {note} |"
        )
    checks = meta.get("reference_check", {})
    if checks:
        lines += ["", "Reference check: " + "; ".join(f"{k}: {v}" for k, v in checks.items()) + "."]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict]):  # type: ignore[no-untyped-def]
    """Altair chart: median time against n, one line per method, one panel per model and kind."""
    import altair as alt
    import pandas as pd

    data = pd.DataFrame([
        {"model": r["model"], "kind": r["kind"], "n": r["n"], "method": r["method"], "seconds": r["median_s"]}
        for r in rows if r.get("status") == "ok" and r.get("median_s")
    ])
    sel = alt.selection_point(fields=["method"], bind="legend")
    return (
        alt.Chart(data, width=220, height=180)
        .mark_line(point=True)
        .encode(
            x=alt.X("n:Q", scale=alt.Scale(type="log", base=2), title="n (examples)",
                    axis=alt.Axis(values=sorted({int(v) for v in data["n"]}))),
            y=alt.Y("seconds:Q", scale=alt.Scale(type="log"), title="median time (s)"),
            color=alt.Color("method:N", title="method"),
            strokeDash=alt.condition("indexof(datum.method, 'nt:') == 0", alt.value([4, 2]), alt.value([1, 0])),
            opacity=alt.condition(sel, alt.value(1.0), alt.value(0.15)),
            tooltip=["model", "kind", "n", "method", alt.Tooltip("seconds:Q", format=".3g")],
        )
        .add_params(sel)
        .facet(row=alt.Row("kind:N", title=None), column=alt.Column("model:N", title=None))
        .resolve_scale(y="independent")
        .properties(title="eNTK time against n (float32, 2-core CPU; dashed: neural-tangents)")
    )


def save_charts(out: Path, svg: Path | None = None, html: bool = False, page: Path | None = None) -> list[Path]:
    """Draw the chart from ``out/ntk_bench.csv``: SVG, interactive HTML, and the book page's copy.

    ``page`` (the book's appendix) gets the markdown tables and the SVG inline, between the
    marker comments ``<!-- ntk_bench:table -->`` / ``<!-- ntk_bench:chart -->`` and
    ``<!-- /ntk_bench -->``: the book is built from ``book/*.md`` alone and must load nothing.
    """
    rows = read_csv(out / "ntk_bench.csv")
    meta_path = out / "ntk_bench_meta.json"
    if meta_path.exists():  # the tables follow the code that formats them, not the run that measured
        (out / "ntk_bench.md").write_text(markdown_tables(rows, json.loads(meta_path.read_text())))
    ch = chart(rows)
    written = []
    svg_text = None
    if svg is not None or page is not None:
        import vl_convert as vlc

        svg_text = vlc.vegalite_to_svg(ch.to_json())
    if svg is not None:
        svg.write_text(svg_text)
        written.append(svg)
    if html:
        p = out / "ntk_speed.html"
        ch.save(str(p))
        written.append(p)
    if page is not None:
        text = page.read_text()
        table = (out / "ntk_bench.md").read_text().rstrip("\n")
        figure = "```{raw} html\n<div class=\"ntk-speed-chart\" style=\"overflow-x:auto\">\n" + svg_text.strip() + "\n</div>\n```"
        text = _replace_between(text, "<!-- ntk_bench:table -->", "<!-- /ntk_bench -->", table)
        text = _replace_between(text, "<!-- ntk_bench:chart -->", "<!-- /ntk_bench -->", figure)
        page.write_text(text)
        written.append(page)
    return written


def _replace_between(text: str, start: str, end: str, body: str) -> str:
    i = text.find(start)
    if i < 0:
        raise ValueError(f"marker {start!r} not found in the page")
    j = text.find(end, i)
    if j < 0:
        raise ValueError(f"marker {end!r} not found after {start!r}")
    return text[: i + len(start)] + "\n" + body + "\n" + text[j:]


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Options | None]:
    ap = argparse.ArgumentParser(description="eNTK benchmark: conelib vs neural-tangents vs torch.func recipes")
    ap.add_argument("--models", nargs="+", default=None, help=f"any of {list(MODELS)} (default: all)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), help=f"any of {list(KINDS)}")
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS), help=f"any of {list(ALL_METHODS)}")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-n", nargs="+", default=[], metavar="MODEL=N",
                    help="measure MODEL only up to n = N (e.g. resnet20=256)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--memory-limit", type=float, default=2 * 2**30,
                    help="bytes: the caller-given bound of the conelib:auto@limit runs (default 2 GiB, "
                    "conelib's own default)")
    ap.add_argument("--conelib-memory-limit", type=float, default=12 * 2**30,
                    help="bytes: memory_limit of the other conelib runs and of the float64 reference "
                    "(default 12 GiB: like neural-tangents, as much as the kernel needs on a 24 GiB machine)")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="skip methods predicted to take longer")
    ap.add_argument("--max-seconds-primary", type=float, default=180.0,
                    help=f"the same for {', '.join(PRIMARY)}")
    ap.add_argument("--max-memory", type=float, default=12 * 2**30, help="skip methods predicted to need more bytes")
    ap.add_argument("--no-nt", action="store_true", help="leave out neural-tangents")
    ap.add_argument("--nt-venv", type=Path, default=DEFAULT_NT_VENV)
    ap.add_argument("--nt-python", default="python3.11")
    ap.add_argument("--setup-nt", action="store_true", help="create the neural-tangents environment and exit")
    ap.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", "unset"],
                    help="OMP_WAIT_POLICY of the torch workers (PASSIVE: see benchmarks/README.md)")
    ap.add_argument("--in-process", action="store_true", help="no subprocesses (no memory figures)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="work in this folder and keep it (weights, inputs, references, finished cells); "
                    "running again with the same folder resumes an interrupted run")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds-long correctness run: LeNets, n=8, one repeat, in process, no neural-tangents")
    ap.add_argument("--chart", action="store_true", help="redraw the chart (SVG + interactive HTML) from --out's CSV")
    ap.add_argument("--svg", type=Path, default=None, help="with --chart: where to write the SVG")
    ap.add_argument("--page", type=Path, default=ROOT / "book" / "appendix_ntk_speed.md",
                    help="with --chart: the book page whose table and chart are replaced")
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--gemm", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.models is None:
        a.models = ["lenet_300_100", "lenet5"] if a.smoke else list(MODELS)
    for key, allowed in (("models", MODELS), ("kinds", KINDS), ("methods", ALL_METHODS)):
        bad = [v for v in getattr(a, key) if v not in allowed]
        if bad:
            raise ValueError(f"--{key}: {bad} not supported; choose from {list(allowed)}")
    if any(s < 1 for s in a.sizes):
        raise ValueError(f"--sizes must be positive, got {a.sizes}")
    max_n: dict[str, int] = {}
    for item in a.max_n:
        model, _, cap = item.partition("=")
        if model not in MODELS or not cap.isdigit() or int(cap) < min(a.sizes):
            raise ValueError(f"--max-n: {item!r} must be MODEL=N with MODEL one of {list(MODELS)} "
                             f"and N >= the smallest size {min(a.sizes)}")
        max_n[model] = int(cap)
    if a.smoke:
        a.sizes, a.repeats, a.no_nt, a.in_process = [8], 1, True, True
        a.methods = [m for m in a.methods if not m.startswith("nt:")]
        a.memory_limit = 1  # one example per chunk: the bounded path is exercised too
    opts = Options(
        models=a.models, sizes=sorted(set(a.sizes)), kinds=a.kinds, methods=a.methods, repeats=a.repeats,
        out=a.out, memory_limit=int(a.memory_limit), conelib_memory_limit=int(a.conelib_memory_limit),
        max_seconds=a.max_seconds,
        max_seconds_primary=a.max_seconds_primary, max_memory=a.max_memory, nt=not a.no_nt, nt_venv=a.nt_venv,
        nt_python=a.nt_python, in_process=a.in_process, omp_wait_policy=a.omp_wait_policy, keep=a.keep,
        max_n=max_n,
    )
    return a, opts


def main(argv: list[str] | None = None) -> int:
    a, opts = parse(argv)
    if a.worker is not None:
        print(json.dumps(worker(json.loads(a.worker.read_text()))))
        return 0
    if a.gemm:
        print(gemm_rate())
        return 0
    assert opts is not None
    if a.setup_nt:
        print(setup_nt(opts.nt_venv, opts.nt_python))
        return 0
    if a.chart:
        for p in save_charts(opts.out, a.svg or opts.out / "ntk_speed.svg", html=True, page=a.page):
            print(p)
        return 0
    run_benchmark(opts)
    print(f"wrote {opts.out / 'ntk_bench.csv'} and {opts.out / 'ntk_bench.md'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
